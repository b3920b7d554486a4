"""`pip install <checkout>` gives a tinycil that works like a tool, from any folder.

The wheel is built from the session's clean copy of the project and installed, without its
dependencies, into a fresh virtualenv outside the source tree; that virtualenv borrows the test
environment's packages (TensorFlow, PlatformIO) through a .pth file instead of downloading them
again. The installed CLI then lists the boards and builds the emulated board's firmware from an
unrelated folder: it copies the packaged firmware project into a per-user work folder and never
builds inside site-packages.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("arm-none-eabi-g++"),
                                 reason="needs the Arm cross compiler")]


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(root, tmp_path_factory):
    """(path of the installed `tinycil` script, its site-packages) in a fresh virtualenv."""
    tmp = tmp_path_factory.mktemp("install")
    # pip builds inside the source folder (build/, *.egg-info): give it a copy of its own.
    source = tmp / "checkout"
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(".pio", "build", "*.egg-info"))
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
         cwd=tmp)
    wheel = next(wheels.glob("tinycil-*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "tinycil_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    script = env_dir / ("Scripts/tinycil.exe" if os.name == "nt" else "bin/tinycil")
    return script, site


def test_installed_cli_lists_boards_and_builds_from_any_folder(installed, tmp_path):
    script, site = installed
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TINYCIL_HOME", "PYTHONPATH")}
    env.update(TINYCIL_WORK_DIR=str(tmp_path / "work"), TINYCIL_STATE_DIR=str(tmp_path / "state"))

    boards = _run([str(script), "boards"], cwd=elsewhere, env=env).stdout
    assert "mps2_an500" in boards and "nucleo_f746zg" in boards

    built = _run([str(script), "build", "--board", "mps2_an500"], cwd=elsewhere, env=env).stdout
    elf = tmp_path / "work" / "firmware" / ".pio" / "build" / "mps2_an500" / "firmware.elf"
    assert f"ELF: {elf}" in built
    assert elf.is_file()
    # the installed package is what ran, and it stayed untouched: no build output in site-packages
    packaged = site / "tinycil" / "_project"
    assert (packaged / "firmware" / "platformio.ini").is_file()
    assert not (packaged / "firmware" / ".pio").exists()
    assert not (elsewhere / ".pio").exists() and not any(elsewhere.iterdir())
