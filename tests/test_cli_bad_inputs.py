"""Every command, given a user's mistake or a damaged file, says what to do in one clear message
and exits non-zero: never a Python traceback. Bad files are refused before a device is touched.

The run folders here are written by the test in the format `tinycil prepare` writes (small, no
training), then damaged the way a disk, an interrupted copy or a hand edit damages them.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinycil.cli import main


def refused(args, env=None) -> str:
    """Run the command line; it must fail cleanly: non-zero exit, a message, no traceback."""
    res = CliRunner().invoke(main, [str(a) for a in args], env=env)
    shown = f"{args}: exit {res.exit_code}\n{res.output}"
    assert res.exit_code not in (0, None), shown
    assert "Traceback" not in res.output, shown
    # CliRunner keeps an escaped exception instead of printing it: there must be none.
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        shown + f"\nescaped: {res.exception!r}")
    assert "Error" in res.output, shown
    return res.output


class Listener:
    """A TCP port that records whatever a command sends to it (it never answers)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2)
        self.sock.settimeout(0.1)
        self.url = f"socket://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.1)
            with conn:
                while not self._stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    self.received += data

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    ear = Listener()
    yield ear
    ear.close()


def write_run(folder: Path, n_tasks: int = 2) -> Path:
    """A device run of `n_tasks` tasks x 2 classes on 4-value inputs (the first known to the
    host), as `tinycil prepare` and `tinycil export` lay it out (config, plan, buffers, export
    manifest)."""
    folder.mkdir(parents=True)
    tasks = [[2 * t, 2 * t + 1] for t in range(n_tasks)]
    config = {
        "kind": "device", "dataset": "digits", "seed": 0, "tasks": n_tasks,
        "task_classes": tasks, "known_tasks": 1, "input_shape": [4],
        "input_quantization": {"scale": 0.1, "zero_point": 0},
        "training": {"epochs": 1, "lr": 0.05, "momentum": 0.9, "clip_norm": 5.0,
                     "batch_new": 2, "batch_replay": 2},
        "buffer": {"samples": 2 * n_tasks, "bytes": 10 * n_tasks, "fraction": 0.01,
                   "samples_per_task": [2] * n_tasks},
    }
    (folder / "config.json").write_text(json.dumps(config))
    seen = [c for t in tasks for c in t]
    plan = [{"classes_seen": 2 * (t + 1), "seen_classes": seen[:2 * (t + 1)],
             "outputs": 2 * (t + 1)} for t in range(n_tasks)]
    (folder / "plan.json").write_text(json.dumps(plan))
    (folder / "buffer").mkdir()
    for t, classes in enumerate(tasks):
        np.savez(folder / "buffer" / f"task_{t}.npz", x=np.zeros((2, 4), np.float32),
                 y=np.array(classes), x_int8=np.zeros((2, 4), np.int8))
    (folder / "export").mkdir()
    (folder / "export" / "manifest.json").write_text(json.dumps({"signature": "0011223344556677"}))
    return folder


# ---- stream: the run folder is checked before the device is touched ---------------------------

def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


