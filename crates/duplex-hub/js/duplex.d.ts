// Types of duplex.js, the browser client of duplex.v1 (docs/protocol.md).

/** A payload: text as a string, bytes as a Uint8Array (sent as `b64`). */
export type Data = string | Uint8Array;

/** What a client can publish: text, or bytes in any of the usual shapes. */
export type Publishable = string | Uint8Array | ArrayBuffer | ArrayBufferView;

export type ConnectionState = "connecting" | "connected" | "disconnected";

export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed" | "failed";

/** A position in a topic: an offset of an epoch (the epoch may be left out: the current one). */
export interface Position {
  epoch?: string | null;
  offset: number;
}

export interface Message {
  topic: string;
  epoch: string;
  offset: number;
  data: Data;
}

export interface Subscribed {
  topic: string;
  epoch: string;
  /** The topic's newest offset when this subscription began. */
  offset: number;
  /** Resuming from a position: whether every message after it follows; absent for live only. */
  recovered?: boolean;
  /** True when this is a subscription again after a reconnect (or an epoch change). */
  resubscribed: boolean;
}

/** Messages were lost for good: the application reloads its state. */
export interface Gap {
  topic: string;
  /** The epoch delivery goes on with. */
  epoch: string;
  /** The topic's newest offset when the server answered. */
  offset: number;
  /** Where delivery had stopped (null if it never started). */
  previous: { epoch: string | null; offset: number | null } | null;
  /** The epoch changed: offsets started again and no old message follows. */
  reset: boolean;
}

export interface PresenceEvent {
  topic: string;
  client: string;
  /** The token's `sub`; null without tokens. */
  user: string | null;
}

export interface Presence {
  topic: string;
  /** Subscriptions to the topic on every node. */
  count: number;
  /** At most 1,000 of them. */
  clients: { client: string; user: string | null }[];
}

export interface Published {
  topic: string;
  epoch: string;
  offset: number;
}

export interface SubscribeOptions {
  /** Start after this position: retained messages above it come first. A number is an offset of the current epoch. */
  since?: number | Position;
  /** Deliver join/leave of the topic's subscribers. */
  presence?: boolean;
  /**
   * Ask for text messages as Fossil deltas from the message before: a state
   * that changes a little per message costs the change on the wire. `onMessage`
   * gets the rebuilt message either way; one that does not rebuild is reported
   * ("bad_delta") and the client reconnects and resumes.
   */
  delta?: boolean;
  onMessage?: (message: Message, subscription: Subscription) => void;
  onSubscribed?: (info: Subscribed, subscription: Subscription) => void;
  /** `recovered: false`: messages in between cannot be delivered. */
  onGap?: (gap: Gap, subscription: Subscription) => void;
  onJoin?: (event: PresenceEvent, subscription: Subscription) => void;
  onLeave?: (event: PresenceEvent, subscription: Subscription) => void;
  /** The server refused the subscription (forbidden, too_many, bad_request): it is over. */
  onError?: (error: DuplexError, subscription: Subscription) => void;
}

export interface ClientOptions {
  /** A token (sent as the subprotocol `bearer.TOKEN`), or a function giving one for each connection attempt. */
  token?: string | (() => string | Promise<string>);
  /** Smallest reconnect backoff ceiling, ms (default 500). */
  minDelay?: number;
  /** Largest reconnect delay, ms (default 20000). */
  maxDelay?: number;
  /** How long publish, presence and ping wait for an answer, connecting included, ms (default 10000). */
  timeout?: number;
  /** The largest message a delta may rebuild, bytes (default 64 MiB). */
  maxMessage?: number;
  /** The WebSocket class (default globalThis.WebSocket). */
  WebSocket?: { new (url: string, protocols?: string | string[]): WebSocket };
}

export interface StateInfo {
  /** The close code (0 when the client gave up on the connection itself). */
  code?: number;
  reason?: string;
  /** This connection's id, when connected. */
  client?: string | null;
}

/** A request's failure: the server's error code, or "disconnected", "timeout", "closed", "bad_delta". */
export class DuplexError extends Error {
  constructor(code: string, message?: string);
  readonly code: string;
}

export class Subscription {
  readonly client: Client;
  readonly topic: string;
  readonly options: SubscribeOptions;
  readonly state: SubscriptionState;
  /** The epoch of `offset`. */
  readonly epoch: string | null;
  /** The offset of the last message delivered (or where the subscription began). */
  readonly offset: number | null;
  /** Resolves with the first answer; rejects if the server refuses the subscription. */
  readonly ready: Promise<Subscribed>;
  /** No callback of this subscription runs after it. */
  unsubscribe(): Promise<void>;
}

export class Client {
  /** Connects to `url` (the service's `/topics`: ws(s)://, http(s):// or relative to the page) at once. */
  constructor(url: string | URL, options?: ClientOptions);
  readonly url: URL;
  readonly state: ConnectionState;
  /** This connection's id, while connected. */
  readonly clientId: string | null;
  on(event: "state", fn: (state: ConnectionState, info: StateInfo) => void): () => void;
  on(event: "error", fn: (error: Error) => void): () => void;
  subscribe(topic: string, options?: SubscribeOptions): Subscription;
  /** Rejects with code "disconnected" if the connection drops before the answer: it may or may not have been published. */
  publish(topic: string, data: Publishable): Promise<Published>;
  presence(topic: string): Promise<Presence>;
  /** A round trip, in ms. */
  ping(): Promise<number>;
  close(): void;
}

export function toBase64(bytes: Uint8Array): string;
export function fromBase64(text: string): Uint8Array;
/** `source` changed by a Fossil delta; throws a DuplexError "bad_delta" if it does not apply or makes more than `max` bytes. */
export function applyDelta(source: Uint8Array, delta: Uint8Array, max?: number): Uint8Array;

export default Client;
