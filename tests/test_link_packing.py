"""Packed sample frames (protocol_spec SAMPLES flag PACKED): the host's packing, its inverse, and
how a stream's frames are planned. The device's unpacking is proven on the emulated board
(test_e2e_digits: packed and plain frames give the same predictions; bad packed frames are
refused; every device run streams packed frames and matches its twin)."""

import numpy as np
import pytest

from tinycil import protocol_spec as spec
from tinycil.link import packing
from tinycil.link.session import samples_payload, samples_per_frame, unpack_fields


def _images(n, side=14, seed=0):
    """Images on a constant background (-128), as quantised Fashion-MNIST looks."""
    rng = np.random.default_rng(seed)
    x = np.full((n, side, side), -128, np.int8)
    for i in range(n):
        r0, c0 = rng.integers(0, side // 2, size=2)
        x[i, r0:r0 + side // 2, c0:c0 + side // 2] = rng.integers(-128, 128, (side // 2, side // 2))
    return x.reshape(n, -1)


@pytest.mark.parametrize("size", [1, 7, 8, 9, 64, 196, 600])
def test_pack_then_unpack_gives_the_samples_back(size):
    rng = np.random.default_rng(size)
    x = rng.integers(-128, 128, (5, size)).astype(np.int8)
    x[:, ::3] = 17  # a common value, and bytes equal to it everywhere else by chance
    body = packing.pack(x, 17)
    assert len(body) == int(packing.packed_sizes(x, 17).sum())
    assert np.array_equal(packing.unpack(body, 5, size, 17), x)


def test_the_map_is_least_significant_bit_first():
    x = np.array([[0, 5, 0, 0, 0, 0, 0, 0, 0, 6]], np.int8)
    assert packing.pack(x, 0) == bytes([0b00000010, 0b00000010, 5, 6])


def test_unpack_refuses_a_body_that_does_not_hold_the_samples():
    x = _images(3)
    body = packing.pack(x, -128)
    with pytest.raises(ValueError, match="left|cut short"):
        packing.unpack(body[:-1], 3, x.shape[1], -128)
    with pytest.raises(ValueError, match="after the last sample"):
        packing.unpack(body + b"\x00", 3, x.shape[1], -128)


def test_images_are_packed_and_a_series_is_not():
    x = _images(200)
    plan = packing.FramePlan(x)
    assert plan.packed and plan.fill == -128
    assert plan.wire.mean() < 0.8 * (x.shape[1] + 1)
    series = np.random.default_rng(1).integers(-128, 128, (50, 600)).astype(np.int8)
    flat = packing.FramePlan(series)
    assert not flat.packed and flat.fill_or_none is None
    assert np.all(flat.wire == 601)


def test_a_payload_is_packed_only_when_that_is_shorter():
    x = _images(4)
    y = np.arange(4, dtype=np.uint8)
    packed = samples_payload(x, y, spec.SAMPLES_FLAGS["END_OF_BATCH"], fill=-128)
    head, off = unpack_fields(spec.SAMPLES_FIELDS, packed)
    assert head["flags"] == spec.SAMPLES_FLAGS["END_OF_BATCH"] | spec.SAMPLES_FLAGS["PACKED"]
    assert head["fill"] == -128 and head["count"] == 4
    assert packed[off:off + 4] == y.tobytes()
    assert np.array_equal(packing.unpack(packed[off + 4:], 4, x.shape[1], -128), x)
    # Nothing equal to the fill: packing would only add the maps, so the samples go as they are.
    noisy = np.full((4, 196), 3, np.int8)
    plain = samples_payload(noisy, y, 0, fill=-128)
    head, off = unpack_fields(spec.SAMPLES_FIELDS, plain)
    assert head["flags"] == 0 and plain[off + 4:] == noisy.tobytes()
    assert samples_payload(x, y) == samples_payload(x, y, 0, None)  # no fill: never packed


def test_frames_take_as_many_packed_samples_as_the_budget_holds():
    x = _images(100)
    plan = packing.FramePlan(x)
    idx = np.arange(100)
    limit = samples_per_frame(x.shape[1])
    head = 4
    for room in (1, 150, 300, 600, spec.MAX_PAYLOAD - head):
        n = plan.count(idx, room, limit)
        assert 1 <= n <= limit
        if n > 1:
            assert int(plan.wire[:n].sum()) <= room
        if n < limit:
            assert int(plan.wire[:n + 1].sum()) > room
        body = samples_payload(x[:n], np.zeros(n, np.uint8), 0, plan.fill)
        assert len(body) <= max(room + head, head + int(plan.wire[0]))
    # What one frame unpacks to bounds the count, however small the packed samples are.
    blank = np.full((100, 196), -128, np.int8)
    blank[:, 0] = 1
    bplan = packing.FramePlan(blank)
    assert bplan.count(idx, spec.MAX_PAYLOAD - head, limit) == limit
    assert limit * 196 <= spec.PACKED_SCRATCH
