"""End to end on the emulated board: `tinycil run` on digits (prepare, export, a real PlatformIO
build, QEMU, the serial protocol over a real socket), the device's accuracy matrix against the
host reference, and the link's faults.

The firmware is built in a copy of the firmware project under the test's temporary folder, so the
test never changes the checkout's firmware/generated/.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinycil import protocol_spec as spec
from tinycil.deploy import emulator
from tinycil.deploy.boards import load_board
from tinycil.link.bridge import DeviceLink, NoAnswer
from tinycil.link.faultproxy import FaultProxy, Faults
from tinycil.link.session import (DeviceReset, Session, begin_task_payload, reset_device,
                             samples_payload, train_control_payload)
from tinycil.link.stream import StreamError, reset_advice, stream_task
from tinycil.runfolder import read_device_key
from helpers import copy_firmware_project, process_alive

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm"),
]

BOARD = "mps2_an500"


@pytest.fixture(scope="module")
def project(root, tmp_path_factory):
    """A private copy of the firmware project and the board catalogue."""
    return copy_firmware_project(root, tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def e2e(project, tmp_path_factory):
    """`tinycil run --dataset digits --board mps2_an500` (small epochs), through run_end_to_end."""
    from tinycil.cli.run import run_end_to_end

    os.environ["TINYCIL_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    started = {}

    def remember(url):
        started["url"] = url
        return url

    lines = []
    # replay_shift on (off by default for 8x8 images): the device, its twin and the simulation
    # must agree with every ingredient of the device procedure running.
    results = run_end_to_end("digits", BOARD, run_dir, epochs=4, distill_iters=10, root=project,
                             progress=False, echo=lines.append, link_wrapper=remember,
                             prepare_kwargs={"replay_shift": 1})
    elf = project / "firmware" / ".pio" / "build" / BOARD / "firmware.elf"
    return {"run_dir": run_dir, "results": results, "elf": elf, "lines": lines}


@pytest.fixture
def device(e2e):
    """A fresh emulated board with the run's firmware (killed by pid afterwards)."""
    state = emulator.start(load_board(BOARD), e2e["elf"], record=False)
    try:
        yield state
    finally:
        emulator.stop_state(state)
        assert not process_alive(state.pid)


