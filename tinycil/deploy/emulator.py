"""The emulated board: QEMU running the firmware in the background, its serial port on a socket.

`tinycil flash --board mps2_an500` starts QEMU and returns; later commands (`info`, `stream`)
find it through a small state file in a per-user folder (so from any directory; see
tinycil.deploy.workspace), and `tinycil stop` ends it. The state file records the pid and
the serial URL; before anything is killed the pid is checked to still be that QEMU, because pids
are reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tinycil.deploy import workspace
from tinycil.deploy.boards import Board

QEMU = "qemu-system-arm"
STATE_DIR_ENV = workspace.STATE_DIR_ENV
STATE_FILE = "state.json"
LOG_FILE = "qemu.log"


class EmulatorError(RuntimeError):
    pass


@dataclass
class EmulatorState:
    pid: int
    port: int
    url: str
    elf: str
    board: str
    started: float
    icount: bool
    log: str


def state_dir() -> Path:
    """A per-user folder (or TINYCIL_STATE_DIR), the same from every directory."""
    return workspace.state_dir()


def state_path() -> Path:
    return state_dir() / STATE_FILE


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise EmulatorError(f"{QEMU} not found: the emulated board needs QEMU. Install it with "
                            f"`sudo apt-get install qemu-system-arm` (Debian/Ubuntu), "
                            f"`brew install qemu` (macOS), or run `make setup`.")
    return path


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it when binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def qemu_command(board: Board, elf: Path, port: int, icount: bool = False) -> list[str]:
    if not board.qemu_machine:
        raise EmulatorError(f"board '{board.id}' is not emulated (no QEMU machine in its manifest)")
    cmd = [qemu_binary(), "-M", board.qemu_machine, "-display", "none", "-monitor", "none",
           "-nographic", "-semihosting-config", "enable=on,target=native",
           # The board's network card keeps QEMU's user-mode network: it costs about a sixth of
           # the link's speed (polled in every round of the main loop that feeds the UART), but
           # without it (`-nic none`) QEMU 7.2 without -icount stops delivering the host's bytes
           # to the UART: the firmware never sees HELLO.
           "-kernel", str(elf),
           # wait=on: QEMU holds the CPU until a client connects, so nothing the firmware prints
           # at boot is lost; the server accepts a new client after each disconnect.
           "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on"]
    if icount:
        # One instruction = 1 ns of virtual time: the firmware's counter counts instructions.
        cmd += ["-icount", "shift=0,align=off,sleep=off"]
    return cmd


# ---- process checks ---------------------------------------------------------------------------

def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (it would stay a zombie otherwise)."""
    if not hasattr(os, "WNOHANG"):  # Windows has no zombies to collect
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_alive_windows(pid: int) -> bool:
    # os.kill(pid, 0) would terminate the process on Windows: ask the kernel instead.
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    code = ctypes.c_ulong()
    try:
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
    finally:
        kernel32.CloseHandle(handle)
    return bool(ok) and code.value == 259  # STILL_ACTIVE


def _is_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return _is_alive_windows(pid)
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    if proc.parent.is_dir():
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            return False
        # state is the field after the parenthesised command name; Z = zombie, X = dead
        return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_qemu(state: EmulatorState) -> bool:
    """True if pid is alive and is the QEMU this state describes (pids are reused)."""
    if not _is_alive(state.pid):
        return False
    cmdline = Path(f"/proc/{state.pid}/cmdline")
    if not cmdline.parent.parent.is_dir():  # no /proc (macOS): the pid being alive must do
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    text = b" ".join(args).decode(errors="replace")
    return QEMU in text and f"127.0.0.1:{state.port}," in text


def is_running(state: EmulatorState) -> bool:
    """Whether the QEMU this state describes still runs."""
    return _is_our_qemu(state)


# ---- state file --------------------------------------------------------------------------------

