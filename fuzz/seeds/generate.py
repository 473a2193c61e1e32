#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/seeds/<target>/.

Hand-made valid inputs, from the RFCs where they have an example: frames of
RFC 6455 §5.7, the handshake of §1.2, the deflated "Hello" of RFC 7692
§7.2.3.1, and short conversations in the connection targets' program format
(see fuzz/src/lib.rs). Run it again after changing that format:

    python3 fuzz/seeds/generate.py
"""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # the masking key of RFC 6455 §5.7


def write(target, name, data):
    path = os.path.join(HERE, target)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def frame(b0, payload, mask=None):
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + payload
    return head + payload


def deflate(data, final=False):
    """RFC 7692 §7.2.1: raw DEFLATE, sync-flushed, the 00 00 ff ff removed."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
    return out if final else out[:-4]


# ---- frame: headers as RFC 6455 §5.7 shows them.
write("frame", "text-unmasked", frame(0x81, b"Hello"))
write("frame", "text-masked", frame(0x81, b"Hello", KEY))
write("frame", "fragment-first", frame(0x01, b"Hel"))
write("frame", "fragment-last", frame(0x80, b"lo"))
write("frame", "ping", frame(0x89, b"Hello"))
write("frame", "pong-masked", frame(0x8A, b"Hello", KEY))
write("frame", "binary-256", frame(0x82, bytes(256)))
write("frame", "binary-64k-header", bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]))
write("frame", "close-1000", frame(0x88, struct.pack(">H", 1000)))
write("frame", "compressed-rsv1", frame(0xC1, deflate(b"Hello"), KEY))

# ---- handshake_request: RFC 6455 §1.2, and what browsers send.
RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
write("handshake_request", "rfc6455", RFC_REQUEST)
write(
    "handshake_request",
    "browser-deflate",
    b"GET /topics/news?x=1 HTTP/1.1\r\n"
    b"Host: localhost:8080\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"User-Agent: Mozilla/5.0\r\n\r\n",
)
write(
    "handshake_request",
    "deflate-offers-and-frame",
    RFC_REQUEST[:-2]
    + b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
    b"client_max_window_bits, permessage-deflate; client_no_context_takeover\r\n\r\n"
    + frame(0x81, b"Hello", KEY),
)
write("handshake_request", "http10-post", b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")

# ---- handshake_response: the answer of RFC 6455 §1.2 to the fixed key.
RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n\r\n"
)
write("handshake_response", "rfc6455", RFC_RESPONSE)
write(
    "handshake_response",
    "deflate-and-frame",
    RFC_RESPONSE[:-2]
    + b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12; "
    b"server_no_context_takeover\r\n\r\n"
    + frame(0x81, b"Hello"),
)
# Found by the fuzzer: an extension answer of empty list elements names none.
write("handshake_response", "empty-extension-list", RFC_RESPONSE[:-2] + b"Sec-WebSocket-Extensions: ,\r\n\r\n")
write(
    "handshake_response",
    "426",
    b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
)

# ---- inflate: [config, limit, chunk] then a compressed payload.
# RFC 7692 §7.2.3.1 and §7.2.3.3: "Hello" compressed, and in a stored block.
write("inflate", "hello", bytes([7, 16, 255]) + bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]))
write("inflate", "hello-stored", bytes([7, 16, 2]) + bytes([0x00, 0x05, 0x00, 0xFA, 0xFF]) + b"Hello" + b"\x00")
write("inflate", "json-window-9", bytes([1 | 8, 12, 16]) + deflate(b'{"topic":"news","offset":42,"data":"hello"}' * 20))
write("inflate", "bomb", bytes([7, 10, 255]) + deflate(bytes(1 << 20)))
write("inflate", "bfinal", bytes([7, 16, 255]) + deflate(b"the end", final=True))


# ---- connection_server / connection_client: programs (fuzz/src/lib.rs).
def feed(data):
    return b"\x00" + struct.pack("<H", len(data)) + data


WRITE_ALL = b"\x01"


def send_text(text):
    return bytes([2, len(text)]) + text


def send_close(code, reason):
    return bytes([2 | 5 << 2]) + struct.pack("<H", code) + bytes([len(reason)]) + reason


def drip(data, size):
    """Receives `data` in chunks of `size` bytes (1 to 64)."""
    out = b""
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += bytes([3 | (len(piece) - 1) << 2]) + piece
    return out


for target, mask in [("connection_server", KEY), ("connection_client", None)]:
    f = lambda b0, payload: frame(b0, payload, mask)  # noqa: E731
    close = f(0x88, struct.pack(">H", 1000) + b"bye")
    # No extension, large limits: text, ping, binary, the peer closes.
    write(
        target,
        "plain-conversation",
        b"\x00"
        + feed(f(0x81, b"Hello") + f(0x89, b"ping"))
        + WRITE_ALL
        + feed(f(0x82, bytes(range(200))))
        + send_text(b"from the application")
        + feed(close)
        + WRITE_ALL,
    )
    # Fragments with a ping between them, in small reads; we close first.
    write(
        target,
        "fragments-dripped",
        b"\x02"
        + drip(f(0x01, b"Hel") + f(0x89, b"") + f(0x80, b"lo"), 3)
        + send_close(1000, b"done")
        + feed(close)
        + WRITE_ALL,
    )
    # permessage-deflate, context takeover, 15 bits: compressed messages.
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = comp.compress(b"Hello") + comp.flush(zlib.Z_SYNC_FLUSH)
    second = comp.compress(b"Hello") + comp.flush(zlib.Z_SYNC_FLUSH)
    write(
        target,
        "deflate-conversation",
        bytes([1 | 7 << 4])
        + feed(f(0xC1, first[:-4]) + f(0xC1, second[:-4]))
        + WRITE_ALL
        + feed(f(0x41, deflate(b"fragmented and ")[:3]))
        + send_text(b"compressed by us")
        + feed(close)
        + WRITE_ALL,
    )
    # No context takeover, 9-bit windows, threshold 64, small limits: a
    # message too big once inflated.
    write(
        target,
        "deflate-too-big",
        bytes([1 | 2 | 4 | 8 | 1 << 4 | 0x80]) + feed(f(0xC2, deflate(bytes(4096)))) + WRITE_ALL,
    )
    # Invalid UTF-8 in a text frame: 1007.
    write(target, "invalid-utf8", b"\x00" + feed(f(0x81, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")) + WRITE_ALL)

# delta: a limit byte, a split byte, then a source and a delta (or a target).
# Two JSON states (the split falls near their boundary), and a source with a
# hand-made delta of Fossil's format: copy 5 from 0, insert "hello", and a
# checksum that does not match (the decoder must say so, not panic).
before = b'{"px":101.25,"qty":1200,"sym":"ACME"}'
after = b'{"px":101.75,"qty":1200,"sym":"ACME"}'
write("delta", "states", bytes([16, 128]) + before + after)
source = b"abcdefghijklmnopqrstuvwxyz0123456789"
write("delta", "hand-made", bytes([16, 128]) + source + b"A\n5@0,5:hello0;" + source[:4])
