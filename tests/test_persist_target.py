"""The learned state's persistence on the boards' own support code and linker scripts
(TC_PERSIST=1): end to end on the emulated board under QEMU, across real system resets
(SYSRESETREQ), one of them in the middle of a save; the NUCLEO flash driver linked into an image
and into the PlatformIO build with the slots taken out of the code region."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from persist_host import tiny_model
from tinycil.deploy.boards import load_board as get_board

pytestmark = pytest.mark.slow

ARM_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard", "-O2",
             "-std=gnu++17", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics",
             "-fno-use-cxa-atexit", "-ffp-contract=off", "-ffunction-sections", "-fdata-sections",
             "-fno-common", "-Wall", "-Wextra", "-Werror"]
BOARD_DEFINES = {
    "mps2_an500": ["-DTC_BOARD_MPS2_AN500"],
    "nucleo_f746zg": ["-DTC_BOARD_NUCLEO_F746ZG", "-DTC_HSE_BYPASS_HZ=8000000"],
}


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install gcc-arm-none-eabi, "
                    "libstdc++-arm-none-eabi-newlib and qemu-system-arm (make setup)")


def build_image(root: Path, board: str, out: Path) -> tuple[Path, str]:
    _need("arm-none-eabi-g++")
    lib = root / "firmware" / "lib"
    ld = root / "firmware" / "platform" / "ldscripts"
    model = tiny_model.write(out / "model")
    sources = [root / "tests" / "persist_host" / "persist_target.cpp",
               *sorted((lib / "bsp").glob("*.cpp")), *sorted((lib / "persist").glob("*.cpp")),
               lib / "protocol" / "tc_crc32.cpp", *sorted((lib / "runtime").glob("*.cpp")),
               *sorted((lib / "kernels").glob("*.cpp"))]
    elf = out / f"persist_{board}.elf"
    # The serial baud rate the dev-platform takes from the board manifest (builder/main.py).
    baud = get_board(board).baudrate
    cmd = ["arm-none-eabi-g++", *ARM_FLAGS, *BOARD_DEFINES[board], "-DTC_PERSIST=1",
           f'-DTC_BOARD_ID="{board}"', f"-DTC_SERIAL_BAUD={baud}",
           *(f"-I{d}" for d in (model, lib / "bsp", lib / "persist", lib / "runtime",
                                lib / "kernels", lib / "protocol")),
           *map(str, sources), "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
           f"-L{ld}", "-T", str(ld / f"{board}.ld"), "-Wl,--gc-sections",
           "-Wl,--print-memory-usage", "-o", str(elf), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "warning" not in proc.stderr.lower(), proc.stderr
    return elf, proc.stdout


def symbols(elf: Path) -> dict:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    return {p[2]: int(p[0], 16) for p in (l.split() for l in out.splitlines()) if len(p) == 3}


def test_state_survives_system_resets_and_a_reset_mid_save_in_qemu(root, tmp_path):
    _need("qemu-system-arm")
    elf, memory = build_image(root, "mps2_an500", tmp_path)
    assert re.search(r"FLASH:\s+\d+ [KM]?B\s+512 KB", memory), memory
    cmd = ["qemu-system-arm", "-M", "mps2-an500", "-display", "none", "-monitor", "none",
           "-serial", "null", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    boots = re.findall(r"boot (\d)", out)
    # A PSRAM wiped by the reset would show as "boot 0" again (and the image would loop).
    assert boots == ["0", "1", "2", "3"], out
    assert proc.returncode == 0, f"exit status {proc.returncode} (the failed check):\n{out}"
    assert "torn save lost nothing" in out and "task 3 restored" in out


def test_nucleo_image_links_with_the_flash_driver_outside_the_code_region(root, tmp_path):
    elf, memory = build_image(root, "nucleo_f746zg", tmp_path)
    assert re.search(r"FLASH:\s+\d+ [KM]?B\s+512 KB", memory), memory
    sym = symbols(elf)
    assert sym["__persist_slot0"] == 0x08080000 and sym["__persist_slot1"] == 0x080C0000
    assert sym["__flash_region_end"] == 0x08080000
    assert sym["__flash_end"] <= 0x08080000
    assert "_ZN3bsp5flash5eraseEi" in sym and "_ZN3bsp5flash7programEimPKhm" in sym


def test_pio_build_with_the_flag_shrinks_the_flash_region(root, tmp_path):
    env = dict(os.environ)
    env.update({"PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
                "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
                "PLATFORMIO_BUILD_DIR": str(tmp_path / "build"),
                "PLATFORMIO_CORE_DIR": str(tmp_path / "core"),
                "PLATFORMIO_BUILD_FLAGS": "-DTC_PERSIST=1"})
    pio = Path(sys.executable).with_name("pio")
    proc = subprocess.run([str(pio), "run", "-v", "-d", str(root / "firmware"), "-e",
                           "nucleo_f746zg"], capture_output=True, text=True, env=env, timeout=500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "flash_nucleo_f746zg.cpp" in out and "-DTC_PERSIST=1" in out
    assert "warning" not in out.lower()
    assert re.search(r"FLASH:\s+\d+ [KM]?B\s+512 KB", out), out[-3000:]
    sym = symbols(tmp_path / "build" / "nucleo_f746zg" / "firmware.elf")
    assert sym["__tc_persist"] == 1 and sym["__flash_region_end"] == 0x08080000
