import { useEffect, useLayoutEffect, useRef, useState, useSyncExternalStore, type KeyboardEvent } from 'react';
import type { Api } from '../lib/api';
import { RoomSession, type ConnState, type Pending, type RoomSnapshot, type WebSocketCtor } from '../lib/room';
import type { Message, Room } from '../lib/types';

/** MAX_CONTENT mirrors the server's default limit; the server has the last word. */
const MAX_CONTENT = 2000;
/** Above this the frame could exceed the server's 16 KiB frame limit: never sent. */
const HARD_LIMIT = 4000;

function wsUrl(path: string): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

export function RoomView({ api, roomId }: { api: Api; roomId: string }) {
  const [session, setSession] = useState<RoomSession | null>(null);
  const [room, setRoom] = useState<Room | null>(null);

  useEffect(() => {
    const s = new RoomSession({ api, roomId, wsUrl, WebSocket: WebSocket as unknown as WebSocketCtor });
    s.start();
    setSession(s);
    return () => s.close();
  }, [api, roomId]);

  useEffect(() => {
    let live = true;
    api.getRoom(roomId).then(
      (r) => {
        if (live) setRoom(r);
      },
      () => {
        // The session shows why the room cannot be opened.
      },
    );
    return () => {
      live = false;
    };
  }, [api, roomId]);

  useEffect(() => {
    document.title = room ? `#${room.name} · Rooms` : 'Rooms';
  }, [room]);

  if (!session) return null;
  return <RoomBody session={session} room={room} roomId={roomId} />;
}

function RoomBody({ session, room, roomId }: { session: RoomSession; room: Room | null; roomId: string }) {
  const snap = useSyncExternalStore(session.subscribe, session.getSnapshot);
  const [showPeople, setShowPeople] = useState(false);

  return (
    <main className="room">
      <div className="room-head">
        <a className="btn ghost back" href="#/" aria-label="Back to rooms">
          ← <span className="hide-sm">Rooms</span>
        </a>
        <h1 className="room-title" title={room?.name}>
          <span className="room-hash" aria-hidden="true">
            #
          </span>
          {room?.name ?? `room ${roomId}`}
        </h1>
        <ConnBadge conn={snap.conn} onRetry={() => session.reconnectNow()} />
        <button
          type="button"
          className="btn ghost people-toggle"
          aria-expanded={showPeople}
          aria-controls="people"
          onClick={() => setShowPeople((v) => !v)}
        >
          {snap.online.length} online
        </button>
      </div>
      <div className="room-body">
        <section className="chat" aria-label="Conversation">
          <MessageList session={session} snap={snap} />
          <TypingLine names={snap.typing} />
          {snap.notice && (
            <p className="banner warn" role="status">
              {snap.notice}
            </p>
          )}
          <Composer session={session} disabled={snap.conn.kind === 'failed' || snap.conn.kind === 'closed'} />
        </section>
        <aside id="people" className={`people ${showPeople ? 'open' : ''}`} aria-label="Who is online">
          <h2>
            Online <span className="count">{snap.online.length}</span>
          </h2>
          <ul data-testid="online">
            {snap.online.map((u) => (
              <li key={u.user_id} data-testid="online-user">
                <span className="dot" aria-hidden="true" />
                {u.nickname}
                {u.user_id === snap.me?.user_id && <span className="muted"> (you)</span>}
              </li>
            ))}
          </ul>
        </aside>
      </div>
    </main>
  );
}

function ConnBadge({ conn, onRetry }: { conn: ConnState; onRetry: () => void }) {
  const [, tick] = useState(0);
  useEffect(() => {
    if (conn.kind !== 'waiting') return;
    const t = setInterval(() => tick((n) => n + 1), 500);
    return () => clearInterval(t);
  }, [conn]);
  let text: string;
  let cls: string;
  switch (conn.kind) {
    case 'connected':
      text = 'Connected';
      cls = 'ok';
      break;
    case 'connecting':
      text = conn.attempt > 0 ? 'Reconnecting…' : 'Connecting…';
      cls = 'busy';
      break;
    case 'waiting': {
      const s = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
      text = `Offline: ${conn.reason}. Retrying${s > 0 ? ` in ${s} s` : '…'}`;
      cls = 'bad';
      break;
    }
    case 'failed':
      text = conn.reason;
      cls = 'bad';
      break;
    case 'closed':
      text = 'Closed';
      cls = 'busy';
      break;
  }
  return (
    <div className={`conn ${cls}`} role="status" aria-live="polite" data-testid="conn-state" data-state={conn.kind}>
      <span className="dot" aria-hidden="true" />
      <span className="conn-text">{text}</span>
      {conn.kind === 'waiting' && (
        <button type="button" className="btn link" onClick={onRetry}>
          Retry now
        </button>
      )}
    </div>
  );
}

