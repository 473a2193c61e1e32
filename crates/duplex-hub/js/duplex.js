// duplex.js: the browser client of duplex.v1, the topic subprotocol of a duplex
// push server (docs/protocol.md). One WebSocket to `/topics` carries every
// subscription of a Client; when it drops, the client reconnects with backoff
// and resubscribes each topic from the last offset it delivered, so that the
// application sees every message once, in order, or is told that it cannot
// (`onGap`). A dependency-free ES module: no build step, served by the hub at
// `/duplex.js`, and the npm package `@duplex/client`.
//
//   import { Client } from "/duplex.js";
//   const client = new Client("/topics", { token });
//   const sub = client.subscribe("news", { onMessage: (m) => console.log(m.offset, m.data) });
//   const { offset } = await client.publish("news", "hello");

const PROTOCOL = "duplex.v1";
// RFC 9110's token characters: what a subprotocol may be made of.
const TOKEN_CHARS = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const DEFAULT_PING_INTERVAL = 25; // seconds, until the welcome says otherwise
const DEAD_AFTER_EXTRA = 10; // seconds of silence past ping_interval: the connection is dead

/** An error of a request: the server's `code` (forbidden, too_large, …) or one of the client's own. */
export class DuplexError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = "DuplexError";
    this.code = code;
  }
}

/** A Uint8Array as standard base64. */
export function toBase64(bytes) {
  let binary = "";
  const CHUNK = 0x8000; // below the engines' argument limits
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  return btoa(binary);
}

/** Standard base64 as a Uint8Array. */
export function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Fossil's base-64 digits (docs/protocol.md, "Deltas"), and their values.
const DELTA_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
const DIGIT_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) DIGIT_VALUE[DELTA_DIGITS.charCodeAt(i)] = i;
const ENCODER = new TextEncoder();
// Rebuilt text must be UTF-8: one that is not is a broken delta.
const DECODER = new TextDecoder("utf-8", { fatal: true });

/** Fossil's checksum: the sum of big-endian 32-bit words, the last one padded with zeros. */
function deltaChecksum(bytes) {
  let sum = 0;
  const whole = bytes.length & ~3;
  for (let i = 0; i < whole; i += 4) {
    sum = (sum + ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3])) >>> 0;
  }
  let last = 0;
  for (let i = whole, shift = 24; i < bytes.length; i++, shift -= 8) last |= bytes[i] << shift;
  return (sum + (last >>> 0)) >>> 0;
}

/**
 * `source` changed by the Fossil delta `delta` (both Uint8Arrays): the bytes
 * of the new message. Every count and offset is checked before it is used, and
 * the checksum at the end; a delta that does not apply, or that would make more
 * than `max` bytes, throws a DuplexError "bad_delta".
 */
export function applyDelta(source, delta, max = Infinity) {
  const bad = (why) => new DuplexError("bad_delta", "delta: " + why);
  let at = 0;
  const number = () => {
    const start = at;
    let value = 0;
    while (at < delta.length) {
      const digit = delta[at] < 128 ? DIGIT_VALUE[delta[at]] : -1;
      if (digit < 0) break;
      value = value * 64 + digit;
      if (value > Number.MAX_SAFE_INTEGER) throw bad("a number past 2^53");
      at++;
    }
    if (at === start) throw bad("a number expected");
    return value;
  };
  const size = number();
  if (size > max) throw bad(`it declares ${size} bytes, over the limit of ${max}`);
  if (delta[at++] !== 0x0a) throw bad("a separator is missing");
  const out = new Uint8Array(size);
  let made = 0;
  for (;;) {
    const count = number();
    const op = delta[at++];
    if (op === 0x40 /* @ */) {
      const offset = number();
      if (delta[at++] !== 0x2c) throw bad("a separator is missing");
      if (made + count > size) throw bad("it makes more than it declares");
      if (offset + count > source.length) throw bad("a copy reaches past the source");
      out.set(source.subarray(offset, offset + count), made);
      made += count;
    } else if (op === 0x3a /* : */) {
      if (made + count > size) throw bad("it makes more than it declares");
      if (at + count > delta.length) throw bad("a literal runs past the end");
      out.set(delta.subarray(at, at + count), made);
      made += count;
      at += count;
    } else if (op === 0x3b /* ; */) {
      if (made !== size) throw bad("it makes less than it declares");
      if (deltaChecksum(out) !== count) throw bad("checksum mismatch");
      return out;
    } else {
      throw bad(op === undefined ? "it ends before its checksum" : "a segment is neither @, : nor ;");
    }
  }
}

