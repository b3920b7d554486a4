"""Build the kernel test images for the emulated Cortex-M7 and run them under QEMU mps2-an500."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from .host_lib import KERNELS_DIR, ROOT

TARGET_DIR = ROOT / "firmware" / "test_target"
FIRMWARE = ROOT / "firmware"
BSP_DIR = FIRMWARE / "lib" / "bsp"
PROTOCOL_DIR = FIRMWARE / "lib" / "protocol"  # tc_protocol_spec.h (ring size, counter kinds)
LDSCRIPTS = FIRMWARE / "platform" / "ldscripts"
BOARD = "mps2_an500"

# The product firmware's code generation flags (same FPU, same floating-point contract).
ARM_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard", "-O2",
             "-std=c++17", "-fno-exceptions", "-fno-rtti", "-ffp-contract=off",
             "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra", "-Werror"]
# The images run on the product's board support: its start-up code (vector table, .data/.bss,
# FPU, constructors, semihosting exit with main's return value), serial port and counter, and
# its linker script with the STM32F746's budget.
# The serial baud rate comes from the board manifest, as the dev-platform passes it.
_BAUD = json.loads((ROOT / "boards" / f"{BOARD}.json").read_text())["tinycil"]["serial"]["baudrate"]
BOARD_DEFINES = ["-DTC_BOARD_MPS2_AN500", f'-DTC_BOARD_ID="{BOARD}"', f"-DTC_SERIAL_BAUD={_BAUD}"]
BSP_SOURCES = [BSP_DIR / "startup.cpp", BSP_DIR / f"board_{BOARD}.cpp"]


def tools_available() -> str | None:
    """None when the cross compiler and QEMU are installed, else what is missing."""
    missing = [t for t in ("arm-none-eabi-g++", "qemu-system-arm") if shutil.which(t) is None]
    return None if not missing else (
        f"{', '.join(missing)} not found: install gcc-arm-none-eabi, "
        "libstdc++-arm-none-eabi-newlib and qemu-system-arm (make setup)")


def build_image(main_source: Path, include_dirs: list[Path], out_dir: Path,
                kernels_dir: Path = KERNELS_DIR, defines: tuple[str, ...] = ()) -> Path:
    """`kernels_dir` and `defines` let a benchmark build the same image against another
    revision's kernels (its "before" figures)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    elf = out_dir / (main_source.stem + ".elf")
    sources = [main_source, *BSP_SOURCES, *sorted(kernels_dir.glob("*.cpp"))]
    cmd = ["arm-none-eabi-g++", *ARM_FLAGS, *BOARD_DEFINES, *(f"-D{d}" for d in defines),
           *(f"-I{d}" for d in [*include_dirs, kernels_dir, TARGET_DIR, BSP_DIR, PROTOCOL_DIR]),
           "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
           f"-L{LDSCRIPTS}", "-T", str(LDSCRIPTS / f"{BOARD}.ld"), "-Wl,--gc-sections",
           "-o", str(elf), *map(str, sources), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"target build failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return elf


def run_image(elf: Path, timeout: float, icount: bool = False) -> tuple[int, str]:
    """Runs until the image exits through semihosting; returns (exit status, serial output).
    QEMU is always ended by its pid, also on timeout or error."""
    cmd = ["qemu-system-arm", "-M", "mps2-an500", "-display", "none", "-monitor", "none",
           "-serial", "stdio", "-semihosting-config", "enable=on,target=native",
           "-kernel", str(elf)]
    if icount:
        cmd += ["-icount", "shift=0,align=off,sleep=off"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{elf.name} did not exit within {timeout} s under QEMU") from None
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