DAMAGES = {
    "truncated buffer": lambda run: _truncate(run / "buffer" / "task_1.npz", 100),
    "empty buffer": lambda run: (run / "buffer" / "task_1.npz").write_bytes(b""),
    "missing buffer": lambda run: (run / "buffer" / "task_1.npz").unlink(),
    "buffer of the wrong shape": lambda run: np.savez(
        run / "buffer" / "task_1.npz", x=np.zeros((2, 9), np.float32), y=np.array([2, 3]),
        x_int8=np.zeros((2, 9), np.int8)),
    "buffer with another task's labels": lambda run: np.savez(
        run / "buffer" / "task_1.npz", x=np.zeros((2, 4), np.float32), y=np.array([0, 7]),
        x_int8=np.zeros((2, 4), np.int8)),
    "truncated manifest": lambda run: _truncate(run / "export" / "manifest.json", 15),
    "manifest without a signature": lambda run: (run / "export" / "manifest.json").write_text("{}"),
    "empty config": lambda run: (run / "config.json").write_text(""),
    "config of the wrong type": lambda run: (run / "config.json").write_text("[1, 2]"),
    "config missing the training": lambda run: (run / "config.json").write_text(
        json.dumps({k: v for k, v in json.loads((run / "config.json").read_text()).items()
                    if k != "training"})),
    "config with text for a number": lambda run: (run / "config.json").write_text(
        (run / "config.json").read_text().replace('"lr": 0.05', '"lr": "fast"')),
    "truncated plan": lambda run: _truncate(run / "plan.json", 20),
    "plan of one task": lambda run: (run / "plan.json").write_text(
        json.dumps(json.loads((run / "plan.json").read_text())[:1])),
    "data set moved away": lambda run: (run / "config.json").write_text(
        (run / "config.json").read_text().replace('"dataset": "digits"',
                                                  f'"dataset": "mnist", "data_dir": "{run}/gone"')),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_stream_refuses_a_damaged_run_folder_before_touching_the_device(tmp_path, listener,
                                                                         damage):
    run = write_run(tmp_path / "run")
    DAMAGES[damage](run)
    out = refused(["stream", "--run", run, "--port", listener.url, "--task", 1])
    assert str(run) in out  # the message says which folder or file
    assert listener.connections == 0 and not listener.received


@pytest.mark.parametrize("args, says", [
    (["--lr", "-1"], "--lr must be in"),
    (["--lr", "nan"], "--lr must be in"),
    (["--momentum", "1.5"], "--momentum must be in"),
    (["--epochs", "0"], "--epochs must be a whole number"),
    (["--batch-new", "0"], "--batch-new must be a whole number"),
    (["--clip-norm", "0"], "--clip-norm must be above 0"),
    (["--timeout", "0"], "--timeout"),
    (["--lr", "abc"], "'abc' is not a valid float"),
])
def test_stream_refuses_bad_settings_before_touching_the_device(tmp_path, listener, args, says):
    run = write_run(tmp_path / "run")
    out = refused(["stream", "--run", run, "--port", listener.url, "--task", 1, *args])
    assert says in out
    assert listener.connections == 0


@pytest.mark.parametrize("task", [0, 2, -1])
def test_stream_refuses_a_task_the_device_does_not_learn(tmp_path, listener, task):
    run = write_run(tmp_path / "run")
    out = refused(["stream", "--run", run, "--port", listener.url, "--task", task])
    assert "device tasks 1..1" in out
    assert listener.connections == 0


def test_stream_refuses_missing_places(tmp_path, listener):
    assert "no run folder" in refused(["stream", "--run", tmp_path / "nothing", "--port",
                                       listener.url, "--task", 1])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json is missing" in refused(["stream", "--run", empty, "--port", listener.url,
                                                "--task", 1])
    run = write_run(tmp_path / "run")
    assert "nothing listens" in refused(["stream", "--run", run, "--port",
                                         "socket://127.0.0.1:1", "--task", 1])
    assert "give --board" in refused(["stream", "--run", run, "--task", 1])
    assert "no mps2_an500 emulator is running" in refused(
        ["stream", "--run", run, "--board", "mps2_an500", "--task", 1],
        env={"TINYCIL_STATE_DIR": str(tmp_path / "state")})
    assert "unknown board" in refused(["stream", "--run", run, "--board", "uno", "--task", 1])


def test_a_device_that_never_answers_is_reported_cleanly(tmp_path, listener):
    run = write_run(tmp_path / "run")
    out = refused(["stream", "--run", run, "--port", listener.url, "--task", 1])
    assert "no answer to HELLO" in out


# ---- the device commands -----------------------------------------------------------------------

def test_device_commands_refuse_bad_boards_and_ports(tmp_path):
    env = {"TINYCIL_STATE_DIR": str(tmp_path / "state")}
    assert "unknown board" in refused(["build", "--board", "uno"])
    assert "Missing option" in refused(["build"])
    assert "unknown board" in refused(["flash", "--board", "uno"])
    # Options that cannot apply are refused before anything is exported or built.
    assert "--icount applies to the emulated board only" in refused(
        ["flash", "--board", "nucleo_f746zg", "--icount"])
    assert "drop --port" in refused(["flash", "--board", "mps2_an500", "--port", "/dev/null"])
    assert "--no-build" in refused(["flash", "--board", "mps2_an500", "--no-build", "--run",
                                    tmp_path])
    assert "is not a prepared run" in refused(["flash", "--board", "mps2_an500", "--run",
                                               tmp_path / "nothing"])
    assert "give --board" in refused(["info"])
    assert "no mps2_an500 emulator is running" in refused(["info", "--board", "mps2_an500"],
                                                          env=env)
    assert "nothing listens" in refused(["info", "--port", "socket://127.0.0.1:1"])
    assert "'x' is not a valid float" in refused(["info", "--port", "socket://127.0.0.1:1",
                                                  "--timeout", "x"])
    assert "nothing listens" in refused(["selftest", "--port", "socket://127.0.0.1:1"])
    assert "give --board" in refused(["selftest"])
    assert "No such option" in refused(["stop", "--now"])
    # The emulator's state file, damaged.
    (tmp_path / "state").mkdir()
    for text in ('{"pid": "x', "[1]", '{"pid": 1}'):
        (tmp_path / "state" / "state.json").write_text(text)
        assert "state file" in refused(["stop"], env=env)
        assert "state file" in refused(["info", "--board", "mps2_an500"], env=env)
    assert "No such option" in refused(["boards", "--all"])
    # A board catalogue that is damaged or missing.
    home = tmp_path / "home"
    (home / "boards").mkdir(parents=True)
    (home / "boards" / "broken.json").write_text("{")
    assert "Error" in refused(["boards"], env={"TINYCIL_HOME": str(home)})


