// Real-browser end-to-end test of `duplex serve`: headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) loads the page the server serves
// itself at http://127.0.0.1:8080/ and talks WebSocket to the same port.
//
// Run through e2e/browser/run.sh (installs Chromium and node_modules if needed).
// Environment:
//   DUPLEX_BIN   server binary to start (default: <repo>/target/release/duplex,
//                or $CARGO_TARGET_DIR/release/duplex); it is run as
//                `$DUPLEX_BIN serve --bind 127.0.0.1:8080`.
//   CHROMIUM     browser executable (default /usr/bin/chromium).
//
// Once more over TLS: a second `duplex serve --tls-cert --tls-key` on a free port
// with a certificate made at run time (the `test_certs` example, rcgen), and a
// second Chromium with --ignore-certificate-errors loads https://127.0.0.1:PORT/;
// the page's own UI connects to its default wss:// URL and gets the echo. Chromium
// speaks HTTP/2 to it (ALPN h2), and the WebSocket travels as an RFC 8441 stream
// of the page's own connection: checked from the page (nextHopProtocol) and from
// the server's side (its per-HTTP-version WebSocket count in /metrics).
//
// The browser client /duplex.js (crates/duplex-hub/js), through the page's topic panel:
// subscribe, publish and receive with offsets, presence with a second page; then
// against `duplex serve --redis` on a redis-server started here, two nodes A and
// B: A is killed, messages are published on B while the page cannot receive
// them, A starts again on the same port, and the page must resume with every
// offset exactly once, in order, `recovered: true`; killed again while more is
// published than the history keeps, and once more with Redis flushed, the
// page's gap callback must say what was lost.
//
// Uses node's built-in test runner, so the output ends with its pass/fail summary.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { connect as netConnect, createServer as netServer } from 'node:net';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
const BIN = process.env.DUPLEX_BIN || join(TARGET, 'release', 'duplex');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const HOST = '127.0.0.1';
const PORT = 8080; // the tutorial's script connects to ws://localhost:8080
const ORIGIN = `http://${HOST}:${PORT}`;
const READY_LINE = `listening on ws://${HOST}:${PORT}`;
const OUT_DIR = join(ROOT, 'target', 'browser');
const SEED_DOC = resolve(ROOT, '..', 'shared', 'seed', 'websocket-seed.md');
const CERTS_BIN = join(TARGET, 'release', 'examples', 'test_certs');
const CLIENT_JS = join(ROOT, 'crates', 'duplex-hub', 'js', 'duplex.js');
const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let server = null;        // { proc, exited: Promise<{code, signal}>, stderr: string[] }
let browser = null;
let page = null;
const consoleMessages = []; // every console message of the page, from the start: {type, text}
const pageErrors = [];      // console errors and uncaught exceptions

// ---------------------------------------------------------------- helpers

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// Resolves true if something accepts TCP connections on host:port.
function portTaken(host, port) {
  return new Promise((resolveTaken) => {
    const sock = netConnect({ host, port });
    const done = (taken) => { sock.destroy(); resolveTaken(taken); };
    sock.setTimeout(1000, () => done(true));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function killServer() {
  if (server && server.proc.exitCode === null && server.proc.signalCode === null) {
    try { server.proc.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killServer);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killServer(); process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)); });
}

async function startServer() {
  if (!existsSync(BIN)) {
    throw new Error(`server binary not found: ${BIN} (build it with \`cargo build --release -p duplex-cli\`, or set DUPLEX_BIN)`);
  }
  for (const host of ['127.0.0.1', '::1']) {
    if (await portTaken(host, PORT)) {
      throw new Error(`port ${PORT} is already in use on ${host}: the tutorial's script needs ws://localhost:${PORT}; ` +
        `stop whatever listens there (e.g. \`ss -ltnp | grep :${PORT}\`) and run again`);
    }
  }
  // setpriv --pdeathsig: the kernel kills the server if this process dies in a way
  // that skips the exit handlers (e.g. node's test harness on EPIPE). It execs, so
  // proc.pid is the server's own pid.
  const argv = [BIN, 'serve', '--bind', `${HOST}:${PORT}`];
  const cmd = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', ...argv] : argv;
  const proc = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr = [];
  const stdout = [];
  const exited = new Promise((res) => proc.once('exit', (code, signal) => res({ code, signal })));
  server = { proc, exited, stderr, stdout };
  createInterface({ input: proc.stderr }).on('line', (l) => { stderr.push(l); if (stderr.length > 200) stderr.shift(); });
  const lines = createInterface({ input: proc.stdout });
  const ready = new Promise((res, rej) => {
    lines.on('line', (l) => { stdout.push(l); if (l.trim() === READY_LINE) res(); });
    proc.once('error', rej);
    exited.then(({ code, signal }) => rej(new Error(
      `server exited (code ${code}, signal ${signal}) before printing "${READY_LINE}"\n` +
      `stdout:\n${stdout.join('\n')}\nstderr:\n${stderr.slice(-30).join('\n')}`)));
  });
  try {
    await withTimeout(ready, 15000, `waiting for "${READY_LINE}" from ${BIN}`);
  } catch (e) {
    killServer();
    throw e;
  }
}

