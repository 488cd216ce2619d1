// chat: ROOMS rooms × CLIENTS clients, each client a user holding one
// rooms.v2 connection and sending every SEND_MS milliseconds (published rate
// = ROOMS × CLIENTS × 1000 / SEND_MS). Run: k6 run loadtest/k6/chat.js
// (env BASE_URL, ROOMS, CLIENTS, SEND_MS, DURATION). k6's sends are closed
// loop per connection, so this is not the open-loop method of
// docs/performance.md; use it for a second opinion, not for the record.
import ws from 'k6/ws';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { WS_BASE, login, createRoom, content, sentAt } from './common.js';

const ROOMS = Number(__ENV.ROOMS || 10);
const CLIENTS = Number(__ENV.CLIENTS || 10);
const SEND_MS = Number(__ENV.SEND_MS || 1000);
const DURATION = __ENV.DURATION || '30s';

const e2e = new Trend('rooms_e2e_latency', true);
const ackLatency = new Trend('rooms_ack_latency', true);
const delivered = new Counter('rooms_delivered');

export const options = {
  scenarios: {
    chat: { executor: 'per-vu-iterations', vus: ROOMS * CLIENTS, iterations: 1, maxDuration: '10m' },
  },
  thresholds: { rooms_e2e_latency: ['p(99)<100'] },
};

export function setup() {
  const owner = login('k6_', 0);
  const rooms = [];
  for (let r = 0; r < ROOMS; r++) rooms.push(createRoom(owner.access_token, `k6 chat ${Date.now()} ${r}`));
  return { rooms };
}

export default function (data) {
  const i = __VU - 1;
  const user = login('k6_', i);
  const room = data.rooms[i % ROOMS];
  const url = `${WS_BASE}/api/chat/rooms/${room}?access_token=${encodeURIComponent('Bearer ' + user.access_token)}`;
  let n = 0;
  const pending = {};
  const res = ws.connect(url, { headers: {}, subprotocols: ['rooms.v2'] }, (socket) => {
    socket.on('message', (raw) => {
      const f = JSON.parse(raw);
      if (f.type === 'message') {
        const t = sentAt(f.content);
        if (t) { e2e.add(Date.now() - t); delivered.add(1); }
      } else if (f.type === 'ack' && pending[f.client_msg_id]) {
        ackLatency.add(Date.now() - pending[f.client_msg_id]);
        delete pending[f.client_msg_id];
      }
    });
    socket.setInterval(() => {
      const id = `${i}.${n}`;
      pending[id] = Date.now();
      socket.send(JSON.stringify({ type: 'send', content: content(i, n), client_msg_id: id }));
      n++;
    }, SEND_MS);
    socket.setTimeout(() => socket.close(), parseDuration(DURATION));
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}

function parseDuration(d) {
  const m = /^(\d+)(ms|s|m)$/.exec(d);
  if (!m) return 30000;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60000 }[m[2]];
}
