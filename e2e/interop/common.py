"""What the two interop scripts share: the repository root, the failure
type, the check that prints what passed, and a connection class that counts
the bytes it received (to prove compression happened on the wire)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]


class Fail(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Fail(what)
    print(f"  ok: {what}", flush=True)


C = TypeVar("C")


def counting(base: type[C]) -> type[C]:
    """A subclass of the websockets connection class `base` whose instances
    count the bytes received on the TCP connection in `rx_bytes`."""

    class Counting(base):  # type: ignore[misc, valid-type]
        rx_bytes = 0

        def data_received(self, data: bytes) -> None:
            self.rx_bytes += len(data)
            super().data_received(data)

    Counting.__name__ = f"Counting{base.__name__}"
    return Counting