/** The payload fields of a frame: `data` for a string, `b64` for bytes. */
function payload(data) {
  if (typeof data === "string") return { data };
  if (data instanceof Uint8Array) return { b64: toBase64(data) };
  if (data instanceof ArrayBuffer) return { b64: toBase64(new Uint8Array(data)) };
  if (ArrayBuffer.isView(data)) return { b64: toBase64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)) };
  throw new TypeError("data must be a string, a Uint8Array, an ArrayBuffer or a typed array");
}

/** The WebSocket URL of `url`: relative to the page, http(s) taken as ws(s). */
function socketUrl(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u;
}

/**
 * One subscription of a Client, from `client.subscribe`. It lives until
 * `unsubscribe()`: across reconnects it is subscribed again from `offset`.
 */
export class Subscription {
  constructor(client, topic, options) {
    this.client = client;
    this.topic = topic;
    this.options = options;
    /** "subscribing" | "subscribed" | "unsubscribed" | "failed" */
    this.state = "subscribing";
    /** The epoch of `offset`, once the server named it. */
    this.epoch = null;
    /** The offset of the last message delivered (or where the subscription began). */
    this.offset = null;
    // The resume point the application asked for, used until the first reply.
    this._since = options.since == null ? null
      : typeof options.since === "number" ? { offset: options.since } : { ...options.since };
    // With `delta`: the last message delivered, as UTF-8, if it was text and
    // a delta may follow it (none after a `subscribed` frame).
    this._base = null;
    this._readyResolve = null;
    this._readyReject = null;
    /** Resolves with the first `subscribed` reply; rejects if the server refuses the subscription. */
    this.ready = new Promise((resolve, reject) => { this._readyResolve = resolve; this._readyReject = reject; });
    this.ready.catch(() => {}); // an unobserved refusal is reported through onError
  }

  /** Stops the subscription: no callback of it runs after this call. */
  unsubscribe() {
    if (this.state === "unsubscribed") return Promise.resolve();
    const wasLive = this.state === "subscribed" || this.state === "subscribing";
    this.state = "unsubscribed";
    return this.client._unsubscribe(this, wasLive);
  }

  // The `since` of the next subscribe request: where delivery stopped.
  _resumeFrom() {
    if (this.epoch !== null && this.offset !== null) return { epoch: this.epoch, offset: this.offset };
    return this._since;
  }

  _call(name, arg) {
    const fn = this.options[name];
    if (typeof fn !== "function") return;
    try {
      fn(arg, this);
    } catch (e) {
      this.client._report(e);
    }
  }

  _subscribed(frame, requested) {
    const first = this.state === "subscribing" && this.epoch === null;
    const previous = this.epoch === null ? null : { epoch: this.epoch, offset: this.offset };
    const since = requested;
    this.state = "subscribed";
    // The next message is whole.
    this._base = null;
    if (frame.recovered === false) {
      // What is retained of the same epoch still follows (offsets above
      // since.offset); with another epoch, or a resume point past the newest
      // offset, delivery goes on from the reply's offset.
      const sameEpoch = !!since && (since.epoch == null || since.epoch === frame.epoch);
      const base = sameEpoch && since.offset <= frame.offset ? since.offset : frame.offset;
      this.epoch = frame.epoch;
      this.offset = base;
      this._call("onGap", {
        topic: this.topic, epoch: frame.epoch, offset: frame.offset, previous: previous || (since ? { epoch: since.epoch ?? null, offset: since.offset } : null),
        reset: !sameEpoch,
      });
    } else {
      this.epoch = frame.epoch;
      // Resuming: the retained messages above since.offset follow. Live only:
      // everything above the reply's offset follows.
      this.offset = since && frame.recovered === true ? since.offset : frame.offset;
    }
    const info = { topic: this.topic, epoch: frame.epoch, offset: frame.offset, recovered: frame.recovered, resubscribed: !first };
    if (first) this._readyResolve(info);
    this._call("onSubscribed", info);
  }

