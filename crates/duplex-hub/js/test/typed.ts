// Type check of duplex.d.ts (tsc -p test/tsconfig.json): the README's usage,
// typed as an application would write it, and a few uses that must not compile.
import { Client, DuplexError, type Message, type Gap, type Presence, type Published } from "@duplex/client";

const client = new Client("ws://127.0.0.1:8080/topics", {
  token: async () => "a.jwt.token",
  minDelay: 250,
  maxDelay: 10_000,
});
const off: () => void = client.on("state", (state, info) => {
  const s: "connecting" | "connected" | "disconnected" = state;
  console.log(s, info.code, info.reason, info.client);
});
off();
client.on("error", (e: Error) => console.error(e.message));

const sub = client.subscribe("news", {
  since: { epoch: "k3j9", offset: 41 },
  presence: true,
  delta: true,
  onMessage(m: Message) {
    const text: string = typeof m.data === "string" ? m.data : new TextDecoder().decode(m.data);
    console.log(m.topic, m.epoch, m.offset + 1, text);
  },
  onGap(gap: Gap, s) {
    console.log(gap.reset, gap.previous?.offset, s.topic);
  },
  onJoin: (e) => console.log(e.client, e.user ?? "anonymous"),
  onLeave: (e) => console.log(e.client),
  onError: (e: DuplexError) => console.log(e.code),
});
const last: number | null = sub.offset;
console.log(last, sub.epoch, sub.state === "subscribed");
client.subscribe("counts", { since: 0 });

async function run(): Promise<void> {
  const info = await sub.ready;
  const recovered: boolean | undefined = info.recovered;
  console.log(recovered, info.resubscribed);
  const p: Published = await client.publish("news", "hello");
  const q = await client.publish("news", new Uint8Array([1, 2, 3]));
  console.log(p.offset + q.offset, p.epoch.length);
  const who: Presence = await client.presence("news");
  console.log(who.count, who.clients.map((c) => c.user));
  const ms: number = await client.ping();
  console.log(ms);
  await sub.unsubscribe();
  client.close();
}
void run();

// @ts-expect-error: a number is not a payload
void client.publish("news", 42);
// @ts-expect-error: no such event
client.on("message", () => {});
// @ts-expect-error: since needs an offset
client.subscribe("x", { since: { epoch: "e" } });
