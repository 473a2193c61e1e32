// Unit tests of duplex.js against an in-process fake of a duplex.v1 server
// (the `WebSocket` option): resume from the last offset, no duplicates, gaps,
// requests across a drop, the dead-connection timer, backoff and the offline
// pause. The real server is exercised by e2e/browser/browser.test.mjs.
//
//   node --test crates/duplex-hub/js/test/

import { test, mock } from "node:test";
import assert from "node:assert/strict";
import { createDelta, applyDelta as referenceApply } from "fossil-delta";
import { Client, DuplexError, toBase64, fromBase64, applyDelta } from "../duplex.js";

const tick = () => new Promise((r) => setImmediate(r));
async function until(cond, what, ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await tick();
  }
}

// A duplex.v1 server in memory: topics with offsets, epochs and a history,
// connections that it can drop, and a down state in which connecting fails.
class FakeServer {
  constructor() {
    this.up = true;
    this.topics = new Map();
    this.conns = new Set();
    this.received = []; // every frame from clients
    this.connects = 0;
    this.historySize = 100;
    this.epochs = 0;
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url, protocols) {
        this.url = url;
        this.protocols = protocols;
        this.readyState = 0;
        server.connects++;
        setImmediate(() => server._accept(this));
      }
      send(text) {
        if (this.readyState !== 1) throw new Error("not open");
        const frame = JSON.parse(text);
        server.received.push(frame);
        setImmediate(() => { if (this.readyState === 1) server._handle(this, frame); });
      }
      close(code = 1000, reason = "") { server._close(this, code, reason); }
    };
  }

  topic(name) {
    let t = this.topics.get(name);
    if (!t) {
      t = { epoch: `e${++this.epochs}`, next: 1, log: [], subs: new Map(), deltas: new Set(), sent: new Map() };
      this.topics.set(name, t);
    }
    return t;
  }

  _accept(ws) {
    if (!this.up) {
      ws.readyState = 3;
      ws.onerror?.({});
      ws.onclose?.({ code: 1006, reason: "" });
      return;
    }
    ws.readyState = 1;
    this.conns.add(ws);
    ws.onopen?.({});
    this.push(ws, { type: "welcome", version: 1, client: `c${this.connects}`, ping_interval: 25 });
  }

  push(ws, frame) {
    if (ws.readyState === 1) ws.onmessage?.({ data: JSON.stringify(frame) });
  }

  _close(ws, code, reason) {
    if (ws.readyState === 3) return;
    ws.readyState = 3;
    this.conns.delete(ws);
    for (const t of this.topics.values()) t.subs.delete(ws);
    setImmediate(() => ws.onclose?.({ code, reason }));
  }

  // Every connection drops (1006) and connecting fails until start().
  stop() {
    this.up = false;
    for (const ws of [...this.conns]) this._close(ws, 1006, "");
  }

  start({ lose = false } = {}) {
    if (lose) this.topics.clear();
    this.up = true;
  }

  publish(name, data) {
    const t = this.topic(name);
    const offset = t.next++;
    t.log.push({ offset, data });
    if (t.log.length > this.historySize) t.log.shift();
    for (const ws of t.subs.keys()) this._send(ws, name, { offset, data });
    return offset;
  }

  // A message to one subscriber: as a delta from the one before it when the
  // subscription asked for deltas and was sent that one (Fossil's reference
  // encoder, the npm fossil-delta package).
  _send(ws, name, m) {
    const t = this.topic(name);
    const before = t.sent.get(ws);
    t.sent.set(ws, m);
    if (t.deltas.has(ws) && before && before.offset === m.offset - 1 && typeof m.data === "string") {
      const delta = createDelta(new TextEncoder().encode(before.data), new TextEncoder().encode(m.data));
      this.push(ws, { type: "message", topic: name, offset: m.offset, delta: new TextDecoder().decode(delta) });
    } else {
      this.push(ws, { type: "message", topic: name, offset: m.offset, data: m.data });
    }
  }

  _handle(ws, f) {
    const reply = (frame) => this.push(ws, { ...frame, id: f.id });
    if (f.op === "subscribe") {
      const t = this.topic(f.topic);
      if (t.subs.has(ws)) return reply({ type: "error", code: "already_subscribed" });
      if (f.topic === "forbidden") return reply({ type: "error", code: "forbidden", message: "no" });
      const newest = t.next - 1;
      const out = { type: "subscribed", topic: f.topic, epoch: t.epoch, offset: newest };
      let backlog = [];
      if (f.since) {
        const sameEpoch = f.since.epoch === undefined || f.since.epoch === t.epoch;
        const oldest = t.log.length ? t.log[0].offset : t.next;
        out.recovered = sameEpoch && f.since.offset <= newest && oldest <= f.since.offset + 1;
        if (sameEpoch) backlog = t.log.filter((m) => m.offset > f.since.offset);
      }
      t.subs.set(ws, f.presence === true);
      t.sent.delete(ws);
      if (f.delta === "fossil") {
        t.deltas.add(ws);
        out.delta = "fossil";
      }
      reply(out);
      for (const m of backlog) this._send(ws, f.topic, m);
    } else if (f.op === "unsubscribe") {
      this.topic(f.topic).subs.delete(ws);
      reply({ type: "unsubscribed", topic: f.topic });
    } else if (f.op === "publish") {
      if (f.topic === "slow") return; // never answered
      const data = f.data !== undefined ? f.data : `b64:${f.b64}`;
      const offset = this.publish(f.topic, data);
      reply({ type: "published", topic: f.topic, epoch: this.topic(f.topic).epoch, offset });
    } else if (f.op === "presence") {
      const t = this.topic(f.topic);
      reply({ type: "presence", topic: f.topic, count: t.subs.size, clients: [] });
    } else if (f.op === "ping") {
      reply({ type: "pong" });
    }
  }
}

