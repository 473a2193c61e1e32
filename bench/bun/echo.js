// Bun's built-in server (Bun.serve, uWebSockets underneath) as an echo peer of
// bench/compare.sh: every message is sent back as it came (text as text, binary as
// binary), on any path. As for every server of the comparison: no permessage-deflate,
// no idle timeout, no pings of its own, payload and backpressure limits far above what
// the scenarios send (so that nothing is closed or dropped for size or for a slow
// reader).
//
//   bun echo.js [--bind IP:PORT] [--threads N]   (default 127.0.0.1:0)
//
// --threads is taken for the script's sake: Bun serves every WebSocket from its one
// JavaScript thread, where uWebSockets' event loop runs, so it always runs one.
// Prints one line `listening on ws://IP:PORT` once bound.
import { parseBind } from './args.js';

const { hostname, port } = parseBind('echo.js');
const LIMIT = 256 * 1024 * 1024;

const server = Bun.serve({
    hostname,
    port,
    fetch(req, server) {
        if (server.upgrade(req)) return undefined;
        return new Response('a WebSocket echo server\n', { status: 426 });
    },
    websocket: {
        perMessageDeflate: false,
        maxPayloadLength: LIMIT,
        backpressureLimit: LIMIT,
        closeOnBackpressureLimit: false,
        idleTimeout: 0,
        sendPings: false,
        message(ws, message) {
            ws.send(message);
        },
    },
});
console.log(`listening on ws://${server.hostname}:${server.port}`);
process.on('SIGTERM', () => process.exit(0));
