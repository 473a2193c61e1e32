// Bun's built-in server (Bun.serve, uWebSockets underneath) as the pub/sub peer of
// bench/fanout.sh, in uWebSockets' own way: a WebSocket on any path subscribes to the
// topic named by the path (`ws.subscribe` on open), and `POST <path>` publishes the
// body as a text message to that topic (`server.publish`, which uWebSockets writes to
// every subscriber itself). Answers 200 {"delivered":N}, N the topic's subscribers.
// No permessage-deflate, no idle timeout, no pings, limits far above the run's.
//
//   bun fanout.js [--bind IP:PORT]   (default 127.0.0.1:0)
//
// Prints one line `listening on ws://IP:PORT` once bound.
import { parseBind } from './args.js';

const { hostname, port } = parseBind('fanout.js');
const MAX_BODY = 1 << 20;
const LIMIT = 256 * 1024 * 1024;

const server = Bun.serve({
    hostname,
    port,
    maxRequestBodySize: MAX_BODY,
    async fetch(req, server) {
        const topic = new URL(req.url).pathname;
        if (req.method === 'POST') {
            const body = await req.text();
            server.publish(topic, body);
            return Response.json({ delivered: server.subscriberCount(topic) });
        }
        if (server.upgrade(req, { data: { topic } })) return undefined;
        return new Response('subscribe with a WebSocket, publish with POST\n', { status: 426 });
    },
    websocket: {
        perMessageDeflate: false,
        maxPayloadLength: MAX_BODY,
        backpressureLimit: LIMIT,
        closeOnBackpressureLimit: false,
        idleTimeout: 0,
        sendPings: false,
        open(ws) {
            ws.subscribe(ws.data.topic);
        },
        message() {},
    },
});
console.log(`listening on ws://${server.hostname}:${server.port}`);
process.on('SIGTERM', () => process.exit(0));
