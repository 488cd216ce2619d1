// RoomSession is one open room: its history, its live rooms.v2 connection,
// who is online and typing, and the messages this client is sending.
//
// Invariants that keep the screen right across drops and reconnects:
// - `messages` is always a contiguous run of seqs, ascending, each once. A
//   message is shown only when every earlier seq is shown, so nothing appears
//   out of order; a seq at or below `top` is a duplicate and is dropped; a seq
//   beyond top+1 waits in `ahead` until the gap is filled (over REST).
// - Every (re)connect resumes with since_seq = top, so the server replays
//   exactly what this client has not shown yet.
// - A message being sent is "pending" until its stored copy (same
//   client_msg_id) arrives; an unacknowledged one is sent again with the same
//   client_msg_id after a reconnect, which the server never stores twice.
//
// It has no React in it: the UI subscribes and reads immutable snapshots.

import { ApiError, type Api } from './api';
import { backoffDelay, defaultBackoff, type BackoffOptions } from './backoff';
import type { ClientFrame, Message, RoomClient, ServerFrame } from './types';

export type ConnState =
  | { kind: 'connecting'; attempt: number }
  | { kind: 'connected' }
  | { kind: 'waiting'; attempt: number; retryAt: number; reason: string }
  | { kind: 'closed' }
  | { kind: 'failed'; reason: string };

export type PendingState = 'sending' | 'sent' | 'failed';

export interface Pending {
  client_msg_id: string;
  content: string;
  state: PendingState;
  /** Why it failed, for the screen. */
  error?: string;
  /** Whether sending it again can help (not for invalid or over-long content). */
  retryable: boolean;
}

export interface RoomSnapshot {
  conn: ConnState;
  /** Ascending, contiguous, once each. */
  messages: readonly Message[];
  /** Own messages not stored yet, in the order they were sent; shown after `messages`. */
  pending: readonly Pending[];
  online: readonly RoomClient[];
  /** Nicknames of the others who are typing. */
  typing: readonly string[];
  /** The first page of history is loaded. */
  ready: boolean;
  hasOlder: boolean;
  loadingOlder: boolean;
  /** Error of the last page of older history, if it failed. */
  olderError?: string;
  /** A room-wide notice (an error not tied to a message), if any. */
  notice?: string;
  me?: RoomClient;
}

/** WebSocketLike is the part of the browser WebSocket the session uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface RoomOptions {
  api: Pick<Api, 'wsTicket' | 'messages' | 'clients' | 'refresh' | 'session'>;
  roomId: string;
  /** Turns an /api path into a ws:// or wss:// URL. */
  wsUrl: (path: string) => string;
  WebSocket: WebSocketCtor;
  random?: () => number;
  backoff?: BackoffOptions;
  /** History page size. */
  pageSize?: number;
  /** How long a sent message may wait for its ack before it counts as failed. */
  ackTimeoutMs?: number;
  /** Interval of application pings; a connection silent for 2.5 intervals is dropped. */
  pingMs?: number;
  /** How long a "typing" from someone stays shown. */
  typingMs?: number;
  /** Least time between two typing frames this client sends. */
  typingSendMs?: number;
  /** How often the online list is read again (connections on a dead gateway vanish only from it). */
  clientsPollMs?: number;
  newId?: () => string;
}

type PresenceEvent = { event: 'join' | 'leave'; user_id: string; nickname: string };

export const SUBPROTOCOL = 'rooms.v2';
const OPEN = 1;

type Timer = ReturnType<typeof setTimeout>;

export class RoomSession {
  private readonly o: Required<Omit<RoomOptions, 'api' | 'roomId' | 'wsUrl' | 'WebSocket'>> &
    Pick<RoomOptions, 'api' | 'roomId' | 'wsUrl' | 'WebSocket'>;