function recorder() {
  const got = [];
  const gaps = [];
  const subscribed = [];
  return {
    got, gaps, subscribed,
    onMessage: (m) => got.push(m.offset),
    onGap: (g) => gaps.push(g),
    onSubscribed: (s) => subscribed.push(s),
  };
}

const fast = { minDelay: 1, maxDelay: 5 };

test("connects with duplex.v1, subscribes, publishes and receives", async () => {
  const server = new FakeServer();
  const states = [];
  const client = new Client("http://127.0.0.1:1/topics", { ...fast, WebSocket: server.WebSocket });
  client.on("state", (s) => states.push(s));
  const r = recorder();
  const sub = client.subscribe("news", r);
  const info = await sub.ready;
  assert.equal(info.offset, 0);
  assert.equal(info.recovered, undefined);
  const ack = await client.publish("news", "hello");
  assert.deepEqual(ack, { topic: "news", epoch: "e1", offset: 1 });
  await until(() => r.got.length === 1, "the message");
  assert.equal(sub.offset, 1);
  assert.deepEqual(states, ["connected"]);
  assert.equal(client.clientId, "c1");
  const [ws] = server.conns;
  assert.equal(ws.url, "ws://127.0.0.1:1/topics");
  assert.deepEqual(ws.protocols, ["duplex.v1"]);
  assert.deepEqual(await client.presence("news"), { topic: "news", count: 1, clients: [] });
  assert.ok((await client.ping()) >= 0);
  client.close();
  assert.equal(client.state, "disconnected");
});

test("a token goes as the subprotocol bearer.TOKEN, out of the URL; a function gives one per attempt", async () => {
  const server = new FakeServer();
  let minted = 0;
  const client = new Client("ws://h/topics", {
    ...fast,
    WebSocket: server.WebSocket,
    token: async () => `a.b.${++minted}`,
  });
  await client.subscribe("news", recorder()).ready;
  const [ws] = server.conns;
  assert.equal(ws.url, "ws://h/topics");
  assert.deepEqual(ws.protocols, ["duplex.v1", "bearer.a.b.1"]);
  client.close();
  // Not a token's characters: the query instead (the constructor would throw).
  const other = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket, token: "a b" });
  await other.subscribe("news", recorder()).ready;
  const [second] = server.conns;
  assert.equal(second.url, "ws://h/topics?token=a+b");
  assert.deepEqual(second.protocols, ["duplex.v1"]);
  other.close();
});

