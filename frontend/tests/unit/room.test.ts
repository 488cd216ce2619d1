import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError } from '../../src/lib/api';
import { RoomSession } from '../../src/lib/room';
import { FakeApi, FakeSocket, msg, options } from './fakes';

const seqs = (r: RoomSession) => r.getSnapshot().messages.map((m) => m.seq);

/** settle lets the session's promise chains (ticket, history) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

async function started(api: FakeApi, lastSeq = api.history.length): Promise<{ r: RoomSession; ws: FakeSocket }> {
  const r = new RoomSession(options(api));
  r.start();
  await settle();
  const ws = FakeSocket.last();
  ws.welcome(lastSeq);
  await settle();
  return { r, ws };
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('history and resume', () => {
  it('loads the newest page, then connects with since_seq of its last message and the rooms.v2 subprotocol', async () => {
    const api = new FakeApi();
    api.history = Array.from({ length: 120 }, (_, i) => msg(i + 1));
    const { r, ws } = await started(api);
    expect(ws.query.get('since_seq')).toBe('120');
    expect(ws.query.get('ticket')).toBe('t1');
    expect(ws.protocols).toEqual(['rooms.v2']);
    expect(seqs(r)).toEqual(Array.from({ length: 50 }, (_, i) => i + 71));
    expect(r.getSnapshot().conn.kind).toBe('connected');
    expect(r.getSnapshot().hasOlder).toBe(true);
  });

  it('pages older history before the oldest shown message until seq 1', async () => {
    const api = new FakeApi();
    api.history = Array.from({ length: 120 }, (_, i) => msg(i + 1));
    const { r } = await started(api);
    await r.loadOlder();
    expect(api.calls.at(-1)).toEqual({ before: 71, limit: 50 });
    expect(seqs(r)[0]).toBe(21);
    await r.loadOlder();
    expect(seqs(r)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    expect(r.getSnapshot().hasOlder).toBe(false);
  });

  it('drops duplicate seqs and shows nothing past a gap until it is filled', async () => {
    const api = new FakeApi();
    api.history = [msg(1), msg(2)];
    const { r, ws } = await started(api);
    ws.frame({ type: 'message', ...msg(3) });
    ws.frame({ type: 'message', ...msg(3) });
    ws.frame({ type: 'message', ...msg(2) });
    expect(seqs(r)).toEqual([1, 2, 3]);

    // 4 went missing: 5 waits, the gap is read over REST, then both show in order.
    api.history.push(msg(3), msg(4), msg(5));
    ws.frame({ type: 'message', ...msg(5) });
    expect(seqs(r)).toEqual([1, 2, 3]);
    await settle();
    expect(seqs(r)).toEqual([1, 2, 3, 4, 5]);
    ws.frame({ type: 'message', ...msg(4) });
    ws.frame({ type: 'message', ...msg(6) });
    expect(seqs(r)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('reconnects after a drop with jittered exponential backoff and resumes after the last shown seq', async () => {
    const api = new FakeApi();
    api.history = [msg(1)];
    const { r, ws } = await started(api);
    ws.frame({ type: 'message', ...msg(2) });
    ws.drop(1006);
    let c = r.getSnapshot().conn;
    expect(c.kind).toBe('waiting');
    // random() = 0.5: base 500 → 375 ms for the first retry.
    await vi.advanceTimersByTimeAsync(374);
    expect(FakeSocket.all).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    const ws2 = FakeSocket.last();
    expect(ws2).not.toBe(ws);
    expect(ws2.query.get('since_seq')).toBe('2');

    // Fails again before the welcome: the second wait is twice as long.
    ws2.drop(1006);
    c = r.getSnapshot().conn;
    expect(c.kind === 'waiting' && c.attempt).toBe(2);
    await vi.advanceTimersByTimeAsync(749);
    expect(FakeSocket.all).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    const ws3 = FakeSocket.last();
    ws3.welcome(4, true);
    // Replay: 2 (already shown: dropped), 3, 4, then live.
    ws3.frame({ type: 'message', ...msg(3) });
    ws3.frame({ type: 'message', ...msg(4) });
    ws3.frame({ type: 'message', ...msg(5) });
    expect(seqs(r)).toEqual([1, 2, 3, 4, 5]);
    // A welcome resets the backoff.
    ws3.drop(1001);
    c = r.getSnapshot().conn;
    expect(c.kind === 'waiting' && c.attempt).toBe(1);
    r.close();
  });

  it('caps the backoff', async () => {
    const { backoffDelay } = await import('../../src/lib/backoff');
    expect(backoffDelay(1, () => 0)).toBe(250);
    expect(backoffDelay(1, () => 1)).toBe(500);
    expect(backoffDelay(3, () => 1)).toBe(2000);
    expect(backoffDelay(50, () => 1)).toBe(15000);
    expect(backoffDelay(50, () => 0)).toBe(7500);
  });

  it('pages the gap over REST when the server could not replay (recovered: false)', async () => {
    const api = new FakeApi();
    api.history = [msg(1)];
    const { r, ws } = await started(api);
    ws.drop();
    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    api.history = Array.from({ length: 450 }, (_, i) => msg(i + 1));
    const ws2 = FakeSocket.last();
    ws2.welcome(450, false);
    ws2.frame({ type: 'message', ...msg(451) }); // live, waits for the gap
    expect(seqs(r)).toEqual([1]);
    await settle();
    await settle();
    expect(seqs(r)).toEqual(Array.from({ length: 451 }, (_, i) => i + 1));
    expect(api.calls.filter((q) => q.after !== undefined).map((q) => q.after)).toEqual([1, 201, 401]);
  });
});

describe('sending', () => {
  it('goes pending → sent (ack) → stored, matched by client_msg_id', async () => {
    const api = new FakeApi();
    const { r, ws } = await started(api, 0);
    const id = r.send('hello');
    expect(id).toBe('c-1');
    expect(ws.sends()).toEqual([{ type: 'send', content: 'hello', client_msg_id: 'c-1' }]);
    expect(r.getSnapshot().pending.map((p) => p.state)).toEqual(['sending']);
    ws.frame({ type: 'ack', client_msg_id: 'c-1' });
    expect(r.getSnapshot().pending.map((p) => p.state)).toEqual(['sent']);
    ws.frame({ type: 'message', ...msg(1, { user_id: '1', nickname: 'ann', content: 'hello', client_msg_id: 'c-1' }) });
    expect(r.getSnapshot().pending).toEqual([]);
    expect(seqs(r)).toEqual([1]);
  });

  it('queues while disconnected and sends again with the same client_msg_id after reconnecting', async () => {
    const api = new FakeApi();
    const { r, ws } = await started(api, 0);
    r.send('one'); // sent, ack lost
    ws.drop();
    r.send('two'); // not connected: queued
    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    const ws2 = FakeSocket.last();
    ws2.welcome(0);
    expect(ws2.sends().map((s) => s.client_msg_id)).toEqual(['c-1', 'c-2']);
    // The server stored "one" before the drop; its copy settles the pending one.
    ws2.frame({ type: 'message', ...msg(1, { user_id: '1', content: 'one', client_msg_id: 'c-1' }) });
    ws2.frame({ type: 'ack', client_msg_id: 'c-1' });
    ws2.frame({ type: 'ack', client_msg_id: 'c-2' });
    ws2.frame({ type: 'message', ...msg(2, { user_id: '1', content: 'two', client_msg_id: 'c-2' }) });
    expect(r.getSnapshot().pending).toEqual([]);
    expect(r.getSnapshot().messages.map((m) => m.content)).toEqual(['one', 'two']);
  });

  it('does not resend a message that was acknowledged before the drop', async () => {
    const api = new FakeApi();
    const { r, ws } = await started(api, 0);
    r.send('one');
    ws.frame({ type: 'ack', client_msg_id: 'c-1' });
    ws.drop();
    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    const ws2 = FakeSocket.last();
    ws2.welcome(1);
    expect(ws2.sends()).toEqual([]);
    expect(r.getSnapshot().pending.map((p) => p.state)).toEqual(['sent']);
    ws2.frame({ type: 'message', ...msg(1, { user_id: '1', client_msg_id: 'c-1', content: 'one' }) });
    expect(r.getSnapshot().pending).toEqual([]);
  });

  it('marks a refused message failed; retry reuses the client_msg_id; invalid content is not retryable', async () => {
    const api = new FakeApi();
    const { r, ws } = await started(api, 0);
    r.send('x');
    ws.frame({ type: 'error', code: 'rate_limited', message: 'slow down', client_msg_id: 'c-1' });
    let p = r.getSnapshot().pending[0]!;
    expect(p.state).toBe('failed');
    expect(p.retryable).toBe(true);
    r.retry('c-1');
    expect(ws.sends().map((s) => s.client_msg_id)).toEqual(['c-1', 'c-1']);
    expect(r.getSnapshot().pending[0]!.state).toBe('sending');

    r.send('y'.repeat(3000));
    ws.frame({ type: 'error', code: 'content_too_long', message: 'content is longer than 2000 characters', client_msg_id: 'c-2' });
    p = r.getSnapshot().pending[1]!;
    expect(p.state).toBe('failed');
    expect(p.retryable).toBe(false);
    expect(p.error).toMatch(/too long/);
    r.discard('c-2');
    expect(r.getSnapshot().pending.map((x) => x.client_msg_id)).toEqual(['c-1']);
  });

  it('fails a message that gets no ack in time, and keeps the ack deadline paused while offline', async () => {
    const api = new FakeApi();
    const { r, ws } = await started(api, 0);
    r.send('x');
    await vi.advanceTimersByTimeAsync(39_999);
    expect(r.getSnapshot().pending[0]!.state).toBe('sending');
    await vi.advanceTimersByTimeAsync(1);
    expect(r.getSnapshot().pending[0]!.state).toBe('failed');

    r.retry('c-1');
    ws.drop();
    await vi.advanceTimersByTimeAsync(60_000); // offline (no welcome yet on the new socket)
    expect(r.getSnapshot().pending[0]!.state).toBe('sending');
    r.close();
  });
});

describe('auth on the socket', () => {
  it('refreshes on close 4001 and reconnects at once', async () => {
    const api = new FakeApi();
    const { r, ws } = await started(api, 0);
    ws.drop(4001);
    await settle();
    expect(api.refreshes).toBe(1);
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.last().welcome(0);
    expect(r.getSnapshot().conn.kind).toBe('connected');
  });

  it('stops when the refresh is refused (the login is over)', async () => {
    const api = new FakeApi();
    api.refreshFails = new ApiError(401, 'unauthorized', 'bad refresh token');
    const { r, ws } = await started(api, 0);
    ws.drop(4001);
    await settle();
    expect(r.getSnapshot().conn.kind).toBe('failed');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.all).toHaveLength(1);
  });
});

describe('presence and typing', () => {
  it('merges the online list with events, shows typing of others for a while', async () => {
    const api = new FakeApi();
    api.clientsList = [{ user_id: '2', nickname: 'bob' }];
    const { r, ws } = await started(api, 0);
    ws.frame({ type: 'presence', event: 'join', user_id: '3', nickname: 'cid' });
    expect(r.getSnapshot().online.map((c) => c.nickname)).toEqual(['ann', 'bob', 'cid']);
    ws.frame({ type: 'presence', event: 'leave', user_id: '2', nickname: 'bob' });
    expect(r.getSnapshot().online.map((c) => c.nickname)).toEqual(['ann', 'cid']);

    ws.frame({ type: 'typing', user_id: '3', nickname: 'cid' });
    expect(r.getSnapshot().typing).toEqual(['cid']);
    await vi.advanceTimersByTimeAsync(4_001);
    expect(r.getSnapshot().typing).toEqual([]);

    ws.frame({ type: 'typing', user_id: '3', nickname: 'cid' });
    ws.frame({ type: 'message', ...msg(1, { user_id: '3', nickname: 'cid' }) });
    expect(r.getSnapshot().typing).toEqual([]);
  });

  it('throttles its own typing frames', async () => {
    const api = new FakeApi();
    const { r, ws } = await started(api, 0);
    r.typed();
    r.typed();
    await vi.advanceTimersByTimeAsync(2_000);
    r.typed();
    expect(ws.sent.filter((f) => (f as { type: string }).type === 'typing')).toHaveLength(2);
  });
});