def test_info_and_selftest_on_a_port_where_no_device_answers(listener):
    assert "no answer to HELLO" in refused(["info", "--port", listener.url, "--timeout", "0.2"])
    assert "no answer to" in refused(["selftest", "--port", listener.url])


# ---- the host commands -------------------------------------------------------------------------

SCENARIO_MISTAKES = [
    (["--dataset", "nope"], "unknown data set 'nope'"),
    (["--dataset", "digits", "--tasks", "3"], "choose --tasks from"),
    (["--dataset", "digits", "--tasks", "abc"], "'abc' is not a valid integer"),
    (["--dataset", "digits", "--resize", "big"], "use HxW"),
    (["--dataset", "mnist"], "mnist"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "mnist"),
    (["--dataset", "digits", "--data-dir", "/tmp"], "drop --data-dir"),
    # Counts that would train nothing (or fail deep inside) are refused by name.
    (["--dataset", "digits", "--epochs", "0"], "--epochs"),
    (["--dataset", "digits", "--distill-iters", "-5"], "--distill-iters"),
    (["--dataset", "digits", "--tasks", "0"], "--tasks"),
    (["--dataset", "digits", "--max-train", "0"], "--max-train"),
    (["--dataset", "digits", "--max-test", "-1"], "--max-test"),
]
# A device run needs a task for the device and a buffer fraction (the host-only study does not).
DEVICE_RUN_MISTAKES = [
    (["--dataset", "digits", "--known", "0"], "--known"),
    (["--dataset", "digits", "--known", "5"], "--known"),
    (["--dataset", "digits", "--buffer", "2"], "--buffer"),
]
EXTRA = {"experiment": [], "prepare": ["--no-simulate"], "run": ["--board", "mps2_an500"]}


@pytest.mark.parametrize("args, says", SCENARIO_MISTAKES)
@pytest.mark.parametrize("command", ["experiment", "prepare", "run"])
def test_learning_commands_refuse_bad_scenarios(tmp_path, command, args, says):
    out = refused([command, *args, *EXTRA[command], "-o", tmp_path / "out"])
    assert says in out
    assert not (tmp_path / "out").exists()  # no half-made run folder left behind


@pytest.mark.parametrize("args, says", DEVICE_RUN_MISTAKES)
@pytest.mark.parametrize("command", ["prepare", "run"])
def test_device_run_commands_refuse_bad_device_scenarios(tmp_path, command, args, says):
    out = refused([command, *args, *EXTRA[command], "-o", tmp_path / "out"])
    assert says in out


@pytest.mark.parametrize("command", ["experiment", "prepare", "run"])
def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, command):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    out = refused([command, "--dataset", "digits", *EXTRA[command], "-o", taken])
    assert "is a file" in out and "[1/7]" not in out


def test_a_malformed_data_dir_is_refused(tmp_path):
    bad = tmp_path / "mnist"
    bad.mkdir()
    (bad / "mnist.npz").write_bytes(b"not an npz")
    for command in (["prepare", "--no-simulate"], ["run", "--board", "mps2_an500"],
                    ["experiment"]):
        refused([*command, "--dataset", "mnist", "--data-dir", bad, "-o", tmp_path / "out"])


def test_run_checks_the_nucleo_port_before_any_work(tmp_path):
    out = refused(["run", "--dataset", "digits", "--board", "nucleo_f746zg", "-o",
                   tmp_path / "out"])
    assert "no ST-LINK serial port found" in out and "plug the board in" in out
    assert "prepare" not in out.split("Error")[0]  # nothing was prepared before the refusal
    assert not (tmp_path / "out").exists()


