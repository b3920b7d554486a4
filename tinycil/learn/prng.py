"""The pseudo-random generator shared by the host reference (`simulate`) and the device.

Every random decision the device makes (initial weights of grown hidden units, which replay
samples join a mini-batch) comes from this generator, so the host can replay a device run exactly.
It is specified here precisely enough to be reimplemented bit for bit in C:

State: one uint32, never 0.

Seeding (`seed_state`): ``state = (uint32)(seed * 2654435761u + 1u)``, computed modulo 2^32 (the
seed is first reduced modulo 2^32); if the result is 0 the state becomes 0x9E3779B9. The device
re-seeds at every BEGIN_TASK with ``task_seed(seed, task) = seed + 1000 * task`` (the same number
the host uses to shuffle that task's stream), so a task can be replayed on its own.

``next()`` (Marsaglia's xorshift32; every operation on uint32, shifts discard the bits shifted out)::

    state ^= state << 13;  state ^= state >> 17;  state ^= state << 5;  return state;

``index(n)``, uniform in [0, n) for 1 <= n <= 2^32 - 1: ``(uint32)(((uint64)next() * n) >> 32)``.

``uniform()``, float32 in [0, 1): ``(float)(next() >> 8) * 0x1p-24f``. Both steps are exact in
float32 (a 24-bit integer times a power of two).

``normal()``, approximately N(0, 1) (Irwin-Hall: the sum of 12 uniforms minus 6). It uses only
integer additions and one exact scaling, so no transcendental function (logf, cosf, whose last
bit differs between C libraries) is involved::

    uint32 s = 0;
    for (k = 0; k < 12; ++k) s += next() >> 12;        // 12 draws of 20 bits, s < 12 * 2^20
    int32  d = (int32)s + 6 - 6 * 1048576;             // centre: each draw's mean is (2^20 - 1) / 2
    return (float)d * 0x1p-20f;                        // |d| < 2^23: both conversions exact

The result lies in [-6, 6], has mean 0 and standard deviation 1 (up to 2^-20).

``he_normal(fan_in)``: ``normal() * sqrtf(2.0f / (float)fan_in)``. The scale is computed once per
layer as float32: ``(float)fan_in`` is exact (fan_in < 2^24), the division and sqrtf are correctly
rounded by IEEE 754 (numpy and a hardware VSQRT agree), and the product is one float32 multiply.

This replaces the Box-Muller draft of the design notes: Box-Muller needs logf and cosf, which are
not correctly rounded and would make host and device weights differ in the last bit.
"""

from __future__ import annotations

import numpy as np

_MASK32 = 0xFFFFFFFF
_SEED_MULTIPLIER = 2654435761
_ZERO_STATE_REPLACEMENT = 0x9E3779B9
_IRWIN_HALL_TERMS = 12
_NORMAL_BITS = 20


def seed_state(seed: int) -> int:
    """The initial uint32 state for an integer seed (see the module text)."""
    state = ((int(seed) & _MASK32) * _SEED_MULTIPLIER + 1) & _MASK32
    return state if state != 0 else _ZERO_STATE_REPLACEMENT


def task_seed(seed: int, task: int) -> int:
    """The seed the device's generator is re-seeded with at BEGIN_TASK of `task`."""
    return int(seed) + 1000 * int(task)


def he_scale(fan_in: int) -> np.float32:
    """sqrtf(2.0f / (float)fan_in), in float32 as the device computes it."""
    if fan_in < 1:
        raise ValueError(f"fan_in must be at least 1, got {fan_in}")
    return np.sqrt(np.float32(2.0) / np.float32(fan_in), dtype=np.float32)


class Prng:
    """xorshift32 with the draws the device uses. Plain Python integers: clarity over speed."""

    def __init__(self, seed: int):
        self.state = seed_state(seed)

    @classmethod
    def for_task(cls, seed: int, task: int) -> "Prng":
        return cls(task_seed(seed, task))

    def next(self) -> int:
        s = self.state
        s ^= (s << 13) & _MASK32
        s ^= s >> 17
        s ^= (s << 5) & _MASK32
        self.state = s
        return s

    def index(self, n: int) -> int:
        if not 1 <= n <= _MASK32:
            raise ValueError(f"index(n) needs 1 <= n < 2^32, got {n}")
        return (self.next() * n) >> 32

    def uniform(self) -> np.float32:
        return np.float32(self.next() >> 8) * np.float32(2.0**-24)

    def normal(self) -> np.float32:
        s = 0
        for _ in range(_IRWIN_HALL_TERMS):
            s += self.next() >> (32 - _NORMAL_BITS)
        d = s + _IRWIN_HALL_TERMS // 2 - (_IRWIN_HALL_TERMS // 2) * (1 << _NORMAL_BITS)
        return np.float32(d) * np.float32(2.0**-_NORMAL_BITS)

    def normals(self, count: int) -> np.ndarray:
        """`count` successive normal() draws as a float32 array (in draw order)."""
        return np.array([self.normal() for _ in range(count)], dtype=np.float32)

    def he_normal(self, count: int, fan_in: int) -> np.ndarray:
        """`count` weights normal() * he_scale(fan_in), in draw order, float32."""
        return self.normals(count) * he_scale(fan_in)
