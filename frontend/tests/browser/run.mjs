// Browser tests of the Rooms app: Chromium (Debian's, driven by
// playwright-core) against a running stack.
//
//   BASE_URL     where the app is served with /api behind it (default http://127.0.0.1:8080)
//   ROOMS_STACK  the repository root, whose scripts/stack.sh and .run/pid/ are used to
//                kill a gateway and start it again (default: the parent of frontend/)
//   CHROMIUM     the browser binary (default /usr/bin/chromium)
//
// Screenshots of the main screens go to frontend/test-results/screenshots/.
// Exits non-zero on the first failed check, or on any console error of the
// app (network errors the browser itself logs are allowed only while a
// gateway is down and for the deliberately refused login).

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const frontend = path.resolve(here, '..', '..');
const BASE_URL = (process.env.BASE_URL ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
const STACK = path.resolve(process.env.ROOMS_STACK ?? path.join(frontend, '..'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.join(frontend, 'test-results', 'screenshots');
const WAIT = 20_000; // generous deadline for anything to show up
const RECOVER = 90_000; // for a killed gateway to be back and the pages to reconnect

const run = Math.random().toString(36).slice(2, 7);
const ANN = `ann_${run}`;
const BOB = `bob_${run}`;
const PASSWORD = 'correct-horse-1';

let step = '';
const log = (s) => console.log(`[browser] ${s}`);
function begin(s) {
  step = s;
  log(s);
}

// --- console errors -----------------------------------------------------------------
let networkErrorsAllowed = false;
const consoleErrors = [];
const allowedNetwork = [];
function watch(page, who) {
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    const network = /^Failed to load resource|^WebSocket connection to .* failed|net::ERR_/.test(text);
    if (network && networkErrorsAllowed) allowedNetwork.push(`${who}: ${text}`);
    else consoleErrors.push(`${who} (${step}): ${text}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${who} (${step}): uncaught ${e.message}`));
}
function allowNetworkErrors(on) {
  networkErrorsAllowed = on;
}

// --- helpers -------------------------------------------------------------------------
async function waitUntil(what, fn, timeout = WAIT) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(100);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
}

/** shown lists the stored messages on a page: [{seq, nick, text}]. */
async function shown(page) {
  return page.$$eval('[data-testid=message]', (els) => {
    let nick = '';
    return els.map((el) => {
      const n = el.querySelector('.nick');
      if (n) nick = n.textContent ?? '';
      return { seq: Number(el.getAttribute('data-seq')), nick, text: el.querySelector('[data-testid=message-text]')?.textContent ?? '' };
    });
  });
}
const pendingCount = (page) => page.locator('[data-testid=pending]').count();
const connState = (page) => page.getAttribute('[data-testid=conn-state]', 'data-state');

async function send(page, text) {
  const box = page.locator('#composer-input');
  await box.fill(text);
  await box.press('Enter');
}

async function register(page, nick) {
  await page.goto(`${BASE_URL}/`);
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  await page.getByRole('link', { name: 'Create an account' }).click();
  await page.getByRole('heading', { name: 'Create an account' }).waitFor();
  await page.getByLabel('Nickname').fill(nick);
  await page.getByLabel('Password').fill(PASSWORD);
  if (nick === ANN) await shot(page, '02-register');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Rooms' }).waitFor({ timeout: WAIT });
  await waitUntil(`${nick} signed in`, async () => (await page.textContent('[data-testid=me]')) === nick);
}

async function openRoom(page, name) {
  await page.getByRole('link', { name: new RegExp(name) }).click();
  await waitUntil(`${name} connected`, async () => (await connState(page)) === 'connected');
}

/** checkConversation asserts both pages show `want` (texts) each exactly once, the same seqs, contiguous. */
async function checkConversation(pages, want) {
  const lists = [];
  for (const p of pages) {
    const got = await waitUntil(
      'every message once on every page',
      async () => {
        const s = await shown(p);
        const mine = s.filter((m) => want.includes(m.text));
        return mine.length >= want.length && (await pendingCount(p)) === 0 ? s : false;
      },
      RECOVER,
    );
    lists.push(got);
  }
  for (const [i, s] of lists.entries()) {
    const texts = s.map((m) => m.text);
    for (const w of want) {
      const n = texts.filter((t) => t === w).length;
      if (n !== 1) throw new Error(`page ${i}: "${w}" shown ${n} times`);
    }
    for (let j = 1; j < s.length; j++) {
      if (s[j].seq !== s[j - 1].seq + 1) throw new Error(`page ${i}: seq ${s[j].seq} follows ${s[j - 1].seq}`);
    }
  }
  const key = (s) => s.map((m) => `${m.seq}:${m.text}`).join('\n');
  if (key(lists[0]) !== key(lists[1])) throw new Error(`the pages disagree:\n${key(lists[0])}\n---\n${key(lists[1])}`);
  return lists[0];
}

/** inOrder asserts each sender's messages appear in the order they were sent. */
function inOrder(list, sent) {
  const pos = new Map(list.map((m, i) => [m.text, i]));
  for (let i = 1; i < sent.length; i++) {
    if (pos.get(sent[i]) < pos.get(sent[i - 1])) throw new Error(`"${sent[i]}" shown before "${sent[i - 1]}"`);
  }
}

// --- the stack -----------------------------------------------------------------------
function stackEnv() {
  const env = { ...process.env };
  const origin = new URL(BASE_URL).origin;
  let origins = env.ALLOWED_ORIGINS;
  if (!origins) {
    const m = /^ALLOWED_ORIGINS=(.*)$/m.exec(readFileSync(path.join(STACK, 'config', 'local.env'), 'utf8'));
    origins = m ? m[1].trim() : '';
  }
  if (!origins.split(',').includes(origin)) origins = origins ? `${origins},${origin}` : origin;
  env.ALLOWED_ORIGINS = origins;
  return env;
}

function gatewayPid(name) {
  const f = path.join(STACK, '.run', 'pid', `${name}.pid`);
  if (!existsSync(f)) throw new Error(`${f} missing: is the stack up (go tool task up)?`);
  return Number(readFileSync(f, 'utf8').trim());
}

function killGateway(name) {
  const pid = gatewayPid(name);
  log(`SIGKILL ${name} (pid ${pid})`);
  process.kill(pid, 'SIGKILL');
}

function startStack() {
  return new Promise((resolve, reject) => {
    log('scripts/stack.sh start (starts what is not running)');
    const p = spawn(path.join(STACK, 'scripts', 'stack.sh'), ['start'], { cwd: STACK, env: stackEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`stack.sh start exited ${code}:\n${out}`))));
  });
}

