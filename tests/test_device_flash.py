"""Flashing a real NUCLEO when none is attached: every method is tried and the error says what to do."""

import glob
import os
import shutil
import threading
import time

import pytest
from click.testing import CliRunner

from tinycil.deploy.boards import load_board
from tinycil.cli import main
from tinycil.deploy import flash
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


# ---- OpenOCD: its ST-LINK script by version; any failure is the next method's turn --------------

needs_openocd = pytest.mark.skipif(not shutil.which("openocd"), reason="needs openocd")


@needs_openocd
def test_the_installed_openocd_names_its_stlink_script():
    tool = shutil.which("openocd")
    version = flash.openocd_version(tool)
    assert version is not None and version >= (0, 1)
    interfaces = flash.openocd_interfaces(tool)
    scripts = flash.openocd_scripts_dir(tool)
    assert interfaces and all((scripts / cfg).is_file() for cfg in interfaces)
    # OpenOCD 0.11 renamed the ST-LINK script; older ones have the per-version ones only.
    assert interfaces[0] == ("interface/stlink.cfg" if version >= (0, 11)
                             else "interface/stlink-v2-1.cfg")


@needs_openocd
def test_an_openocd_older_than_0_11_gets_the_v2_1_script(tmp_path):
    """A scripts folder laid out as OpenOCD 0.10 installs it: no interface/stlink.cfg."""
    tool = shutil.which("openocd")
    (tmp_path / "interface").mkdir()
    for name in ("stlink-v2-1.cfg", "stlink-v2.cfg", "stlink-v1.cfg"):
        (tmp_path / "interface" / name).write_text("# OpenOCD 0.10 layout\n")
    assert flash.openocd_interfaces(tool, scripts=tmp_path) == [
        "interface/stlink-v2-1.cfg", "interface/stlink-v2.cfg"]
    elf = tmp_path / "firmware.elf"
    assert flash.openocd_command(tool, "interface/stlink-v2-1.cfg", elf) == [
        tool, "-f", "interface/stlink-v2-1.cfg", "-f", "target/stm32f7x.cfg",
        "-c", f"program {{{elf}}} verify reset exit"]


@needs_no_board
@needs_openocd
def test_an_openocd_without_the_script_falls_back_instead_of_aborting(tmp_path):
    """The real OpenOCD asked for a script it lacks says "Can't find": the next script is tried,
    and with none left (or no probe) the method gives way to the next one."""
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(flash.MethodUnavailable, match="found no ST-LINK probe"):
        flash.flash_openocd(elf, 30.0, ["interface/tinycil-no-such.cfg", "interface/stlink.cfg"])
    with pytest.raises(flash.MethodUnavailable, match="none of the ST-LINK interface scripts"):
        flash.flash_openocd(elf, 30.0, ["interface/tinycil-no-such.cfg"])


# ---- the ST-LINK's USB drive ----------------------------------------------------------------------

class StlinkDrive:
    """A folder laid out like the NUCLEO's NODE_F746ZG drive, and what the ST-LINK does with it:
    once a complete image is on it, the drive goes away (the chip is programmed), then comes back
    with its usual files, and FAIL.TXT when `reject` is set. `come_back=False`: it stays away."""

    def __init__(self, root, size: int, reject: str = "", come_back: bool = True):
        self.folder = root / "NODE_F746ZG"
        self.folder.mkdir()
        (self.folder / "DETAILS.TXT").write_text("Version: 0221\n")
        (self.folder / "MBED.HTM").write_text("<html></html>\n")
        self.size, self.reject, self.come_back = size, reject, come_back
        self.received = None
        self.thread = threading.Thread(target=self._probe, daemon=True)
        self.thread.start()

    def volumes(self, label):
        return [str(self.folder)] if label == "NODE_F746ZG" and self.folder.is_dir() else []

    def _probe(self):
        end = time.monotonic() + 60
        image = self.folder / "firmware.bin"
        while time.monotonic() < end:
            if image.is_file() and image.stat().st_size == self.size:
                self.received = image.read_bytes()
                shutil.rmtree(self.folder)  # detached: the probe programs the chip
                if self.come_back:
                    self.folder.mkdir()
                    (self.folder / "DETAILS.TXT").write_text("Version: 0221\n")
                    if self.reject:
                        (self.folder / "FAIL.TXT").write_text(self.reject)
                return
            time.sleep(0.01)


def _image(tmp_path):
    binary = tmp_path / "firmware.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    return binary


def test_mass_storage_copy_waits_for_the_drive_to_come_back(tmp_path):
    binary = _image(tmp_path)
    drive = StlinkDrive(tmp_path, binary.stat().st_size)
    detail = flash.flash_mass_storage(binary, "NODE_F746ZG", find=drive.volumes)
    assert "the ST-LINK programmed it" in detail
    assert drive.received == binary.read_bytes()  # the whole image, written before the close


def test_mass_storage_reports_the_stlinks_rejection(tmp_path):
    binary = _image(tmp_path)
    drive = StlinkDrive(tmp_path, binary.stat().st_size,
                        reject="The interface firmware FAILED to reset/halt the target MCU")
    with pytest.raises(FlashError, match="rejected the image: The interface firmware FAILED"):
        flash.flash_mass_storage(binary, "NODE_F746ZG", find=drive.volumes)


def test_mass_storage_drive_that_stays_away_is_no_crash(tmp_path):
    """The drive goes and is not mounted again (no automounter): the copy was taken, the verdict
    is unknown and said so; the file on the vanished drive is never opened again."""
    binary = _image(tmp_path)
    drive = StlinkDrive(tmp_path, binary.stat().st_size, come_back=False)
    detail = flash.flash_mass_storage(binary, "NODE_F746ZG", deadline=5.0, find=drive.volumes)
    assert "did not come back" in detail and "verdict (FAIL.TXT) is unknown" in detail


def test_mass_storage_image_not_taken_is_an_error(tmp_path):
    binary = _image(tmp_path)
    drive = StlinkDrive(tmp_path, binary.stat().st_size + 1)  # never sees a complete image
    with pytest.raises(FlashError, match="did not take firmware.bin"):
        flash.flash_mass_storage(binary, "NODE_F746ZG", deadline=1.0, find=drive.volumes)


@needs_no_board
def test_flash_falls_back_from_openocd_to_st_flash_to_the_drive(tmp_path, monkeypatch):
    """An OpenOCD without the ST-LINK script (older than 0.11) and a st-flash that finds no probe
    (both the real tools, when installed) leave the drive, which programs the board."""
    elf, binary = tmp_path / "firmware.elf", _image(tmp_path)
    elf.write_bytes(b"\x7fELF" + bytes(60))
    monkeypatch.setattr(flash, "openocd_interfaces", lambda tool: ["interface/tinycil-no-such.cfg"])
    drive = StlinkDrive(tmp_path, binary.stat().st_size)
    monkeypatch.setattr(flash, "mass_storage_volumes", drive.volumes)
    lines = []
    result = flash_board(load_board("nucleo_f746zg"), elf, binary, timeout=30.0, echo=lines.append)
    assert result.method == "mass-storage" and "programmed" in result.detail
    assert lines == ["Trying openocd ...", "Trying st-flash ...", "Trying mass-storage ..."]
