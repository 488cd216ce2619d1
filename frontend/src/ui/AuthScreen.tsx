import { useEffect, useRef, useState, type FormEvent } from 'react';
import { describeError, type Api, type Session } from '../lib/api';

interface Props {
  api: Api;
  mode: 'login' | 'register';
  notice: string | null;
  onLoggedIn: (s: Session) => void;
}

const NICK_RE = /^[\p{L}\p{N}_.-]{3,50}$/u;

export function AuthScreen({ api, mode, notice, onLoggedIn }: Props) {
  const [nickname, setNickname] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const nickRef = useRef<HTMLInputElement>(null);
  const register = mode === 'register';

  useEffect(() => {
    setError(null);
    nickRef.current?.focus();
  }, [mode]);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    const nick = nickname.trim();
    if (register) {
      if (!NICK_RE.test(nick)) {
        setError('Nickname: 3–50 letters, digits, “_”, “-” or “.”.');
        return;
      }
      if (password.length < 8 || password.length > 128) {
        setError('Password: 8–128 characters.');
        return;
      }
    } else if (!nick || !password) {
      setError('Enter your nickname and password.');
      return;
    }
    setBusy(true);
    try {
      if (register) await api.register(nick, password);
      const s = await api.login(nick, password);
      onLoggedIn(s);
    } catch (err) {
      setError(describeError(err));
      setBusy(false);
    }
  }

  return (
    <main className="auth">
      <div className="card auth-card">
        <div className="brand big">
          <span className="logo" aria-hidden="true" />
          Rooms
        </div>
        <h1>{register ? 'Create an account' : 'Log in'}</h1>
        {notice && !register && (
          <p className="banner info" role="status">
            {notice}
          </p>
        )}
        <form onSubmit={submit} noValidate>
          <label htmlFor="nickname">Nickname</label>
          <input
            id="nickname"
            ref={nickRef}
            name="nickname"
            autoComplete="username"
            autoCapitalize="none"
            spellCheck={false}
            value={nickname}
            onChange={(e) => setNickname(e.target.value)}
            aria-describedby={register ? 'nick-help' : undefined}
          />
          {register && (
            <p id="nick-help" className="help">
              3–50 characters: letters, digits, “_”, “-”, “.”
            </p>
          )}
          <label htmlFor="password">Password</label>
          <input
            id="password"
            name="password"
            type="password"
            autoComplete={register ? 'new-password' : 'current-password'}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            aria-describedby={register ? 'pw-help' : undefined}
          />
          {register && (
            <p id="pw-help" className="help">
              At least 8 characters
            </p>
          )}
          {error && (
            <p className="banner error" role="alert" data-testid="auth-error">
              {error}
            </p>
          )}
          <button className="btn primary wide" type="submit" disabled={busy}>
            {busy ? (register ? 'Creating account…' : 'Logging in…') : register ? 'Create account' : 'Log in'}
          </button>
        </form>
        <p className="switch">
          {register ? (
            <>
              Already have an account? <a href="#/login">Log in</a>
            </>
          ) : (
            <>
              New here? <a href="#/register">Create an account</a>
            </>
          )}
        </p>
      </div>
    </main>
  );
}