test("resumes after a drop from the last offset: every message once, in order", async () => {
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const r = recorder();
  const sub = client.subscribe("news", r);
  await sub.ready;
  for (let i = 0; i < 3; i++) server.publish("news", `m${i}`);
  await until(() => r.got.length === 3, "three messages");
  server.stop();
  await until(() => client.state === "disconnected", "disconnected");
  for (let i = 3; i < 8; i++) server.publish("news", `m${i}`); // missed while down
  server.start();
  await until(() => r.got.length === 8, "eight messages");
  assert.deepEqual(r.got, [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(r.gaps.length, 0);
  const resub = server.received.filter((f) => f.op === "subscribe");
  assert.deepEqual(resub[1].since, { epoch: "e1", offset: 3 });
  assert.equal(r.subscribed.at(-1).recovered, true);
  assert.equal(r.subscribed.at(-1).resubscribed, true);
  client.close();
});

test("a repeated offset is never delivered twice", async () => {
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const r = recorder();
  await client.subscribe("news", r).ready;
  server.publish("news", "a");
  const [ws] = server.conns;
  server.push(ws, { type: "message", topic: "news", offset: 1, data: "a" });
  server.publish("news", "b");
  await until(() => r.got.length >= 2, "two messages");
  await tick();
  assert.deepEqual(r.got, [1, 2]);
  client.close();
});

test("history lost (new epoch): onGap with reset, delivery goes on in the new epoch", async () => {
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const r = recorder();
  await client.subscribe("news", r).ready;
  server.publish("news", "a");
  await until(() => r.got.length === 1, "one message");
  server.stop();
  await until(() => client.state === "disconnected", "disconnected");
  server.start({ lose: true });
  await until(() => r.gaps.length === 1, "the gap");
  assert.equal(r.gaps[0].reset, true);
  assert.deepEqual(r.gaps[0].previous, { epoch: "e1", offset: 1 });
  assert.equal(r.gaps[0].epoch, "e2");
  server.publish("news", "b");
  await until(() => r.got.length === 2, "the new epoch's first message");
  assert.deepEqual(r.got, [1, 1]);
  client.close();
});

test("an unprompted subscribed frame (the epoch changed under a live subscription): onGap with reset", async () => {
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const r = recorder();
  await client.subscribe("news", r).ready;
  server.publish("news", "a");
  server.publish("news", "b");
  await until(() => r.got.length === 2, "two messages");
  const [ws] = server.conns;
  server.push(ws, { type: "subscribed", topic: "news", epoch: "x9", offset: 0, recovered: false });
  server.push(ws, { type: "message", topic: "news", offset: 1, data: "new" });
  await until(() => r.got.length === 3, "the new epoch's first message");
  assert.deepEqual(r.got, [1, 2, 1]);
  assert.equal(r.gaps.length, 1);
  assert.equal(r.gaps[0].reset, true);
  assert.deepEqual(r.gaps[0].previous, { epoch: "e1", offset: 2 });
  client.close();
});

test("history trimmed in the same epoch: onGap without reset, the retained messages follow", async () => {
  const server = new FakeServer();
  server.historySize = 2;
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const r = recorder();
  await client.subscribe("news", r).ready;
  server.publish("news", "a");
  await until(() => r.got.length === 1, "one message");
  server.stop();
  await until(() => client.state === "disconnected", "disconnected");
  for (let i = 0; i < 4; i++) server.publish("news", `m${i}`); // offsets 2..5, history keeps 4 and 5
  server.start();
  await until(() => r.got.length === 3, "the retained messages");
  assert.deepEqual(r.got, [1, 4, 5]);
  assert.equal(r.gaps.length, 1);
  assert.equal(r.gaps[0].reset, false);
  client.close();
});

test("since: an offset of the current epoch replays the retained history", async () => {
  const server = new FakeServer();
  for (let i = 0; i < 3; i++) server.publish("news", `m${i}`);
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const r = recorder();
  const info = await client.subscribe("news", { ...r, since: 0 }).ready;
  assert.equal(info.recovered, true);
  await until(() => r.got.length === 3, "three messages");
  assert.deepEqual(server.received[0].since, { offset: 0 });
  client.close();
});

test("a publish pending when the connection drops rejects; one made while down waits for the next connection", async () => {
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  await until(() => client.state === "connected", "connected");
  const lost = client.publish("slow", "x");
  await until(() => server.received.length === 1, "the publish sent");
  server.stop();
  await assert.rejects(lost, (e) => e instanceof DuplexError && e.code === "disconnected");
  const later = client.publish("news", "y");
  await new Promise((r) => setTimeout(r, 30));
  server.start();
  assert.equal((await later).offset, 1);
  client.close();
});

test("a refused subscription fails with the server's code and is not retried", async () => {
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const errors = [];
  const sub = client.subscribe("forbidden", { onError: (e) => errors.push(e.code) });
  await assert.rejects(sub.ready, (e) => e.code === "forbidden");
  assert.equal(sub.state, "failed");
  assert.deepEqual(errors, ["forbidden"]);
  client.subscribe("forbidden"); // the topic is free again
  client.close();
});

test("unsubscribe: no callback afterwards, and the server is told", async () => {
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const r = recorder();
  const sub = client.subscribe("news", r);
  await sub.ready;
  await sub.unsubscribe();
  server.publish("news", "a");
  const [ws] = server.conns;
  server.push(ws, { type: "message", topic: "news", offset: 1, data: "a" });
  await tick();
  assert.deepEqual(r.got, []);
  assert.equal(server.received.at(-1).op, "unsubscribe");
  assert.throws(() => client.subscribe("x") && client.subscribe("x"), (e) => e.code === "already_subscribed");
  client.close();
});

test("binary payloads travel as b64 and arrive as Uint8Array", async () => {
  const bytes = new Uint8Array(70000).map((_, i) => (i * 7) & 255);
  assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
  assert.equal(toBase64(new Uint8Array([0, 255, 16])), "AP8Q");
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  const got = [];
  await client.subscribe("bin", { onMessage: (m) => got.push(m.data) }).ready;
  await client.publish("bin", new Uint8Array([1, 2, 3]).buffer);
  assert.equal(server.received.at(-1).b64, "AQID");
  const [ws] = server.conns;
  server.push(ws, { type: "message", topic: "bin", offset: 2, b64: "AQID" });
  await until(() => got.length === 2, "the binary message");
  assert.ok(got[1] instanceof Uint8Array);
  assert.deepEqual([...got[1]], [1, 2, 3]);
  client.close();
});

test("silence for ping_interval + 10 s: the connection is dead and replaced", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { minDelay: 100, maxDelay: 100, WebSocket: server.WebSocket });
  await until(() => client.state === "connected", "connected");
  const [first] = server.conns;
  t.mock.timers.tick(34_000);
  await tick();
  assert.equal(client.state, "connected", "still alive before 35 s");
  server.push(first, { type: "ping" }); // any frame resets the clock
  t.mock.timers.tick(34_000);
  await tick();
  assert.equal(client.state, "connected");
  t.mock.timers.tick(1_001);
  await tick();
  assert.equal(client.state, "disconnected");
  assert.equal(first.readyState, 3, "the dead socket was closed");
  t.mock.timers.tick(100);
  await until(() => client.state === "connected", "reconnected");
  assert.equal(server.connects, 2);
  client.close();
});

