#!/usr/bin/env python3
"""Interop: `duplex connect` against a Python `websockets` echo server (a peer no one here wrote).

    duplex_vs_server.py [--duplex PATH]

Starts a websockets echo server with permessage-deflate on 127.0.0.1:0, then runs
`PATH connect ws://127.0.0.1:PORT/` (PATH defaults to $DUPLEX_BIN or
target/release/duplex) as a subprocess, feeds it lines on stdin and checks:
  - the same lines come back on its stdout, in order;
  - its stderr has `connected to URL over HTTP/1.1 (protocol: X, extensions: Y)` with
    permessage-deflate in Y;
  - on the server side the connection negotiated permessage-deflate (the 101
    response's Sec-WebSocket-Extensions and the server's active extensions), and
    the client compressed what it sent (bytes on the wire far below the payload);
  - at stdin EOF the client closed with 1000, the handshake was clean, and
    `duplex connect` exited with status 0.
Then once more against a server with compression off: same echo, exit 0.

Exits 0 when every check passed, 1 with a message naming the failed check otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, serve

from common import ROOT, Fail, check, counting

RUN_TIMEOUT = 60.0


CountingServerConnection = counting(ServerConnection)


@dataclass
class Seen:
    """What the server saw of each connection."""

    response_extensions: list[str] = field(default_factory=list)
    active_extensions: list[list[str]] = field(default_factory=list)
    messages: list[str | bytes] = field(default_factory=list)
    rx_bytes: list[int] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def lines_to_send() -> list[str]:
    rng = random.Random(7692)
    words = "alpha beta gamma delta websocket deflate duplex interop".split()
    big = " ".join(rng.choice(words) for _ in range(40_000))  # ~300 KB, compressible
    return (
        ["hello", "", "héllo wörld ✓ κόσμε 😀", "a" * 125, "b" * 126, "c" * 70_000, big]
        + [f"line {i}" for i in range(100)]
        + ["last line"]
    )


async def run_case(duplex: str, compression: str | None) -> None:
    seen = Seen()

    async def handler(ws: ServerConnection) -> None:
        assert ws.response is not None
        seen.response_extensions.append(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        seen.active_extensions.append([e.name for e in ws.protocol.extensions])
        try:
            async for message in ws:
                seen.messages.append(message)
                await ws.send(message)
        except Exception as e:  # noqa: BLE001 - recorded and reported below
            seen.errors.append(f"{type(e).__name__}: {e}")
        await ws.wait_closed()
        seen.rx_bytes.append(getattr(ws, "rx_bytes", -1))
        p = ws.protocol
        seen.close_codes.append(p.close_rcvd.code if p.close_rcvd is not None else None)
        seen.clean.append(
            p.close_rcvd is not None
            and p.close_sent is not None
            and p.close_rcvd_then_sent is True
        )

    lines = lines_to_send()
    stdin = "".join(line + "\n" for line in lines).encode()
    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression=compression,
        max_size=4 << 20,
        create_connection=CountingServerConnection,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        print(f"{duplex} connect {url}  (websockets server, compression={compression})", flush=True)
        proc = await asyncio.create_subprocess_exec(
            duplex, "connect", url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), RUN_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            sys.stderr.write(err.decode(errors="replace")[-4000:])
            raise Fail(f"duplex connect did not exit within {RUN_TIMEOUT:.0f} s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        # Give the handler a moment to record the end of the connection.
        for _ in range(100):
            if seen.close_codes:
                break
            await asyncio.sleep(0.05)

    err_text = err.decode(errors="replace")
    if proc.returncode != 0 or seen.errors:
        sys.stderr.write("--- duplex connect stderr ---\n" + err_text[-4000:] + "\n---\n")
    check(proc.returncode == 0, f"duplex connect exited with status 0 (got {proc.returncode})")
    check(not seen.errors, f"server handler saw no error ({seen.errors})")
    check(len(seen.response_extensions) == 1, f"exactly one connection ({len(seen.response_extensions)})")

    m = re.search(r"^connected to (\S+) over HTTP/1\.1 \(protocol: (.*), extensions: (.*)\)$", err_text, re.M)
    check(m is not None, "stderr has `connected to URL over HTTP/1.1 (protocol: X, extensions: Y)`")
    assert m is not None
    check(m.group(1).rstrip("/") == url.rstrip("/"), f"stderr names the URL ({m.group(1)})")

    got = out.decode("utf-8", errors="replace").split("\n")
    check(got[-1] == "", "stdout ends with a newline")
    got = got[:-1]
    if got != lines:
        first = next((i for i, (a, b) in enumerate(zip(got, lines)) if a != b), min(len(got), len(lines)))
        raise Fail(f"stdout differs from stdin: {len(got)} lines vs {len(lines)}, first difference at line {first + 1}")
    check(True, f"the {len(lines)} lines came back on stdout, identical and in order")
    check(seen.messages == lines, "the server received each line as one text message")

    if compression == "deflate":
        check("permessage-deflate" in m.group(3), f"duplex reports permessage-deflate ({m.group(3)})")
        check("permessage-deflate" in seen.response_extensions[0],
              f"the server's 101 response negotiated permessage-deflate ({seen.response_extensions[0]!r})")
        check("permessage-deflate" in seen.active_extensions[0], "the server runs permessage-deflate on this connection")
        payload = sum(len(line.encode()) for line in lines)
        check(0 < seen.rx_bytes[0] < payload // 2,
              f"the client compressed: {seen.rx_bytes[0]} bytes on the wire for {payload} bytes of text")
    else:
        check(seen.response_extensions[0] == "", "no extension negotiated when the server has compression off")
    check(seen.close_codes[0] == 1000, f"the client closed with 1000 (got {seen.close_codes[0]})")
    check(seen.clean[0], "the client started the closing handshake and it completed cleanly")


async def amain(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if not os.access(args.duplex, os.X_OK):
        raise Fail(f"{args.duplex} is not an executable (build it: cargo build --release -p duplex-cli)")
    await run_case(args.duplex, "deflate")
    await run_case(args.duplex, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duplex", default=os.environ.get("DUPLEX_BIN", str(ROOT / "target/release/duplex")))
    args = ap.parse_args()
    t0 = time.monotonic()
    try:
        asyncio.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("FAIL: duplex_vs_server: interrupted", file=sys.stderr)
        return 130
    except Fail as e:
        print(f"FAIL: duplex_vs_server: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - any error is a failed interop test
        print(f"FAIL: duplex_vs_server: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"PASS: duplex_vs_server ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