function MessageList({ session, snap }: { session: RoomSession; snap: RoomSnapshot }) {
  const ref = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const prev = useRef({ first: 0, height: 0 });

  // Keep the view where the reader is: at the bottom it follows new messages;
  // when older ones are prepended, what was on screen stays in place.
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const first = snap.messages[0]?.seq ?? 0;
    if (prev.current.first && first && first < prev.current.first) {
      el.scrollTop += el.scrollHeight - prev.current.height;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
    prev.current = { first, height: el.scrollHeight };
  }, [snap.messages, snap.pending, snap.ready]);

  function onScroll() {
    const el = ref.current;
    if (!el) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 120 && snap.hasOlder && !snap.loadingOlder && !snap.olderError) void session.loadOlder();
  }

  return (
    <div className="messages" ref={ref} onScroll={onScroll} tabIndex={0} aria-label="Messages">
      <div className="history-top">
        {snap.loadingOlder && <span className="muted">Loading older messages…</span>}
        {!snap.loadingOlder && snap.hasOlder && (
          <button type="button" className="btn link" onClick={() => void session.loadOlder()}>
            Load older messages
          </button>
        )}
        {snap.olderError && <span className="error-text">{snap.olderError}</span>}
        {snap.ready && !snap.hasOlder && snap.messages.length > 0 && <span className="muted small">Beginning of the room</span>}
      </div>
      {!snap.ready && <p className="muted center">Loading messages…</p>}
      {snap.ready && snap.messages.length === 0 && snap.pending.length === 0 && (
        <p className="muted center empty">No messages yet. Say hello!</p>
      )}
      <ol className="msg-list" role="log" aria-live="polite" aria-relevant="additions" data-testid="messages">
        {snap.messages.map((m, i) => (
          <MessageItem key={m.seq} m={m} mine={m.user_id === snap.me?.user_id} prev={snap.messages[i - 1]} />
        ))}
        {snap.pending.map((p) => (
          <PendingItem key={p.client_msg_id} p={p} session={session} nickname={snap.me?.nickname ?? 'you'} />
        ))}
      </ol>
    </div>
  );
}

function MessageItem({ m, mine, prev }: { m: Message; mine: boolean; prev?: Message }) {
  const continued = prev && prev.user_id === m.user_id && Date.parse(m.time_created) - Date.parse(prev.time_created) < 5 * 60_000;
  return (
    <li className={`msg ${mine ? 'mine' : ''} ${continued ? 'cont' : ''}`} data-testid="message" data-seq={m.seq}>
      {!continued && (
        <div className="msg-meta">
          <span className="nick">{m.nickname}</span>
          <time dateTime={m.time_created}>{formatTime(m.time_created)}</time>
        </div>
      )}
      <div className="msg-text" data-testid="message-text">
        {m.content}
      </div>
    </li>
  );
}

function PendingItem({ p, session, nickname }: { p: Pending; session: RoomSession; nickname: string }) {
  const status = p.state === 'sending' ? 'Sending…' : p.state === 'sent' ? 'Sent' : 'Not sent';
  return (
    <li className={`msg mine pending ${p.state}`} data-testid="pending" data-state={p.state}>
      <div className="msg-meta">
        <span className="nick">{nickname}</span>
        <span className={`status ${p.state}`}>{status}</span>
      </div>
      <div className="msg-text" data-testid="message-text">
        {p.content.length > 600 ? p.content.slice(0, 600) + '…' : p.content}
      </div>
      {p.state === 'failed' && (
        <div className="failed-row">
          <span className="error-text" role="alert" data-testid="send-error">
            {p.error}
          </span>
          {p.retryable && (
            <button type="button" className="btn small" onClick={() => session.retry(p.client_msg_id)}>
              Retry
            </button>
          )}
          <button type="button" className="btn small ghost" onClick={() => session.discard(p.client_msg_id)}>
            Discard
          </button>
        </div>
      )}
    </li>
  );
}

function TypingLine({ names }: { names: readonly string[] }) {
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  return (
    <div className="typing" data-testid="typing" aria-live="polite">
      {text}
    </div>
  );
}

function Composer({ session, disabled }: { session: RoomSession; disabled: boolean }) {
  const [text, setText] = useState('');
  const [error, setError] = useState<string | null>(null);
  const ref = useRef<HTMLTextAreaElement>(null);
  const len = [...text].length;

  useEffect(() => {
    ref.current?.focus();
  }, []);

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, 160)}px`;
  }, [text]);

  function submit() {
    if (text.trim() === '') return;
    if (len > HARD_LIMIT) {
      setError(`This message is far too long (${len.toLocaleString('en')} characters); the limit is ${MAX_CONTENT.toLocaleString('en')}.`);
      return;
    }
    session.send(text);
    setText('');
    setError(null);
  }

  function onKey(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      submit();
    }
  }

  return (
    <form
      className="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <label htmlFor="composer-input" className="sr-only">
        Message
      </label>
      <textarea
        id="composer-input"
        ref={ref}
        rows={1}
        placeholder="Write a message…"
        title="Enter sends, Shift+Enter starts a new line"
        value={text}
        disabled={disabled}
        aria-describedby="composer-count"
        onChange={(e) => {
          setText(e.target.value);
          setError(null);
          if (e.target.value.trim()) session.typed();
        }}
        onKeyDown={onKey}
      />
      <button className="btn primary" type="submit" disabled={disabled || text.trim() === ''}>
        Send
      </button>
      <div className="composer-foot">
        {error && (
          <span className="error-text" role="alert" data-testid="composer-error">
            {error}
          </span>
        )}
        <span id="composer-count" className={`count ${len > MAX_CONTENT ? 'over' : ''}`} aria-live="polite">
          {len > MAX_CONTENT * 0.9 ? `${len.toLocaleString('en')} / ${MAX_CONTENT.toLocaleString('en')}` : ''}
        </span>
      </div>
    </form>
  );
}

function formatTime(t: string): string {
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return '';
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay
    ? d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