// Round-trips a value through a fresh WebSocket opened inside the page.
// `body` runs in the page with (ws, arg) once the socket is open and must
// return a promise; the socket is closed afterwards.
function inPage(body, arg) {
  return page.evaluate(async ({ src, arg }) => {
    const fn = new Function('ws', 'arg', `return (${src})(ws, arg);`);
    const ws = new WebSocket(`ws://${location.host}/`);
    ws.binaryType = 'arraybuffer';
    await new Promise((res, rej) => {
      ws.onopen = res;
      ws.onerror = () => rej(new Error('WebSocket error before open'));
      ws.onclose = (e) => rej(new Error(`closed before open: ${e.code}`));
    });
    ws.onerror = ws.onclose = null;
    try {
      return await fn(ws, arg);
    } finally {
      if (ws.readyState === WebSocket.OPEN) ws.close();
    }
  }, { src: body.toString(), arg });
}

// ---------------------------------------------------------------- setup

before(async () => {
  mkdirSync(OUT_DIR, { recursive: true });
  await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  page = await context.newPage();
  page.on('console', (msg) => {
    const entry = { type: msg.type(), text: msg.text() };
    consoleMessages.push(entry);
    if (entry.type === 'error') pageErrors.push(`console.error: ${entry.text}`);
  });
  page.on('pageerror', (err) => pageErrors.push(`uncaught: ${err.message}`));
  const resp = await page.goto(`${ORIGIN}/`, { waitUntil: 'load' });
  assert.equal(resp.status(), 200, 'GET / should answer 200');
}, { timeout: 60000 });

after(async () => {
  try { if (browser) await browser.close(); } catch { /* ignore */ }
  killServer();
  if (server) {
    const log = [`$ ${BIN} serve --bind ${HOST}:${PORT}`, '--- stdout', ...server.stdout, '--- stderr', ...server.stderr];
    try { writeFileSync(join(OUT_DIR, 'server.log'), log.join('\n') + '\n'); } catch { /* ignore */ }
  }
});

// ---------------------------------------------------------------- checks

test('GET / serves the page as UTF-8 HTML with the tutorial script unchanged', async () => {
  const resp = await page.request.get(`${ORIGIN}/`);
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()['content-type'] || '', /^text\/html/i);
  const seedInPage = await page.evaluate(() => document.getElementById('seed').textContent);
  assert.ok(seedInPage.includes('var ws = new WebSocket("ws://localhost:8080");'), 'seed script present');
  assert.ok(seedInPage.includes('//申请一个WebSocket对象'), 'Chinese comments intact (page decoded as UTF-8)');
  assert.equal(await page.getAttribute('#seed-status', 'data-ran'), 'true', 'served over http on 8080: the script runs');
  if (existsSync(SEED_DOC)) {
    const blocks = [...readFileSync(SEED_DOC, 'utf8').matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.equal(seedInPage.replace(/^\n/, ''), blocks[1], 'script differs from the second code block of websocket-seed.md');
  }
});

test("the tutorial's script logs open, then the echoed hello", async () => {
  const logs = () => consoleMessages.filter((m) => m.type === 'log').map((m) => m.text);
  await withTimeout((async () => {
    while (!logs().includes('hello')) await new Promise((r) => setTimeout(r, 25));
  })(), 10000, `console "open" then "hello"; console so far: ${JSON.stringify(consoleMessages)}`);
  const seq = logs();
  const iOpen = seq.indexOf('open');
  const iHello = seq.indexOf('hello');
  assert.ok(iOpen >= 0 && iOpen < iHello, `expected "open" before "hello", got ${JSON.stringify(seq)}`);
  assert.deepEqual(seq.slice(0, 2), ['open', 'hello']);
});

test('an ArrayBuffer and a Blob of 64 KiB random bytes round trip byte for byte', async () => {
  const r = await inPage(async (ws) => {
    const rand = () => crypto.getRandomValues(new Uint8Array(65536));
    const next = () => new Promise((res) => { ws.onmessage = (e) => res(e.data); });
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    const a = rand();
    let p = next(); ws.send(a.buffer);
    const ea = await p;
    const b = rand();
    p = next(); ws.send(new Blob([b]));
    const eb = await p;
    return {
      aIsBuffer: ea instanceof ArrayBuffer, aLen: ea.byteLength, aSame: same(a, new Uint8Array(ea)),
      bIsBuffer: eb instanceof ArrayBuffer, bLen: eb.byteLength, bSame: same(b, new Uint8Array(eb)),
    };
  });
  assert.deepEqual(r, { aIsBuffer: true, aLen: 65536, aSame: true, bIsBuffer: true, bLen: 65536, bSame: true });
});

