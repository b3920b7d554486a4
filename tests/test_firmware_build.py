"""PlatformIO builds of every board: offline, from a clean state, size report printed, memory
overflow fails the build, and the ELF starts where the board boots."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

BOARDS = {"nucleo_f746zg": 0x08000000, "mps2_an500": 0x00000000}  # board -> flash origin
RAM_ORIGIN = 0x20000000


def pio_run(root: Path, env_name: str, build_dir: Path, core_dir: Path, extra_env=None):
    """`pio run -d firmware -e ENV` into its own build and core dirs: a clean build that shares
    nothing with the checkout's .pio."""
    env = dict(os.environ)
    env.update({
        "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
        "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
        "PLATFORMIO_BUILD_DIR": str(build_dir),
        "PLATFORMIO_CORE_DIR": str(core_dir),
    })
    env.pop("PLATFORMIO_BUILD_FLAGS", None)
    env.update(extra_env or {})
    pio = Path(sys.executable).with_name("pio")
    return subprocess.run([str(pio), "run", "-d", str(root / "firmware"), "-e", env_name],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def clean_builds(root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pio")
    results = {}
    for board in BOARDS:
        results[board] = (pio_run(root, board, tmp / "build", tmp / "core"), tmp / "build" / board)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("board", list(BOARDS))
def test_clean_build_offline_with_size_report(clean_builds, board):
    result, build = clean_builds[board]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "RAM:   [" in output and "Flash: [" in output  # PlatformIO's size report
    assert "from 327680 bytes" in output and "from 1048576 bytes" in output
    assert "HTTPClientError" not in output
    # A fresh core installs nothing but the project's own dev-platform (a symlink).
    installs = [line for line in output.splitlines() if "Installing" in line]
    assert all("symlink://platform" in line for line in installs), installs
    for name in ("firmware.elf", "firmware.bin", "firmware.hex"):
        assert (build / name).is_file()


def _symbols(elf: Path) -> dict:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            table[parts[2]] = int(parts[0], 16)
    return table


@pytest.mark.slow
@pytest.mark.parametrize("board", list(BOARDS))
def test_elf_starts_with_the_vector_table(clean_builds, board):
    result, build = clean_builds[board]
    assert result.returncode == 0
    elf = build / "firmware.elf"
    header = subprocess.run(["arm-none-eabi-readelf", "-h", "-S", str(elf)], capture_output=True,
                            text=True, check=True).stdout
    entry = int(header.split("Entry point address:")[1].split()[0], 16)
    vectors = [line for line in header.splitlines() if ".isr_vector" in line][0].split()
    symbols = _symbols(elf)
    assert int(vectors[vectors.index(".isr_vector") + 2], 16) == BOARDS[board]
    assert symbols["tc_vector_table"] == BOARDS[board]
    assert entry == symbols["Reset_Handler"] | 1  # Thumb
    # The image's first words: initial stack pointer in RAM, then the reset handler.
    initial_sp, reset = struct.unpack("<II", (build / "firmware.bin").read_bytes()[:8])
    assert initial_sp == symbols["__stack_top"] and RAM_ORIGIN < initial_sp <= RAM_ORIGIN + 327680
    assert reset == symbols["Reset_Handler"] | 1


@pytest.mark.slow
@pytest.mark.parametrize("define, region", [("TC_TEST_RAM_HOG=400000", "RAM"),
                                            ("TC_TEST_FLASH_HOG=1100000", "FLASH")])
def test_memory_overflow_fails_the_build(root, tmp_path, define, region):
    result = pio_run(root, "mps2_an500", tmp_path / "build", tmp_path / "core",
                     {"PLATFORMIO_BUILD_FLAGS": f"-D{define}"})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"region `{region}' overflowed" in output, output