  _message(frame) {
    if (this.state !== "subscribed") return;
    // Every offset once, in order: anything at or below the last one is a
    // repeat (a resubscribe raced a message), never delivered twice.
    if (this.offset !== null && frame.offset <= this.offset) return;
    let data;
    if (frame.delta !== undefined) {
      try {
        if (this._base === null || frame.offset !== this.offset + 1) {
          throw new DuplexError("bad_delta", `delta: no message ${frame.offset - 1} to apply it to`);
        }
        const bytes = applyDelta(this._base, ENCODER.encode(frame.delta), this.client.options.maxMessage);
        data = DECODER.decode(bytes);
        this._base = bytes;
      } catch (e) {
        // Nothing after it can be rebuilt either: resume from the last
        // message delivered, which the server sends whole.
        this._base = null;
        this.client._resync(e instanceof DuplexError ? e : new DuplexError("bad_delta", "delta: it makes no UTF-8 text"));
        return;
      }
    } else if (frame.b64 !== undefined) {
      data = fromBase64(frame.b64);
      this._base = null;
    } else {
      data = frame.data;
      this._base = this.options.delta ? ENCODER.encode(data) : null;
    }
    this.offset = frame.offset;
    this._call("onMessage", { topic: this.topic, epoch: this.epoch, offset: frame.offset, data });
  }

  _failed(error) {
    this.state = "failed";
    this._readyReject(error);
    this._call("onError", error);
  }
}

/**
 * A duplex.v1 connection that stays up: it connects at construction,
 * reconnects with exponential backoff and full jitter, and resubscribes
 * every subscription where it left off.
 */
export class Client {
  /**
   * @param url the service's `/topics` endpoint: ws(s)://, http(s):// or relative to the page
   * @param options { token, minDelay, maxDelay, timeout, maxMessage, WebSocket }
   */
  constructor(url, options = {}) {
    this.url = socketUrl(url);
    this.options = {
      token: options.token,
      minDelay: options.minDelay ?? 500,
      maxDelay: options.maxDelay ?? 20000,
      timeout: options.timeout ?? 10000,
      // The largest message a delta may rebuild (bytes).
      maxMessage: options.maxMessage ?? 64 * 1024 * 1024,
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
    };
    if (!(this.options.minDelay >= 0) || !(this.options.maxDelay >= this.options.minDelay)) {
      throw new RangeError("need 0 <= minDelay <= maxDelay");
    }
    /** "connecting" | "connected" | "disconnected" */
    this.state = "disconnected";
    /** This connection's id from the server's welcome, while connected. */
    this.clientId = null;
    this._listeners = { state: new Set(), error: new Set() };
    this._subs = new Map(); // topic -> Subscription
    this._pending = new Map(); // id -> { resolve, reject, timer, kind, sub, since }
    this._queue = []; // requests made while not connected: { frame, entry }
    this._nextId = 1;
    this._ws = null;
    this._attempt = 0; // reconnects since the last welcome
    this._retryTimer = null;
    this._deadTimer = null;
    this._pingInterval = DEFAULT_PING_INTERVAL;
    this._closed = false;
    this._connecting = false; // awaiting the token function
    this._onOnline = () => this._online();
    this._onOffline = () => this._offline();
    if (typeof window !== "undefined" && window.addEventListener) {
      window.addEventListener("online", this._onOnline);
      window.addEventListener("offline", this._onOffline);
    }
    this._connect();
  }

