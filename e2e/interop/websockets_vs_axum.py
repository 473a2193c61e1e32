#!/usr/bin/env python3
"""Interop: Python `websockets` clients (peers no one here wrote) against an axum 0.8
application that upgrades with duplex's extractor: the example `axum_chat`.

    websockets_vs_axum.py --example target/release/examples/axum_chat

It starts the example on 127.0.0.1:0, reads its address from its one stdout line
`listening on ws://ADDR/chat`, and checks:
  - two clients join the room; permessage-deflate is negotiated (the handler's Config
    turns it on) and the 101 names it;
  - what one client sends, text and binary, reaches both, in order and intact,
    including a 60 KiB compressible message (under the handler's 64 KiB limit);
  - a message over the handler's `max_message_size` (64 KiB) closes that client's
    connection with 1009, and the room goes on for the other;
  - a plain GET of /chat is refused by the extractor with 426;
  - a close with 1000 is clean.

Exits 0 when every check passed, 1 with a message naming the failed check otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from common import Fail, check

STEP_TIMEOUT = 20.0


async def start(example: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        example, "127.0.0.1:0", stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
    except asyncio.TimeoutError:
        proc.kill()
        raise Fail("axum_chat printed no `listening on` line within 20 s")
    prefix = "listening on "
    if not line.startswith(prefix + "ws://"):
        proc.kill()
        raise Fail(f"axum_chat: expected `listening on ws://ADDR/chat`, got {line!r}")
    return proc, line[len(prefix):]


async def run(url: str) -> None:
    async with connect(url) as alice, connect(url) as bob:
        for name, ws in (("alice", alice), ("bob", bob)):
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            check("permessage-deflate" in ext, f"{name}: the 101 negotiates permessage-deflate ({ext!r})")
        big = "duplex over axum " * 3600  # ~60 KiB, compressible
        sent = ["hello room", b"\x00\x01\x02 binary", "héllo ✓", big]
        for message in sent:
            await alice.send(message)
        for name, ws in (("alice", alice), ("bob", bob)):
            got = [await asyncio.wait_for(ws.recv(), STEP_TIMEOUT) for _ in sent]
            check(got == sent, f"{name} gets every message, in order and intact")

        await bob.send(b"x" * (70 * 1024))
        try:
            await asyncio.wait_for(bob.recv(), STEP_TIMEOUT)
            raise Fail("a message over 64 KiB was accepted")
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            check(code == 1009, f"a message over the handler's limit closes with 1009 (got {code})")
        await alice.send("still here")
        check(await asyncio.wait_for(alice.recv(), STEP_TIMEOUT) == "still here", "the room goes on")
        await alice.close(1000)
        check(alice.close_code == 1000, "close 1000 is clean")


def plain_get(url: str) -> int:
    try:
        urllib.request.urlopen(url.replace("ws://", "http://"), timeout=STEP_TIMEOUT)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", required=True, help="the built axum_chat example")
    args = parser.parse_args()
    proc, url = await start(args.example)
    try:
        print(f"websockets clients -> {url} (axum + duplex_ws::axum::WebSocketUpgrade)")
        await asyncio.wait_for(run(url), 60)
        status = await asyncio.to_thread(plain_get, url)
        check(status == 426, f"a plain GET is refused with 426 (got {status})")
    except Fail as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    finally:
        proc.terminate()
        await proc.wait()
    print("axum interop: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
