"""The learned state across a device reset, end to end on the emulated board: `tinycil flash --run
RUN --persist` (firmware built with -DTC_PERSIST=1), a task streamed over the serial protocol (the
device saves its state when the task ends), RESET, and HELLO then shows the restored state and
the device predicts exactly as before the reset. A reset in the middle of the next task falls back
to the saved state, and the host says which task to stream again.

Runs against a private copy of the project (TINYCIL_HOME); every QEMU is ended by its pid.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from test_device_flash_run import digits_run, home  # noqa: F401  (fixtures)
from tinycil import protocol_spec as spec
from tinycil.link.bridge import DeviceLink
from tinycil.cli import main
from tinycil.link.bridge import DeviceStatusError
from tinycil.link.session import (BadTrainingSettings, DeviceLocked, DeviceReset, Session,
                                  begin_task_payload, pack_fields, parse_eval_result, reset_device,
                                  samples_payload, samples_per_frame, train_control_payload)
from tinycil.link.stream import RunData, StreamError, check_device, reset_advice, stream_task
from tinycil.runfolder import read_device_key

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm"),
]

BOARD = "mps2_an500"
PERSIST = spec.PERSIST_STATES


def _predictions(link, data: RunData, upto: int) -> np.ndarray:
    """The device's predictions on the test data of tasks 0..upto, in order."""
    session = Session(link)
    x = np.concatenate([data.samples("test", j)[0] for j in range(upto + 1)])
    y = np.concatenate([data.samples("test", j)[1] for j in range(upto + 1)])
    n = samples_per_frame(data.input_size, spec.EVAL_MAX_SAMPLES)
    preds = []
    for s in range(0, len(y), n):
        preds += parse_eval_result(session.call("EVAL_SAMPLES", samples_payload(x[s:s + n],
                                                                                y[s:s + n])))[0]
    return np.array(preds)


def _only_the_owner_teaches(link, run, data: RunData) -> None:
    """The device is its owner's: a session without the run's key (export wrote it into the run
    folder and the firmware) may ask and predict but not teach; a wrong key is refused; training
    settings outside the protocol's sane ranges are refused even to the owner. Nothing refused
    changes the device (the caller checks its state afterwards)."""
    tr = data.config["training"]
    valid = {"lr": tr["lr"], "momentum": tr["momentum"], "clip_norm": tr["clip_norm"],
             "batch_new": tr["batch_new"], "batch_replay": tr["batch_replay"], "seed": data.seed,
             "epochs": 1}
    stranger = Session(link)
    assert stranger.call("STATS").code == spec.STATUS["OK"]  # open to anyone
    for name, payload in (("TRAIN_CONTROL", train_control_payload(**valid)),
                          ("BEGIN_TASK", begin_task_payload(data.units(data.tasks[2])))):
        with pytest.raises(DeviceStatusError) as refused:
            stranger.call(name, payload)
        assert refused.value.code == spec.STATUS["LOCKED"], name
        assert refused.value.detail == spec.LOCKED_REASONS["NO_KEY"], name
    with pytest.raises(DeviceLocked, match="refused run .* key.*tinycil flash"):
        stranger.unlock(bytes(spec.DEVICE_KEY_BYTES), str(run))
    key = read_device_key(run)
    assert key is not None and len(key) == spec.DEVICE_KEY_BYTES
    stranger.unlock(key, str(run))
    index = {name: i for i, (name, _, _) in enumerate(spec.TRAIN_CONTROL_FIELDS)}
    for field, value in (("lr", 1e30), ("lr", 0.0), ("momentum", float("nan")),
                         ("clip_norm", -1.0), ("batch_new", 0), ("balance_steps", 20000),
                         ("balance_lr_scale", float("inf")), ("asymmetric_ce", 2),
                         ("replay_shift", 5), ("head_weight", 11.0), ("head_weight", -0.5),
                         ("head_shrinkage", 1.5), ("head_shrinkage", float("nan"))):
        with pytest.raises(BadTrainingSettings, match=field):
            train_control_payload(**{**valid, field: value})  # the host refuses it first
        with pytest.raises(DeviceStatusError) as refused:  # and so does the device
            stranger.call("TRAIN_CONTROL", pack_fields(spec.TRAIN_CONTROL_FIELDS,
                                                       {**valid, field: value}))
        assert refused.value.code == spec.STATUS["BAD_ARGUMENT"], (field, value)
        assert refused.value.detail == index[field], (field, value)
    # A new session starts locked again, whoever opened the one before.
    with pytest.raises(DeviceStatusError) as refused:
        Session(link).call("TRAIN_CONTROL", train_control_payload(**valid))
    assert refused.value.code == spec.STATUS["LOCKED"]


