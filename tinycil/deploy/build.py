"""Building the firmware: PlatformIO run offline on the project's firmware/ folder.

PlatformIO is run as ``<this python> -m platformio`` so that the PlatformIO installed with tinycil
is used whatever is on PATH. The project carries its own dev-platform and build engine, so no
registry is contacted; telemetry and upgrade checks are switched off here as well so that a build
never waits on the network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from tinycil.deploy.boards import Board, project_root

OFFLINE_ENV = {
    "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
    "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
}
TAIL_LINES = 25

# PlatformIO's size check: "RAM:   [=         ]   5.2% (used 17040 bytes from 327680 bytes)"
_SIZE_LINE = re.compile(r"^(RAM|Flash):\s.*\(used (\d+) bytes from (\d+) bytes\)", re.M)
# GNU ld: "region `RAM' overflowed by 1234 bytes"
_OVERFLOW = re.compile(r"region `?'?(\w+)'? overflowed by (\d+) bytes")
# PlatformIO's own check: "Error: The program size (N bytes) is greater than maximum allowed (M bytes)"
_PIO_TOO_BIG = re.compile(r"The (program|data) size \((\d+) bytes\) is greater than maximum allowed \((\d+) bytes\)")


class BuildError(RuntimeError):
    pass


@dataclass
class BuildResult:
    board: str
    elf: Path
    bin: Path
    ram_used: int | None
    ram_total: int | None
    flash_used: int | None
    flash_total: int | None
    seconds: float
    output: str

    def size_line(self) -> str:
        def part(label, used, total):
            if used is None:
                return f"{label} ?"
            if total:
                return f"{label} {used:,} / {total:,} bytes ({100.0 * used / total:.1f}%)"
            return f"{label} {used:,} bytes"
        return ", ".join([part("RAM", self.ram_used, self.ram_total),
                          part("flash", self.flash_used, self.flash_total)])


def firmware_dir(root: Path | None = None) -> Path:
    folder = (root or project_root()) / "firmware"
    if not (folder / "platformio.ini").is_file():
        raise BuildError(f"no PlatformIO project at {folder} (platformio.ini missing): set "
                         "TINYCIL_HOME to the tinycil project folder")
    return folder


def artifacts(board: Board | str, root: Path | None = None) -> tuple[Path, Path]:
    """Where PlatformIO puts the board's ELF and raw binary."""
    board_id = board if isinstance(board, str) else board.id
    out = firmware_dir(root) / ".pio" / "build" / board_id
    return out / "firmware.elf", out / "firmware.bin"


def build_env(extra_flags: str | None = None) -> dict:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    if extra_flags:
        # Appended to platformio.ini's build_flags (used for example to pick an exported model).
        env["PLATFORMIO_BUILD_FLAGS"] = " ".join(filter(None, [env.get("PLATFORMIO_BUILD_FLAGS"),
                                                                extra_flags]))
    return env


def parse_sizes(output: str) -> dict:
    """RAM and flash use from PlatformIO's size report: {"ram": (used, total), "flash": (...)}."""
    found = {}
    for label, used, total in _SIZE_LINE.findall(output):
        found[label.lower()] = (int(used), int(total))
    return found


def elf_sizes(elf: Path) -> tuple[int, int] | None:
    """(flash, ram) bytes from the ELF itself, when the build output had no size report."""
    tool = shutil.which("arm-none-eabi-size")
    if not tool:
        return None
    out = subprocess.run([tool, "-B", "-d", str(elf)], capture_output=True, text=True, timeout=30,
                         check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) < 2:
        return None
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return text + data, data + bss


def explain_failure(output: str, board: Board) -> str:
    """The first line of a build error: what went wrong and what to change."""
    for region, over in _OVERFLOW.findall(output):
        over = int(over)
        if region.upper() in ("RAM", "DTCM", "SRAM"):
            return (f"the firmware needs {over:,} bytes more RAM than {board.id} has "
                    f"({board.ram_bytes:,} bytes): shrink what lives in RAM - the trainable "
                    "layers (fewer or narrower), the replay buffer (smaller fraction, or int8 "
                    "inputs instead of latents), the training batch, or the stack reserve.")
        return (f"the firmware is {over:,} bytes too big for {board.id}'s flash "
                f"({board.flash_bytes:,} bytes): shrink what lives in flash - the frozen "
                "backbone's weights (a smaller model) or the exported replay buffer.")
    match = _PIO_TOO_BIG.search(output)
    if match:
        kind, used, limit = match.group(1), int(match.group(2)), int(match.group(3))
        where = "RAM" if kind == "data" else "flash"
        return (f"the firmware uses {used:,} bytes of {where}, more than {board.id}'s "
                f"{limit:,}: shrink the model or the replay buffer.")
    if "arm-none-eabi-g++ is not on PATH" in output or "arm-none-eabi-gcc: not found" in output:
        return ("the Arm cross compiler is missing: `sudo apt-get install gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib` (or `make setup`).")
    if "HTTPClientError" in output or "registry" in output.lower():
        return ("PlatformIO tried to reach its registry; the firmware project is meant to build "
                "offline. Run from a clean checkout (delete firmware/.pio) and report this.")
    return f"PlatformIO failed to build {board.id}."


def build(board: Board, root: Path | None = None, extra_flags: str | None = None,
          echo=None, timeout: float = 600.0) -> BuildResult:
    """Build the firmware for ``board``. ``echo`` (a callable) receives each output line as it
    comes; without it the output is only captured (and shown, its tail, on failure)."""
    folder = firmware_dir(root)
    cmd = [sys.executable, "-m", "platformio", "run", "-d", str(folder), "-e", board.id]
    start = time.monotonic()
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=build_env(extra_flags), cwd=folder,
                                stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise BuildError(f"cannot run PlatformIO ({exc}): is the platformio package installed "
                         "(`pip install platformio`, or `make setup`)?") from exc
    # A build that hangs (a tool waiting on the network) is killed rather than waited on forever.
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if echo:
                echo(line)
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if time.monotonic() - start >= timeout:
        raise BuildError(f"the build of {board.id} took more than {timeout:.0f} s and was stopped.")
    output = "\n".join(lines)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n".join(deque(lines, maxlen=TAIL_LINES))
        raise BuildError(f"{explain_failure(output, board)}\n--- last lines of the build output "
                         f"---\n{tail}")
    elf, binary = artifacts(board, root)
    if not elf.is_file():
        raise BuildError(f"PlatformIO reported success but {elf} is missing")
    sizes = parse_sizes(output)
    ram = sizes.get("ram", (None, None))
    flash = sizes.get("flash", (None, None))
    if ram[0] is None or flash[0] is None:
        from_elf = elf_sizes(elf)
        if from_elf:
            flash = (from_elf[0], board.flash_bytes)
            ram = (from_elf[1], board.ram_bytes)
    return BuildResult(board=board.id, elf=elf, bin=binary, ram_used=ram[0], ram_total=ram[1],
                       flash_used=flash[0], flash_total=flash[1], seconds=seconds, output=output)
