#!/usr/bin/env python3
"""WebSocket over HTTP/2 (RFC 8441) against `duplex serve`, with a client no one here
wrote: the pure-Python `h2` protocol stack, and WebSocket frames made by hand.

    h2_client.py --url wss://127.0.0.1:PORT/ --ca ca.pem

Against a running `duplex serve --tls-cert ... --tls-key ...` at --url:
  - TLS with ALPN h2 (the server must pick it) and the CA as the only root;
  - the server's SETTINGS carry SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3);
  - two extended CONNECT streams (`:protocol websocket`) on that one connection get
    200 without Sec-WebSocket-Accept; on both, interleaved, masked text frames are
    echoed; one also echoes a 64 KiB binary message (more than the initial HTTP/2
    flow-control window, so WINDOW_UPDATEs both ways are needed);
  - each stream ends with the close handshake (1000 echoed) and the server's
    END_STREAM; a plain GET on a third stream of the same connection gets the page.

Prints one line per check and `h2-interop: N passed, M failed` last; exits 0 only if
every check passed.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import struct
import sys
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings

TIMEOUT = 20.0
results: list[tuple[str, bool]] = []


def record(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok))
    print(f"  {'ok' if ok else 'FAIL'}: {name}{'' if ok else ' -- ' + detail}", flush=True)


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame, FIN set (RFC 6455 §5.2)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def parse_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Whole unmasked server frames at the start of buf (consumed)."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80:
            raise ValueError("the server masked a frame")
        n = b1 & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            at = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            at = 10
        if len(buf) < at + n:
            break
        if not b0 & 0x80:
            raise ValueError("unexpected fragment")
        out.append((b0 & 0x0F, bytes(buf[at : at + n])))
        del buf[: at + n]
    return out


class Client:
    def __init__(self, host: str, port: int, ca: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=ca)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.alpn = self.sock.selected_alpn_protocol()
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.data: dict[int, bytearray] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.settings_seen = False

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(chunk):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(event, h2.events.ResponseReceived):
                self.headers[event.stream_id] = {
                    k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                    for k, v in event.headers
                }
            elif isinstance(event, h2.events.DataReceived):
                self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                # Hand the window back so the server can go on sending.
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                # NO_ERROR: the server is done with the stream and needs no
                # more of ours (RFC 9113 §8.1); anything else is a failure.
                if event.error_code != 0:
                    raise ConnectionError(f"stream {event.stream_id} reset: {event.error_code}")
                self.ended.add(event.stream_id)
                self.reset.add(event.stream_id)
        self.flush()

    def until(self, done) -> None:
        while not done():
            self.pump()

    def connect_protocol_enabled(self) -> bool:
        self.until(lambda: self.settings_seen)
        return self.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 1

    def open_websocket(self, authority: str, path: str) -> int:
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "https"),
                (":path", path),
                (":authority", authority),
                ("sec-websocket-version", "13"),
            ],
        )
        self.flush()
        return stream

    def send(self, stream: int, data: bytes) -> None:
        """Sends within HTTP/2 flow control, waiting for WINDOW_UPDATEs."""
        while data:
            window = min(
                self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.pump()
                continue
            self.conn.send_data(stream, data[:window])
            self.flush()
            data = data[window:]

    def messages(self, stream: int, count: int) -> list[tuple[int, bytes]]:
        """The next `count` frames of `stream`, keepalive Pings answered and left out."""
        got: list[tuple[int, bytes]] = []
        buf = self.data.setdefault(stream, bytearray())
        while True:
            for opcode, payload in parse_frames(buf):
                if opcode == 0x9:
                    self.send(stream, frame(0xA, payload))
                else:
                    got.append((opcode, payload))
            if len(got) >= count:
                return got
            self.pump()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    args = parser.parse_args()
    url = urlsplit(args.url)
    host, port = url.hostname, url.port
    authority = f"{host}:{port}"
    try:
        client = Client(host, port, args.ca)
        record("TLS picks ALPN h2", client.alpn == "h2", f"got {client.alpn!r}")
        record("SETTINGS_ENABLE_CONNECT_PROTOCOL = 1", client.connect_protocol_enabled())

        a = client.open_websocket(authority, "/echo-a")
        b = client.open_websocket(authority, "/echo-b")
        client.until(lambda: a in client.headers and b in client.headers)
        for name, stream in (("first", a), ("second", b)):
            h = client.headers[stream]
            record(
                f"{name} CONNECT answered 200 without an accept",
                h.get(":status") == "200" and "sec-websocket-accept" not in h,
                str(h),
            )
        record("both WebSockets share one connection", a != b and client.alpn == "h2")

        client.send(a, frame(0x1, b"hello a"))
        client.send(b, frame(0x1, b"hello b"))
        client.send(a, frame(0x1, b"again a"))
        got_a = client.messages(a, 2)
        got_b = client.messages(b, 1)
        record(
            "text echoes on both streams, interleaved",
            got_a == [(1, b"hello a"), (1, b"again a")] and got_b == [(1, b"hello b")],
            f"{got_a} {got_b}",
        )

        big = os.urandom(64 * 1024)
        client.send(b, frame(0x2, big))
        got = client.messages(b, 1)
        record("a 64 KiB binary message echoes intact", got == [(2, big)], f"{[(o, len(p)) for o, p in got]}")

        for name, stream in (("first", a), ("second", b)):
            client.send(stream, frame(0x8, struct.pack("!H", 1000) + b"bye"))
            frames = client.messages(stream, 1)
            close = frames[-1]
            code = struct.unpack("!H", close[1][:2])[0] if len(close[1]) >= 2 else None
            record(f"{name} close handshake: 1000 echoed", close[0] == 8 and code == 1000, str(close))
            if stream not in client.reset:
                client.conn.end_stream(stream)
                client.flush()
            client.until(lambda: stream in client.ended)
            record(f"{name} stream ended by the server", True)

        page = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            page,
            [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", authority)],
            end_stream=True,
        )
        client.flush()
        client.until(lambda: page in client.ended)
        status = client.headers.get(page, {}).get(":status")
        body = bytes(client.data.get(page, b""))
        record("the page on the same connection", status == "200" and b"<html" in body.lower(), str(status))
        client.conn.close_connection()
        client.flush()
        client.sock.close()
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        record("the exchange completed", False, f"{type(e).__name__}: {e}")
    passed = sum(ok for _, ok in results)
    failed = len(results) - passed
    print(f"h2-interop: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
