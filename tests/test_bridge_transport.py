"""The learning messages' layouts and the fault proxy, without a device (fast)."""

import socket

import pytest
import threading

from tinycil import protocol_spec as spec
from tinycil.link.faultproxy import FaultProxy, Faults
from tinycil.link.session import (begin_task_payload, pack_fields, samples_payload, samples_per_frame,
                             unpack_fields)


def test_every_layout_round_trips():
    for fields in spec.LAYOUTS.values():
        values = {name: ([i + 1] * count if count > 1 else i + 1)
                  for i, (name, kind, count) in enumerate(fields)}
        back, end = unpack_fields(fields, pack_fields(fields, values))
        assert back == values
        assert end == len(pack_fields(fields, values))


def test_transport_limits_agree():
    assert spec.REPLY_CACHE >= spec.SEND_WINDOW
    ack = len(pack_fields(spec.ACK_FIELDS, {}))
    # The largest EVAL_RESULT the host asks for (predictions only) fits a cache entry.
    assert ack + 4 + spec.EVAL_MAX_SAMPLES <= spec.REPLY_CACHE_PAYLOAD
    for name in spec.SEQUENCED:
        assert name in spec.MESSAGES


def test_samples_fill_a_frame_without_overflowing_it():
    for size in (1, 64, 196, 600, 1019):
        n = samples_per_frame(size)
        import numpy as np

        payload = samples_payload(np.zeros((n, size), np.int8), np.zeros(n, np.uint8))
        assert len(payload) <= spec.MAX_PAYLOAD
        assert len(payload) + size + 1 > spec.MAX_PAYLOAD  # one more would not fit
    assert begin_task_payload([2, 3]) == b"\x02\x00\x02\x03"


def _echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _roundtrip(faults, payload):
    srv = _echo_server()
    with FaultProxy("127.0.0.1", srv.getsockname()[1], faults) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as c:
            c.sendall(payload)
            c.settimeout(0.3)
            got = b""
            try:
                while chunk := c.recv(65536):
                    got += chunk
            except socket.timeout:
                pass
        counts = proxy.counts
    srv.close()
    return got, counts


@pytest.mark.slow
def test_clean_proxy_forwards_every_byte_unchanged():
    data = bytes(range(256)) * 40
    got, counts = _roundtrip(Faults(), data)
    assert got == data and counts.total == 0


@pytest.mark.slow
def test_faults_are_seeded_and_bounded():
    data = bytes(range(256)) * 40
    faults = Faults(drop=0.3, corrupt=0.3, duplicate=0.3, garbage=0.3, seed=7, limit=25)
    got1, c1 = _roundtrip(faults, data)
    got2, c2 = _roundtrip(faults, data)
    # TCP cuts the stream into chunks differently each time, so only the bound is exact.
    assert c1.total == 25 and c2.total == 25
    assert got1 != data and got2 != data
    assert sum(1 for kind in ("drop", "corrupt", "duplicate", "garbage") if getattr(c1, kind)) >= 3


@pytest.mark.slow
def test_per_byte_faults_strike_at_their_rate():
    data = bytes(range(1, 256)) * 200  # 51 000 bytes
    faults = Faults(drop=0.002, corrupt=0.002, duplicate=0.002, garbage=0.002, per_byte=True,
                    limit=10**9, seed=3, directions=("to_device",))
    got, counts = _roundtrip(faults, data)
    for kind in ("drop", "corrupt", "duplicate", "garbage"):
        # 102 expected each; a generous band around it (the generator is seeded, TCP chunking
        # only changes where the faults fall).
        assert 50 < getattr(counts, kind) < 170, (kind, counts)
    assert got != data


@pytest.mark.slow
def test_lose_frames_drops_exactly_the_frames_named():
    from tinycil.link import protocol

    frames = [protocol.encode_frame(0x7E, i, bytes([i]) * 20) for i in range(10)]
    got, counts = _roundtrip(Faults(lose_frames={"to_device": {3, 7}}), b"".join(frames))
    seqs = [f.seq for f in protocol.FrameDecoder().feed(got)]
    assert seqs == [0, 1, 2, 4, 5, 6, 8, 9] and counts.lost_frames == 2


@pytest.mark.parametrize("size", [64, 196, 600])
def test_frames_of_large_samples_grow_to_a_full_frame(size):
    """On a clean link the frame size grows from FRAME_START to a full frame also when one sample
    takes most of the starting ceiling (a 14x14 image: 197 bytes with its label); it once stayed
    at one sample per frame for the whole run."""
    import numpy as np

    from tinycil.link.session import FRAME_START, grown_ceiling

    ceiling, sizes = float(FRAME_START), []
    head = len(samples_payload(np.zeros((0, size), np.int8), np.zeros(0, np.uint8)))
    for _ in range(8):  # every frame answered at its first send
        n = max(1, (int(ceiling) - head) // (size + 1))
        sizes.append(n)
        ceiling = grown_ceiling(ceiling, head + n * (size + 1))
    assert sizes[-1] == samples_per_frame(size)
    assert sizes == sorted(sizes)