def test_no_build_cannot_take_a_run_or_persist(home, digits_run):  # noqa: F811
    flashed = CliRunner().invoke(main, ["flash", "--board", BOARD, "--run", str(digits_run),
                                        "--persist", "--no-build"])
    assert flashed.exit_code != 0 and "--no-build" in flashed.output


def _hello_after_reset(url: str, before: int) -> dict:
    with DeviceLink(url, timeout=1.0, retries=10) as link:
        info = link.hello()
    assert info["session_id"] != before  # it did restart
    return info


def test_learned_state_survives_a_reset(home, digits_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    runner = CliRunner()
    flashed = runner.invoke(main, ["flash", "--board", BOARD, "--run", str(run), "--persist"])
    assert flashed.exit_code == 0, flashed.output
    assert "with persistence of the learned state" in flashed.output
    url = json.loads((home.parent / "state" / "state.json").read_text())["url"]
    data = RunData.load(run)

    with DeviceLink(url, timeout=1.0, retries=10) as link:
        fresh = link.hello()
        assert fresh["persist"] == PERSIST["EMPTY"]  # a new emulator: nothing saved yet
        measured = stream_task(run, link, 1, epochs=1, progress=False, echo=lambda *_: None,
                               board_hint=f"--board {BOARD}")
        assert measured["state_saved"] is True
        # The credit follows the ring's real free space: frames queued behind a training step
        # lower it below the empty ring's (the ring less the main loop's 64-byte read chunk).
        assert 0 < measured["link"]["min_rx_free"] < spec.DEVICE_RX_RING - 64
        assert Session(link).call("STATS").rx_free == spec.DEVICE_RX_RING - 64  # nothing queued
        learned = link.hello()
        assert learned["persist"] == PERSIST["SAVED"] and learned["persist_task"] == 1
        assert learned["classes_seen"] == data.plan[1]["classes_seen"]
        assert learned["buffer_fill"] > fresh["buffer_fill"]
        _only_the_owner_teaches(link, run, data)
        before = _predictions(link, data, 1)
        reset_device(link)

    restored = _hello_after_reset(url, learned["session_id"])
    assert restored["persist"] == PERSIST["RESTORED"]
    assert restored["persist_task"] == 1
    assert restored["persist_sequence"] == learned["persist_sequence"]
    for field in ("classes_seen", "buffer_fill", "buffer_capacity", "model_signature"):
        assert restored[field] == learned[field], field
    shown = runner.invoke(main, ["info", "--board", BOARD])
    assert "restored at boot: the state saved after task 1" in shown.output

    with DeviceLink(url, timeout=1.0, retries=10) as link:
        after = _predictions(link, data, 1)
        assert np.array_equal(after, before)
        # The device continues from task 1: task 2 is accepted, task 3 is not yet.
        info = link.hello()
        check_device(data, info, 2, str(run), f"--board {BOARD}")
        with pytest.raises(StreamError, match="has learned up to task 1.*stream task 2 next"):
            check_device(data, info, 3, str(run), f"--board {BOARD}")

        # A reset in the middle of task 2: the device falls back to the state after task 1.
        x, y = data.samples("train", 2)
        tr = data.config["training"]
        session = Session(link)
        session.unlock(read_device_key(run), str(run))
        session.call("TRAIN_CONTROL", train_control_payload(
            lr=tr["lr"], momentum=tr["momentum"], clip_norm=tr["clip_norm"],
            batch_new=tr["batch_new"], batch_replay=tr["batch_replay"], seed=data.seed, epochs=1))
        session.call("BEGIN_TASK", begin_task_payload(data.units(data.tasks[2])))
        session.call("TRAIN_SAMPLES", samples_payload(x[:8], y[:8]))
        reset_device(link)
        with pytest.raises(DeviceReset, match="restarted"):
            for _ in range(3):
                session.call("TRAIN_SAMPLES", samples_payload(x[8:16], y[8:16]))
        info = link.hello()
    assert info["persist"] == PERSIST["RESTORED"] and info["persist_task"] == 1
    assert info["classes_seen"] == data.plan[1]["classes_seen"]
    advice = reset_advice(data, info, str(run), f"--board {BOARD}")
    assert "restored the state it saved after task 1" in advice
    assert "--task 2" in advice

    with DeviceLink(url, timeout=1.0, retries=10) as link:
        assert np.array_equal(_predictions(link, data, 1), before)
    assert runner.invoke(main, ["stop"]).exit_code == 0
