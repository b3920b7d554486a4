"""Export of a prepared digits run into the firmware: both boards build with PlatformIO and fit."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_runtime_twin import prepared_digits_run

pytestmark = pytest.mark.slow

RUNTIME_API = ["tc_rt_init", "tc_rt_describe", "tc_rt_set_training", "tc_rt_begin_task",
               "tc_rt_train_samples", "tc_rt_add_buffer_samples", "tc_rt_predict", "tc_rt_stats"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return prepared_digits_run(tmp_path_factory)


@contextlib.contextmanager
def exported_into(run, root, board="nucleo_f746zg"):
    """Export `run` into firmware/generated/, and put back what was there afterwards."""
    from tinycil.deploy.export import GENERATED_FILES, export_run

    gen = root / "firmware" / "generated"
    saved = {f: (gen / f).read_bytes() for f in GENERATED_FILES if (gen / f).exists()}
    try:
        yield export_run(run, board)
    finally:
        for f in GENERATED_FILES:
            if f in saved:
                (gen / f).write_bytes(saved[f])
            elif (gen / f).exists():
                (gen / f).unlink()


def build_with_runtime(result, root, tmp_path, board):
    """Build `board` with the exported model and the runtime linked in; checks the arena and the
    model really are in the image the linker checks against the budget."""
    header = (root / "firmware" / "generated" / "model_data.h").read_text()
    assert f"model signature {result.signature_hex}" in header
    assert f"TC_ARENA_BYTES {result.manifest['arena_bytes']}u" in header
    # A build configuration of our own (separate build folder: other builds may run at the same
    # time) that links the runtime and keeps every API function, so the arena and the model's
    # data are really in the image the linker checks.
    ini = (root / "firmware" / "platformio.ini").read_text()
    keep = " ".join(f"-Wl,--undefined={s}" for s in RUNTIME_API)
    ini = ini.replace("build_flags = -I generated", f"build_flags = -I generated {keep}\nlib_deps = runtime")
    conf = tmp_path / "platformio.ini"
    conf.write_text(ini)
    env = dict(os.environ, PLATFORMIO_BUILD_DIR=str(tmp_path / "build"))
    pio = shutil.which("pio", path=str(Path(sys.executable).parent)) or "pio"
    proc = subprocess.run([pio, "run", "-d", str(root / "firmware"), "-c", str(conf), "-e", board],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    ram = re.search(r"RAM:\s+(\d+) B\s+320 KB", proc.stdout)
    assert ram, proc.stdout[-2000:]
    # the static arena alone is in RAM: the runtime was linked, not dropped
    assert int(ram.group(1)) > result.manifest["arena_bytes"]
    # the memory plan is an upper bound of what the linker placed: a plan that fits is a build
    # that fits
    flash = re.search(r"Flash:.*\(used (\d+) bytes", proc.stdout)
    assert flash, proc.stdout[-2000:]
    assert int(flash.group(1)) <= result.memory["flash_used"], (flash.group(0), result.memory)
    assert int(ram.group(1)) <= result.memory["ram_used"], (ram.group(0), result.memory)
    elf = tmp_path / "build" / board / "firmware.elf"
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True)
    assert "tc_model_data" in nm.stdout and "tc_rt_train_samples" in nm.stdout
    return nm.stdout


@pytest.fixture
def exported_into_firmware(digits_run, root):
    with exported_into(digits_run, root) as result:
        yield result


def test_export_builds_for_both_boards(exported_into_firmware, root, tmp_path):
    for board in ("nucleo_f746zg", "mps2_an500"):
        build_with_runtime(exported_into_firmware, root, tmp_path, board)


def test_manifest_and_signature_recorded(digits_run):
    import json

    from tinycil.deploy.export import read_signature

    manifest = json.loads((digits_run / "export" / "manifest.json").read_text())
    assert bytes.fromhex(manifest["signature"]) == read_signature(digits_run)
    assert manifest["memory"]["fits"] and manifest["classes_max"] == 10
    assert manifest["backbone_layers"][0] == "CONV_2D"
