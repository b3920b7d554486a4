"""Putting the firmware on a board.

A real NUCLEO-F746ZG is programmed by whichever of the board's methods works here, in the order
its manifest lists them: openocd and st-flash talk to the on-board ST-LINK probe; "mass-storage"
copies firmware.bin onto the USB drive the ST-LINK presents (NODE_F746ZG), which needs no tool at
all. The emulated board is "flashed" by starting QEMU with the ELF and waiting until the firmware
answers HELLO.

With a run (``tinycil flash --run RUN``) the run is exported into the firmware first, after the
memory plan has checked that it fits the board (with ``--persist`` also the flash slots that keep
the learned state across resets); a run that does not fit is refused before anything is built.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import serial.tools.list_ports

from tinycil.deploy import emulator
from tinycil.deploy.boards import Board
from tinycil.link.bridge import DeviceError, DeviceLink

FLASH_ORIGIN = "0x08000000"
# The build flag of a firmware that keeps its learned state in flash (lib/persist).
PERSIST_FLAG = "-DTC_PERSIST=1"
STLINK_VID = 0x0483  # STMicroelectronics: the ST-LINK's virtual COM port


class FlashError(RuntimeError):
    pass


class MethodUnavailable(Exception):
    """This method cannot run here (tool missing, probe or drive absent); try the next."""


@dataclass
class FlashResult:
    board: str
    method: str
    detail: str                              # what was done, for the user
    emulator: emulator.EmulatorState | None = None
    info: dict | None = None                 # INFO of the device, when it was asked


# ---- the run's model ----------------------------------------------------------------------------

def export_for_flash(board: Board, run_dir, persist: bool = False, root: Path | None = None):
    """Export ``run_dir`` into the firmware for ``board`` (tinycil.deploy.export.ExportResult).

    The memory plan refuses a run that does not fit, saying by how much and what to shrink; with
    ``persist`` it also counts the persistence slots and the learned state they must hold. Raises
    FlashError with that message (nothing is built then)."""
    from tinycil.deploy import memplan
    from tinycil.deploy.export import ExportError, export_run, load_export_model
    from tinycil.runfolder import RunFolderError

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FlashError(f"{run_dir} is not a prepared run (no config.json): prepare it with "
                         f"`tinycil prepare --dataset D -o {run_dir}` first")
    try:
        if persist:
            em = load_export_model(run_dir)
            memplan.check_fits(em.footprint(), board, f"run {run_dir.name}", persist=True,
                               own_model=em.own_model)
        return export_run(run_dir, board, root=root)
    except (memplan.MemoryPlanError, ExportError, RunFolderError) as exc:
        raise FlashError(str(exc)) from exc


# ---- the emulated board ------------------------------------------------------------------------

def start_emulated(board: Board, elf: Path, icount: bool = False, hello_timeout: float = 10.0,
                   echo=None) -> FlashResult:
    """Stop any recorded emulator, start QEMU with ``elf`` and wait until it answers HELLO."""
    previous = emulator.stop()
    if previous and echo:
        echo(f"Stopped the previous emulator (pid {previous.pid}, {previous.board})")
    state = emulator.start(board, elf, icount=icount)
    if echo:
        echo(f"QEMU {board.qemu_machine} started (pid {state.pid}), serial at {state.url}")
    try:
        info = wait_for_hello(state.url, board.baudrate, hello_timeout)
    except DeviceError as exc:
        crashed = not emulator.is_running(state)
        emulator.stop_state(state)
        log = Path(state.log).read_text(errors="replace").strip() if Path(state.log).exists() else ""
        # QEMU's reason comes first ("qemu: fatal: Lockup ..."), a register dump after it.
        said = "\n".join(log.splitlines()[:4]) or "(no output)"
        if crashed:
            raise FlashError(f"the emulated firmware crashed: QEMU exited before it answered "
                             f"HELLO. Is {elf} firmware for {board.id}? QEMU said:\n{said}\n"
                             f"(full output in {state.log})") from exc
        raise FlashError(f"the emulated firmware did not answer: {exc}"
                         + (f"\nQEMU said:\n{said}" if log else "")) from exc
    except BaseException:  # Ctrl-C while waiting: leave no emulator behind
        emulator.stop_state(state)
        raise
    return FlashResult(board=board.id, method="qemu", detail=f"running at {state.url}",
                       emulator=state, info=info)


def wait_for_hello(port: str, baudrate: int, timeout: float) -> dict:
    """HELLO until the device answers or ``timeout`` passes (a board reboots after flashing)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            with DeviceLink(port, baudrate=baudrate, timeout=min(1.0, max(0.2, remaining))) as link:
                return link.hello(retries=max(0, int(remaining)))
        except DeviceError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise last if last else DeviceError(f"no answer from {port}")
        time.sleep(0.2)


# ---- the real board ----------------------------------------------------------------------------

def _run(cmd: list[str], timeout: float) -> tuple[int, str]:
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout,
                             check=False)
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        return -1, (text or "") + f"\n(stopped after {timeout:.0f} s)"
    return out.returncode, out.stdout


