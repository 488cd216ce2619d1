import { useEffect, useMemo, useState } from 'react';
import { Api, localStore, webLock, type Session } from '../lib/api';
import { AuthScreen } from './AuthScreen';
import { RoomList } from './RoomList';
import { RoomView } from './RoomView';
import { navigate, useRoute } from './route';

export function App() {
  const [session, setSession] = useState<Session | null>(() => localStore().load());
  const [notice, setNotice] = useState<string | null>(null);
  const api = useMemo(
    () =>
      new Api({
        store: localStore(),
        lock: webLock,
        onLogout: (reason) => {
          setSession(null);
          if (reason === 'expired') setNotice('Your session has ended. Please log in again.');
          navigate({ name: 'login' }, true);
        },
      }),
    [],
  );
  const route = useRoute();

  // Another tab logging in or out changes the stored session.
  useEffect(() => {
    const on = (e: StorageEvent) => {
      if (e.key === 'rooms.session') setSession(localStore().load());
    };
    window.addEventListener('storage', on);
    return () => window.removeEventListener('storage', on);
  }, []);

  useEffect(() => {
    if (!session && route.name !== 'login' && route.name !== 'register') navigate({ name: 'login' }, true);
    if (session && (route.name === 'login' || route.name === 'register')) navigate({ name: 'rooms' }, true);
  }, [session, route.name]);

  useEffect(() => {
    const title = route.name === 'login' ? 'Log in' : route.name === 'register' ? 'Create account' : route.name === 'rooms' ? 'Rooms' : null;
    if (title) document.title = title === 'Rooms' ? 'Rooms' : `${title} · Rooms`;
  }, [route.name]);

  if (!session || route.name === 'login' || route.name === 'register') {
    return (
      <AuthScreen
        api={api}
        mode={route.name === 'register' ? 'register' : 'login'}
        notice={notice}
        onLoggedIn={(s) => {
          setNotice(null);
          setSession(s);
          navigate({ name: 'rooms' }, true);
        }}
      />
    );
  }

  return (
    <div className="shell">
      <header className="topbar">
        <a className="brand" href="#/">
          <span className="logo" aria-hidden="true" />
          Rooms
        </a>
        <div className="who">
          <span className="muted">Signed in as</span> <strong data-testid="me">{session.nickname}</strong>
          <button type="button" className="btn ghost" onClick={() => void api.logout()}>
            Log out
          </button>
        </div>
      </header>
      {route.name === 'room' ? <RoomView key={route.id} api={api} roomId={route.id} /> : <RoomList api={api} />}
    </div>
  );
}
