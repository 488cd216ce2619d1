// Test doubles for the client's own protocol logic: a scripted WebSocket and
// an in-memory room history behind the Api surface RoomSession uses.

import { ApiError, type Session } from '../../src/lib/api';
import type { RoomOptions, WebSocketLike } from '../../src/lib/room';
import type { Message, RoomClient } from '../../src/lib/types';

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly sent: unknown[] = [];
  closedWith: number | undefined;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this);
  }

  static last(): FakeSocket {
    const s = FakeSocket.all[FakeSocket.all.length - 1];
    if (!s) throw new Error('no socket opened');
    return s;
  }

  get query(): URLSearchParams {
    return new URL(this.url).searchParams;
  }

  /** sends lists the `send` frames this socket carried. */
  sends(): Array<{ content: string; client_msg_id: string }> {
    return this.sent.filter((f): f is { type: 'send'; content: string; client_msg_id: string } => (f as { type: string }).type === 'send');
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }

  close(code?: number): void {
    this.closedWith = code;
    this.readyState = 3;
  }

  // Server side.
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  frame(f: object): void {
    this.onmessage?.({ data: JSON.stringify(f) });
  }

  welcome(lastSeq: number, recovered = true, user = { user_id: '1', nickname: 'ann' }): void {
    this.open();
    this.frame({ type: 'welcome', room_id: '7', ...user, last_seq: lastSeq, recovered });
  }

  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
}

export function msg(seq: number, over: Partial<Message> = {}): Message {
  return {
    id: `id-${seq}`,
    seq,
    room_id: '7',
    user_id: '2',
    nickname: 'bob',
    content: `m${seq}`,
    time_created: '2026-01-01T00:00:00.000000Z',
    ...over,
  };
}

/** FakeApi serves a room's history from memory, like the REST API would. */
export class FakeApi {
  history: Message[] = [];
  clientsList: RoomClient[] = [];
  tickets = 0;
  refreshes = 0;
  refreshFails: ApiError | null = null;
  messagesFail: Error | null = null;
  calls: Array<{ after?: number; before?: number; limit?: number }> = [];

  session(): Session | null {
    return { user_id: '1', nickname: 'ann', access_token: 'a', refresh_token: 'r' };
  }

  async wsTicket(): Promise<string> {
    this.tickets++;
    return `t${this.tickets}`;
  }

  async refresh(): Promise<Session> {
    this.refreshes++;
    if (this.refreshFails) throw this.refreshFails;
    return this.session()!;
  }

  async clients(): Promise<RoomClient[]> {
    return this.clientsList;
  }

  async messages(_id: string, q: { after?: number; before?: number; limit?: number } = {}): Promise<Message[]> {
    this.calls.push(q);
    if (this.messagesFail) throw this.messagesFail;
    const limit = q.limit ?? 50;
    const h = [...this.history].sort((a, b) => a.seq - b.seq);
    if (q.after !== undefined) return h.filter((m) => m.seq > q.after!).slice(0, limit);
    const upto = q.before !== undefined ? h.filter((m) => m.seq < q.before!) : h;
    return upto.slice(Math.max(0, upto.length - limit));
  }
}

export function options(api: FakeApi, over: Partial<RoomOptions> = {}): RoomOptions {
  let n = 0;
  return {
    api,
    roomId: '7',
    wsUrl: (p) => `ws://test${p}`,
    WebSocket: FakeSocket,
    random: () => 0.5,
    newId: () => `c-${++n}`,
    ...over,
  };
}
