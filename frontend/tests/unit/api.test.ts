import { describe, expect, it } from 'vitest';
import { Api, ApiError, NetworkError, memoryStore, type Session } from '../../src/lib/api';

interface Call {
  path: string;
  auth: string | null;
  body: unknown;
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

const s0: Session = { user_id: '1', nickname: 'ann', access_token: 'A0', refresh_token: 'R0' };

function setup(handler: (c: Call, n: number) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const store = memoryStore({ ...s0 });
  const logouts: string[] = [];
  const api = new Api({
    store,
    fetch: async (path, init) => {
      const c: Call = {
        path,
        auth: new Headers(init?.headers).get('Authorization'),
        body: init?.body ? JSON.parse(String(init.body)) : undefined,
      };
      calls.push(c);
      return handler(c, calls.length);
    },
    onLogout: (r) => logouts.push(r),
  });
  return { api, calls, store, logouts };
}

const pair = (n: number) => ({ user_id: '1', nickname: 'ann', access_token: `A${n}`, refresh_token: `R${n}`, expires_in: 900 });

describe('Api', () => {
  it('refreshes once on 401 and repeats the request with the new token', async () => {
    const { api, calls, store } = setup((c) => {
      if (c.path === '/api/user/refresh') return json(200, pair(1));
      if (c.auth === 'Bearer A1') return json(200, []);
      return json(401, { code: 'unauthorized', message: 'token expired' });
    });
    await expect(api.listRooms()).resolves.toEqual([]);
    expect(calls.map((c) => c.path)).toEqual(['/api/chat/rooms', '/api/user/refresh', '/api/chat/rooms']);
    expect(calls[1]!.body).toEqual({ refresh_token: 'R0' });
    expect(store.load()?.refresh_token).toBe('R1');
  });

  it('shares one refresh among concurrent 401s (a rotated token is never presented twice)', async () => {
    const { api, calls } = setup((c) => {
      if (c.path === '/api/user/refresh') return json(200, pair(1));
      if (c.auth === 'Bearer A1') return json(200, []);
      return json(401, { code: 'unauthorized', message: 'expired' });
    });
    await Promise.all([api.listRooms(), api.listRooms(), api.clients('7')]);
    expect(calls.filter((c) => c.path === '/api/user/refresh')).toHaveLength(1);
  });

  it('logs out when the refresh is refused', async () => {
    const { api, store, logouts } = setup(() => json(401, { code: 'unauthorized', message: 'nope' }));
    await expect(api.listRooms()).rejects.toBeInstanceOf(ApiError);
    expect(store.load()).toBeNull();
    expect(logouts).toEqual(['expired']);
  });

  it('keeps the login when the refresh fails for another reason', async () => {
    const { api, store, logouts } = setup((c) =>
      c.path === '/api/user/refresh' ? new Response('bad gateway', { status: 502 }) : json(401, { code: 'unauthorized', message: 'x' }),
    );
    await expect(api.listRooms()).rejects.toBeInstanceOf(NetworkError);
    expect(store.load()?.refresh_token).toBe('R0');
    expect(logouts).toEqual([]);
  });

  it('uses a token another tab refreshed instead of refreshing again', async () => {
    const { api, calls, store } = setup((c) => (c.auth === 'Bearer A9' ? json(200, []) : json(401, { code: 'unauthorized', message: 'x' })));
    const orig = store.load.bind(store);
    let n = 0;
    // The first read sees the old token; by the refresh another tab has stored A9.
    store.load = () => (n++ === 0 ? orig() : { ...s0, access_token: 'A9', refresh_token: 'R9' });
    await api.listRooms();
    expect(calls.map((c) => c.path)).toEqual(['/api/chat/rooms', '/api/chat/rooms']);
  });

  it('turns error bodies into ApiError with code and message, and non-API answers into NetworkError', async () => {
    const { api } = setup((c) =>
      c.path === '/api/user/login'
        ? json(401, { code: 'unauthorized', message: 'invalid nickname or password' })
        : new Response('<html>', { status: 504 }),
    );
    await expect(api.login('ann', 'wrongpass')).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
    await expect(api.register('ann', 'password1')).rejects.toBeInstanceOf(NetworkError);
  });
});
