"""Packed sample frames (protocol_spec.SAMPLES_FIELDS, flag PACKED).

A sample is packed on its own: a map of ceil(input_size / 8) bytes, bit i (least significant
first) set when input byte i differs from the frame's `fill`, then the bytes whose bit is set. An
image's background quantises to one value, so a packed Fashion-MNIST 14x14 sample is about 70% of
its 196 bytes and an MNIST 28x28 one about a third: the link, which limits a device run on a UART
(and on the emulated board, whose UART takes one byte per round of QEMU's main loop), carries that
much less. Data with no common value (a sensor series) is sent as it is.
"""

from __future__ import annotations

import numpy as np


def _rows(x_int8) -> np.ndarray:
    x = np.asarray(x_int8, dtype=np.int8)
    return np.ascontiguousarray(x.reshape(len(x), -1))


def common_value(x_int8) -> int:
    """The most common byte of the samples (an image's background): the fill of their frames."""
    x = _rows(x_int8)
    if x.size == 0:
        return 0
    return int(np.bincount(x.view(np.uint8).ravel(), minlength=256).argmax().astype(np.uint8)
               .view(np.int8))


def packed_sizes(x_int8, fill: int) -> np.ndarray:
    """Bytes of each sample packed against `fill` (its map and the bytes the map names)."""
    x = _rows(x_int8)
    return (x.shape[1] + 7) // 8 + np.count_nonzero(x != np.int8(fill), axis=1)


def pack(x_int8, fill: int) -> bytes:
    """The samples packed one after the other (the body of a PACKED frame, after the labels)."""
    x = _rows(x_int8)
    keep = x != np.int8(fill)
    maps = np.packbits(keep, axis=1, bitorder="little")
    parts = []
    for r in range(len(x)):
        parts.append(maps[r].tobytes())
        parts.append(x[r][keep[r]].tobytes())
    return b"".join(parts)


def unpack(body: bytes, count: int, input_size: int, fill: int) -> np.ndarray:
    """The inverse of pack (what the device does); ValueError when the body does not hold
    exactly `count` packed samples of `input_size` bytes."""
    buf = np.frombuffer(body, dtype=np.int8)
    out = np.full((count, input_size), np.int8(fill), dtype=np.int8)
    map_bytes = (input_size + 7) // 8
    at = 0
    for r in range(count):
        if at + map_bytes > len(buf):
            raise ValueError(f"sample {r}: its map is cut short")
        keep = np.unpackbits(buf[at:at + map_bytes].view(np.uint8), bitorder="little")[:input_size]
        at += map_bytes
        k = int(keep.sum())
        if at + k > len(buf):
            raise ValueError(f"sample {r}: {k} bytes named, {len(buf) - at} left")
        out[r][keep.astype(bool)] = buf[at:at + k]
        at += k
    if at != len(buf):
        raise ValueError(f"{len(buf) - at} bytes after the last sample")
    return out


class FramePlan:
    """How the samples of one stream (a task's training data, its buffer, a test set) go into
    frames: packed against their most common byte when that makes them shorter on average, and
    as many per frame as the link's payload budget takes."""

    def __init__(self, x_int8):
        x = _rows(x_int8)
        self.input_size = x.shape[1]
        self.fill = common_value(x)
        packed = packed_sizes(x, self.fill) if len(x) else np.zeros(0, np.int64)
        self.packed = bool(len(x)) and float(packed.mean()) < self.input_size
        # Each sample's bytes in a frame, its label included.
        self.wire = 1 + (packed if self.packed else np.full(len(x), self.input_size))

    @property
    def fill_or_none(self) -> int | None:
        return self.fill if self.packed else None

    def count(self, idx, room: int, limit: int) -> int:
        """Samples of idx (the next ones, in order) whose bytes fit `room` (a frame's payload
        budget after the samples head): at least one, at most `limit`."""
        sizes = self.wire[np.asarray(idx[:limit], dtype=np.int64)]
        return max(1, int(np.searchsorted(np.cumsum(sizes), room, side="right")))
