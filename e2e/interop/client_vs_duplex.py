#!/usr/bin/env python3
"""Interop: a Python `websockets` client (a peer no one here wrote) against `duplex serve`.

    client_vs_duplex.py [--duplex PATH | --url ws://127.0.0.1:PORT/]

By default it starts `PATH serve --bind 127.0.0.1:0` (PATH defaults to $DUPLEX_BIN or
target/release/duplex), reads the port from its one stdout line
`listening on ws://127.0.0.1:PORT`, and stops it at the end. With --url it tests an
echo server that is already running instead.

Checks, with permessage-deflate negotiated:
  - the 101 response's Sec-WebSocket-Extensions names permessage-deflate;
  - text and binary messages of many sizes (0 B .. 1 MiB, compressible and random,
    UTF-8 beyond ASCII) come back identical, with the same type, in order;
  - the server really compresses: the echo of a 1 MiB compressible message takes far
    fewer bytes on the wire than 1 MiB;
  - a ping gets its pong;
  - a close with 1000 gets 1000 back: a clean closing handshake.
And once more without compression offered: no extension in the response, echo works.

Exits 0 when every check passed, 1 with a message naming the failed check otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from common import ROOT, Fail, check, counting

MiB = 1 << 20
STEP_TIMEOUT = 30.0


CountingConnection = counting(ClientConnection)


async def start_server(duplex: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        duplex, "serve", "--bind", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
    except asyncio.TimeoutError:
        proc.kill()
        raise Fail("duplex serve printed no `listening on` line within 20 s")
    text = line.decode(errors="replace").strip()
    prefix = "listening on ws://"
    if not text.startswith(prefix):
        proc.kill()
        raise Fail(f"duplex serve: expected `listening on ws://ADDR`, got {text!r}")
    return proc, f"ws://{text[len(prefix):]}/"


def payloads() -> list[tuple[str, str | bytes]]:
    rng = random.Random(6455)
    words = "the quick brown fox jumps over the lazy dog websocket deflate duplex ".split()
    compressible_text = " ".join(rng.choice(words) for _ in range(MiB // 4))[:MiB]
    compressible_bin = (bytes(range(256)) * (MiB // 256))
    return [
        ("empty text", ""),
        ("short text", "hello"),
        ("non-ASCII text", "héllo wörld ✓ κόσμε 😀 中文"),
        ("125 B text", "a" * 125),
        ("126 B text", "b" * 126),
        ("64 KiB-1 text", "c" * 65535),
        ("64 KiB text", "d" * 65536),
        ("1 MiB compressible text", compressible_text),
        ("empty binary", b""),
        ("256 B binary", bytes(range(256))),
        ("64 KiB random binary", rng.randbytes(65536)),
        ("1 MiB compressible binary", compressible_bin),
        ("1 MiB random (incompressible) binary", rng.randbytes(MiB)),
        ("text after the large ones", "still in sync"),
    ]


async def echo_one(ws: ClientConnection, name: str, data: str | bytes) -> None:
    await ws.send(data)
    got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    kind = "text" if isinstance(data, str) else "binary"
    if type(got) is not type(data):
        raise Fail(f"{name}: sent {kind}, received {type(got).__name__}")
    if got != data:
        raise Fail(f"{name}: echo differs ({len(got)} vs {len(data)} {'chars' if kind == 'text' else 'bytes'})")
    print(f"  ok: echo of {name} ({len(data)} {'chars' if kind == 'text' else 'bytes'})", flush=True)


async def with_deflate(url: str) -> None:
    print(f"websockets client -> {url} (permessage-deflate offered)", flush=True)
    async with connect(
        url,
        compression="deflate",
        max_size=8 * MiB,
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
        create_connection=CountingConnection,
    ) as ws:
        assert ws.response is not None
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        print(f"  response Sec-WebSocket-Extensions: {ext!r}", flush=True)
        check("permessage-deflate" in ext, "Sec-WebSocket-Extensions contains permessage-deflate")
        check(any(e.name == "permessage-deflate" for e in ws.protocol.extensions),
              "the client runs permessage-deflate on this connection")

        for name, data in payloads():
            await echo_one(ws, name, data)

        # The server must compress what it sends, not only negotiate.
        text = "compress me please " * (MiB // 19)
        before = ws.rx_bytes
        await echo_one(ws, "1 MiB repetitive text (wire size measured)", text)
        wire = ws.rx_bytes - before
        check(wire < len(text) // 10,
              f"the echo of {len(text)} repetitive chars came compressed ({wire} bytes on the wire)")

        # Many messages in flight at once (context takeover across messages, ordering).
        burst = [f"message {i} " + "x" * (i % 300) for i in range(200)]
        for m in burst:
            await ws.send(m)
        got = [await asyncio.wait_for(ws.recv(), STEP_TIMEOUT) for _ in burst]
        check(got == burst, "200 pipelined messages echoed in order")

        pong = await ws.ping(b"interop")
        latency = await asyncio.wait_for(pong, STEP_TIMEOUT)
        check(True, f"ping answered by a pong ({latency * 1000:.1f} ms)")

        await asyncio.wait_for(ws.close(1000, "done"), STEP_TIMEOUT)
        p = ws.protocol
        check(p.state is State.CLOSED, "connection state is CLOSED after close()")
        check(p.close_sent is not None and p.close_sent.code == 1000, "we sent close 1000")
        check(p.close_rcvd is not None, "the server answered with a close frame")
        check(p.close_rcvd is not None and p.close_rcvd.code == 1000,
              f"the server's close code is 1000 (got {ws.close_code})")
        check(p.close_rcvd_then_sent is False, "we started the closing handshake, the server completed it")
        await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)


async def without_deflate(url: str) -> None:
    print(f"websockets client -> {url} (no extension offered)", flush=True)
    async with connect(url, compression=None, open_timeout=STEP_TIMEOUT, close_timeout=STEP_TIMEOUT) as ws:
        assert ws.response is not None
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        check(ext is None, f"no Sec-WebSocket-Extensions in the response when none offered (got {ext!r})")
        await echo_one(ws, "text without compression", "plain " * 1000)
        await echo_one(ws, "binary without compression", bytes(range(256)) * 100)
        await asyncio.wait_for(ws.close(1000), STEP_TIMEOUT)
        check(ws.close_code == 1000, f"clean close 1000 without compression (got {ws.close_code})")


async def amain(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    proc = None
    url = args.url
    try:
        if url is None:
            proc, url = await start_server(args.duplex)
            print(f"started {args.duplex} serve at {url}", flush=True)
        try:
            await asyncio.wait_for(with_deflate(url), 240)
            await asyncio.wait_for(without_deflate(url), 60)
        except asyncio.TimeoutError:
            raise Fail("timed out") from None
        if proc is not None:
            check(proc.returncode is None, "duplex serve still running after the tests")
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duplex", default=os.environ.get("DUPLEX_BIN", str(ROOT / "target/release/duplex")))
    ap.add_argument("--url", default=None, help="test this running echo server instead of starting one")
    args = ap.parse_args()
    t0 = time.monotonic()
    try:
        asyncio.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("FAIL: client_vs_duplex: interrupted", file=sys.stderr)
        return 130
    except Fail as e:
        print(f"FAIL: client_vs_duplex: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - any error is a failed interop test
        print(f"FAIL: client_vs_duplex: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"PASS: client_vs_duplex ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
