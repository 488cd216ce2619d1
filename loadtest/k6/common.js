// Shared helpers of the k6 scripts: users, rooms and the rooms.v2 payload.
// These scripts are for users who have k6 (https://k6.io); nothing in Rooms
// depends on them. The Go load generator (loadtest/cmd/roomsbench) is the
// benchmark of record: it checks every delivery and reads server CPU/memory.
import http from 'k6/http';

export const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8081';
export const WS_BASE = BASE.replace(/^http/, 'ws');
const JSON_HEADERS = { 'Content-Type': 'application/json' };

// login logs user i in, registering it first when it does not exist. Every
// call spends a password hash on the server, and login/register are limited
// per client IP (AUTH_RATE_LIMIT_IP): start the stack with
// AUTH_RATE_LIMIT_IP=0 AUTH_RATE_LIMIT=0 for large user counts.
export function login(prefix, i) {
  const creds = JSON.stringify({ nickname: `${prefix}${i}`, password: `k6-password-${i}` });
  let res = http.post(`${BASE}/api/user/login`, creds, { headers: JSON_HEADERS });
  if (res.status === 401) {
    http.post(`${BASE}/api/user/register`, creds, { headers: JSON_HEADERS });
    res = http.post(`${BASE}/api/user/login`, creds, { headers: JSON_HEADERS });
  }
  if (res.status !== 200) {
    throw new Error(`login ${prefix}${i}: ${res.status} ${res.body}`);
  }
  return res.json();
}

export function createRoom(token, name) {
  const res = http.post(`${BASE}/api/chat/rooms`, JSON.stringify({ name }), {
    headers: Object.assign({ Authorization: `Bearer ${token}` }, JSON_HEADERS),
  });
  if (res.status !== 200) {
    throw new Error(`create room: ${res.status} ${res.body}`);
  }
  return res.json().id;
}

// content carries the send time so receivers can measure latency.
export function content(sender, n) {
  return `k6|${Date.now()}|${sender}|${n}|`.padEnd(100, 'x');
}

// sentAt extracts the send time of a content written by content().
export function sentAt(c) {
  if (!c || !c.startsWith('k6|')) return 0;
  return Number(c.split('|')[1]);
}
