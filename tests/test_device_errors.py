"""Clear errors when there is no device, a wrong device, or a missing tool (no emulator needed)."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from tinycil.deploy import emulator
from tinycil.deploy.boards import load_board
from tinycil.deploy.build import explain_failure
from tinycil.cli import main


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    folder = tmp_path / "state"
    monkeypatch.setenv("TINYCIL_STATE_DIR", str(folder))
    yield folder
    # a QEMU a failing test left recorded is ended by its pid
    state = folder / "state.json"
    if state.exists():
        try:
            pid = json.loads(state.read_text())["pid"]
            if f"{folder.parent}".encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                os.kill(pid, 9)
        except (OSError, ValueError, KeyError):
            pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the with block ends


class _Server:
    """A TCP server on loopback that sends ``reply`` to whatever connects (or stays silent)."""

    def __init__(self, reply: bytes = b""):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.received = bytearray()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(0.05)
            with conn:
                while not self._stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    self.received += data
                    if self.reply:
                        conn.sendall(self.reply)

    def close(self):
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


def test_info_on_a_closed_socket_says_nothing_listens():
    port = _closed_port()
    result = CliRunner().invoke(main, ["info", "--port", f"socket://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert f"nothing listens at socket://127.0.0.1:{port}" in result.output
    assert "tinycil flash --board mps2_an500" in result.output


def test_info_on_a_missing_serial_port_lists_the_ports():
    result = CliRunner().invoke(main, ["info", "--port", "/dev/ttyTINYCIL_NONE"])
    assert result.exit_code == 1
    assert "cannot open serial port /dev/ttyTINYCIL_NONE" in result.output
    assert "Ports present:" in result.output


def test_info_needs_a_board_or_a_port():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 2
    assert "--port" in result.output


def test_info_on_the_emulated_board_with_no_emulator(state_dir):
    result = CliRunner().invoke(main, ["info", "--board", "mps2_an500"])
    assert result.exit_code == 1
    assert "run `tinycil flash --board mps2_an500` first" in result.output
    assert not (state_dir / "state.json").exists()


def test_silent_device_gets_retries_then_a_clear_error():
    server = _Server()
    try:
        start = time.monotonic()
        result = CliRunner().invoke(main, ["info", "--port", f"socket://127.0.0.1:{server.port}",
                                           "--timeout", "0.2"])
        elapsed = time.monotonic() - start
    finally:
        server.close()
    assert result.exit_code == 1
    assert "no answer to HELLO" in result.output and "after 4 tries" in result.output
    assert "flashed with tinycil firmware" in result.output
    # the request went out four times, each a complete frame (the first byte is the resync delimiter)
    assert server.received[:1] == b"\x00"
    assert bytes(server.received[1:]).count(b"\x00") == 4
    assert elapsed < 30  # bounded by the tries, never a hang


def test_garbage_speaking_device_suggests_the_baud_rate():
    server = _Server(reply=bytes(range(1, 200)) + b"\x00" + b"\xff" * 50 + b"\x00")
    try:
        result = CliRunner().invoke(main, ["info", "--port", f"socket://127.0.0.1:{server.port}",
                                           "--timeout", "0.2", "--baud", "57600"])
    finally:
        server.close()
    assert result.exit_code == 1
    assert "none formed a valid frame" in result.output
    assert "baud rate right (57600)" in result.output


def test_stop_with_nothing_running():
    result = CliRunner().invoke(main, ["stop"])
    assert result.exit_code == 0
    assert "No emulator is running." in result.output


def test_stale_state_is_removed_and_a_foreign_pid_never_killed(state_dir):
    # A live process that is not QEMU sits at the recorded pid (as after pid reuse).
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        state_dir.mkdir(parents=True)
        (state_dir / "state.json").write_text(json.dumps({
            "pid": bystander.pid, "port": 5555, "url": "socket://127.0.0.1:5555",
            "elf": "firmware.elf", "board": "mps2_an500", "started": 0.0, "icount": False,
            "log": "qemu.log"}))
        result = CliRunner().invoke(main, ["stop"])
        assert result.exit_code == 0
        assert "No emulator is running." in result.output
        assert bystander.poll() is None, "stop killed a process that is not its QEMU"
        assert not (state_dir / "state.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_unreadable_state_file_says_what_to_do(state_dir):
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text("{not json")
    result = CliRunner().invoke(main, ["stop"])
    assert result.exit_code == 1
    assert "unreadable" in result.output and "delete it" in result.output


def test_missing_qemu_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(emulator.EmulatorError, match="apt-get install qemu-system-arm"):
        emulator.qemu_binary()


def _link(tmp_path, ram_bytes: int, array_bytes: int) -> str:
    """Real GNU ld output for a program whose .bss does not fit a RAM region."""
    src = tmp_path / "big.c"
    src.write_text(f"char big[{array_bytes}];\nint main(void) {{ return big[0]; }}\n"
                   "void _start(void) { main(); for (;;) {} }\n")
    ld = tmp_path / "tiny.ld"
    ld.write_text("MEMORY { FLASH (rx) : ORIGIN = 0x0, LENGTH = 64K\n"
                  f"         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = {ram_bytes} }}\n"
                  "SECTIONS { .text : { *(.text*) } > FLASH\n"
                  "           .bss (NOLOAD) : { *(.bss*) *(COMMON) } > RAM }\n")
    out = subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m7", "-mthumb", "-nostdlib",
                          "-fno-common", "-T", str(ld), str(src), "-o", str(tmp_path / "big.elf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    return out.stderr


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="needs the Arm cross compiler")
def test_ram_overflow_is_explained_with_what_to_shrink(tmp_path):
    output = _link(tmp_path, ram_bytes=1024, array_bytes=1024 + 300)
    assert "overflowed by 300 bytes" in output
    text = explain_failure(output, load_board("mps2_an500"))
    assert "300 bytes more RAM than mps2_an500 has (327,680 bytes)" in text
    assert "replay buffer" in text and "trainable" in text


def test_nucleo_info_without_a_board_attached():
    if os.path.isdir("/dev/serial/by-id") and any("STM" in n for n in os.listdir("/dev/serial/by-id")):
        pytest.skip("an ST-LINK is attached")
    result = CliRunner().invoke(main, ["info", "--board", "nucleo_f746zg"])
    assert result.exit_code == 1
    assert "no ST-LINK serial port found for nucleo_f746zg" in result.output
    assert "pass --port" in result.output



@pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="needs qemu-system-arm")
def test_firmware_that_never_answers_is_reported_and_its_qemu_ended(tmp_path, state_dir):
    from tinycil.deploy.flash import FlashError, start_emulated

    not_firmware = tmp_path / "firmware.elf"
    not_firmware.write_bytes(b"this is not firmware" * 10)  # QEMU loads it raw and runs garbage
    with pytest.raises(FlashError) as err:
        start_emulated(load_board("mps2_an500"), not_firmware, hello_timeout=1.5)
    # the garbage "vector table" sends the CPU to unmapped memory: QEMU locks up and exits
    assert "the emulated firmware crashed: QEMU exited before it answered HELLO" in str(err.value)
    assert "Lockup" in str(err.value) or "lockup" in str(err.value)
    assert emulator.read_state() is None
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(not_firmware) not in processes


def test_device_with_another_protocol_version_is_refused_with_the_fix():
    """A device built by another tinycil (INFO of protocol version + 1) over a real socket."""
    from tinycil.link import protocol
    from tinycil import protocol_spec as spec

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        decoder = protocol.FrameDecoder()
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                for frame in decoder.feed(data):
                    if isinstance(frame, protocol.Frame) and frame.type == spec.MESSAGES["HELLO"]:
                        info = protocol.pack_info({"protocol_version": spec.PROTOCOL_VERSION + 1,
                                                   "board": "mps2_an500"})
                        conn.sendall(protocol.encode_frame(spec.MESSAGES["INFO"], frame.seq, info))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = CliRunner().invoke(main, ["info", "--port",
                                           f"socket://127.0.0.1:{listener.getsockname()[1]}"])
    finally:
        listener.close()
        thread.join(5)
    assert result.exit_code == 1
    assert (f"the device speaks protocol version {spec.PROTOCOL_VERSION + 1}, this tinycil speaks "
            f"{spec.PROTOCOL_VERSION}") in result.output
    assert "tinycil flash --board" in result.output
