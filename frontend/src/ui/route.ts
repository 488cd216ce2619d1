// Hash routes: #/login, #/register, #/ (rooms), #/rooms/<id>.
import { useEffect, useState } from 'react';

export type Route = { name: 'login' } | { name: 'register' } | { name: 'rooms' } | { name: 'room'; id: string };

export function parseRoute(hash: string): Route {
  const h = hash.replace(/^#/, '');
  if (h === '/login') return { name: 'login' };
  if (h === '/register') return { name: 'register' };
  const m = /^\/rooms\/([^/]+)$/.exec(h);
  if (m) return { name: 'room', id: decodeURIComponent(m[1]!) };
  return { name: 'rooms' };
}

export function href(r: Route): string {
  switch (r.name) {
    case 'room':
      return `#/rooms/${encodeURIComponent(r.id)}`;
    case 'rooms':
      return '#/';
    default:
      return `#/${r.name}`;
  }
}

export function navigate(r: Route, replace = false): void {
  if (replace) location.replace(href(r));
  else location.hash = href(r);
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}
