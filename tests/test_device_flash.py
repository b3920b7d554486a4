"""Flashing a real NUCLEO when none is attached: every method is tried and the error says what to do."""

import glob
import os
import time

import pytest
from click.testing import CliRunner

from tinycil.deploy.boards import load_board
from tinycil.cli import main
from tinycil.deploy.flash import FlashError, flash_board, mass_storage_volumes, stlink_ports

STLINK_VENDOR = "0483"


def _stlink_attached() -> bool:
    vendors = []
    for path in glob.glob("/sys/bus/usb/devices/*/idVendor"):
        try:
            with open(path) as handle:
                vendors.append(handle.read().strip())
        except OSError:
            pass
    return STLINK_VENDOR in vendors or bool(stlink_ports()) or bool(mass_storage_volumes("NODE_F746ZG"))


needs_no_board = pytest.mark.skipif(_stlink_attached(), reason="an ST-LINK is attached: this "
                                    "test would program it")


@needs_no_board
@pytest.mark.timeout(120)
def test_nucleo_flash_without_a_board_fails_fast_and_clearly(tmp_path):
    # Contents do not matter: every method stops before reading the image (no probe, no drive).
    elf, binary = tmp_path / "firmware.elf", tmp_path / "firmware.bin"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    binary.write_bytes(bytes(64))
    board = load_board("nucleo_f746zg")
    start = time.monotonic()
    with pytest.raises(FlashError) as err:
        flash_board(board, elf, binary, timeout=30.0)
    elapsed = time.monotonic() - start
    text = str(err.value)
    assert text.startswith("could not flash nucleo_f746zg; tried:")
    for method in ("openocd:", "st-flash:", "mass-storage:"):
        assert method in text
    assert "no NODE_F746ZG drive is mounted" in text
    assert "Plug the ST NUCLEO-F746ZG in by its ST-LINK USB connector" in text
    # Each tool either is missing (and says which package) or ran and found no probe.
    assert ("openocd found no ST-LINK probe" in text) or ("apt-get install openocd" in text)
    assert ("st-flash found no ST-LINK" in text) or ("apt-get install stlink-tools" in text)
    assert elapsed < 100  # bounded by the per-tool timeout, never a hang


def test_mass_storage_volume_found_under_mnt_style_paths(tmp_path):
    # The search covers the mount table too; a folder that is not mounted is not a board.
    assert mass_storage_volumes(f"TINYCIL_NO_SUCH_{os.getpid()}") == []


@needs_no_board
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flash_command_for_nucleo_builds_then_reports_missing_board():
    result = CliRunner().invoke(main, ["flash", "--board", "nucleo_f746zg"])
    assert result.exit_code == 1, result.output
    assert "Building firmware for nucleo_f746zg" in result.output
    assert "Built in" in result.output and "RAM" in result.output
    assert "could not flash nucleo_f746zg" in result.output
