"""Server memory per connection with permessage-deflate (bench/deflate_memory.sh).

For each server: start it on a free loopback port, read its VmRSS, open N Python
websockets clients (their default permessage-deflate offer), each sends one 4.4 KB
JSON-like text message and reads the echo, all stay open; read VmRSS again and print
the growth per connection. Then close the clients and stop the server.

    python bench/deflate_memory.py --conns 1000 --server duplex=target/release/duplex \\
        [--server before=target/duplex-before] [--python-server]

    python bench/deflate_memory.py --echo-server   # the Python websockets echo server
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

MESSAGE_SIZE = 4400


def message(i: int) -> str:
    """A 4.4 KB JSON update, different for each client but alike in shape."""
    items = []
    n = 0
    doc = {"type": "update", "client": i, "seq": 1, "items": items}
    while len(json.dumps(doc)) < MESSAGE_SIZE - 120:
        n += 1
        items.append(
            {
                "id": f"ord_{(i * 7919 + n * 104729) % 16**8:08x}",
                "symbol": ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA"][(i + n) % 5],
                "side": "buy" if (i * n) % 3 else "sell",
                "qty": (i * 31 + n * 17) % 500 + 1,
                "price": round(100 + ((i * 13 + n * 7) % 9000) / 100, 2),
                "status": ["new", "filled", "cancelled"][(i + 2 * n) % 3],
            }
        )
    text = json.dumps(doc)
    return text + " " * (MESSAGE_SIZE - len(text))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def echo(ws):
    async for msg in ws:
        await ws.send(msg)


async def echo_server():
    # Python websockets' defaults: compression="deflate", which answers
    # server_max_window_bits=12 and client_max_window_bits=12 at memLevel 5.
    async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}", flush=True)
        await server.serve_forever()


def start(cmd):
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on (ws://\S+)", line)
        if m:
            return proc, m.group(1).rstrip("/") + "/"
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not print its address")


async def one_client(url, i, opened, extensions):
    ws = await connect(url, max_size=None, open_timeout=60)
    text = message(i)
    await ws.send(text)
    reply = await ws.recv()
    assert reply == text, "echo differs"
    extensions.add(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
    opened.append(ws)


async def measure(name, cmd, conns, batch):
    proc, url = start(cmd)
    try:
        await asyncio.sleep(0.5)
        before = rss_kib(proc.pid)
        opened, extensions = [], set()
        for start_i in range(0, conns, batch):
            await asyncio.gather(
                *(
                    one_client(url, i, opened, extensions)
                    for i in range(start_i, min(conns, start_i + batch))
                )
            )
        await asyncio.sleep(1.0)
        after = rss_kib(proc.pid)
        per_conn = (after - before) / conns
        print(
            f"{name:<10} {conns} connections: VmRSS {before} KiB -> {after} KiB, "
            f"{per_conn:.1f} KiB per connection; answered {' | '.join(sorted(extensions))}",
            flush=True,
        )
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
        return per_conn
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echo-server", action="store_true")
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=BINARY",
        help="a duplex binary to run as `BINARY serve --threads 1 --bind 127.0.0.1:0`",
    )
    parser.add_argument("--python-server", action="store_true")
    args = parser.parse_args()
    if args.echo_server:
        await echo_server()
        return
    print(
        f"{args.conns} Python websockets {websockets.__version__} clients, one "
        f"{len(message(0))}-byte text message each, echoed, then held open",
        flush=True,
    )
    for spec in args.server:
        name, _, binary = spec.partition("=")
        cmd = [binary, "serve", "--threads", "1", "--bind", "127.0.0.1:0"]
        await measure(name, cmd, args.conns, args.batch)
    if args.python_server:
        cmd = [sys.executable, os.path.abspath(__file__), "--echo-server"]
        await measure("websockets", cmd, args.conns, args.batch)


if __name__ == "__main__":
    asyncio.run(main())
