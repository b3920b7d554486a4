"""The link's recovery and adaptation against the firmware's own serial front end.

The firmware's main loop, protocol, sequencer, handlers, runtime and kernels are built for the host
(tests/fuzz_host, under AddressSanitizer and UndefinedBehaviorSanitizer) with a tiny model, and
serve their serial port on a real TCP socket; the host's Session talks to them through the fault
proxy exactly as it talks to the emulated board. Every test waits on events (a reply, an
exception, a process exit), never on a fixed short timeout.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading

import numpy as np
import pytest

from fuzz_host import build as fuzz_build
from helpers import process_alive
from persist_host import tiny_model
from tinycil import protocol_spec as spec
from tinycil.link import protocol
from tinycil.link.bridge import DeviceError, DeviceLink, NoAnswer
from tinycil.link.faultproxy import FaultProxy, Faults
from tinycil.link.session import (MalformedReply, Reply, Session, begin_task_payload,
                                  parse_eval_result, parse_reply, parse_stats, samples_payload,
                                  train_control_payload)

pytestmark = pytest.mark.slow  # one sanitised host build of the firmware, about a minute

MSG = spec.MESSAGES
INPUT = 6  # the tiny model's input (tests/persist_host/tiny_model.py)


@pytest.fixture(scope="module")
def device_exe(root, tmp_path_factory):
    try:
        return fuzz_build.build(root, tmp_path_factory.mktemp("device_host"))
    except fuzz_build.BuildError as exc:
        pytest.fail(f"the host build of the firmware failed: {exc}")


@pytest.fixture
def device(device_exe):
    """The firmware serving its serial port on 127.0.0.1; (port, process)."""
    proc = subprocess.Popen([str(device_exe), "serve"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"port (\d+)", line).group(1))
        yield port
    finally:
        proc.kill()
        proc.wait()
        assert not process_alive(proc.pid)


def _samples(n: int, seed: int, classes=(2, 3)):
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n).astype(np.uint8)
    x = rng.integers(-20, 20, size=(n, INPUT)).astype(np.int8)
    x[np.arange(n), y % INPUT] += 60
    return x, y


def teach(link: DeviceLink, limit: int | None = None,
          **session_args) -> tuple[list[int], dict, Session]:
    """One task of the tiny model, streamed in frames the session sizes (at most `limit` samples
    each): its predictions on a fixed test set and the device's counters afterwards."""
    session = Session(link, **session_args)
    session.unlock(tiny_model.DEVICE_KEY)  # only the model's owner may teach the device
    session.call("TRAIN_CONTROL", train_control_payload(lr=0.05, momentum=0.5, clip_norm=5.0,
                                                        batch_new=4, batch_replay=2, seed=7,
                                                        epochs=1))
    session.call("BEGIN_TASK", begin_task_payload([2, 3]))
    x, y = _samples(1200, 1)
    s = 0
    while s < len(y):
        n = min(session.samples_per_frame(INPUT, limit), len(y) - s)
        n -= n % 4 if n >= 4 else 0  # whole mini-batches per frame keep the test simple to read
        session.send("TRAIN_SAMPLES", samples_payload(x[s:s + n], y[s:s + n]))
        s += n
    session.flush()
    bx, by = _samples(4, 2)
    session.call("BUFFER_SAMPLES", samples_payload(bx, by, spec.SAMPLES_FLAGS["END_OF_TASK"]))
    tx, ty = _samples(300, 3, classes=(0, 1, 2, 3))
    preds = [-1] * len(ty)  # by index: replies complete out of order when one is resent
    s = 0
    while s < len(ty):
        n = min(session.samples_per_frame(INPUT, spec.EVAL_MAX_SAMPLES), len(ty) - s)

        def store(reply, s=s, n=n):
            preds[s:s + n] = parse_eval_result(reply)[0]

        session.send("EVAL_SAMPLES", samples_payload(tx[s:s + n], ty[s:s + n]), on_reply=store)
        s += n
    session.flush()
    stats = parse_stats(session.call("STATS"))
    return preds, stats, session