def _fresh_run(e2e, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(e2e["run_dir"], run)
    return run


def test_run_writes_device_and_host_results(e2e):
    run_dir, results = e2e["run_dir"], e2e["results"]
    for name in ("results.json", "summary.md", "plot.png"):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert set(on_disk) >= {"dataset", "board", "tasks", "known_tasks", "method", "device"}
    R = on_disk["device"]["accuracy_matrix"]
    assert len(R) == 5 and all(R[i][j] is not None for i in range(5) for j in range(i + 1))
    assert results["device"] == on_disk["device"]  # what run returns is what it wrote
    assert on_disk["device"]["instructions_per_train_sample"] > 0
    assert "device" in (run_dir / "summary.md").read_text()


def test_device_matches_the_host_simulation_within_one_point(e2e):
    dev = np.array(e2e["results"]["device"]["accuracy_matrix"], dtype=float)
    sim = np.array(e2e["results"]["method"]["accuracy_matrix"], dtype=float)
    mask = ~np.isnan(sim)
    assert np.nanmax(np.abs(dev[mask] - sim[mask])) <= 0.01


def test_device_matches_the_host_twin_exactly(e2e):
    if "twin" not in e2e["results"]:
        pytest.skip("no host C++ compiler for the twin")
    assert e2e["results"]["device"]["accuracy_matrix"] == e2e["results"]["twin"]["accuracy_matrix"]


def test_a_latent_replay_buffer_gives_the_same_device_run(e2e, root, tmp_path):
    """The run again with `replay_store: latents`, in a project copy of its own (its firmware
    differs): on the emulated board the accuracy matrix is the very same, for fewer instructions
    per training sample, and the buffer keeps latents."""
    from tinycil.cli.run import run_end_to_end

    run = _fresh_run(e2e, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["replay_store"] = "latents"
    (run / "config.json").write_text(json.dumps(config))
    project = copy_firmware_project(root, tmp_path / "project")
    results = run_end_to_end("digits", BOARD, run, root=project, progress=False,
                             echo=lambda *_: None, reuse=True)
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["buffer"]["store"] == "latents"
    # A buffered sample is now the backbone's int8 output: its bytes are the latent's size
    # (for digits larger than the 8x8 input, the frozen prefix being built at its final width).
    assert manifest["buffer"]["sample_bytes"] == int(np.prod(config["latent_shape"]))
    inputs = e2e["results"]["device"]
    assert results["device"]["accuracy_matrix"] == inputs["accuracy_matrix"]
    assert results["device"]["instructions_per_train_sample"] < 0.7 * inputs["instructions_per_train_sample"]


def test_a_damaged_link_gives_the_same_results(e2e, device, tmp_path):
    run = _fresh_run(e2e, tmp_path)
    # Per 64-byte chunk: about one 1 KB frame in three is damaged while the faults last.
    faults = Faults(drop=0.006, corrupt=0.006, duplicate=0.006, delay=0.006, garbage=0.006,
                    max_delay=0.02, seed=5, limit=40)
    with FaultProxy("127.0.0.1", device.port, faults) as proxy:
        with DeviceLink(proxy.url, timeout=0.5, retries=10) as link:
            measured = stream_task(run, link, 1, progress=False, echo=lambda *_: None,
                                   timeout=0.3, max_sends=40)
        counts = proxy.counts
    clean = e2e["results"]["device"]["accuracy_matrix"][1][:2]
    assert measured["row"] == clean
    assert counts.total == 40
    assert min(counts.drop, counts.corrupt, counts.duplicate, counts.garbage) > 0
    assert measured["link"]["retransmissions"] > 0  # the faults did hit the protocol


def test_a_device_reset_mid_task_is_detected(e2e, device, tmp_path):
    run = _fresh_run(e2e, tmp_path)
    from tinycil.link.stream import RunData

    data = RunData.load(run)
    x, y = data.samples("train", 1)
    with DeviceLink(device.url, timeout=1.0) as link:
        session = Session(link, reset_hint="flash and stream again")
        session.unlock(read_device_key(run))  # the run's owner may teach the device
        tr = data.config["training"]
        session.call("TRAIN_CONTROL", train_control_payload(
            lr=tr["lr"], momentum=tr["momentum"], clip_norm=tr["clip_norm"],
            batch_new=tr["batch_new"], batch_replay=tr["batch_replay"], seed=data.seed, epochs=1))
        session.call("BEGIN_TASK", begin_task_payload(data.units(data.tasks[1])))
        session.call("TRAIN_SAMPLES", samples_payload(x[:4], y[:4]))
        reset_device(link)
        with pytest.raises(DeviceReset, match="restarted.*flash and stream again"):
            for _ in range(3):
                session.call("TRAIN_SAMPLES", samples_payload(x[4:8], y[4:8]))
        # This firmware keeps no learned state: after the restart it is back at its deployed
        # state, so task 2 is refused, and the advice is to flash and stream again.
        info = link.hello()
        assert info["persist"] == 0 and info["classes_seen"] == data.plan[0]["classes_seen"]
        assert "flash it again" in reset_advice(data, info, str(run), "--board mps2_an500")
        with pytest.raises(StreamError, match="stream task 1 next|flash it again"):
            stream_task(run, link, 2, progress=False, echo=lambda *_: None)


def test_the_heads_frames_are_refused_out_of_turn(e2e, device, tmp_path):
    """OBSERVE frames only after END_OF_TASK with a head weight, FIT_HEAD only with OBSERVE; a
    task begun after END_OF_TASK drops the statistics, and the device keeps its last head."""
    run = _fresh_run(e2e, tmp_path)
    from tinycil.link.session import DeviceStatusError, parse_stats
    from tinycil.link.stream import RunData

    data = RunData.load(run)
    x, y = data.samples("train", 1)
    bx, by = data.buffer(1)
    flags = spec.SAMPLES_FLAGS
    with DeviceLink(device.url, timeout=1.0, retries=10) as link:
        before = link.hello()["session_id"]
        reset_device(link)  # back to the deployed model: this firmware keeps no learned state
        for _ in range(100):  # the restarted device answers with a new session id
            try:
                if link.hello()["session_id"] != before:
                    break
            except NoAnswer:
                pass
        else:
            pytest.fail("the device did not restart")
        session = Session(link)
        session.unlock(read_device_key(run))
        tr = data.config["training"]
        session.call("TRAIN_CONTROL", train_control_payload(
            lr=tr["lr"], momentum=tr["momentum"], clip_norm=tr["clip_norm"],
            batch_new=tr["batch_new"], batch_replay=tr["batch_replay"], seed=data.seed, epochs=1,
            head_weight=0.5))
        session.call("BEGIN_TASK", begin_task_payload(data.units(data.tasks[1])))
        with pytest.raises(DeviceStatusError) as refused:  # the task is still training
            session.call("TRAIN_SAMPLES", samples_payload(x[:4], y[:4], flags["OBSERVE"]))
        assert refused.value.code == spec.STATUS["BAD_STATE"]
        with pytest.raises(DeviceStatusError) as refused:
            session.call("TRAIN_SAMPLES", samples_payload(x[:4], y[:4], flags["FIT_HEAD"]))
        assert refused.value.code == spec.STATUS["BAD_ARGUMENT"]
        bn = int(tr["batch_new"])
        for s in range(0, bn, 8):  # one mini-batch, in frames the link carries
            session.call("TRAIN_SAMPLES", samples_payload(x[s:min(s + 8, bn)], y[s:min(s + 8, bn)]))
        done = session.call("BUFFER_SAMPLES", samples_payload(bx, by, flags["END_OF_TASK"]))
        assert done.detail == spec.SAVE_DEFERRED  # the head's statistics follow
        stats = parse_stats(session.call("STATS"))
        assert stats["head_observing"] == 1 and stats["head_classes"] == 0
        session.call("TRAIN_SAMPLES", samples_payload(x[:10], y[:10], flags["OBSERVE"]))
        done = session.call("TRAIN_SAMPLES", samples_payload(
            x[10:20], y[10:20], flags["OBSERVE"] | flags["FIT_HEAD"]))
        assert done.detail == 2  # saved, had the firmware persistence (tc_persist UNAVAILABLE)
        stats = parse_stats(session.call("STATS"))
        assert stats["head_observing"] == 0 and stats["observed_samples"] >= 20
        assert stats["head_classes"] == stats["classes_seen"] == 4
        assert stats["head_features"] > 0
        with pytest.raises(DeviceStatusError) as refused:  # fitted: nothing under way any more
            session.call("TRAIN_SAMPLES", samples_payload(x[:4], y[:4], flags["OBSERVE"]))
        assert refused.value.code == spec.STATUS["BAD_STATE"]


def test_a_wrong_model_signature_is_refused(e2e, device, tmp_path):
    run = _fresh_run(e2e, tmp_path)
    manifest = run / "export" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["signature"] = "00112233445566ff"
    manifest.write_text(json.dumps(m))
    with DeviceLink(device.url, timeout=1.0) as link:
        with pytest.raises(StreamError, match=r"device runs model [0-9a-f]{16}, run .* exported "
                                              r"00112233445566ff: run `tinycil flash --board B"):
            stream_task(run, link, 1, progress=False, echo=lambda *_: None)


def test_garbage_answers_read_as_a_wrong_baud_rate(e2e, device):
    # Every byte from the device damaged: what a wrong baud rate does to a real UART.
    faults = Faults(corrupt=1.0, garbage=1.0, directions=("to_host",), limit=10**9, seed=1)
    with FaultProxy("127.0.0.1", device.port, faults) as proxy:
        with DeviceLink(proxy.url, timeout=0.3, retries=1) as link:
            with pytest.raises(NoAnswer, match="baud rate"):
                link.hello()


def test_a_missing_port_is_a_clear_error(e2e, tmp_path):
    from click.testing import CliRunner

    from tinycil.cli.stream import stream

    out = CliRunner().invoke(stream, ["--run", str(e2e["run_dir"]), "--port",
                                      "socket://127.0.0.1:9", "--task", "1", "--no-progress"])
    assert out.exit_code != 0
    assert "nothing listens at socket://127.0.0.1:9" in out.output


def test_ctrl_c_during_a_run_leaves_no_emulator(e2e, project, tmp_path):
    from tinycil.cli.run import run_end_to_end

    run = _fresh_run(e2e, tmp_path)
    seen = {}

    def interrupt(url):
        # Only an emulator this test started: others (a benchmark beside the suite) may come and go.
        seen["pid"] = next(s for s in _qemu_pids(parent=os.getpid())
                           if s not in seen.get("before", ()))
        raise KeyboardInterrupt

    seen["before"] = set(_qemu_pids())
    with pytest.raises(KeyboardInterrupt):
        run_end_to_end("digits", BOARD, run, root=project, progress=False, echo=lambda *_: None,
                       link_wrapper=interrupt, reuse=True)
    assert seen["pid"] and not process_alive(seen["pid"])


def _qemu_pids(parent: int | None = None):
    """Live QEMU processes, or only the children of `parent`."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system-arm" in cmd and process_alive(int(p.name)):
                if parent is not None and _parent_of(p) != parent:
                    continue
                pids.append(int(p.name))
    return pids


def _parent_of(proc: Path) -> int | None:
    try:
        # /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces: read after its ")".
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_selftest_runs_the_kernel_checks_on_the_device(device):
    from click.testing import CliRunner

    from tinycil.cli.stream import selftest

    out = CliRunner().invoke(selftest, ["--port", device.url, "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["failed"] == 0
    assert [r["check"] for r in result["results"]] == ["dense_f32_fwd", "dense_f32_bwd",
                                                      "fully_connected_s8", "conv2d_f32_1ch"]
    assert all(r["passed"] and r["ticks_per_mac"] > 0 for r in result["results"])


def test_packed_frames_are_unpacked_exactly_and_bad_ones_refused(e2e, device):
    """The device unpacks PACKED samples into what the host packed: the same predictions as the
    plain frames of the same samples; a packed body one byte short or long, or more samples than
    a frame unpacks to, is refused before anything runs."""
    from tinycil import protocol_spec as spec
    from tinycil.link import packing
    from tinycil.link.bridge import DeviceStatusError
    from tinycil.link.session import parse_eval_result, pack_fields
    from tinycil.link.stream import RunData

    data = RunData.load(e2e["run_dir"])
    x, y = data.samples("test", 0)
    plan = packing.FramePlan(x)
    assert plan.packed  # 8x8 digits: the background is one value
    n = 8
    with DeviceLink(device.url, timeout=1.0) as link:
        session = Session(link)
        for s in range(0, 40, n):
            plain = samples_payload(x[s:s + n], y[s:s + n], 0)
            packed = samples_payload(x[s:s + n], y[s:s + n], 0, plan.fill)
            assert packed[2] & spec.SAMPLES_FLAGS["PACKED"] and len(packed) < len(plain)
            assert (parse_eval_result(session.call("EVAL_SAMPLES", packed))[0]
                    == parse_eval_result(session.call("EVAL_SAMPLES", plain))[0])
        packed = samples_payload(x[:n], y[:n], 0, plan.fill)
        for bad in (packed[:-1], packed + b"\x00"):
            with pytest.raises(DeviceStatusError) as refused:
                session.call("EVAL_SAMPLES", bad)
            assert refused.value.code == spec.STATUS["BAD_ARGUMENT"]
            assert "packed samples do not match" in refused.value.text
        too_many = spec.PACKED_SCRATCH // data.input_size + 1
        head = pack_fields(spec.SAMPLES_FIELDS, {"count": too_many, "fill": plan.fill,
                                                 "flags": spec.SAMPLES_FLAGS["PACKED"]})
        blank = packing.pack(np.full((too_many, data.input_size), plan.fill, np.int8), plan.fill)
        with pytest.raises(DeviceStatusError) as refused:
            session.call("EVAL_SAMPLES", head + bytes(too_many) + blank)
        assert refused.value.code == spec.STATUS["BAD_ARGUMENT"]
        assert "more packed samples than one frame unpacks to" in refused.value.text
