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
