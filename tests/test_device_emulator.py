"""End to end on the emulated board: the real firmware under QEMU, over a real socket.

Every QEMU started here is ended by its pid in a fixture, also when a test fails.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tinycil.deploy import emulator
from tinycil import protocol_spec as spec
from tinycil.deploy.boards import load_board
from tinycil.link.bridge import DeviceLink
from tinycil.deploy.build import build
from helpers import process_alive

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm"),
]

BOARD = "mps2_an500"


def _tinycil() -> list[str]:
    script = Path(sys.executable).with_name("tinycil")
    if script.exists():
        return [str(script)]
    found = shutil.which("tinycil")
    assert found, "the tinycil console script is not installed (pip install -e .)"
    return [found]


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    folder = tmp_path / "state"
    monkeypatch.setenv("TINYCIL_STATE_DIR", str(folder))
    pids = []
    yield folder, pids
    # Whatever happened in the test: no QEMU it started survives it.
    state_file = folder / "state.json"
    if state_file.exists():
        pids.append(json.loads(state_file.read_text())["pid"])
    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


@pytest.fixture(scope="module")
def firmware():
    return build(load_board(BOARD))


@pytest.fixture
def qemu(firmware, tmp_path, monkeypatch):
    """The firmware running under QEMU, not recorded in any state file; killed at the end."""
    monkeypatch.setenv("TINYCIL_STATE_DIR", str(tmp_path / "qemu"))
    with emulator.emulator(load_board(BOARD), firmware.elf) as state:
        yield state
    assert not process_alive(state.pid)


def _run(args, env, timeout=300):
    return subprocess.run(_tinycil() + args, capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.timeout(600)
def test_flash_info_stop_as_a_user_types_them(state_dir, tmp_path):
    folder, pids = state_dir
    env = dict(os.environ, TINYCIL_STATE_DIR=str(folder))

    flashed = _run(["flash", "--board", BOARD], env)
    state_file = folder / "state.json"
    if state_file.exists():
        pids.append(json.loads(state_file.read_text())["pid"])
    assert flashed.returncode == 0, flashed.stdout + flashed.stderr
    assert "Building firmware for mps2_an500" in flashed.stdout
    assert "Device answered: mps2_an500" in flashed.stdout

    state = json.loads(state_file.read_text())
    assert state["board"] == BOARD and state["url"] == f"socket://127.0.0.1:{state['port']}"
    assert process_alive(state["pid"])
    cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"mps2-an500" in cmdline and b"-kernel" in cmdline

    shown = _run(["info", "--board", BOARD, "--json"], env, timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    info = json.loads(shown.stdout)
    assert info["port"] == state["url"]
    assert info["board"] == BOARD
    assert info["protocol_version"] == spec.PROTOCOL_VERSION
    assert info["max_payload"] == spec.MAX_PAYLOAD
    assert info["ram_total"] == 320 * 1024 and info["flash_total"] == 1024 * 1024
    assert 0 < info["ram_used"] <= info["ram_total"]
    assert 0 < info["flash_used"] <= info["flash_total"]
    assert info["counter_kind_name"] == "INSTRUCTIONS"
    assert info["session_id"] != 0
    assert info["build_id"]

    # A second client talks to the same boot: same session, readable text output.
    again = _run(["info", "--board", BOARD], env, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"0x{info['session_id']:08x}" in again.stdout
    assert "Board" in again.stdout and BOARD in again.stdout

    stopped = _run(["stop"], env, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped QEMU (pid {state['pid']}" in stopped.stdout
    assert not process_alive(state["pid"])
    assert not state_file.exists()

    after = _run(["info", "--board", BOARD], env, timeout=60)
    assert after.returncode == 1
    assert "run `tinycil flash --board mps2_an500` first" in after.stderr


def test_flashing_again_replaces_the_running_emulator(state_dir, firmware):
    from tinycil.deploy.flash import start_emulated

    folder, pids = state_dir
    board = load_board(BOARD)
    first = start_emulated(board, firmware.elf)
    pids.append(first.emulator.pid)
    second = start_emulated(board, firmware.elf)
    pids.append(second.emulator.pid)
    assert not process_alive(first.emulator.pid)
    assert process_alive(second.emulator.pid)
    assert emulator.running().pid == second.emulator.pid
    # every boot gets a new session id: how a reset is detected
    assert first.info["session_id"] != second.info["session_id"]
    assert emulator.stop().pid == second.emulator.pid
    assert not process_alive(second.emulator.pid)


def test_a_dead_emulator_leaves_a_stale_state_that_is_cleaned(state_dir, firmware):
    folder, pids = state_dir
    state = emulator.start(load_board(BOARD), firmware.elf)
    pids.append(state.pid)
    os.kill(state.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "state.json").exists()
    assert emulator.running() is None
    assert not (folder / "state.json").exists()


# ---- the link under faults, through a proxy between host and QEMU --------------------------------

class Proxy:
    """A loopback TCP proxy in front of QEMU's serial socket that can damage the host's frames.

    ``mangle(frame_index, frame_bytes) -> bytes | None`` sees each host-to-device frame (the bytes
    up to and including its 0x00 delimiter; empty frames are passed as they are) and returns what
    to forward (None: drop it). ``reply_copies`` sends every device frame that many times.
    """

    def __init__(self, upstream_port: int, mangle=None, reply_copies: int = 1):
        self.upstream_port = upstream_port
        self.mangle = mangle
        self.reply_copies = reply_copies
        self.frames_seen = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self):
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            for target in (self._host_to_device, self._device_to_host):
                thread = threading.Thread(target=target, args=(client, upstream), daemon=True)
                thread.start()
                self._threads.append(thread)
            return

    def _pump(self, src, dst, on_frame):
        src.settimeout(0.05)
        pending = bytearray()
        while not self._stop.is_set():
            try:
                data = src.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            pending += data
            while b"\x00" in pending:
                cut = pending.index(b"\x00") + 1
                frame, pending = bytes(pending[:cut]), pending[cut:]
                out = on_frame(frame)
                if out:
                    dst.sendall(out)

    def _host_to_device(self, client, upstream):
        def on_frame(frame):
            if frame == b"\x00" or self.mangle is None:
                return frame
            index = self.frames_seen
            self.frames_seen += 1
            return self.mangle(index, frame)
        self._pump(client, upstream, on_frame)

    def _device_to_host(self, client, upstream):
        self._pump(upstream, client, lambda frame: frame * self.reply_copies)

    def close(self):
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(2)


def _drop_first(index, frame):
    return None if index == 0 else frame


def _corrupt_first(index, frame):
    if index:
        return frame
    damaged = bytearray(frame)
    middle = len(damaged) // 2  # inside the frame, never its delimiter
    damaged[middle] = damaged[middle] ^ 0x5A or 0x33  # and never a new delimiter
    return bytes(damaged)


def test_hello_through_a_proxy_that_drops_the_first_request(qemu):
    proxy = Proxy(qemu.port, mangle=_drop_first)
    try:
        with DeviceLink(proxy.url, timeout=1.0, retries=3) as link:
            info = link.hello()
            stats = link.stats
    finally:
        proxy.close()
    assert info["board"] == BOARD
    # the lost frame and its retransmission (one more if a busy machine delays the answer)
    assert proxy.frames_seen == stats.sent_frames >= 2
    assert stats.resent_frames == stats.sent_frames - 1


def test_hello_after_a_corrupted_request_is_resent_on_the_devices_complaint(qemu):
    proxy = Proxy(qemu.port, mangle=_corrupt_first)
    try:
        with DeviceLink(proxy.url, timeout=5.0, retries=3) as link:
            info = link.hello()
            stats = link.stats
    finally:
        proxy.close()
    assert info["board"] == BOARD
    assert stats.damage_reports == 1       # the device said BAD_CRC / MALFORMED ...
    assert stats.resent_frames >= 1        # ... and the host resent (at once, not after 5 s)


def test_duplicated_reply_is_dropped_by_sequence_number(qemu):
    proxy = Proxy(qemu.port, reply_copies=3)
    try:
        with DeviceLink(proxy.url, timeout=5.0, retries=0) as link:
            first = link.hello()
            second = link.hello()
            stats, logs = link.stats, link.logs
    finally:
        proxy.close()
    assert first == second
    # the boot message (a LOG frame, sent before any request) was collected, not taken for INFO
    assert any(BOARD in text for text in logs)
    assert stats.stale_frames == 2         # the two extra copies of the first INFO
    assert stats.resent_frames == 0