test("reconnect delays: full jitter under an exponential ceiling capped at maxDelay", async (t) => {
  const delays = [];
  const realSetTimeout = globalThis.setTimeout;
  t.mock.method(Math, "random", () => 0.5);
  t.mock.method(globalThis, "setTimeout", (fn, ms, ...rest) => {
    if (ms < 1000) delays.push(Math.round(ms)); // reconnects, not the 35 s dead timer
    return realSetTimeout(fn, 0, ...rest);
  });
  const server = new FakeServer();
  server.up = false;
  const client = new Client("ws://h/topics", { minDelay: 10, maxDelay: 80, WebSocket: server.WebSocket });
  await until(() => delays.length >= 6, "six retries");
  client.close();
  assert.deepEqual(delays.slice(0, 6), [5, 10, 20, 40, 40, 40]);
});

test("offline: no retry before maxDelay, and at once when the browser is online again", async (t) => {
  const events = new EventTarget();
  const nav = { onLine: true };
  const saved = Object.getOwnPropertyDescriptor(globalThis, "navigator");
  Object.defineProperty(globalThis, "navigator", { value: nav, configurable: true, writable: true });
  globalThis.window = events;
  t.after(() => {
    delete globalThis.window;
    if (saved) Object.defineProperty(globalThis, "navigator", saved);
    else delete globalThis.navigator;
  });
  const server = new FakeServer();
  const client = new Client("ws://h/topics", { minDelay: 60_000, maxDelay: 60_000, WebSocket: server.WebSocket });
  await until(() => client.state === "connected", "connected");
  nav.onLine = false;
  events.dispatchEvent(new Event("offline"));
  assert.equal(client.state, "disconnected");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.connects, 1, "no quick attempt while offline");
  nav.onLine = true;
  events.dispatchEvent(new Event("online"));
  await until(() => client.state === "connected", "reconnected at once, not after 60 s");
  assert.equal(server.connects, 2);
  client.close();
});

