"""A loopback TCP proxy that damages a serial link on purpose, to prove the protocol survives it.

    with FaultProxy("127.0.0.1", qemu_port, Faults(drop=0.002, corrupt=0.002, seed=1)) as proxy:
        link = DeviceLink(proxy.url)

Bytes are forwarded in both directions in chunks; each chunk may, with the given probabilities,
lose a byte, get a bit flipped, be sent twice, wait before it goes on, or be preceded by random
garbage. The faults come from a seeded generator (one per direction), and ``limit`` bounds how
many are injected in all, so a test always ends.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    drop: float = 0.0        # per chunk: one byte removed
    corrupt: float = 0.0     # per chunk: one bit of one byte flipped
    duplicate: float = 0.0   # per chunk: the chunk sent twice
    delay: float = 0.0       # per chunk: held back for up to max_delay seconds
    garbage: float = 0.0     # per chunk: 1-32 random bytes injected before it
    max_delay: float = 0.05
    seed: int = 0
    limit: int = 1000        # faults injected in total, both directions together
    directions: tuple = ("to_device", "to_host")


@dataclass
class FaultCounts:
    drop: int = 0
    corrupt: int = 0
    duplicate: int = 0
    delay: int = 0
    garbage: int = 0
    bytes: dict = field(default_factory=lambda: {"to_device": 0, "to_host": 0})

    @property
    def total(self) -> int:
        return self.drop + self.corrupt + self.duplicate + self.delay + self.garbage


class FaultProxy:
    """Listens on 127.0.0.1 (an OS-chosen port) and forwards one client at a time upstream."""

    def __init__(self, host: str, port: int, faults: Faults | None = None, chunk: int = 64):
        self.upstream = (host, port)
        self.faults = faults or Faults()
        self.chunk = chunk
        self.counts = FaultCounts()
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self.port = self._server.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        for s in [self._server, *self._sockets]:
            try:
                s.close()
            except OSError:
                pass
        self._thread.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- forwarding ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            done = threading.Event()
            rngs = {d: random.Random(f"{self.faults.seed}-{d}") for d in ("to_device", "to_host")}
            pumps = [threading.Thread(target=self._pump, args=(client, upstream, "to_device",
                                                               rngs["to_device"], done), daemon=True),
                     threading.Thread(target=self._pump, args=(upstream, client, "to_host",
                                                               rngs["to_host"], done), daemon=True)]
            for p in pumps:
                p.start()
            done.wait()
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            for p in pumps:
                p.join(timeout=2.0)

    def _take(self, kind: str) -> bool:
        with self._lock:
            if self.counts.total >= self.faults.limit:
                return False
            setattr(self.counts, kind, getattr(self.counts, kind) + 1)
            return True

    def _damage(self, data: bytes, direction: str, rng: random.Random) -> list[bytes]:
        f = self.faults
        if direction not in f.directions:
            return [data]
        out = bytearray(data)
        if f.drop and rng.random() < f.drop and len(out) > 0 and self._take("drop"):
            del out[rng.randrange(len(out))]
        if f.corrupt and rng.random() < f.corrupt and len(out) > 0 and self._take("corrupt"):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        pieces = [bytes(out)]
        if f.garbage and rng.random() < f.garbage and self._take("garbage"):
            pieces.insert(0, bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))))
        if f.duplicate and rng.random() < f.duplicate and self._take("duplicate"):
            pieces.append(bytes(out))
        if f.delay and rng.random() < f.delay and self._take("delay"):
            time.sleep(rng.uniform(0, f.max_delay))
        return pieces

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str, rng: random.Random,
              done: threading.Event) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(self.chunk)
                if not data:
                    break
                with self._lock:
                    self.counts.bytes[direction] += len(data)
                for piece in self._damage(data, direction, rng):
                    if piece:
                        dst.sendall(piece)
        except OSError:
            pass
        finally:
            done.set()