def read_state() -> EmulatorState | None:
    path = state_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return EmulatorState(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise EmulatorError(f"the emulator state file {path} is unreadable ({exc}); delete it "
                            "(if a QEMU is still running, end it by its pid)") from exc


def _write_state(state: EmulatorState) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _remove_state() -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path().unlink()


def running() -> EmulatorState | None:
    """The emulator recorded in the state file if it still runs; a stale record is removed."""
    state = read_state()
    if state is None:
        return None
    if _is_our_qemu(state):
        return state
    _remove_state()
    return None


# ---- start / stop ------------------------------------------------------------------------------

def _kill(pid: int, grace: float = 3.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)  # on Windows: TerminateProcess
    except ProcessLookupError:
        return
    except OSError:
        if not _is_alive(pid):
            return
        raise
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _is_alive(pid):
        time.sleep(0.02)


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, checked without connecting.

    Connecting would be taken by QEMU as *the* client (wait=on), so on Linux we read the kernel's
    socket table instead; elsewhere we cannot tell and say yes.
    """
    table = Path("/proc/net/tcp")
    if not table.exists():
        return True
    wanted = f"0100007F:{port:04X}"
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == wanted and fields[3] == "0A":  # 0A = LISTEN
            return True
    return False


def start(board: Board, elf: Path, icount: bool = False, timeout: float = 10.0,
          record: bool = True) -> EmulatorState:
    """Start QEMU in the background and wait until its serial socket listens.

    With ``record`` the state file is written so that later commands find it. A previous emulator
    must have been stopped first (see ``stop``).
    """
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise EmulatorError(f"firmware {elf} not found: build it with `tinycil build --board {board.id}`")
    sdir = state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    log_path = sdir / LOG_FILE
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between our probe and QEMU's bind
        port = free_port()
        cmd = qemu_command(board, elf, port, icount)
        with open(log_path, "wb") as log:
            # A session of its own: Ctrl-C in the terminal that ran `flash` does not reach QEMU,
            # which keeps running until `tinycil stop`.
            detach = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP
                       | subprocess.DETACHED_PROCESS} if sys.platform == "win32"
                      else {"start_new_session": True})
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    close_fds=True, **detach)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _listening(port):
                    state = EmulatorState(pid=proc.pid, port=port,
                                          url=f"socket://127.0.0.1:{port}", elf=str(elf),
                                          board=board.id, started=time.time(), icount=icount,
                                          log=str(log_path))
                    if record:
                        _write_state(state)
                    return state
                time.sleep(0.02)
        except BaseException:  # Ctrl-C while starting: no QEMU left behind
            _kill(proc.pid)
            raise
        if proc.poll() is None:
            _kill(proc.pid)
            proc.wait()
            raise EmulatorError(f"QEMU did not open its serial port within {timeout:.0f} s; "
                                f"its output is in {log_path}")
        last_error = log_path.read_text(errors="replace").strip()
        if "Address already in use" not in last_error:
            break
    raise EmulatorError(f"QEMU exited at start (code {proc.returncode}): "
                        f"{last_error[-800:] or 'no output'}")


def stop() -> EmulatorState | None:
    """End the recorded emulator. Returns its state, or None if none ran (a stale record is removed)."""
    state = read_state()
    if state is None:
        return None
    if _is_our_qemu(state):
        _kill(state.pid)
        if _is_alive(state.pid):
            raise EmulatorError(f"QEMU (pid {state.pid}) did not end; kill it by hand")
        _remove_state()
        return state
    _remove_state()
    return None


def stop_state(state: EmulatorState) -> None:
    """End one given emulator (not necessarily the recorded one) if it is still that QEMU."""
    if _is_our_qemu(state):
        _kill(state.pid)
    current = read_state()
    if current is not None and current.pid == state.pid:
        _remove_state()


@contextlib.contextmanager
def emulator(board: Board, elf: Path, icount: bool = False, record: bool = False):
    """QEMU for the duration of a ``with`` block: always killed at the end, also on errors."""
    state = start(board, elf, icount=icount, record=record)
    try:
        yield state
    finally:
        stop_state(state)