  /** Calls `fn` on "state" (state, {code, reason}) or "error" (Error); returns a function that removes it. */
  on(event, fn) {
    const set = this._listeners[event];
    if (!set) throw new TypeError(`unknown event ${event}`);
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Subscribes to `topic` (options: since, presence, delta, onMessage, onSubscribed, onGap, onJoin, onLeave, onError). */
  subscribe(topic, options = {}) {
    if (this._closed) throw new DuplexError("closed", "the client is closed");
    if (this._subs.has(topic)) throw new DuplexError("already_subscribed", `already subscribed to ${topic}`);
    const sub = new Subscription(this, topic, options);
    this._subs.set(topic, sub);
    if (this.state === "connected") this._sendSubscribe(sub);
    return sub;
  }

  /** Publishes `data` (a string, or bytes) to `topic`; resolves with its `{topic, epoch, offset}`. */
  publish(topic, data) {
    return this._request({ op: "publish", topic, ...payload(data) }, "publish")
      .then((f) => ({ topic: f.topic, epoch: f.epoch, offset: f.offset }));
  }

  /** Who is subscribed to `topic`: `{topic, count, clients}`. */
  presence(topic) {
    return this._request({ op: "presence", topic }, "presence")
      .then((f) => ({ topic: f.topic, count: f.count, clients: f.clients || [] }));
  }

  /** A round trip to the server; resolves with the milliseconds it took. */
  async ping() {
    const start = Date.now();
    await this._request({ op: "ping" }, "ping");
    return Date.now() - start;
  }

  /** Closes the connection for good: pending requests reject, nothing reconnects. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (typeof window !== "undefined" && window.removeEventListener) {
      window.removeEventListener("online", this._onOnline);
      window.removeEventListener("offline", this._onOffline);
    }
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    this._drop(new DuplexError("closed", "the client is closed"));
    if (ws) {
      try { ws.close(1000); } catch { /* already closing */ }
    }
    for (const sub of this._subs.values()) sub.state = "unsubscribed";
    this._subs.clear();
    this._setState("disconnected", { code: 1000, reason: "closed by the client" });
  }

  // ------------------------------------------------------------ connection

  async _connect() {
    if (this._closed || this._ws || this._connecting) return;
    this._setState("connecting", {});
    let url = this.url;
    let token = this.options.token;
    if (typeof token === "function") {
      this._connecting = true;
      try {
        token = await token();
      } catch (e) {
        this._report(e);
        this._scheduleReconnect({ code: 0, reason: "token: " + (e && e.message) });
        return;
      } finally {
        this._connecting = false;
      }
      if (this._closed || this._ws) return;
    }
    // The token goes as a subprotocol, `bearer.TOKEN`, which the server reads
    // and never answers with: out of the URL, so out of access logs. One that
    // is not all token characters (never a JWT) goes in the query instead.
    const protocols = [PROTOCOL];
    if (token && TOKEN_CHARS.test(token)) {
      protocols.push("bearer." + token);
    } else if (token) {
      url = new URL(url);
      url.searchParams.set("token", token);
    }
    let ws;
    try {
      ws = new this.options.WebSocket(url.href, protocols);
    } catch (e) {
      this._report(e);
      this._scheduleReconnect({ code: 0, reason: String(e && e.message) });
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    this._armDeadTimer();
    ws.onmessage = (e) => { if (this._ws === ws) this._frame(e.data); };
    ws.onclose = (e) => { if (this._ws === ws) this._lost({ code: e.code, reason: e.reason }); };
    // An error is followed by close; nothing to do until then.
    ws.onerror = () => {};
  }

  _armDeadTimer() {
    clearTimeout(this._deadTimer);
    this._deadTimer = setTimeout(() => {
      const ws = this._ws;
      this._lost({ code: 0, reason: `no frame for ${this._pingInterval + DEAD_AFTER_EXTRA} s` });
      if (ws) {
        try { ws.close(); } catch { /* already closing */ }
      }
    }, (this._pingInterval + DEAD_AFTER_EXTRA) * 1000);
  }

  // The connection is gone: forget it, settle what was pending on it, and
  // come back later.
  _lost(info) {
    if (!this._ws) return;
    this._drop(new DuplexError("disconnected", `connection lost (${info.code}${info.reason ? " " + info.reason : ""})`));
    for (const sub of this._subs.values()) if (sub.state === "subscribed") sub.state = "subscribing";
    this._scheduleReconnect(info);
  }

  // Detaches the socket and settles every pending request: publishes and
  // presence reject (whether a publish happened is unknown), subscriptions
  // will be sent again, unsubscribes are done (the server forgets them).
  _drop(error) {
    const ws = this._ws;
    this._ws = null;
    this.clientId = null;
    clearTimeout(this._deadTimer);
    this._deadTimer = null;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      if (entry.kind === "unsubscribe") entry.resolve();
      else if (entry.kind !== "subscribe") entry.reject(error);
    }
    if (error.code === "closed") {
      const queued = this._queue.splice(0);
      for (const { entry } of queued) { clearTimeout(entry.timer); entry.reject(error); }
    }
  }

  _scheduleReconnect(info) {
    this._setState("disconnected", info);
    if (this._closed || this._retryTimer) return;
    let delay;
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      // Offline: no spinning, one try per maxDelay or so ("online" retries at
      // once); yet some tries, as a server on loopback needs no network.
      delay = this.options.maxDelay * (0.5 + Math.random() / 2);
    } else {
      const ceiling = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** Math.min(this._attempt, 30));
      delay = Math.random() * ceiling; // full jitter
      this._attempt++;
    }
    this._retryTimer = setTimeout(() => { this._retryTimer = null; this._connect(); }, delay);
  }

  // A delta did not apply: report it, and reconnect so that every
  // subscription resumes from its last message delivered.
  _resync(error) {
    this._report(error);
    const ws = this._ws;
    if (!ws) return;
    this._lost({ code: 0, reason: error.message });
    try { ws.close(); } catch { /* already closing */ }
  }

  _online() {
    if (this._closed || this._ws || this._connecting) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._attempt = 0;
    this._connect();
  }

  _offline() {
    if (this._closed) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    if (ws) {
      this._lost({ code: 0, reason: "offline" });
      try { ws.close(); } catch { /* already closing */ }
    }
  }

  _setState(state, info) {
    if (this.state === state) return;
    this.state = state;
    for (const fn of [...this._listeners.state]) {
      try { fn(state, info); } catch (e) { this._report(e); }
    }
  }

  _report(error) {
    if (this._listeners.error.size === 0) {
      // Nobody listens: surface it rather than lose it.
      setTimeout(() => { throw error; });
      return;
    }
    for (const fn of [...this._listeners.error]) {
      try { fn(error); } catch { /* an error handler's own error goes nowhere */ }
    }
  }

  _send(frame) {
    this._ws.send(JSON.stringify(frame));
  }

  // ------------------------------------------------------------ frames

  _frame(text) {
    this._armDeadTimer();
    if (typeof text !== "string") {
      this._report(new DuplexError("bad_frame", "a binary frame from the server"));
      return;
    }
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this._report(new DuplexError("bad_frame", "a frame that is not JSON"));
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    switch (frame.type) {
      case "welcome": return this._welcome(frame);
      case "ping": return;
      case "message": {
        const sub = this._subs.get(frame.topic);
        if (sub) sub._message(frame);
        return;
      }
      case "join":
      case "leave": {
        const sub = this._subs.get(frame.topic);
        if (sub && sub.state === "subscribed") {
          sub._call(frame.type === "join" ? "onJoin" : "onLeave", { topic: frame.topic, client: frame.client, user: frame.user ?? null });
        }
        return;
      }
      case "subscribed":
        if (frame.id === undefined) {
          // The topic's epoch changed under a live subscription.
          const sub = this._subs.get(frame.topic);
          if (sub && sub.state === "subscribed") sub._subscribed(frame, sub._resumeFrom());
          return;
        }
        return this._reply(frame);
      default:
        if (frame.id !== undefined) return this._reply(frame);
        if (frame.type === "error") this._report(new DuplexError(frame.code || "error", frame.message || frame.code));
    }
  }

  _welcome(frame) {
    this.clientId = frame.client ?? null;
    if (typeof frame.ping_interval === "number" && frame.ping_interval > 0) this._pingInterval = frame.ping_interval;
    this._armDeadTimer();
    this._attempt = 0;
    this._setState("connected", { client: this.clientId });
    for (const sub of this._subs.values()) {
      if (sub.state === "subscribing") this._sendSubscribe(sub);
    }
    const queued = this._queue.splice(0);
    for (const { frame: f, entry } of queued) this._sendRequest(f, entry);
  }

  _reply(frame) {
    const entry = this._pending.get(frame.id);
    if (!entry) return;
    this._pending.delete(frame.id);
    clearTimeout(entry.timer);
    if (frame.type === "error") {
      const error = new DuplexError(frame.code || "error", frame.message || frame.code);
      if (entry.kind === "subscribe") {
        if (this._subs.get(entry.sub.topic) !== entry.sub || entry.sub.state === "unsubscribed") return;
        if (frame.code === "unavailable") {
          // The backplane is down: try this subscription again later.
          setTimeout(() => { if (this.state === "connected" && entry.sub.state === "subscribing") this._sendSubscribe(entry.sub); },
            Math.random() * this.options.maxDelay / 4);
          return;
        }
        this._subs.delete(entry.sub.topic);
        entry.sub._failed(error);
        return;
      }
      entry.reject(error);
      return;
    }
    if (entry.kind === "subscribe") {
      if (this._subs.get(entry.sub.topic) !== entry.sub || entry.sub.state === "unsubscribed") return;
      entry.sub._subscribed(frame, entry.since);
      return;
    }
    entry.resolve(frame);
  }

  // ------------------------------------------------------------ requests

  _sendSubscribe(sub) {
    const since = sub._resumeFrom();
    const frame = { op: "subscribe", id: this._nextId++, topic: sub.topic };
    if (since) frame.since = since.epoch == null ? { offset: since.offset } : { epoch: since.epoch, offset: since.offset };
    if (sub.options.presence) frame.presence = true;
    if (sub.options.delta) frame.delta = "fossil";
    this._pending.set(frame.id, { kind: "subscribe", sub, since, timer: null, resolve() {}, reject() {} });
    this._send(frame);
  }

  _unsubscribe(sub, wasLive) {
    if (this._subs.get(sub.topic) === sub) this._subs.delete(sub.topic);
    if (!wasLive || this.state !== "connected") return Promise.resolve();
    return new Promise((resolve) => {
      const frame = { op: "unsubscribe", id: this._nextId++, topic: sub.topic };
      this._pending.set(frame.id, { kind: "unsubscribe", timer: null, resolve, reject: resolve });
      this._send(frame);
    });
  }

  _request(fields, kind) {
    if (this._closed) return Promise.reject(new DuplexError("closed", "the client is closed"));
    return new Promise((resolve, reject) => {
      const frame = { ...fields };
      const entry = { kind, resolve, reject, timer: null };
      // One timeout from the call: waiting for a connection counts too.
      entry.timer = setTimeout(() => {
        const i = this._queue.findIndex((q) => q.entry === entry);
        if (i >= 0) this._queue.splice(i, 1);
        if (frame.id !== undefined) this._pending.delete(frame.id);
        reject(new DuplexError("timeout", `no answer to ${kind} within ${this.options.timeout} ms`));
      }, this.options.timeout);
      if (this.state === "connected") this._sendRequest(frame, entry);
      else this._queue.push({ frame, entry });
    });
  }

  _sendRequest(frame, entry) {
    frame.id = this._nextId++;
    this._pending.set(frame.id, entry);
    this._send(frame);
  }
}

export default Client;