test('a 1 MiB text message (mixed 1–4 byte UTF-8) round trips', async () => {
  const r = await inPage(async (ws) => {
    const enc = new TextEncoder();
    const pool = ['a', 'b', 'z', ' ', '0', '~', 'é', 'ж', '€', '中', '😀'].map((c) => [c, enc.encode(c).length]);
    const parts = [];
    let bytes = 0;
    while (bytes < 1048576 - 4) {
      const [c, n] = pool[(Math.random() * pool.length) | 0];
      parts.push(c);
      bytes += n;
    }
    while (bytes < 1048576) { parts.push('x'); bytes++; }
    const text = parts.join('');
    const echoed = await new Promise((res) => { ws.onmessage = (e) => res(e.data); ws.send(text); });
    return { sentBytes: enc.encode(text).length, type: typeof echoed, same: echoed === text };
  });
  assert.deepEqual(r, { sentBytes: 1048576, type: 'string', same: true });
});

test('close(4000, "bye") gives a clean close event with code 4000 and reason "bye"', async () => {
  const r = await inPage(async (ws) => {
    const ev = await new Promise((res) => { ws.onclose = res; ws.close(4000, 'bye'); });
    return { code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
  });
  assert.deepEqual(r, { code: 4000, reason: 'bye', wasClean: true });
});

test('drive the UI', async (t) => {
  // Record every value the readyState display shows.
  await page.evaluate(() => {
    window.__states = [];
    const el = document.getElementById('ready-state');
    new MutationObserver(() => window.__states.push(el.getAttribute('data-state')))
      .observe(el, { attributes: true, attributeFilter: ['data-state'] });
  });
  const states = () => page.evaluate(() => window.__states.splice(0));
  const waitState = (s) => page.waitForSelector(`#ready-state[data-state="${s}"]`, { timeout: 10000 });
  const logEntry = (sel, text) => page.locator(`#log li${sel}`, text ? { hasText: text } : undefined).last();

  await t.test('default URL is ws://<page host>/', async () => {
    assert.equal(await page.inputValue('#url'), `ws://${HOST}:${PORT}/`);
  });

  await t.test('Connect: readyState display goes 0 → 1', async () => {
    await page.click('#connect');
    await waitState('1');
    assert.deepEqual(await states(), ['0', '1']);
    assert.match(await page.textContent('#ready-state'), /1\s+OPEN/);
    await logEntry('[data-kind="open"]').waitFor({ timeout: 5000 });
    assert.match(await page.textContent('#buffered'), /^\d+ B$/);
  });

  await t.test('Send: the echoed text appears in the log', async () => {
    const msg = `hello from the UI ${Date.now()}`;
    await page.fill('#text', msg);
    await page.click('#send');
    const entry = logEntry('[data-kind="message"][data-type="text"]', msg);
    await entry.waitFor({ timeout: 5000 });
  });

  await t.test('Send as binary: the echoed bytes appear in the log as binary', async () => {
    const msg = 'bytes: héllo ✓';
    await page.fill('#text', msg);
    await page.click('#send-binary');
    const entry = logEntry(`[data-kind="message"][data-type="binary"][data-size="${Buffer.byteLength(msg)}"]`, msg);
    await entry.waitFor({ timeout: 5000 });
  });

  await t.test('extensions display shows permessage-deflate', async () => {
    const ext = (await page.textContent('#extensions')).trim();
    assert.ok(ext.length > 0, 'extensions display is empty');
    assert.ok(ext.includes('permessage-deflate'), `negotiated extensions: ${JSON.stringify(ext)}`);
  });

  await t.test('a 256 KiB highly compressible text message round trips', async () => {
    const big = 'duplex says hello, over and over. '.repeat(8192).slice(0, 262144);
    await page.fill('#text', big);
    await page.click('#send');
    await logEntry(`[data-kind="message"][data-type="text"][data-size="262144"]`).waitFor({ timeout: 10000 });
    // and exactly, on a socket of its own
    const r = await inPage(async (ws, text) => {
      const echoed = await new Promise((res) => { ws.onmessage = (e) => res(e.data); ws.send(text); });
      return { same: echoed === text, len: echoed.length };
    }, big);
    assert.deepEqual(r, { same: true, len: 262144 });
    await page.fill('#text', 'hello');
  });

  await t.test('Close (code 4001, reason "ui done"): readyState display goes 2 → 3', async () => {
    await states();
    await page.fill('#code', '4001');
    await page.fill('#reason', 'ui done');
    await page.click('#close');
    await waitState('3');
    assert.deepEqual(await states(), ['2', '3']);
    const entry = logEntry('[data-kind="close"]');
    await entry.waitFor({ timeout: 5000 });
    assert.equal(await entry.getAttribute('data-code'), '4001');
    assert.equal(await entry.getAttribute('data-reason'), 'ui done');
    assert.equal(await entry.getAttribute('data-was-clean'), 'true');
  });

  await t.test('full-page screenshot saved to target/browser/page.png', async () => {
    const file = join(OUT_DIR, 'page.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(existsSync(file));
  });
});

test('GET /duplex.js serves the browser client, as in crates/duplex-hub/js', async () => {
  const resp = await page.request.get(`${ORIGIN}/duplex.js`);
  assert.equal(resp.status(), 200);
  assert.equal(resp.headers()['content-type'], 'text/javascript; charset=utf-8');
  assert.equal(resp.headers()['cache-control'], 'no-cache');
  assert.equal(await resp.text(), readFileSync(CLIENT_JS, 'utf8'));
  const again = await page.request.get(`${ORIGIN}/duplex.js`, { headers: { 'if-none-match': resp.headers().etag } });
  assert.equal(again.status(), 304);
});

test('duplex.js with delta: true rebuilds every state from Fossil deltas in Chromium; the frames on the wire are deltas', async () => {
  const topic = `delta-${Date.now()}`;
  const got = await page.evaluate(async (topic) => {
    const { Client } = await import('/duplex.js');
    const states = Array.from({ length: 15 }, (_, i) => JSON.stringify({
      seq: i, note: 'état 你好 €',
      board: Array.from({ length: 30 }, (_, k) => ({ sym: `S${k}`, px: 100 + ((k * 7 + (k % 5 === i % 5 ? i : 0)) % 90) })),
    }));
    // A raw duplex.v1 socket beside it, to see what the server sends.
    const raw = new WebSocket(`ws://${location.host}/topics`, 'duplex.v1');
    const frames = [];
    raw.onmessage = (e) => frames.push(JSON.parse(e.data));
    await new Promise((r) => { raw.onopen = r; });
    raw.send(JSON.stringify({ op: 'subscribe', id: 1, topic, delta: 'fossil' }));
    const client = new Client('/topics');
    const seen = [];
    await client.subscribe(topic, { delta: true, onMessage: (m) => seen.push(m.data) }).ready;
    while (!frames.some((f) => f.type === 'subscribed')) await new Promise((r) => setTimeout(r, 10));
    for (const state of states) await client.publish(topic, state);
    const deadline = Date.now() + 10000;
    while ((seen.length < states.length || frames.filter((f) => f.type === 'message').length < states.length) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    client.close();
    raw.close();
    const messages = frames.filter((f) => f.type === 'message');
    return {
      same: JSON.stringify(seen) === JSON.stringify(states),
      count: seen.length,
      kinds: messages.map((f) => (f.delta !== undefined ? 'delta' : 'data')),
      deltaBytes: messages.slice(1).reduce((n, f) => n + new TextEncoder().encode(f.delta ?? f.data).length, 0),
      wholeBytes: states.slice(1).reduce((n, s) => n + new TextEncoder().encode(s).length, 0),
    };
  }, topic);
  assert.equal(got.count, 15);
  assert.ok(got.same, 'every state rebuilt as published');
  assert.deepEqual(got.kinds, ['data', ...Array(14).fill('delta')]);
  assert.ok(got.deltaBytes * 4 < got.wholeBytes, `${got.deltaBytes} bytes of deltas for ${got.wholeBytes}`);
});

// Offsets of the messages the page's topic panel showed for `topic`, in order.
function panelOffsets(p, topic) {
  return p.evaluate((t) => [...document.querySelectorAll(`#topic-log li[data-kind="message"][data-topic="${t}"]`)]
    .map((li) => Number(li.getAttribute('data-offset'))), topic);
}

async function waitOffsets(p, topic, want, ms, what) {
  const deadline = Date.now() + ms;
  let got = [];
  while (Date.now() < deadline) {
    got = await panelOffsets(p, topic);
    if (got.length >= want.length) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(got, want, what);
}

async function panelSubscribe(p, topic) {
  await p.fill('#topic', topic);
  await p.click('#subscribe');
  await p.waitForSelector(`#topic-log li[data-kind="subscribed"][data-topic="${topic}"]`, { timeout: 10000 });
  await p.waitForSelector('#topic-state[data-state="connected"]', { timeout: 10000 });
}

test('the topic panel subscribes, publishes and receives with offsets; presence counts a second page', async () => {
  const topic = `panel-${Date.now()}`;
  await panelSubscribe(page, topic);
  assert.equal(await page.getAttribute('#topic-sub-state', 'data-state'), 'subscribed');
  await page.waitForSelector('#presence-count[data-count="1"]', { timeout: 5000 });
  for (let i = 1; i <= 3; i++) {
    await page.fill('#pub-text', `panel message ${i}`);
    await page.click('#publish');
    await page.waitForSelector(`#topic-log li[data-kind="published"][data-offset="${i}"]`, { timeout: 5000 });
  }
  await waitOffsets(page, topic, [1, 2, 3], 5000, 'the three messages, each once, with offsets 1..3');
  assert.match(await page.textContent(`#topic-log li[data-kind="message"][data-offset="2"]`), /panel message 2/);
  assert.match(await page.textContent('#topic-offset'), / · 3$/);

  // A second page (a second client) subscribing with presence: both count 2.
  const other = await page.context().newPage();
  try {
    await other.goto(`${ORIGIN}/`, { waitUntil: 'load' });
    await panelSubscribe(other, topic);
    await other.waitForSelector('#presence-count[data-count="2"]', { timeout: 5000 });
    await page.waitForSelector('#presence-count[data-count="2"]', { timeout: 5000 });
    await page.waitForSelector('#topic-log li[data-kind="join"]', { timeout: 5000 });
    await other.click('#unsubscribe');
    await page.waitForSelector('#presence-count[data-count="1"]', { timeout: 5000 });
  } finally {
    await other.close();
  }
  await page.click('#unsubscribe');
  // Closed for good: when the server stops at the end, nothing reconnects.
  await page.evaluate(() => window.duplexPanel.client.close());
  await page.waitForSelector('#topic-state[data-state="disconnected"]', { timeout: 5000 });
});

// ---------------------------------------------------------------- resume across a restart

function freePort() {
  return new Promise((res, rej) => {
    const srv = netServer();
    srv.once('error', rej);
    srv.listen(0, HOST, () => { const { port } = srv.address(); srv.close(() => res(port)); });
  });
}

// Spawns argv (killed with this process), resolving { proc, exited, out } once a
// line of stdout matches `ready`, with the match.
async function spawnReady(argv, ready, what) {
  const cmd = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', ...argv] : argv;
  const proc = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => { try { proc.kill('SIGKILL'); } catch { /* already gone */ } };
  process.on('exit', kill);
  const out = [];
  const exited = new Promise((res) => proc.once('exit', (code, signal) => res({ code, signal })));
  createInterface({ input: proc.stderr }).on('line', (l) => { out.push(l); if (out.length > 300) out.shift(); });
  const match = await withTimeout(new Promise((res, rej) => {
    createInterface({ input: proc.stdout }).on('line', (l) => {
      out.push(l);
      const m = ready.exec(l);
      if (m) res(m);
    });
    proc.once('error', rej);
    exited.then(({ code, signal }) => rej(new Error(`${what} exited (${code}, ${signal}):\n${out.slice(-30).join('\n')}`)));
  }), 15000, `${what}: waiting for ${ready}`).catch((e) => { kill(); throw e; });
  return { proc, exited, out, match, kill };
}

async function startRedis() {
  const port = await freePort();
  return spawnReady([REDIS_SERVER, '--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no'],
    /Ready to accept connections/, 'redis-server').then((r) => ({ ...r, port }));
}

// One command to Redis in its protocol (RESP), answered with its first line.
function redisCommand(port, ...args) {
  return new Promise((res, rej) => {
    const sock = netConnect({ host: HOST, port });
    sock.once('error', rej);
    sock.once('data', (d) => { sock.destroy(); res(d.toString().split('\r\n')[0]); });
    sock.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''));
  });
}

const HISTORY = 30; // messages a topic retains, on both nodes

async function startNode(port, redisPort) {
  const node = await spawnReady([BIN, 'serve', '--bind', `${HOST}:${port}`, '--redis', `redis://${HOST}:${redisPort}/`,
    '--history-size', String(HISTORY)],
    /^listening on ws:\/\/[^:]+:(\d+)$/, `duplex serve --redis (port ${port})`);
  return { ...node, port: Number(node.match[1]) };
}

async function stopNode(node) {
  node.kill();
  await node.exited;
}

test('the browser client resumes after its server is killed and restarted with Redis: every offset once, in order; a trimmed or lost history calls onGap', async () => {
  const redis = await startRedis();
  let a = await startNode(0, redis.port);
  const b = await startNode(0, redis.port);
  const resumeBrowser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
  const logs = [];
  let p = null;
  try {
    p = await (await resumeBrowser.newContext()).newPage();
    const errors = [];
    p.on('console', (m) => { logs.push(`${m.type()}: ${m.text()}`); if (m.type() === 'error') errors.push(m.text()); });
    p.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
    await p.goto(`http://${HOST}:${a.port}/`, { waitUntil: 'load' });
    // Not on 8080: the tutorial's script is not run, and the page says so.
    assert.equal(await p.getAttribute('#seed-status', 'data-ran'), 'false');
    assert.match(await p.textContent('#seed-status'), /Not run here/);

    const topic = `resume-${Date.now()}`;
    const post = async (node, text) => {
      const r = await fetch(`http://${HOST}:${node.port}/topics/${topic}`, { method: 'POST', body: text });
      const body = await r.text();
      assert.equal(r.status, 200, body);
      return JSON.parse(body);
    };
    await panelSubscribe(p, topic);
    for (let i = 1; i <= 5; i++) await post(b, `before ${i}`); // through Redis, from the other node
    await waitOffsets(p, topic, [1, 2, 3, 4, 5], 10000, 'the first five, live');

    // A dies: the page is disconnected, and what B publishes now it cannot receive.
    await stopNode(a);
    await p.waitForSelector('#topic-state[data-state="disconnected"]', { timeout: 10000 });
    const missed = [];
    for (let i = 6; i <= 25; i++) missed.push((await post(b, `while down ${i}`)).offset);
    assert.deepEqual(missed, Array.from({ length: 20 }, (_, i) => i + 6), 'offsets assigned through Redis');
    assert.deepEqual(await panelOffsets(p, topic), [1, 2, 3, 4, 5], 'nothing arrives while A is down');

    // A again, on the same port: the client reconnects on its own (backoff) and resumes.
    const t0 = Date.now();
    a = await startNode(a.port, redis.port);
    await p.waitForSelector('#topic-log li[data-kind="subscribed"][data-resubscribed="true"]', { timeout: 15000 });
    const reconnectMs = Date.now() - t0;
    const all = Array.from({ length: 25 }, (_, i) => i + 1);
    await waitOffsets(p, topic, all, 10000, 'every offset exactly once, in order');
    const resub = p.locator('#topic-log li[data-kind="subscribed"][data-resubscribed="true"]').last();
    assert.equal(await resub.getAttribute('data-recovered'), 'true');
    assert.equal(await p.locator('#topic-log li[data-kind="gap"]').count(), 0, 'no gap');
    await post(b, 'after');
    await waitOffsets(p, topic, [...all, 26], 10000, 'live again after the resume');
    console.log(`# resume: reconnected and resubscribed ${reconnectMs} ms after A started again`);

    // More published while A is down than the history keeps: the page is told
    // (same epoch, not a reset), then gets what is retained, in order.
    await stopNode(a);
    await p.waitForSelector('#topic-state[data-state="disconnected"]', { timeout: 10000 });
    for (let i = 27; i <= 66; i++) await post(b, `too many ${i}`);
    a = await startNode(a.port, redis.port);
    const trimmed = p.locator('#topic-log li[data-kind="gap"]').first();
    await trimmed.waitFor({ timeout: 15000 });
    assert.equal(await trimmed.getAttribute('data-reset'), 'false', 'the same epoch');
    assert.equal(await trimmed.getAttribute('data-from'), '26');
    const retained = Array.from({ length: HISTORY }, (_, i) => 66 - HISTORY + 1 + i);
    await waitOffsets(p, topic, [...all, 26, ...retained], 10000, 'the retained messages after the gap, once, in order');

    // The history is lost (Redis flushed while A is down): the page is told.
    await stopNode(a);
    await p.waitForSelector('#topic-state[data-state="disconnected"]', { timeout: 10000 });
    assert.equal(await redisCommand(redis.port, 'FLUSHALL'), '+OK');
    a = await startNode(a.port, redis.port);
    const gap = p.locator('#topic-log li[data-kind="gap"]').nth(1);
    await gap.waitFor({ timeout: 15000 });
    assert.equal(await gap.getAttribute('data-reset'), 'true', 'a new epoch');
    assert.equal(await gap.getAttribute('data-from'), '66');
    assert.equal(await p.getAttribute('#topic-sub-state', 'data-state'), 'subscribed');
    const epochs = await p.evaluate((t) => [...document.querySelectorAll(`#topic-log li[data-kind="message"][data-topic="${t}"]`)]
      .map((li) => li.getAttribute('data-epoch')), topic);
    const newEpoch = await gap.getAttribute('data-epoch');
    assert.ok(!epochs.includes(newEpoch), 'no message of the new epoch yet');
    await post(b, 'first of the new epoch');
    await p.waitForSelector(`#topic-log li[data-kind="message"][data-epoch="${newEpoch}"][data-offset="1"]`, { timeout: 10000 });

    await p.screenshot({ path: join(OUT_DIR, 'page-resume.png'), fullPage: true });
    // While a server is down the browser itself logs each refused connection;
    // nothing else may be an error.
    const unexpected = errors.filter((e) => !/^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/topics' failed/.test(e));
    assert.deepEqual(unexpected, []);
  } finally {
    if (p) {
      const panel = await p.evaluate(() => [...document.querySelectorAll('#topic-log li')]
        .map((li) => li.textContent.replace(/\s+/g, ' '))).catch((e) => [`(no panel: ${e.message})`]);
      const presence = await p.textContent('#presence-count').catch(() => '?');
      logs.push(`--- topic panel (presence: ${presence})`, ...panel);
    }
    await resumeBrowser.close().catch(() => {});
    for (const n of [a, b]) n.kill();
    redis.kill();
    writeFileSync(join(OUT_DIR, 'resume.log'),
      ['--- page console', ...logs, '--- node A', ...a.out, '--- node B', ...b.out, '--- redis', ...redis.out].join('\n') + '\n');
  }
});

// A CA and a certificate for 127.0.0.1/localhost in `dir`, made by the
// `test_certs` example (built by the release build, else through cargo).
function makeCerts(dir) {
  mkdirSync(dir, { recursive: true });
  if (existsSync(CERTS_BIN)) {
    execFileSync(CERTS_BIN, [dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  } else {
    execFileSync('cargo', ['run', '-q', '-p', 'duplex-ws', '--example', 'test_certs', '--', dir],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
}

// `duplex serve` with TLS on a free port; resolves { proc, addr, stderr } once it
// prints `listening on wss://ADDR`.
async function startTlsServer({ cert, key }) {
  const argv = [BIN, 'serve', '--bind', `${HOST}:0`, '--tls-cert', cert, '--tls-key', key];
  const cmd = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', ...argv] : argv;
  const proc = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  process.on('exit', () => { try { proc.kill('SIGKILL'); } catch { /* already gone */ } });
  const stderr = [];
  createInterface({ input: proc.stderr }).on('line', (l) => stderr.push(l));
  const addr = await withTimeout(new Promise((res, rej) => {
    createInterface({ input: proc.stdout }).on('line', (l) => {
      const m = /^listening on wss:\/\/(\S+)$/.exec(l.trim());
      if (m) res(m[1]);
    });
    proc.once('error', rej);
    proc.once('exit', (code) => rej(new Error(`TLS server exited (${code}): ${stderr.join('\n')}`)));
  }), 15000, 'waiting for "listening on wss://..."');
  return { proc, addr, stderr };
}

test('with tokens, duplex.js sends its token as the subprotocol bearer.TOKEN (not in the URL) and Chromium takes the answer', async () => {
  const secret = 'browser-test-secret-browser-test-secret';
  const node = await spawnReady([BIN, 'serve', '--bind', `${HOST}:0`, '--token-secret', secret],
    /^listening on ws:\/\/[^:]+:(\d+)$/, 'duplex serve --token-secret');
  const tokenBrowser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
  try {
    const mint = (args) => execFileSync(BIN, ['token', '--secret', secret, '--sub', 'page', ...args]).toString().trim();
    const token = mint(['--subscribe', 'tok', '--publish', 'tok', '--ttl', '5m']);
    const p = await (await tokenBrowser.newContext()).newPage();
    const urls = [];
    p.on('websocket', (ws) => urls.push(ws.url()));
    await p.goto(`http://${HOST}:${node.match[1]}/`, { waitUntil: 'load' });
    const got = await p.evaluate(async (token) => {
      const { Client } = await import('/duplex.js');
      const client = new Client('/topics', { token });
      const seen = [];
      const sub = client.subscribe('tok', { onMessage: (m) => seen.push(m.data) });
      await sub.ready;
      const ack = await client.publish('tok', 'with a token');
      while (seen.length < 1) await new Promise((r) => setTimeout(r, 20));
      let refused = null;
      try { await client.subscribe('other', {}).ready; } catch (e) { refused = e.code; }
      client.close();
      return { seen, offset: ack.offset, refused };
    }, token);
    assert.deepEqual(got.seen, ['with a token']);
    assert.equal(got.offset, 1);
    assert.equal(got.refused, 'forbidden', 'the claims are the token\'s');
    assert.ok(urls.length >= 1 && urls.every((u) => !u.includes(token) && !u.includes('token=')), urls.join(' '));
    assert.ok(!node.out.join('\n').includes(token), 'no token in the log');
  } finally {
    await tokenBrowser.close();
    node.kill();
    await node.exited;
  }
});

test('over wss:// and HTTP/2: the page served over https:// connects with its own UI on the same connection and gets the echo; its topic panel works too', async () => {
  const tls = await startTlsServer(makeCerts(join(OUT_DIR, 'tls')));
  const tlsBrowser = await chromium.launch({
    executablePath: CHROMIUM, args: [...LAUNCH_ARGS, '--ignore-certificate-errors'],
  });
  try {
    const p = await (await tlsBrowser.newContext({ viewport: { width: 1200, height: 900 } })).newPage();
    const resp = await p.goto(`https://${tls.addr}/`, { waitUntil: 'load' });
    assert.equal(resp.status(), 200, 'GET / over https:// should answer 200');
    assert.equal(await p.evaluate(() => location.protocol), 'https:');
    assert.equal(await p.inputValue('#url'), `wss://${tls.addr}/`, 'default URL built from location');
    assert.equal(await p.getAttribute('#seed-status', 'data-ran'), 'false', 'over https the tutorial script is not run');
    await p.click('#connect');
    await p.waitForSelector('#ready-state[data-state="1"]', { timeout: 10000 });
    const msg = `hello over wss ${Date.now()}`;
    await p.fill('#text', msg);
    await p.click('#send');
    await p.locator('#log li[data-kind="message"][data-type="text"]', { hasText: msg }).last()
      .waitFor({ timeout: 5000 });
    assert.match((await p.textContent('#extensions')).trim(), /permessage-deflate/);
    // RFC 8441: the page came over HTTP/2, and its WebSocket is a stream of
    // that same connection. The server says so: while it is open, /metrics
    // (fetched on that connection too) counts one WebSocket over HTTP/2 and
    // none over HTTP/1.1.
    assert.equal(await p.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');
    const metrics = await p.evaluate(async () => (await fetch('/metrics')).text());
    assert.match(metrics, /^duplex_websockets_open\{http="2"\} 1$/m, metrics);
    assert.match(metrics, /^duplex_websockets_open\{http="1\.1"\} 0$/m, metrics);
    assert.equal(await p.evaluate(() => performance.getEntriesByName(new URL('/metrics', location.href).href)[0].nextHopProtocol), 'h2');
    // The topic panel too: duplex.v1 over an HTTP/2 stream.
    const topic = `wss-${Date.now()}`;
    await panelSubscribe(p, topic);
    await p.click('#publish');
    await waitOffsets(p, topic, [1], 5000, 'the panel over wss:// and HTTP/2');
    await p.evaluate(() => window.duplexPanel.client.close());
    await p.fill('#code', '1000');
    await p.fill('#reason', 'wss done');
    await p.click('#close');
    await p.waitForSelector('#ready-state[data-state="3"]', { timeout: 10000 });
    const closed = p.locator('#log li[data-kind="close"]').last();
    assert.equal(await closed.getAttribute('data-code'), '1000');
    assert.equal(await closed.getAttribute('data-was-clean'), 'true');
    await p.screenshot({ path: join(OUT_DIR, 'page-wss.png'), fullPage: true });
  } finally {
    await tlsBrowser.close().catch(() => {});
    tls.proc.kill('SIGTERM');
    writeFileSync(join(OUT_DIR, 'server-wss.log'), tls.stderr.join('\n') + '\n');
  }
  assert.ok(!tls.stderr.some((l) => l.includes('panicked')), tls.stderr.join('\n'));
});

// Last: it stops the server.
test('SIGTERM: the server closes open connections with 1001 and exits', async () => {
  await page.evaluate(() => new Promise((res, rej) => {
    const ws = new WebSocket(`ws://${location.host}/`);
    window.__goingAway = new Promise((done) => { ws.onclose = (e) => done({ code: e.code, reason: e.reason, wasClean: e.wasClean }); });
    ws.onopen = () => res();
    ws.onerror = () => rej(new Error('WebSocket error before open'));
  }));
  server.proc.kill('SIGTERM');
  const ev = await withTimeout(page.evaluate(() => window.__goingAway), 10000, 'close event after SIGTERM');
  assert.equal(ev.code, 1001, `close event: ${JSON.stringify(ev)}`);
  assert.equal(ev.wasClean, true, `close event: ${JSON.stringify(ev)}`);
  const { code, signal } = await withTimeout(server.exited, 10000, 'server exit after SIGTERM');
  assert.equal(signal, null, 'server should exit on its own, not die of the signal');
  assert.equal(code, 0, 'server exit code after SIGTERM');
});

test('no console errors or uncaught exceptions in the page during the whole run', async () => {
  await new Promise((r) => setTimeout(r, 200)); // let late events arrive
  assert.deepEqual(pageErrors, []);
});