  private conn: ConnState = { kind: 'connecting', attempt: 0 };
  private messages: Message[] = [];
  /** Highest seq shown; every seq from the oldest shown up to it is shown. */
  private top = 0;
  /** Messages received beyond top+1, waiting for the gap to close. */
  private readonly ahead = new Map<number, Message>();
  private pending: Pending[] = [];
  private readonly ackTimers = new Map<string, Timer>();
  private readonly online = new Map<string, string>();
  private readonly typing = new Map<string, { nickname: string; until: number }>();
  private typingTimer: Timer | null = null;
  private lastTypingSent = 0;
  private ready = false;
  private loadingOlder = false;
  private olderError: string | undefined;
  private notice: string | undefined;
  private noticeTimer: Timer | null = null;
  private me: RoomClient | undefined;

  private ws: WebSocketLike | null = null;
  /** Bumped for every socket; events of an older socket are ignored. */
  private gen = 0;
  private attempt = 0;
  private retryTimer: Timer | null = null;
  private pingTimer: Timer | null = null;
  private clientsTimer: Timer | null = null;
  private lastFrameAt = 0;
  private filling = false;
  /** Presence events seen while the online list is being read, replayed on top of it. */
  private presenceLog: PresenceEvent[] | null = null;
  private stopped = false;

  private snapshot: RoomSnapshot | null = null;
  private readonly listeners = new Set<() => void>();

  constructor(opts: RoomOptions) {
    this.o = {
      random: Math.random,
      backoff: defaultBackoff,
      pageSize: 50,
      ackTimeoutMs: 40_000,
      pingMs: 20_000,
      typingMs: 4_000,
      typingSendMs: 2_000,
      clientsPollMs: 30_000,
      newId: defaultId,
      ...opts,
    };
  }

