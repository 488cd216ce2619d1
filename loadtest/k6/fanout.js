// fanout: one room with CLIENTS clients; together they publish RATE
// messages per second (each client sends every CLIENTS/RATE seconds), and
// every client receives every message. Run: k6 run loadtest/k6/fanout.js
// (env BASE_URL, CLIENTS, RATE, DURATION). Closed loop per connection: a
// second opinion next to roomsbench's open-loop fanout workload.
import ws from 'k6/ws';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { WS_BASE, login, createRoom, content, sentAt } from './common.js';

const CLIENTS = Number(__ENV.CLIENTS || 1000);
const RATE = Number(__ENV.RATE || 20);
const DURATION = __ENV.DURATION || '30s';

const e2e = new Trend('rooms_e2e_latency', true);
const delivered = new Counter('rooms_delivered');

export const options = {
  scenarios: {
    fanout: { executor: 'per-vu-iterations', vus: CLIENTS, iterations: 1, maxDuration: '10m' },
  },
  thresholds: { rooms_e2e_latency: ['p(99)<50'] },
};

export function setup() {
  const owner = login('k6_', 0);
  return { room: createRoom(owner.access_token, `k6 fanout ${Date.now()}`) };
}

export default function (data) {
  const i = __VU - 1;
  const user = login('k6_', i);
  const url = `${WS_BASE}/api/chat/rooms/${data.room}?access_token=${encodeURIComponent('Bearer ' + user.access_token)}`;
  const everyMs = (CLIENTS / RATE) * 1000;
  let n = 0;
  const res = ws.connect(url, { subprotocols: ['rooms.v2'] }, (socket) => {
    socket.on('message', (raw) => {
      const f = JSON.parse(raw);
      if (f.type === 'message') {
        const t = sentAt(f.content);
        if (t) { e2e.add(Date.now() - t); delivered.add(1); }
      }
    });
    // Spread the first sends over one period so the room sees a steady rate.
    socket.setTimeout(() => {
      socket.setInterval(() => {
        socket.send(JSON.stringify({ type: 'send', content: content(i, n), client_msg_id: `${i}.${n}` }));
        n++;
      }, everyMs);
    }, (i / CLIENTS) * everyMs);
    socket.setTimeout(() => socket.close(), parseDuration(DURATION));
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}

function parseDuration(d) {
  const m = /^(\d+)(ms|s|m)$/.exec(d);
  if (!m) return 30000;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60000 }[m[2]];
}
