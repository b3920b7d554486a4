"""A loopback TCP proxy that damages a serial link on purpose, to prove the protocol survives it.

    with FaultProxy("127.0.0.1", qemu_port, Faults(drop=0.002, corrupt=0.002, seed=1)) as proxy:
        link = DeviceLink(proxy.url)

Bytes are forwarded in both directions in chunks; each chunk may, with the given probabilities,
lose a byte, get a bit flipped, be sent twice, wait before it goes on, or be preceded by random
garbage. With ``per_byte=True`` the probabilities are per byte instead (a soak's "0.1% per byte":
every byte may be dropped, flipped, doubled, preceded by 1-32 garbage bytes or held back, each
independently). ``lose_frames`` drops whole frames: {"to_host": {5}} loses the sixth frame (0x00
delimited) the device sends. The faults come from a seeded generator (one per direction), and
``limit`` bounds how many are injected in all, so a test always ends.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field

_KINDS = ("drop", "corrupt", "duplicate", "garbage", "delay")


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
    per_byte: bool = False   # the probabilities above are per byte, not per chunk
    lose_frames: dict = field(default_factory=dict)  # direction -> indexes of frames to lose
    lose_types: tuple = ()   # count only frames of these message types for lose_frames (all: ())


@dataclass
class FaultCounts:
    drop: int = 0
    corrupt: int = 0
    duplicate: int = 0
    delay: int = 0
    garbage: int = 0
    lost_frames: int = 0
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

    def _gap(self, rng: random.Random, p: float) -> int:
        """Bytes until the next fault of probability p per byte (geometric)."""
        if p <= 0:
            return 1 << 62
        if p >= 1:
            return 0
        return int(math.log(1.0 - rng.random()) / math.log(1.0 - p))

    def _damage_bytes(self, data: bytes, direction: str, rng: random.Random,
                      gaps: dict) -> list[bytes]:
        """Per-byte faults: each kind strikes after its own geometric gap of clean bytes."""
        f = self.faults
        out = bytearray()
        pieces: list[bytes] = []
        for byte in data:
            keep = True
            for kind in _KINDS:
                if gaps[kind] > 0:
                    gaps[kind] -= 1
                    continue
                gaps[kind] = self._gap(rng, getattr(f, kind))
                if not self._take(kind):
                    continue
                if kind == "drop":
                    keep = False
                elif kind == "corrupt":
                    byte ^= 1 << rng.randrange(8)
                elif kind == "duplicate":
                    out.append(byte)
                elif kind == "garbage":
                    out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
                else:  # delay: what came before goes now, the rest after a pause
                    pieces.append(bytes(out))
                    out.clear()
                    pieces.append(b"")  # marks the pause
                    pieces.append(rng.uniform(0, f.max_delay))
            if keep:
                out.append(byte)
        pieces.append(bytes(out))
        return pieces

    def _lose(self, data: bytes, direction: str, state: dict) -> bytes:
        """Drops the frames of ``lose_frames``: whole frames (held until their 0x00 delimiter),
        counted among those of ``lose_types``."""
        lose = self.faults.lose_frames.get(direction)
        if not lose:
            return data
        from tinycil.link.protocol import Frame, decode_body

        out = bytearray()
        held = state.setdefault("held", bytearray())
        for byte in data:
            held.append(byte)
            if byte != 0:
                continue
            frame = decode_body(bytes(held[:-1])) if len(held) > 1 else None
            counted = isinstance(frame, Frame) and (not self.faults.lose_types
                                                    or frame.type in self.faults.lose_types)
            if counted and state["frame"] in lose:
                with self._lock:
                    self.counts.lost_frames += 1
            else:
                out += held
            state["frame"] += 1 if counted else 0
            held.clear()
        return bytes(out)

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
        gaps = {kind: self._gap(rng, getattr(self.faults, kind)) for kind in _KINDS}
        frames = {"frame": 0}
        try:
            while not self._stop.is_set():
                data = src.recv(self.chunk)
                if not data:
                    break
                with self._lock:
                    self.counts.bytes[direction] += len(data)
                data = self._lose(data, direction, frames)
                if self.faults.per_byte and direction in self.faults.directions:
                    pieces = self._damage_bytes(data, direction, rng, gaps)
                else:
                    pieces = self._damage(data, direction, rng)
                for piece in pieces:
                    if isinstance(piece, float):
                        time.sleep(piece)
                    elif piece:
                        dst.sendall(piece)
        except OSError:
            pass
        finally:
            done.set()
