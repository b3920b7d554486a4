"""On the emulated board: Ctrl-C in the middle of a task leaves a record that says so, the next
stream refuses to build on the half-learned task and says what works, and `stream --restart`
(the device falls back to its deployed model) then completes the task in a new device session,
with the interrupted session kept aside. An emulator without -icount says its counter follows
wall time."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from helpers import emulator_home
from test_runtime_twin import prepared_digits_run
from tinycil import protocol_spec as spec
from tinycil.cli import main
from tinycil.link.bridge import DeviceLink
from tinycil.link.protocol import Frame, FrameDecoder
from tinycil.link.stream import TaskInterrupted, stream_task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm"),
]

BOARD = "mps2_an500"


@pytest.fixture
def home(root, tmp_path, monkeypatch):
    """TINYCIL_HOME and TINYCIL_STATE_DIR in the test's folder; the emulator is killed at the end."""
    yield from emulator_home(root, tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return prepared_digits_run(tmp_path_factory)


class CtrlCAfter(DeviceLink):
    """A real link to the device on which the user presses Ctrl-C (KeyboardInterrupt) when the
    host is about to send its `frames`-th TRAIN_SAMPLES frame."""

    def __init__(self, *args, frames: int, **kwargs):
        self.left = frames
        self.decoder = FrameDecoder()
        super().__init__(*args, **kwargs)

    def write(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if isinstance(frame, Frame) and frame.type == spec.MESSAGES["TRAIN_SAMPLES"]:
                self.left -= 1
                if self.left == 0:
                    raise KeyboardInterrupt
        super().write(data)


def cli(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output


def test_an_interrupted_task_is_never_recorded_and_restart_completes_it(home, digits_run,
                                                                         tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    code, out = cli("flash", "--board", BOARD, "--run", run)
    assert code == 0, out
    url = json.loads((home.parent / "state" / "state.json").read_text())["url"]

    with CtrlCAfter(url, timeout=1.0, retries=10, frames=3) as link:
        first = link.hello()
        with pytest.raises(TaskInterrupted) as exc:
            stream_task(run, link, 1, epochs=1, progress=False, echo=lambda *_: None,
                        board_hint=f"--board {BOARD}")
    said = str(exc.value)
    assert "interrupted during task 1" in said and "nothing of task 1 was recorded" in said
    assert f"--board {BOARD} --task 1 --restart" in said
    results = json.loads((run / "results.json").read_text())
    assert "device" not in results
    assert results["device_log"]["in_progress"] == {"task": 1, "interrupted": True}
    assert results["device_log"]["tasks"] == {}

    # The device holds part of task 1: neither task 2 nor task 1 may build on that.
    for task in (2, 1):
        code, out = cli("stream", "--run", run, "--board", BOARD, "--task", task, "--epochs", 1,
                        "--no-progress")
        assert code != 0
        assert "began task 1 but its learning of that task was interrupted" in out
        assert "--task 1 --restart" in out and f"tinycil flash --board {BOARD} --run" in out
    assert "device" not in json.loads((run / "results.json").read_text())

    # What the advice says works: restart, then task 1 from the deployed model.
    code, out = cli("stream", "--run", run, "--board", BOARD, "--task", 1, "--restart",
                    "--epochs", 1, "--no-progress")
    assert code == 0, out
    assert "restarting the device" in out
    results = json.loads((run / "results.json").read_text())
    device = results["device"]
    assert device["tasks_completed"] == [1] and device["rows_from_host"] == []
    assert device["session"]["session_id"] != first["session_id"]
    assert "in_progress" not in results["device_log"]
    (old,) = results["device_history"]
    assert old["session"]["session_id"] == first["session_id"]
    assert old["device_log"]["in_progress"]["interrupted"] is True and old["device"] is None
    # Task 2 now continues from the completed task 1.
    code, out = cli("stream", "--run", run, "--board", BOARD, "--task", 3, "--no-progress")
    assert code != 0 and "has learned up to task 1" in out and "stream task 2 next" in out

    # This emulator runs without -icount: its counter follows wall time, and both say so.
    code, out = cli("selftest", "--board", BOARD)
    assert code == 0, out
    assert "QEMU runs without -icount" in out and "ticks/MAC" in out
    assert "instructions/MAC" not in out
    code, out = cli("info", "--board", BOARD)
    assert code == 0 and "timer ticks that follow wall time" in out
    assert cli("stop")[0] == 0
