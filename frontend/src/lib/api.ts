// REST client of the public Rooms API (same-origin /api).
//
// It keeps the login (access and refresh token) in a SessionStore, sends the
// access token with every authenticated request, and on a 401 refreshes the
// pair once and repeats the request. Refreshes are single-flight: concurrent
// 401s share one refresh, because the refresh token rotates and presenting a
// used one twice counts as reuse (which revokes the whole login). When the
// refresh itself is refused the login is over: the store is cleared and
// onLogout runs. A refresh that fails for another reason (network, 5xx) keeps
// the login, so a restarting gateway never logs anyone out.

import type { LoginResponse, Message, Room, RoomClient } from './types';

export interface Session {
  user_id: string;
  nickname: string;
  access_token: string;
  refresh_token: string;
}

/** SessionStore persists the current login; localStorage in the browser. */
export interface SessionStore {
  load(): Session | null;
  save(s: Session | null): void;
}

/** ApiError is a refused request: the API's {code, message} and the status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** NetworkError is a request that got no answer from the API (or a proxy error page). */
export class NetworkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NetworkError';
  }
}

export type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

export interface ApiOptions {
  store: SessionStore;
  fetch?: Fetch;
  base?: string;
  /** Runs when the login ended (refresh refused, or logout). */
  onLogout?: (reason: 'expired' | 'logout') => void;
  /** Serializes refreshes across browser tabs that share the store (Web Locks), when available. */
  lock?: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
}

export class Api {
  private readonly store: SessionStore;
  private readonly fetchFn: Fetch;
  private readonly base: string;
  private readonly onLogout: (reason: 'expired' | 'logout') => void;
  private readonly lock: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  private refreshing: Promise<Session> | null = null;

  constructor(opts: ApiOptions) {
    this.store = opts.store;
    this.fetchFn = opts.fetch ?? ((input, init) => fetch(input, init));
    this.base = opts.base ?? '';
    this.onLogout = opts.onLogout ?? (() => {});
    this.lock = opts.lock ?? ((_name, fn) => fn());
  }

  session(): Session | null {
    return this.store.load();
  }

  async register(nickname: string, password: string): Promise<{ user_id: string; nickname: string }> {
    return this.request('POST', '/api/user/register', { nickname, password }, false);
  }

  async login(nickname: string, password: string): Promise<Session> {
    const r = await this.request<LoginResponse>('POST', '/api/user/login', { nickname, password }, false);
    const s = toSession(r);
    this.store.save(s);
    return s;
  }

  /** logout revokes the login on the server (best effort) and forgets it here. */
  async logout(): Promise<void> {
    const s = this.store.load();
    this.store.save(null);
    if (s) {
      try {
        await this.request('POST', '/api/user/logout', { refresh_token: s.refresh_token }, false);
      } catch {
        // The local login is gone either way; the server forgets unused tokens when they expire.
      }
    }
    this.onLogout('logout');
  }

  me(): Promise<{ user_id: string; nickname: string }> {
    return this.request('GET', '/api/user/me');
  }

  async wsTicket(): Promise<string> {
    const r = await this.request<{ ticket: string }>('POST', '/api/user/ws-ticket', {});
    return r.ticket;
  }

  listRooms(): Promise<Room[]> {
    return this.request('GET', '/api/chat/rooms');
  }

  createRoom(name: string): Promise<Room> {
    return this.request('POST', '/api/chat/rooms', { name });
  }

  getRoom(id: string): Promise<Room> {
    return this.request('GET', `/api/chat/rooms/${encodeURIComponent(id)}`);
  }

  clients(id: string): Promise<RoomClient[]> {
    return this.request('GET', `/api/chat/rooms/${encodeURIComponent(id)}/clients`);
  }

  /** messages pages history: after (oldest `limit` after seq), before (newest `limit` before seq), or the newest. */
  messages(id: string, q: { after?: number; before?: number; limit?: number } = {}): Promise<Message[]> {
    const p = new URLSearchParams();
    if (q.after !== undefined) p.set('after_seq', String(q.after));
    if (q.before !== undefined) p.set('before_seq', String(q.before));
    if (q.limit !== undefined) p.set('limit', String(q.limit));
    const qs = p.toString();
    return this.request('GET', `/api/chat/rooms/${encodeURIComponent(id)}/messages${qs ? '?' + qs : ''}`);
  }

