// The Node `ws` broadcast server of bench/fanout.sh: WebSocket subscribers on any path,
// and `POST <path>` sends the body, as a text message, to every open subscriber of that
// path, the way ws's README broadcasts (a loop over the clients calling send). Answers
// 200 {"delivered":N}. No permessage-deflate, as for every server of the comparison.
//
//   node fanout-ws.mjs [--bind IP:PORT]   (default 127.0.0.1:0)
//
// Prints one line `listening on ws://IP:PORT` once bound.
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';

const MAX_BODY = 1 << 20;

let bind = '127.0.0.1:0';
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--bind' && i + 1 < argv.length) bind = argv[++i];
    else if (argv[i].startsWith('--bind=')) bind = argv[i].slice('--bind='.length);
    else {
        console.error('usage: node fanout-ws.mjs [--bind IP:PORT]');
        process.exit(2);
    }
}
const colon = bind.lastIndexOf(':');
const host = bind.slice(0, colon).replace(/^\[|\]$/g, '');
const port = Number(bind.slice(colon + 1));

/** path -> Set of WebSockets */
const topics = new Map();
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_BODY });

const server = http.createServer((req, res) => {
    if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST' });
        res.end();
        return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
        size += chunk.length;
        if (size > MAX_BODY) {
            res.writeHead(413, { connection: 'close' });
            res.end();
            req.destroy();
            return;
        }
        chunks.push(chunk);
    });
    req.on('end', () => {
        if (size > MAX_BODY) return;
        const body = Buffer.concat(chunks);
        const path = req.url.split('?')[0];
        let delivered = 0;
        const subscribers = topics.get(path);
        if (subscribers) {
            for (const ws of subscribers) {
                if (ws.readyState === WebSocket.OPEN) {
                    ws.send(body, { binary: false });
                    delivered++;
                }
            }
        }
        const answer = JSON.stringify({ delivered });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(answer);
    });
});

server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {});
    wss.handleUpgrade(req, socket, head, (ws) => {
        const path = req.url.split('?')[0];
        let set = topics.get(path);
        if (!set) topics.set(path, (set = new Set()));
        set.add(ws);
        ws.on('error', () => {});
        ws.on('close', () => {
            set.delete(ws);
            if (set.size === 0 && topics.get(path) === set) topics.delete(path);
        });
    });
});

server.keepAliveTimeout = 60_000;
server.listen(port, host, () => {
    const addr = server.address();
    const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    process.stdout.write(`listening on ws://${shown}:${addr.port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