def _error_lines(output: str) -> str:
    picked = [ln.strip() for ln in output.splitlines()
              if ln.strip().lower().startswith(("error", "warn")) or "fail" in ln.lower()]
    return "; ".join(picked[-3:]) or (output.strip().splitlines() or ["no output"])[-1]


# OpenOCD names the ST-LINK's interface script interface/stlink.cfg since 0.11 (one script for
# every ST-LINK version); older releases have one per probe: the NUCLEO-144's on-board probe is an
# ST-LINK/V2-1 (interface/stlink-v2-1.cfg). The first script the installed OpenOCD has is used.
OPENOCD_INTERFACES = ("interface/stlink.cfg", "interface/stlink-v2-1.cfg", "interface/stlink-v2.cfg")
OPENOCD_TARGET = "target/stm32f7x.cfg"


def openocd_version(tool: str) -> tuple[int, ...] | None:
    """The version `openocd --version` reports (it prints on stderr), e.g. (0, 12, 0)."""
    import re

    code, output = _run([tool, "--version"], 10.0)
    m = re.search(r"Open On-Chip Debugger\s+v?(\d+)\.(\d+)(?:\.(\d+))?", output)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def openocd_scripts_dir(tool: str) -> Path | None:
    """Where the installed OpenOCD keeps its scripts (PREFIX/share/openocd/scripts)."""
    prefix = Path(os.path.realpath(tool)).parent.parent
    folder = prefix / "share" / "openocd" / "scripts"
    return folder if folder.is_dir() else None


def openocd_interfaces(tool: str, scripts: Path | None = None) -> list[str]:
    """The ST-LINK interface scripts to try, in order: those the scripts folder holds; when the
    folder is unknown, by version (0.11 and later: interface/stlink.cfg first)."""
    scripts = scripts if scripts is not None else openocd_scripts_dir(tool)
    if scripts is not None:
        present = [cfg for cfg in OPENOCD_INTERFACES if (scripts / cfg).is_file()]
        if present:
            return present
    version = openocd_version(tool)
    if version is not None and version < (0, 11):
        return list(OPENOCD_INTERFACES[1:])
    return list(OPENOCD_INTERFACES)


def openocd_command(tool: str, interface: str, elf: Path) -> list[str]:
    return [tool, "-f", interface, "-f", OPENOCD_TARGET,
            "-c", f"program {{{elf}}} verify reset exit"]


def flash_openocd(elf: Path, timeout: float, interfaces: list[str] | None = None) -> str:
    """Program with OpenOCD through the first interface script it has. Any failure is the next
    method's turn (MethodUnavailable, with what OpenOCD said): an OpenOCD that lacks a script, finds
    no probe or fails to program must not stop st-flash and the USB drive from being tried."""
    tool = shutil.which("openocd")
    if not tool:
        raise MethodUnavailable("openocd is not installed (`sudo apt-get install openocd`)")
    tried = []
    for interface in interfaces if interfaces is not None else openocd_interfaces(tool):
        code, output = _run(openocd_command(tool, interface, elf), timeout)
        # OpenOCD ends with status 0 even when `program` failed: its output tells.
        if code == 0 and "** Programming Finished **" in output and "Verified OK" in output:
            return f"programmed and verified with openocd ({interface})"
        if f"Can't find {interface}" in output:
            tried.append(f"{interface}: not in this OpenOCD")
            continue  # an older or newer OpenOCD: its other name for the ST-LINK script
        if "open failed" in output or "No device found" in output or code == -1:
            raise MethodUnavailable(f"openocd found no ST-LINK probe ({_error_lines(output)})")
        raise MethodUnavailable(f"openocd could not program the board ({_error_lines(output)})")
    raise MethodUnavailable("this OpenOCD has none of the ST-LINK interface scripts ("
                            + "; ".join(tried) + "): install OpenOCD 0.11 or later")


def flash_stflash(binary: Path, timeout: float) -> str:
    tool = shutil.which("st-flash")
    if not tool:
        raise MethodUnavailable("st-flash is not installed (`sudo apt-get install stlink-tools`)")
    code, output = _run([tool, "--reset", "write", str(binary), FLASH_ORIGIN], timeout)
    if code != 0:
        if "Couldn't find any ST-Link" in output or "No ST-LINK" in output or code == -1:
            raise MethodUnavailable(f"st-flash found no ST-LINK ({_error_lines(output)})")
        raise FlashError(f"st-flash failed to program the board: {_error_lines(output)}")
    return "written with st-flash"


def _windows_drives_labelled(label: str) -> list[str]:
    import ctypes  # Windows only

    kernel32 = ctypes.windll.kernel32
    found = []
    mask = kernel32.GetLogicalDrives()
    for i in range(26):
        if not mask & (1 << i):
            continue
        root = f"{chr(65 + i)}:\\"
        name = ctypes.create_unicode_buffer(261)
        if kernel32.GetVolumeInformationW(root, name, 261, None, None, None, None, 0):
            if name.value.upper() == label.upper():
                found.append(root)
    return found