  // --- public API -------------------------------------------------------------

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): RoomSnapshot => {
    if (!this.snapshot) {
      const now = Date.now();
      this.snapshot = {
        conn: this.conn,
        messages: this.messages,
        pending: this.pending,
        online: [...this.online.entries()]
          .map(([user_id, nickname]) => ({ user_id, nickname }))
          .sort((a, b) => a.nickname.localeCompare(b.nickname)),
        typing: [...this.typing.entries()]
          .filter(([id, t]) => t.until > now && id !== this.me?.user_id)
          .map(([, t]) => t.nickname)
          .sort(),
        ready: this.ready,
        hasOlder: this.hasOlder(),
        loadingOlder: this.loadingOlder,
        olderError: this.olderError,
        notice: this.notice,
        me: this.me,
      };
    }
    return this.snapshot;
  };

  /** start loads the newest page of history, then connects. */
  start(): void {
    void this.run();
  }

  /** close ends the session for good (leaving the room). */
  close(): void {
    this.stopped = true;
    this.clearTimer('retryTimer');
    this.stopHeartbeat();
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
    if (this.typingTimer) clearTimeout(this.typingTimer);
    if (this.noticeTimer) clearTimeout(this.noticeTimer);
    this.detach(1000);
    this.setConn({ kind: 'closed' });
  }

  /** reconnectNow skips the rest of a backoff wait. */
  reconnectNow(): void {
    if (this.stopped || this.conn.kind !== 'waiting') return;
    this.clearTimer('retryTimer');
    void this.run();
  }

  /** send queues a message; it goes out now if connected, else after the next welcome. */
  send(content: string): string | null {
    if (content.trim() === '') return null;
    const id = this.o.newId();
    this.pending = [...this.pending, { client_msg_id: id, content, state: 'sending', retryable: true }];
    this.transmit(id);
    this.changed();
    return id;
  }

  /** retry sends a failed message again with its client_msg_id. */
  retry(clientMsgId: string): void {
    const p = this.pending.find((x) => x.client_msg_id === clientMsgId);
    if (!p || p.state !== 'failed') return;
    this.updatePending(clientMsgId, { state: 'sending', error: undefined, retryable: true });
    this.transmit(clientMsgId);
  }

  /** discard forgets a failed message. */
  discard(clientMsgId: string): void {
    const p = this.pending.find((x) => x.client_msg_id === clientMsgId);
    if (!p || p.state !== 'failed') return;
    this.pending = this.pending.filter((x) => x.client_msg_id !== clientMsgId);
    this.changed();
  }

  /** typed tells the room this user is typing (throttled). */
  typed(): void {
    const now = Date.now();
    if (now - this.lastTypingSent < this.o.typingSendMs) return;
    if (this.sendFrame({ type: 'typing' })) this.lastTypingSent = now;
  }

  /** loadOlder prepends the page of history before the oldest shown message. */
  async loadOlder(): Promise<void> {
    if (this.loadingOlder || !this.hasOlder()) return;
    const oldest = this.messages[0]!.seq;
    this.loadingOlder = true;
    this.olderError = undefined;
    this.changed();
    try {
      const page = await this.o.api.messages(this.o.roomId, { before: oldest, limit: this.o.pageSize });
      if (this.stopped) return;
      const cur = this.messages[0]?.seq ?? oldest;
      const older = page.filter((m) => m.seq < cur).sort((a, b) => a.seq - b.seq);
      // Keep the shown run contiguous: take only the part that ends right before it.
      const run: Message[] = [];
      for (let i = older.length - 1, want = cur - 1; i >= 0 && older[i]!.seq === want; i--, want--) run.unshift(older[i]!);
      if (run.length) this.messages = [...run, ...this.messages];
    } catch (e) {
      this.olderError = e instanceof ApiError ? e.message : 'Older messages could not be loaded.';
    } finally {
      this.loadingOlder = false;
      this.changed();
    }
  }

  // --- connection ---------------------------------------------------------------

  private async run(): Promise<void> {
    if (this.stopped) return;
    this.retryTimer = null;
    this.setConn({ kind: 'connecting', attempt: this.attempt });
    try {
      if (!this.ready) await this.loadInitial();
      if (this.stopped) return;
      const ticket = await this.o.api.wsTicket();
      if (this.stopped) return;
      this.open(ticket);
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof ApiError && e.status === 404) {
        this.setConn({ kind: 'failed', reason: 'This room does not exist.' });
        return;
      }
      if (e instanceof ApiError && e.status === 401) {
        // The refresh was refused: the API client has logged out.
        this.setConn({ kind: 'failed', reason: 'Your session has ended. Log in again.' });
        return;
      }
      this.scheduleReconnect(e instanceof Error ? e.message : 'connection failed');
    }
  }

  private async loadInitial(): Promise<void> {
    const page = await this.o.api.messages(this.o.roomId, { limit: this.o.pageSize });
    if (this.ready) return;
    const sorted = [...page].sort((a, b) => a.seq - b.seq);
    // Newest run that is contiguous (the API returns one; be strict anyway).
    const run: Message[] = [];
    for (let i = sorted.length - 1; i >= 0; i--) {
      const m = sorted[i]!;
      if (run.length && m.seq !== run[0]!.seq - 1) break;
      run.unshift(m);
    }
    this.messages = run;
    this.top = run.length ? run[run.length - 1]!.seq : 0;
    this.ready = true;
    for (const m of run) this.settlePending(m);
    this.changed();
  }

  private open(ticket: string): void {
    const gen = ++this.gen;
    const q = new URLSearchParams({ ticket, since_seq: String(this.top) });
    const ws = new this.o.WebSocket(this.o.wsUrl(`/api/chat/rooms/${encodeURIComponent(this.o.roomId)}?${q}`), [SUBPROTOCOL]);
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      this.lastFrameAt = Date.now();
      let f: ServerFrame;
      try {
        f = JSON.parse(String(ev.data)) as ServerFrame;
      } catch {
        return;
      }
      this.onFrame(f);
    };
    ws.onclose = (ev) => {
      if (gen !== this.gen) return;
      this.onClose(ev.code);
    };
    ws.onerror = () => {
      // A close event always follows; it decides what to do.
    };
  }

  /** detach forgets the current socket (its late events are ignored) and closes it. */
  private detach(code: number): void {
    const ws = this.ws;
    this.ws = null;
    this.gen++;
    this.stopHeartbeat();
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = null;
      try {
        ws.close(code);
      } catch {
        // already closed
      }
    }
  }

  private onClose(code: number): void {
    this.ws = null;
    this.gen++;
    this.stopHeartbeat();
    this.pauseAckTimers();
    if (this.stopped) return;
    if (code === 4001) {
      // Access token expired or revoked: refresh, then reconnect. A refused
      // refresh means the login is over (the API client logs out).
      this.setConn({ kind: 'connecting', attempt: this.attempt });
      this.o.api.refresh().then(
        () => {
          if (this.stopped) return;
          if (this.attempt === 0) {
            this.attempt = 1; // a second 4001 in a row backs off
            void this.run();
          } else this.scheduleReconnect('session refreshed');
        },
        (e: unknown) => {
          if (this.stopped) return;
          if (e instanceof ApiError && e.status === 401) {
            this.setConn({ kind: 'failed', reason: 'Your session has ended. Log in again.' });
          } else this.scheduleReconnect('could not refresh the session');
        },
      );
      return;
    }
    this.scheduleReconnect(closeReason(code));
  }

  private scheduleReconnect(reason: string): void {
    if (this.stopped) return;
    this.clearTimer('retryTimer');
    this.attempt++;
    const delay = backoffDelay(this.attempt, this.o.random, this.o.backoff);
    this.setConn({ kind: 'waiting', attempt: this.attempt, retryAt: Date.now() + delay, reason });
    this.retryTimer = setTimeout(() => void this.run(), delay);
  }

  private onFrame(f: ServerFrame): void {
    switch (f.type) {
      case 'welcome':
        this.onWelcome(f);
        break;
      case 'message': {
        const { type: _t, ...m } = f;
        this.onMessage(m);
        break;
      }
      case 'ack':
        this.onAck(f.client_msg_id);
        break;
      case 'error':
        this.onError(f.code, f.message, f.client_msg_id);
        break;
      case 'presence':
        this.onPresence(f);
        break;
      case 'typing':
        this.onTyping(f.user_id, f.nickname);
        break;
      case 'pong':
        break;
    }
  }

  private onWelcome(f: Extract<ServerFrame, { type: 'welcome' }>): void {
    this.attempt = 0;
    this.me = { user_id: f.user_id, nickname: f.nickname };
    this.setConn({ kind: 'connected' });
    this.startHeartbeat();
    if (!f.recovered && f.last_seq > this.top) void this.fillGap(f.last_seq);
    // Everything not yet acknowledged goes (again) with its client_msg_id.
    for (const p of this.pending) if (p.state === 'sending') this.transmit(p.client_msg_id);
    void this.readClients();
  }

  private onMessage(m: Message): void {
    if (m.seq <= this.top || this.ahead.has(m.seq)) return; // seen already
    this.ahead.set(m.seq, m);
    const added: Message[] = [];
    for (let next = this.ahead.get(this.top + 1); next; next = this.ahead.get(this.top + 1)) {
      this.ahead.delete(next.seq);
      added.push(next);
      this.top = next.seq;
    }
    if (added.length) {
      this.messages = [...this.messages, ...added];
      for (const a of added) {
        this.settlePending(a);
        this.typing.delete(a.user_id);
      }
      this.changed();
    }
    if (this.ahead.size && !this.filling) {
      // The server promises no gaps; should one appear anyway, fill it from the source of truth.
      void this.fillGap(Math.min(...this.ahead.keys()) - 1);
    }
  }

  /** fillGap pages messages after `top` over REST until top reaches `target`. */
  private async fillGap(target: number): Promise<void> {
    if (this.filling) return;
    this.filling = true;
    const gen = this.gen;
    try {
      while (this.top < target && !this.stopped && gen === this.gen) {
        const page = await this.o.api.messages(this.o.roomId, { after: this.top, limit: 200 });
        if (gen !== this.gen) break;
        if (!page.length) break;
        for (const m of page.sort((a, b) => a.seq - b.seq)) this.onMessage(m);
      }
    } catch {
      // Reconnect: the resume (since_seq = top) replays the rest.
      if (!this.stopped && gen === this.gen) {
        this.detach(4000);
        this.scheduleReconnect('could not load missed messages');
      }
    } finally {
      this.filling = false;
    }
  }

  // --- sending -------------------------------------------------------------------

  private transmit(id: string): void {
    const p = this.pending.find((x) => x.client_msg_id === id);
    if (!p) return;
    if (this.sendFrame({ type: 'send', content: p.content, client_msg_id: id })) this.armAck(id);
  }

  private sendFrame(f: ClientFrame): boolean {
    if (!this.ws || this.ws.readyState !== OPEN || this.conn.kind !== 'connected') return false;
    try {
      this.ws.send(JSON.stringify(f));
      return true;
    } catch {
      return false;
    }
  }

  private armAck(id: string): void {
    const old = this.ackTimers.get(id);
    if (old) clearTimeout(old);
    this.ackTimers.set(
      id,
      setTimeout(() => {
        this.ackTimers.delete(id);
        const p = this.pending.find((x) => x.client_msg_id === id);
        if (p && p.state === 'sending') {
          this.updatePending(id, {
            state: 'failed',
            retryable: true,
            error: 'No confirmation from the server. It is safe to retry.',
          });
        }
      }, this.o.ackTimeoutMs),
    );
  }

  /** pauseAckTimers stops the ack deadlines while there is no connection (they restart on resend). */
  private pauseAckTimers(): void {
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
  }

  private onAck(id: string): void {
    const t = this.ackTimers.get(id);
    if (t) clearTimeout(t);
    this.ackTimers.delete(id);
    const p = this.pending.find((x) => x.client_msg_id === id);
    if (p && p.state !== 'sent') this.updatePending(id, { state: 'sent', error: undefined });
  }

  private onError(code: string, message: string, id?: string): void {
    if (id) {
      const t = this.ackTimers.get(id);
      if (t) clearTimeout(t);
      this.ackTimers.delete(id);
      const p = this.pending.find((x) => x.client_msg_id === id);
      if (p && p.state !== 'sent') {
        this.updatePending(id, {
          state: 'failed',
          retryable: code !== 'invalid_message' && code !== 'content_too_long',
          error: describeSendError(code, message, p.content),
        });
      }
      return;
    }
    this.setNotice(describeSendError(code, message));
  }

  /** settlePending drops the pending copy of a stored own message. */
  private settlePending(m: Message): void {
    if (!m.client_msg_id) return;
    const mine = this.me?.user_id ?? this.o.api.session()?.user_id;
    if (mine !== undefined && m.user_id !== mine) return;
    const i = this.pending.findIndex((x) => x.client_msg_id === m.client_msg_id);
    if (i < 0) return;
    const t = this.ackTimers.get(m.client_msg_id);
    if (t) clearTimeout(t);
    this.ackTimers.delete(m.client_msg_id);
    this.pending = this.pending.filter((_, j) => j !== i);
  }

  private updatePending(id: string, patch: Partial<Pending>): void {
    this.pending = this.pending.map((p) => (p.client_msg_id === id ? { ...p, ...patch } : p));
    this.changed();
  }

  // --- presence and typing ---------------------------------------------------------

  private onPresence(f: { event: 'join' | 'leave'; user_id: string; nickname: string }): void {
    this.presenceLog?.push(f);
    this.applyPresence(f);
    if (f.event === 'leave') this.typing.delete(f.user_id);
    this.changed();
  }

  private applyPresence(f: { event: 'join' | 'leave'; user_id: string; nickname: string }): void {
    if (f.event === 'join') this.online.set(f.user_id, f.nickname);
    else this.online.delete(f.user_id);
  }

  private async readClients(): Promise<void> {
    if (this.presenceLog) return;
    const gen = this.gen;
    const log: PresenceEvent[] = [];
    this.presenceLog = log;
    try {
      const list = await this.o.api.clients(this.o.roomId);
      if (gen !== this.gen || this.stopped) return;
      this.online.clear();
      for (const c of list) this.online.set(c.user_id, c.nickname);
      for (const ev of log) this.applyPresence(ev);
      if (this.me) this.online.set(this.me.user_id, this.me.nickname);
      this.changed();
    } catch {
      // Keep the list built from events; the next poll tries again.
    } finally {
      if (this.presenceLog === log) this.presenceLog = null;
    }
  }

  private onTyping(userId: string, nickname: string): void {
    if (userId === this.me?.user_id) return;
    this.typing.set(userId, { nickname, until: Date.now() + this.o.typingMs });
    this.scheduleTypingExpiry();
    this.changed();
  }

  private scheduleTypingExpiry(): void {
    if (this.typingTimer) clearTimeout(this.typingTimer);
    let next = Infinity;
    for (const t of this.typing.values()) next = Math.min(next, t.until);
    if (next === Infinity) return;
    this.typingTimer = setTimeout(() => {
      this.typingTimer = null;
      const now = Date.now();
      for (const [id, t] of this.typing) if (t.until <= now) this.typing.delete(id);
      this.changed();
      this.scheduleTypingExpiry();
    }, Math.max(0, next - Date.now()));
  }

  // --- heartbeat ---------------------------------------------------------------------

  private startHeartbeat(): void {
    this.stopHeartbeat();
    this.lastFrameAt = Date.now();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > this.o.pingMs * 2.5) {
        // Nothing heard for too long: the connection is dead without having said so.
        this.detach(4000);
        this.pauseAckTimers();
        this.scheduleReconnect('connection timed out');
        return;
      }
      this.sendFrame({ type: 'ping' });
    }, this.o.pingMs);
    this.clientsTimer = setInterval(() => void this.readClients(), this.o.clientsPollMs);
  }

  private stopHeartbeat(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.clientsTimer) clearInterval(this.clientsTimer);
    this.pingTimer = null;
    this.clientsTimer = null;
  }

  // --- state ---------------------------------------------------------------------------

  private hasOlder(): boolean {
    const first = this.messages[0];
    return this.ready && first !== undefined && first.seq > 1;
  }

  private setConn(c: ConnState): void {
    this.conn = c;
    if (c.kind === 'connected') this.notice = undefined;
    this.changed();
  }

  private setNotice(text: string): void {
    this.notice = text;
    if (this.noticeTimer) clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => {
      this.notice = undefined;
      this.changed();
    }, 6_000);
    this.changed();
  }

  private clearTimer(name: 'retryTimer'): void {
    const t = this[name];
    if (t) clearTimeout(t);
    this[name] = null;
  }

  private changed(): void {
    this.snapshot = null;
    for (const fn of this.listeners) fn();
  }
}

function closeReason(code: number): string {
  switch (code) {
    case 1001:
      return 'the server is restarting';
    case 4008:
      return 'the connection was too slow';
    case 4029:
      return 'too many messages';
    case 1009:
      return 'a message was too large';
    default:
      return 'the connection was lost';
  }
}

/** describeSendError is the text shown beside a message the server refused. */
export function describeSendError(code: string, message: string, content?: string): string {
  switch (code) {
    case 'content_too_long':
      return content === undefined
        ? 'Not sent: the message is too long.'
        : `Not sent: the message is too long (${[...content].length.toLocaleString('en')} characters). Shorten it and send it again.`;
    case 'invalid_message':
      return `Not sent: ${message}.`;
    case 'rate_limited':
      return 'Not sent: you are sending too fast. Retry in a moment.';
    case 'unavailable':
      return 'The server could not confirm this message. It is safe to retry.';
    default:
      return `Not sent: ${message}.`;
  }
}

function defaultId(): string {
  const c = globalThis.crypto;
  // randomUUID exists only in secure contexts; getRandomValues everywhere.
  if (typeof c?.randomUUID === 'function') return c.randomUUID();
  const b = new Uint8Array(16);
  c.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
