#!/usr/bin/env python3
"""TLS interop with peers no one here wrote: Python `websockets` on OpenSSL.

    python_client.py --url wss://127.0.0.1:PORT/ --ca ca.pem --cert cert.pem --key key.pem \
        --duplex target/release/duplex

Against a running `duplex serve --tls-cert cert.pem --tls-key key.pem` at --url:
  - a `websockets` client with an ssl context that trusts only --ca
    (load_verify_locations) connects over TLS 1.3 with ALPN http/1.1, by IP and by
    the name localhost; text and binary of 1 KiB, 64 KiB and 1 MiB come back
    identical; a ping gets its pong; close 1000 is clean;
  - the certificate is really checked: the platform's roots alone reject it
    (unknown issuer), and so does a client expecting another host name.
The other way round, `duplex connect wss://... --ca` talks to a `websockets` server
serving --cert/--key with Python's ssl module.

Prints one line per check and `tls-interop: N passed, M failed` last; exits 0 only if
every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

STEP_TIMEOUT = 30.0
results: list[tuple[str, bool]] = []


def record(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok))
    print(f"  {'ok' if ok else 'FAIL'}: {name}{'' if ok else ' -- ' + detail}", flush=True)


def client_context(ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca:
        # Trust only the test CA, not the platform's roots.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def echo_checks(url: str, ca: str) -> None:
    async with connect(url, ssl=client_context(ca), open_timeout=STEP_TIMEOUT,
                       max_size=4 << 20) as ws:
        tls = ws.transport.get_extra_info("ssl_object")
        record(f"{url}: TLS 1.3 (got {tls.version()})", tls.version() == "TLSv1.3")
        record(f"{url}: ALPN http/1.1 (got {tls.selected_alpn_protocol()})",
               tls.selected_alpn_protocol() == "http/1.1")
        for size in (1 << 10, 64 << 10, 1 << 20):
            text = ("wss é ✓ " * (size // 10 + 1))[:size]
            await ws.send(text)
            echoed = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
            record(f"{url}: text of {len(text.encode())} bytes echoed", echoed == text)
            blob = os.urandom(size)
            await ws.send(blob)
            echoed = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
            record(f"{url}: binary of {size} bytes echoed", echoed == blob)
        pong = await ws.ping(b"tls")
        await asyncio.wait_for(pong, STEP_TIMEOUT)
        record(f"{url}: ping answered", True)
        await ws.close(1000, "done")
        record(f"{url}: clean close 1000 (got {ws.close_code} {ws.close_reason!r})",
               ws.close_code == 1000)


async def rejected(url: str, ctx: ssl.SSLContext, what: str, **kwargs: object) -> None:
    try:
        async with connect(url, ssl=ctx, open_timeout=STEP_TIMEOUT, **kwargs):
            record(what, False, "connected")
    except ssl.SSLCertVerificationError as e:
        record(f"{what} ({e.verify_message})", True)
    except Exception as e:  # noqa: BLE001 -- any other failure is a failed check
        record(what, False, f"{type(e).__name__}: {e}")


async def duplex_client_vs_python_server(duplex: str, ca: str, cert: str, key: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, ssl=ctx) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"wss://127.0.0.1:{port}/"
        proc = await asyncio.create_subprocess_exec(
            duplex, "connect", url, "--ca", ca,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(b"hello\nfrom duplex\n"), STEP_TIMEOUT)
        ok = proc.returncode == 0 and out == b"hello\nfrom duplex\n"
        record(f"duplex connect {url} --ca: echo from a websockets server over TLS", ok,
               f"status {proc.returncode}, stdout {out!r}, stderr {err.decode(errors='replace')}")


async def amain(args: argparse.Namespace) -> None:
    port = urlsplit(args.url).port
    await echo_checks(args.url, args.ca)
    await echo_checks(f"wss://localhost:{port}/", args.ca)
    await rejected(args.url, client_context(None),
                   "the platform's roots alone reject the test certificate")
    await rejected(args.url, client_context(args.ca),
                   "a client expecting host example.org rejects it",
                   server_hostname="example.org")
    await duplex_client_vs_python_server(args.duplex, args.ca, args.cert, args.key)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--duplex", required=True)
    args = p.parse_args()
    try:
        asyncio.run(amain(args))
    except Exception as e:  # noqa: BLE001 -- reported as a failed check
        record("the run ended early", False, f"{type(e).__name__}: {e}")
    passed = sum(ok for _, ok in results)
    failed = len(results) - passed
    print(f"tls-interop: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