  /**
   * refresh exchanges the refresh token for a new pair. Concurrent callers
   * share one exchange. `stale` is the access token the caller saw refused:
   * if the store already holds a newer one (another tab refreshed), that one
   * is used without a second exchange.
   */
  refresh(stale?: string): Promise<Session> {
    if (!this.refreshing) {
      this.refreshing = this.lock('rooms-refresh', () => this.doRefresh(stale)).finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async doRefresh(stale?: string): Promise<Session> {
    const cur = this.store.load();
    if (!cur) {
      throw new ApiError(401, 'unauthorized', 'not logged in');
    }
    if (stale !== undefined && cur.access_token !== stale) {
      return cur;
    }
    let r: LoginResponse;
    try {
      r = await this.request<LoginResponse>('POST', '/api/user/refresh', { refresh_token: cur.refresh_token }, false);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.store.save(null);
        this.onLogout('expired');
      }
      throw e;
    }
    const s = toSession(r);
    this.store.save(s);
    return s;
  }

  /** request sends one API call; authenticated calls refresh once on 401. */
  async request<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
    let s = auth ? this.store.load() : null;
    if (auth && !s) {
      this.onLogout('expired');
      throw new ApiError(401, 'unauthorized', 'not logged in');
    }
    try {
      return await this.send<T>(method, path, body, s?.access_token);
    } catch (e) {
      if (!(auth && s && e instanceof ApiError && e.status === 401)) throw e;
    }
    s = await this.refresh(s.access_token);
    return this.send<T>(method, path, body, s.access_token);
  }

  private async send<T>(method: string, path: string, body: unknown, token?: string): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers['Authorization'] = `Bearer ${token}`;
    let res: Response;
    try {
      res = await this.fetchFn(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new NetworkError('The server cannot be reached. Check your connection and try again.');
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let data: unknown = undefined;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (res.ok) return data as T;
    const err = data as { code?: unknown; message?: unknown } | undefined;
    if (err && typeof err.code === 'string') {
      const ra = Number(res.headers.get('Retry-After'));
      throw new ApiError(res.status, err.code, typeof err.message === 'string' ? err.message : err.code, ra > 0 ? ra : undefined);
    }
    // Not an API answer: a proxy in front could not reach any gateway.
    throw new NetworkError(`The server is not available right now (HTTP ${res.status}). Try again in a moment.`);
  }
}

function toSession(r: LoginResponse): Session {
  return {
    user_id: r.user_id,
    nickname: r.nickname,
    access_token: r.access_token,
    refresh_token: r.refresh_token,
  };
}

/** localStore keeps the session in localStorage under one key. */
export function localStore(key = 'rooms.session'): SessionStore {
  return {
    load() {
      try {
        const v = localStorage.getItem(key);
        return v ? (JSON.parse(v) as Session) : null;
      } catch {
        return null;
      }
    },
    save(s) {
      if (s) localStorage.setItem(key, JSON.stringify(s));
      else localStorage.removeItem(key);
    },
  };
}

/** memoryStore keeps the session in memory (tests). */
export function memoryStore(initial: Session | null = null): SessionStore {
  let s = initial;
  return {
    load: () => s,
    save: (v) => {
      s = v;
    },
  };
}

/** webLock runs fn under a cross-tab Web Lock when the browser has them. */
export function webLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks) return fn();
  return locks.request(name, fn) as Promise<T>;
}

/** describeError turns a failed call into a sentence for the screen. */
export function describeError(e: unknown): string {
  if (e instanceof ApiError) {
    switch (e.code) {
      case 'unauthorized':
        return 'Wrong nickname or password.';
      case 'nickname_taken':
        return 'That nickname is already taken. Choose another one.';
      case 'rate_limited':
        return `Too many attempts. Try again${e.retryAfter ? ` in ${e.retryAfter} s` : ' later'}.`;
      case 'unavailable':
        return 'The service is temporarily unavailable. Try again in a moment.';
      case 'validation_failed':
        return capitalize(e.message) + '.';
      default:
        return capitalize(e.message) + '.';
    }
  }
  if (e instanceof NetworkError) return e.message;
  return 'Something went wrong. Try again.';
}

function capitalize(s: string): string {
  const t = s.replace(/\.$/, '');
  return t.charAt(0).toUpperCase() + t.slice(1);
}
