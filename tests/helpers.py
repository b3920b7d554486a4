"""Small helpers several test modules share (not fixtures: those live in conftest.py)."""

import os
import shutil
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True while `pid` runs; reaps it first if it is our own exited child (a zombie is dead)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def copy_firmware_project(root: Path, dst: Path) -> Path:
    """The firmware project and board catalogue, without builds or an exported model."""
    shutil.copytree(root / "firmware", dst / "firmware",
                    ignore=shutil.ignore_patterns(".pio", "model_data.*"))
    shutil.copytree(root / "boards", dst / "boards")
    return dst


def emulator_home(root: Path, tmp_path: Path, monkeypatch):
    """A project copy and an emulator state folder of the test's own (TINYCIL_HOME and
    TINYCIL_STATE_DIR); yields the project, and kills the emulator it recorded by pid at the end,
    whatever happened. Use as `yield from emulator_home(...)` in a fixture."""
    import json
    import signal
    import time

    project = copy_firmware_project(root, tmp_path / "project")
    state = tmp_path / "state"
    monkeypatch.setenv("TINYCIL_HOME", str(project))
    monkeypatch.setenv("TINYCIL_STATE_DIR", str(state))
    yield project
    record = state / "state.json"
    if record.exists():
        pid = json.loads(record.read_text())["pid"]
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
            process_alive(pid)