def _results_file(tmp_path, text: str) -> Path:
    run = tmp_path / "r"
    run.mkdir(exist_ok=True)
    (run / "results.json").write_text(text)
    return run


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "{}", '{"method": {"accuracy_matrix": 3}}',
                                  '{"method": {"accuracy_matrix": [[0.5]]}}', "\u00ff\u00fe",
                                  json.dumps({"method": {
                                      "accuracy_matrix": [[1.5, None], [0.5]],
                                      "final_avg_accuracy": 0.5, "bwt": 0.0, "forgetting": 0.0,
                                      "train_flops": 1.0, "buffer": {"samples": 1, "bytes": 1,
                                                                     "fraction": 0.01}}})])
def test_report_refuses_a_damaged_results_file(tmp_path, text):
    out = refused(["report", _results_file(tmp_path, text)])
    assert "results.json" in out


def test_report_and_export_refuse_missing_folders(tmp_path):
    assert "no run folder" in refused(["report", tmp_path / "nothing"])
    assert "results.json is missing" in refused(["report", tmp_path])
    assert "no run folder" in refused(["export", tmp_path / "nothing", "--board", "mps2_an500"])
    assert "config.json is missing" in refused(["export", tmp_path, "--board", "mps2_an500"])
    run = write_run(tmp_path / "run")
    assert "unknown board" in refused(["export", run, "--board", "uno"])
    (run / "model.keras").write_bytes(b"PK\x03\x04 not a whole model")
    assert "model.keras is damaged" in refused(["export", run, "--board", "mps2_an500"])
    (run / "config.json").write_text("{")
    assert "not valid JSON" in refused(["export", run, "--board", "mps2_an500"])
    assert "Missing option" in refused(["export", run])


# ---- prepare --board: a model that cannot fit is refused before training ------------------------

def _prepare_options() -> set[str]:
    from tinycil.cli.prepare import prepare_command

    return {opt for p in prepare_command.params for opt in p.opts if opt.startswith("--")}


@pytest.mark.slow
def test_prepare_refuses_a_model_that_cannot_fit_the_board_before_training(root, tmp_path):
    from helpers import copy_firmware_project

    home = copy_firmware_project(root, tmp_path / "home")
    manifest = home / "boards" / "mps2_an500.json"
    board = json.loads(manifest.read_text())
    board["tinycil"]["memory"]["ram_bytes"] = 24 * 1024
    manifest.write_text(json.dumps(board))
    env = {"TINYCIL_HOME": str(home)}
    chosen = refused(["prepare", "--dataset", "digits", "--quick", "--board", "mps2_an500",
                      "--no-simulate", "-o", tmp_path / "out"], env=env)
    given = refused(["prepare", "--dataset", "digits", "--quick", "--board", "mps2_an500",
                     "--tail-layers", "2", "--no-simulate", "-o", tmp_path / "out"], env=env)
    assert "does not fit mps2_an500" in given and "bytes too many" in given
    assert "fit mps2_an500" in chosen
    for out in (chosen, given):
        assert "[3/7]" not in out  # refused before the model was trained (and quantised)
        assert not (tmp_path / "out").exists()
        # Every option the advice names is one `tinycil prepare` has.
        named = set(re.findall(r"--[a-z][a-z-]*", out.split("Error:", 1)[1]))
        assert named and named <= _prepare_options(), named - _prepare_options()


def test_memory_plan_advice_names_only_existing_options():
    from tinycil.deploy import memplan
    from tinycil.deploy.boards import load_board

    board = load_board("mps2_an500")
    huge = memplan.Footprint(input_size=10**6, latent_size=10**5, tail=((10**5, 10**3),),
                             tail_init=((10**5, 2),), max_batch=64, scratch_bytes=10**6,
                             kernel_scratch_bytes=0, buffer_flash_count=10**5,
                             buffer_ram_capacity=10**5, backbone_bytes=10**7, plan_steps=5)
    with pytest.raises(memplan.MemoryPlanError) as exc:
        memplan.check_fits(huge, board, persist=True)
    text = str(exc.value)
    assert "RAM" in text and "flash" in text and "persistence" in text
    named = set(re.findall(r"--[a-z][a-z-]*", text))
    from tinycil.cli.device import flash

    flash_options = {opt for p in flash.params for opt in p.opts}
    assert named <= _prepare_options() | flash_options, named - _prepare_options() - flash_options