// --- the test ------------------------------------------------------------------------
async function main() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: apt-get install chromium`);
  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  log(`app at ${BASE_URL}, stack at ${STACK}, users ${ANN} and ${BOB}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const viewport = { width: 1280, height: 800 };
    const ctxA = await browser.newContext({ viewport });
    const ctxB = await browser.newContext({ viewport });
    const a = await ctxA.newPage();
    const b = await ctxB.newPage();
    watch(a, ANN);
    watch(b, BOB);

    begin('register and log in both users');
    await a.goto(`${BASE_URL}/`);
    await a.getByRole('heading', { name: 'Log in' }).waitFor({ timeout: WAIT });
    await shot(a, '01-login');
    await register(a, ANN);
    await register(b, BOB);

    begin('create a room, both join');
    const roomName = `Team chat ${run}`;
    await a.getByLabel('New room name').fill(roomName);
    await a.getByRole('button', { name: 'Create room' }).click();
    await waitUntil('room connected', async () => (await connState(a)) === 'connected');
    await b.reload();
    await b.getByRole('link', { name: new RegExp(roomName) }).waitFor({ timeout: WAIT });
    await shot(b, '03-room-list');
    await openRoom(b, roomName);

    begin('see each other online');
    for (const [p, other] of [
      [a, BOB],
      [b, ANN],
    ]) {
      await waitUntil(`${other} online`, async () => (await p.locator('[data-testid=online-user]').allTextContents()).some((t) => t.startsWith(other)));
    }

    begin('see each other typing');
    await a.locator('#composer-input').pressSequentially('hello th', { delay: 60 });
    await waitUntil(`${ANN} typing on bob's page`, async () => (await b.textContent('[data-testid=typing]')).includes(`${ANN} is typing`));
    await shot(b, '04-typing');
    await a.locator('#composer-input').fill('');
    await b.locator('#composer-input').pressSequentially('hi ann', { delay: 60 });
    await waitUntil(`${BOB} typing on ann's page`, async () => (await a.textContent('[data-testid=typing]')).includes(`${BOB} is typing`));
    await b.locator('#composer-input').fill('');

    begin('exchange messages both ways');
    const sentA = [];
    const sentB = [];
    const all = [];
    for (let i = 1; i <= 3; i++) {
      const ta = `ann says ${i}`;
      const tb = `bob answers ${i}`;
      await send(a, ta);
      sentA.push(ta);
      all.push(ta);
      await waitUntil(`"${ta}" on bob's page`, async () => (await shown(b)).some((m) => m.text === ta));
      await send(b, tb);
      sentB.push(tb);
      all.push(tb);
      await waitUntil(`"${tb}" on ann's page`, async () => (await shown(a)).some((m) => m.text === tb));
    }
    await checkConversation([a, b], all);
    await shot(a, '05-room-desktop');

    begin('a gateway is killed mid-conversation');
    allowNetworkErrors(true);
    let dropped = [];
    for (const gw of ['gateway-1', 'gateway-2']) {
      killGateway(gw);
      // Send while the connection may be gone: these wait as pending and go on reconnect.
      for (let i = 1; i <= 2; i++) {
        const ta = `ann during outage ${gw} ${i}`;
        const tb = `bob during outage ${gw} ${i}`;
        await send(a, ta);
        await send(b, tb);
        sentA.push(ta);
        sentB.push(tb);
        all.push(ta, tb);
      }
      dropped = [];
      const end = Date.now() + 5_000;
      while (Date.now() < end && dropped.length < 2) {
        for (const [p, n] of [
          [a, ANN],
          [b, BOB],
        ]) {
          if (!dropped.includes(n) && (await connState(p)) !== 'connected') {
            dropped.push(n);
            if (dropped.length === 1) await shot(p, '06-reconnecting');
          }
        }
        await sleep(50);
      }
      await startStack();
      if (dropped.length) break;
      log(`no page was connected through ${gw}; trying the other gateway`);
    }
    if (!dropped.length) throw new Error('killing a gateway dropped no page connection');
    log(`connection dropped on: ${dropped.join(', ')}`);
    for (const p of [a, b]) await waitUntil('reconnected', async () => (await connState(p)) === 'connected', RECOVER);
    allowNetworkErrors(false);
    for (let i = 1; i <= 2; i++) {
      const ta = `ann after recovery ${i}`;
      const tb = `bob after recovery ${i}`;
      await send(a, ta);
      await send(b, tb);
      sentA.push(ta);
      sentB.push(tb);
      all.push(ta, tb);
    }
    const final = await checkConversation([a, b], all);
    inOrder(final, sentA);
    inOrder(final, sentB);
    log(`${final.length} messages, seq ${final[0].seq}..${final[final.length - 1].seq}, identical on both pages`);
    await shot(a, '07-after-recovery');

    begin('an over-long message shows a clear error');
    const long = 'x'.repeat(2001);
    await a.locator('#composer-input').fill(long);
    await waitUntil('the counter', async () => (await a.textContent('#composer-count')).includes('2,001 / 2,000'));
    await a.locator('#composer-input').press('Enter');
    const err = await waitUntil('send error', async () => {
      const t = await a.locator('[data-testid=send-error]').allTextContents();
      return t.length ? t[0] : false;
    });
    if (!/too long/.test(err)) throw new Error(`unexpected error text: ${err}`);
    await shot(a, '08-too-long');
    await a.getByRole('button', { name: 'Discard' }).click();
    await waitUntil('discarded', async () => (await pendingCount(a)) === 0);

    begin('phone-sized window');
    await a.setViewportSize({ width: 390, height: 844 });
    await sleep(200);
    await shot(a, '09-room-phone');
    await a.getByRole('button', { name: /online/ }).click();
    await shot(a, '10-room-phone-online');
    await a.setViewportSize(viewport);

    begin('scroll back loads older pages');
    const histName = `History ${run}`;
    await a.goto(`${BASE_URL}/#/`);
    await a.getByLabel('New room name').fill(histName);
    await a.getByRole('button', { name: 'Create room' }).click();
    await waitUntil('history room connected', async () => (await connState(a)) === 'connected');
    const N = 120;
    for (let i = 1; i <= N; i++) {
      await send(a, `history ${i}`);
      if (i % 10 === 0) await sleep(600); // stay under the per-user send rate
    }
    await waitUntil('all history sent', async () => (await shown(a)).length === N && (await pendingCount(a)) === 0, RECOVER);
    await b.goto(`${BASE_URL}/#/`);
    await b.reload();
    await openRoom(b, histName);
    await waitUntil('first page', async () => (await shown(b)).length === 50);
    for (let i = 0; i < 10 && (await shown(b)).length < N; i++) {
      await b.locator('.messages').evaluate((el) => (el.scrollTop = 0));
      await sleep(400);
    }
    const hist = await shown(b);
    if (hist.length !== N || hist.some((m, i) => m.seq !== i + 1 || m.text !== `history ${i + 1}`)) {
      throw new Error(`history after scrolling back: ${hist.length} messages, first ${hist[0]?.seq}`);
    }
    await b.getByText('Beginning of the room').waitFor({ timeout: WAIT });

    begin('a wrong password shows a clear error, the right one logs in');
    await b.getByRole('button', { name: 'Log out' }).click();
    await b.getByRole('heading', { name: 'Log in' }).waitFor({ timeout: WAIT });
    await b.getByLabel('Nickname').fill(BOB);
    await b.getByLabel('Password').fill('wrong-password');
    allowNetworkErrors(true); // the browser logs the 401 of the refused login
    await b.getByRole('button', { name: 'Log in' }).click();
    const authErr = await waitUntil('login error', async () => {
      const t = await b.locator('[data-testid=auth-error]').allTextContents();
      return t.length ? t[0] : false;
    });
    allowNetworkErrors(false);
    if (authErr !== 'Wrong nickname or password.') throw new Error(`unexpected login error: ${authErr}`);
    await shot(b, '11-wrong-password');
    await b.getByLabel('Password').fill(PASSWORD);
    await b.getByRole('button', { name: 'Log in' }).click();
    await b.getByRole('heading', { name: 'Rooms' }).waitFor({ timeout: WAIT });

    if (consoleErrors.length) throw new Error(`console errors:\n  ${consoleErrors.join('\n  ')}`);
    log(`browser network errors while a gateway was down or a login was refused (allowed): ${allowedNetwork.length}`);
    log(`PASS (screenshots in ${path.relative(process.cwd(), SHOTS) || SHOTS})`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`[browser] FAIL in step "${step}": ${e instanceof Error ? e.stack : e}`);
  if (consoleErrors.length) console.error(`[browser] console errors:\n  ${consoleErrors.join('\n  ')}`);
  process.exit(1);
});