// A board of prices, a few of which move from one state to the next; "é" and
// "€" make the deltas' literal counts bytes, not characters.
const board = (step) => JSON.stringify({
  seq: step,
  note: "état €",
  board: Array.from({ length: 30 }, (_, k) => ({ sym: `S${k}`, px: 100 + ((k * 7 + (k % 5 === step % 5 ? step : 0)) % 90), qty: 1000 + k })),
});

test("applyDelta rebuilds what Fossil's reference encoder makes, and refuses what does not apply", () => {
  const enc = (s) => new TextEncoder().encode(s);
  for (let i = 0; i < 20; i++) {
    const [a, b] = [enc(board(i)), enc(board(i + 1))];
    const delta = createDelta(a, b);
    assert.deepEqual(applyDelta(a, delta), b);
    assert.deepEqual(referenceApply(a, delta), b);
  }
  const [a, b] = [enc(board(1)), enc(board(2))];
  const delta = createDelta(a, b);
  const broken = (d, max) => assert.throws(() => applyDelta(a, d, max), (e) => e instanceof DuplexError && e.code === "bad_delta");
  broken(delta.subarray(0, delta.length - 1)); // cut before its ";"
  broken(delta.subarray(0, delta.length / 2)); // cut mid-way
  broken(delta, b.length - 1); // over the limit
  broken(enc("5\n5@~~,0;")); // a copy past the source
  broken(enc("3\n3:abc0;")); // a wrong checksum
  broken(enc("~~~~~~~~~~\n")); // a number past 2^53
  broken(enc("2\n3:abc")); // more than it declares
  broken(new Uint8Array(0));
});

test("delta: text messages arrive rebuilt; one that does not apply resumes from the last delivered", async () => {
  const server = new FakeServer();
  const errors = [];
  const client = new Client("ws://h/topics", { ...fast, WebSocket: server.WebSocket });
  client.on("error", (e) => errors.push(e));
  const got = [];
  const sub = client.subscribe("board", { delta: true, onMessage: (m) => got.push(m) });
  await sub.ready;
  assert.equal(server.received.at(-1).delta, "fossil");
  const states = Array.from({ length: 12 }, (_, i) => board(i));
  for (const state of states.slice(0, 6)) server.publish("board", state);
  await until(() => got.length === 6, "six messages");
  assert.deepEqual(got.map((m) => m.data), states.slice(0, 6));
  // The broken one: a delta that does not match the message before.
  const [ws] = server.conns;
  const topic = server.topic("board");
  topic.next++;
  topic.log.push({ offset: 7, data: states[6] });
  topic.sent.set(ws, { offset: 7, data: states[6] });
  const wrong = createDelta(new TextEncoder().encode(states[0]), new TextEncoder().encode(states[6]));
  server.push(ws, { type: "message", topic: "board", offset: 7, delta: new TextDecoder().decode(wrong) });
  await until(() => errors.length === 1 && client.state === "connected" && server.connects === 2, "a reconnect");
  assert.equal(errors[0].code, "bad_delta");
  const resub = server.received.filter((f) => f.op === "subscribe").at(-1);
  assert.deepEqual(resub.since, { epoch: "e1", offset: 6 });
  assert.equal(resub.delta, "fossil");
  await until(() => got.length === 7, "the seventh, resumed whole");
  for (const state of states.slice(7)) server.publish("board", state);
  await until(() => got.length === 12, "twelve messages");
  assert.deepEqual(got.map((m) => m.data), states);
  assert.deepEqual(got.map((m) => m.offset), states.map((_, i) => i + 1));
  // Without asking, nothing comes as a delta.
  const plain = [];
  await client.subscribe("plain", { onMessage: (m) => plain.push(m.data) }).ready;
  assert.equal(server.received.at(-1).delta, undefined);
  client.close();
});