@pytest.fixture
def clean(device_exe):
    """The task over a clean link, on a device of its own."""
    proc = subprocess.Popen([str(device_exe), "serve"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r"port (\d+)", proc.stdout.readline()).group(1))
        with DeviceLink(f"socket://127.0.0.1:{port}") as link:
            preds, stats, session = teach(link)
    finally:
        proc.kill()
        proc.wait()
    # (No claim about retransmissions: on a loaded machine a slow round trip may still time out
    # once; the results are what must not change.)
    return preds, stats


@pytest.mark.parametrize("limit", [None, 16])
def test_losing_exactly_one_reply_does_not_abort_the_task(device, clean, limit):
    # The device's replies to sequenced requests: 0 answers SYNC, 1 UNLOCK, 2 TRAIN_CONTROL,
    # 3 BEGIN_TASK,
    # then TRAIN_SAMPLES: lose one in the middle of the training stream, later frames in flight.
    replies = (MSG["ACK"], MSG["EVAL_RESULT"], MSG["STATS_RESULT"])
    with FaultProxy("127.0.0.1", device, Faults(lose_frames={"to_host": {5}},
                                                lose_types=replies)) as proxy:
        with DeviceLink(proxy.url) as link:
            preds, stats, session = teach(link, limit)
        assert proxy.counts.lost_frames == 1
    assert (preds, stats["new_samples"], stats["steps"]) == (clean[0], clean[1]["new_samples"],
                                                             clean[1]["steps"])
    assert stats["frames_repeated"] >= 1  # the resend was answered from the device's cache
    if limit:
        # Small frames: several in flight, so a later reply shows the lost one at once and that
        # frame alone is resent (full 1 KB frames go one at a time under the flow control, and
        # the retransmission timeout recovers them). Unless a slow machine let the timeout fire
        # first, the fast path did it.
        assert session.stats.fast_resends >= 1 or session.stats.timeouts >= 1
        if session.stats.timeouts == 0:
            assert session.stats.fast_resends >= 1


@pytest.mark.parametrize("direction", ["to_host", "to_device"])
def test_a_burst_of_eight_lost_frames_does_not_abort_the_task(device, clean, direction):
    """A cable pulled for a moment: eight frames in a row never arrive (the device's replies, or the
    host's requests, from the sixth on): whatever is sent in that stretch, resends included, is
    lost, so the retransmission timer backs off (to its 4 s ceiling, about 18 s in all, well
    inside the 60 s after which a link counts as dead) and recovers without giving up."""
    with FaultProxy("127.0.0.1", device, Faults(lose_frames={direction: set(range(5, 13))})) as proxy:
        with DeviceLink(proxy.url) as link:
            preds, stats, session = teach(link)
        assert proxy.counts.lost_frames == 8
    assert (preds, stats["new_samples"], stats["steps"]) == (clean[0], clean[1]["new_samples"],
                                                             clean[1]["steps"])
    assert session.stats.retransmissions >= 1


def test_a_new_session_with_overlapping_seqs_gets_fresh_replies(device):
    with DeviceLink(f"socket://127.0.0.1:{device}") as link:
        first = Session(link)
        first._seq = 1000
        first.unlock(tiny_model.DEVICE_KEY)
        first.call("TRAIN_CONTROL", train_control_payload(lr=0.05, momentum=0.5, clip_norm=5.0,
                                                          batch_new=4, batch_replay=2, seed=7,
                                                          epochs=1))
        first.call("BEGIN_TASK", begin_task_payload([2, 3]))
        ran = parse_stats(first.call("STATS"))["frames_run"]
        # A second session whose seqs are exactly the first one's: SYNC 1001, STATS 1002, ...
        second = Session(link)
        second._seq = 1000
        reply = second.call("STATS")
        assert reply.type == MSG["STATS_RESULT"]  # not the first session's TRAIN_CONTROL ACK
        assert parse_stats(reply)["frames_run"] == ran + 2  # its SYNC and this STATS ran


