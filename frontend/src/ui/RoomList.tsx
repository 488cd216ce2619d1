import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { describeError, type Api } from '../lib/api';
import type { Room } from '../lib/types';
import { navigate } from './route';

export function RoomList({ api }: { api: Api }) {
  const [rooms, setRooms] = useState<Room[] | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [createError, setCreateError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = useCallback(async () => {
    try {
      setRooms(await api.listRooms());
      setLoadError(null);
    } catch (e) {
      setLoadError(describeError(e));
    }
  }, [api]);

  useEffect(() => {
    void load();
    const t = setInterval(() => void load(), 15_000);
    return () => clearInterval(t);
  }, [load]);

  async function create(e: FormEvent) {
    e.preventDefault();
    const n = name.trim();
    if (!n) {
      setCreateError('Give the room a name.');
      return;
    }
    if ([...n].length > 50) {
      setCreateError('Room names are at most 50 characters.');
      return;
    }
    setBusy(true);
    setCreateError(null);
    try {
      const r = await api.createRoom(n);
      setName('');
      navigate({ name: 'room', id: r.id });
    } catch (err) {
      setCreateError(describeError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="page rooms-page">
      <section className="card">
        <h1>Rooms</h1>
        <form className="create" onSubmit={create} noValidate>
          <label htmlFor="room-name" className="sr-only">
            New room name
          </label>
          <input
            id="room-name"
            placeholder="New room name"
            value={name}
            maxLength={200}
            onChange={(e) => setName(e.target.value)}
            aria-invalid={createError ? true : undefined}
          />
          <button className="btn primary" type="submit" disabled={busy}>
            Create room
          </button>
        </form>
        {createError && (
          <p className="banner error" role="alert">
            {createError}
          </p>
        )}
        {loadError && (
          <p className="banner error" role="alert">
            {loadError}{' '}
            <button type="button" className="btn link" onClick={() => void load()}>
              Try again
            </button>
          </p>
        )}
        {rooms === null && !loadError && <p className="muted">Loading rooms…</p>}
        {rooms && rooms.length === 0 && <p className="muted empty">No rooms yet. Create the first one above.</p>}
        {rooms && rooms.length > 0 && (
          <ul className="room-list" data-testid="room-list">
            {[...rooms].reverse().map((r) => (
              <li key={r.id}>
                <a href={`#/rooms/${encodeURIComponent(r.id)}`}>
                  <span className="room-hash" aria-hidden="true">
                    #
                  </span>
                  <span className="room-name">{r.name}</span>
                  <span className="muted small">created {formatDate(r.time_created)}</span>
                </a>
              </li>
            ))}
          </ul>
        )}
      </section>
    </main>
  );
}

function formatDate(t: string): string {
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}