def mass_storage_volumes(label: str) -> list[str]:
    """Mount points of the drive called ``label`` (the NUCLEO's ST-LINK presents NODE_F746ZG)."""
    if sys.platform == "win32":
        return _windows_drives_labelled(label)
    candidates = []
    for pattern in (f"/media/*/{label}", f"/media/{label}", f"/run/media/*/{label}",
                    f"/mnt/{label}", f"/mnt/*/{label}", f"/Volumes/{label}"):
        candidates.extend(glob.glob(pattern))
    # Mounted under an unusual path: the kernel's mount table still names it.
    mounts = Path("/proc/mounts")
    if mounts.exists():
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) > 1:
                point = fields[1].replace("\\040", " ")
                if os.path.basename(point) == label:
                    candidates.append(point)
    seen, result = set(), []
    for path in candidates:
        if os.path.isdir(path) and path not in seen:
            seen.add(path)
            result.append(path)
    return result


def flash_mass_storage(binary: Path, label: str, deadline: float = 60.0, poll: float = 0.1,
                       find=None) -> str:
    """Copy the image onto the ST-LINK's USB drive and wait for the verdict.

    The file is written, flushed to the drive and closed in one go, and never opened again: the
    ST-LINK takes the drive away to program the chip as soon as the file is complete. It then
    presents the drive again, with FAIL.TXT when it rejected the image. So the drive is polled
    until it has gone and come back (or the copied file has left it), at most `deadline`
    seconds, before FAIL.TXT is looked for. `find` lists the drive's mount points
    (mass_storage_volumes by default)."""
    find = find or mass_storage_volumes
    volumes = find(label)
    if not volumes:
        raise MethodUnavailable(f"no {label} drive is mounted (looked in /media/*/, /run/media/*/, "
                                "/mnt/, /Volumes/ and drive labels)")
    drive = Path(volumes[0])
    target = drive / binary.name
    data = binary.read_bytes()
    try:
        with open(target, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on the drive before close: the probe then programs
    except OSError as exc:
        raise MethodUnavailable(f"could not write {target} ({exc})") from exc

    end = time.monotonic() + deadline
    gone = False
    while time.monotonic() < end:
        present = find(label)
        if not present:
            gone = True  # the probe took the drive to program the chip
        else:
            drive = Path(present[0])
            fail = drive / "FAIL.TXT"
            try:
                if fail.is_file():
                    raise FlashError("the board rejected the image: "
                                     f"{fail.read_text(errors='replace').strip()}")
                taken = not (drive / binary.name).exists()
            except OSError:
                taken = False  # the drive is going away under us: look again
            if gone or taken:
                return f"copied {binary.name} onto {drive}; the ST-LINK programmed it"
        time.sleep(poll)
    if gone:
        # Programmed most likely, but the ST-LINK's verdict could not be read: the firmware's
        # answer to HELLO (which `tinycil flash` waits for next) is the check left.
        return (f"copied {binary.name} onto the {label} drive; it did not come back within "
                f"{deadline:.0f} s, so the ST-LINK's verdict (FAIL.TXT) is unknown")
    raise FlashError(f"the ST-LINK did not take {binary.name} from the {label} drive within "
                     f"{deadline:.0f} s: update its firmware (ST's ST-LINK upgrade tool), or "
                     "install openocd or stlink-tools")


def stlink_ports() -> list[str]:
    """Serial ports of attached ST-LINK probes (the NUCLEO's virtual COM port)."""
    return [p.device for p in serial.tools.list_ports.comports() if p.vid == STLINK_VID]


def flash_board(board: Board, elf: Path, binary: Path, timeout: float = 120.0,
                echo=None) -> FlashResult:
    """Program a real board with the first of its methods that works here."""
    if not board.flash_methods:
        raise FlashError(f"board '{board.id}' lists no flash methods in its manifest")
    reasons = []
    for method in board.flash_methods:
        if echo:
            echo(f"Trying {method} ...")
        try:
            if method == "openocd":
                detail = flash_openocd(elf, timeout)
            elif method == "st-flash":
                detail = flash_stflash(binary, timeout)
            elif method == "mass-storage":
                detail = flash_mass_storage(binary, board.mass_storage_label or "NODE_F746ZG")
            else:
                reasons.append(f"{method}: not a method tinycil knows")
                continue
        except MethodUnavailable as exc:
            reasons.append(f"{method}: {exc}")
            continue
        return FlashResult(board=board.id, method=method, detail=detail)
    raise FlashError(
        f"could not flash {board.id}; tried:\n  " + "\n  ".join(reasons) + "\n"
        f"Plug the {board.name} in by its ST-LINK USB connector (a data cable, not charge-only). "
        "On Linux the probe needs udev rules (the openocd and stlink-tools packages install them; "
        "re-plug afterwards). Any one of: `sudo apt-get install openocd`, `sudo apt-get install "
        f"stlink-tools`, or the {board.mass_storage_label or 'board'} drive mounted, is enough.")