# 1% per byte takes minutes (16 times the clean run's wall time): benchmarks/soak.py runs it, on
# the emulated board, in `make bench`.
@pytest.mark.parametrize("rate", [1e-4, 1e-3])
def test_a_task_over_a_lossy_link_gives_the_clean_results(device, clean, rate):
    """The bounded soak: bytes damaged at `rate` per byte (drop, corrupt, duplicate and garbage a
    quarter each) and delayed at `rate`, both directions, for the whole task."""
    q = rate / 4
    faults = Faults(drop=q, corrupt=q, duplicate=q, garbage=q, delay=rate,
                    max_delay=0.02, per_byte=True, limit=10**9, seed=int(rate * 1e6))
    with FaultProxy("127.0.0.1", device, faults) as proxy:
        with DeviceLink(proxy.url) as link:
            preds, stats, session = teach(link)
        counts = proxy.counts
    assert (preds, stats["new_samples"], stats["steps"]) == (clean[0], clean[1]["new_samples"],
                                                             clean[1]["steps"])
    if rate >= 1e-3:
        assert counts.drop and counts.corrupt and counts.duplicate and counts.garbage
        assert session.stats.retransmissions > 0
        # The frame size followed the loss: smaller frames than the clean link's full ones.
        assert session.payload_budget() < spec.MAX_PAYLOAD


def test_the_retransmission_timeout_follows_the_round_trip(device):
    with DeviceLink(f"socket://127.0.0.1:{device}") as link:
        session = Session(link, timeout=1.0, rto_min=0.05, rto_max=4.0)
        for _ in range(20):
            session.call("STATS")
        srtt = session.stats.srtt
        assert srtt is not None and 0 < srtt < 1.0
        assert 0.05 <= session.rto <= 4.0
        # RFC 6298 arithmetic on measured samples: steady 0.3 s round trips pull SRTT to them
        # and the variance down; the RTO stays within floor and ceiling.
        for _ in range(60):
            session._measure(0.3)
        assert abs(session.stats.srtt - 0.3) < 0.01
        assert 0.3 <= session.rto < 0.35
        for _ in range(60):
            session._measure(20.0)
        assert session.rto == 4.0


def test_a_dead_link_is_given_up_with_a_clear_message(tmp_path):
    """A port that accepts bytes and never answers: the session gives up after dead_after."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    done = threading.Event()

    def swallow():
        conn, _ = server.accept()
        with conn:
            while conn.recv(4096):
                pass
        done.set()

    threading.Thread(target=swallow, daemon=True).start()
    info = {"session_id": 1}
    with DeviceLink(f"socket://127.0.0.1:{server.getsockname()[1]}") as link:
        session = Session(link, info, timeout=0.1, rto_min=0.05, dead_after=1.0)
        with pytest.raises(NoAnswer, match="dead.*no request completed for 1 s"):
            session.call("STATS")
        assert session.stats.timeouts >= 2  # it kept resending, with backoff, until then
    done.wait(5)
    server.close()


def test_malformed_replies_with_a_valid_crc_are_device_errors():
    head = struct.pack("<BBHHHI", 0, 0, 0, 100, 0, 1)
    short_eval = Reply(MSG["EVAL_RESULT"], 1, 0, 0, 100, 0, 1, struct.pack("<HH", 50, 3) + b"\x01")
    with pytest.raises(MalformedReply, match="EVAL_RESULT.*flash"):
        parse_eval_result(short_eval)
    with pytest.raises(DeviceError, match="STATS_RESULT"):
        parse_stats(Reply(MSG["STATS_RESULT"], 1, 0, 0, 100, 0, 1, b"\x00" * 5))
    with pytest.raises(DeviceError, match="malformed"):
        parse_reply(protocol.Frame(MSG["ACK"], 0, 1, head[:5]))
    with pytest.raises(DeviceError):
        protocol.parse_status(b"\x00\x01")
    assert issubclass(protocol.ProtocolError, DeviceError)


def test_the_fuzzer_finds_nothing(device_exe):
    """Random and crafted conversations into the firmware's parser and handlers, bounded (about
    30 s); `make bench` runs it longer (benchmarks/fuzz.py)."""
    proc = subprocess.run([str(device_exe), "fuzz", "1", "30"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    m = re.search(r"iterations=(\d+) bytes_in=(\d+).*findings=0", proc.stdout)
    assert m and int(m.group(1)) > 100, proc.stdout
