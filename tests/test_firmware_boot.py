"""The emulated board boots the real firmware under QEMU and answers over the real serial
protocol on a TCP socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from tinycil.link import protocol as p
from tinycil import protocol_spec as spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def firmware_elf(root) -> Path:
    env = dict(os.environ, PLATFORMIO_SETTING_ENABLE_TELEMETRY="No",
               PLATFORMIO_DISABLE_UPGRADE_CHECK="true")
    env.pop("PLATFORMIO_BUILD_FLAGS", None)
    pio = Path(sys.executable).with_name("pio")
    result = subprocess.run([str(pio), "run", "-d", str(root / "firmware"), "-e", "mps2_an500"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "firmware" / ".pio" / "build" / "mps2_an500" / "firmware.elf"


class Link:
    def __init__(self, port: serial.SerialBase):
        self.port = port
        self.decoder = p.FrameDecoder()
        self.pending: list = []

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def receive(self, count: int = 1, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.pending) < count and time.monotonic() < deadline:
            self.pending += self.decoder.feed(self.port.read(256))
        events, self.pending = self.pending[:count], self.pending[count:]
        assert len(events) == count, f"expected {count} frames, got {events}"
        return events


@pytest.fixture
def device(firmware_elf):
    if shutil.which("qemu-system-arm") is None:
        pytest.fail("qemu-system-arm is missing: sudo apt-get install qemu-system-arm")
    port = free_port()
    qemu = subprocess.Popen(
        ["qemu-system-arm", "-M", "mps2-an500", "-display", "none", "-monitor", "none",
         "-semihosting-config", "enable=on,target=native", "-kernel", str(firmware_elf),
         "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    link = None
    try:
        deadline = time.monotonic() + 10
        while link is None:
            try:
                link = Link(serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.2))
            except serial.SerialException:
                if time.monotonic() > deadline or qemu.poll() is not None:
                    raise
                time.sleep(0.05)
        yield link
    finally:
        if link is not None:
            link.port.close()
        qemu.kill()
        qemu.wait(timeout=10)


@pytest.mark.slow
def test_boot_hello_info_and_error_replies(device):
    (banner,) = device.receive()
    assert banner.type == spec.MESSAGES["LOG"] and b"mps2_an500" in banner.payload

    device.send(p.encode_frame(spec.MESSAGES["HELLO"], 1234))
    (reply,) = device.receive()
    assert (reply.type, reply.seq) == (spec.MESSAGES["INFO"], 1234)
    info = p.parse_info(reply.payload)
    assert info["board"] == "mps2_an500"
    assert info["protocol_version"] == spec.PROTOCOL_VERSION
    assert info["max_payload"] == spec.MAX_PAYLOAD
    assert info["ram_total"] == 327680 and info["flash_total"] == 1048576
    assert 0 < info["ram_used"] < info["ram_total"] and 0 < info["flash_used"] < 1048576
    assert info["clock_hz"] == 25_000_000 and info["counter_kind_name"] == "INSTRUCTIONS"
    assert info["model_signature"] == "00" * 8 and info["input_type_name"] == "NONE"
    assert info["classes_max"] == 0 and info["input_shape"] == []
    assert info["build_id"] and info["rx_overruns"] == 0

    # Garbage, a frame with a broken CRC, an unknown request type: each gets a STATUS.
    device.send(b"\x13\x37 not a frame \xff\x00")
    wire = bytearray(p.cobs_decode(p.encode_frame(spec.MESSAGES["HELLO"], 5)[:-1]))
    wire[-1] ^= 0xFF
    device.send(p.cobs_encode(bytes(wire)) + b"\x00")
    device.send(p.encode_frame(0x3E, 77, b"?"))
    device.send(b"\x42" * 2000 + b"\x00")
    replies = device.receive(4)
    statuses = [(r.type, r.seq, p.parse_status(r.payload)[1]) for r in replies]
    status = spec.MESSAGES["STATUS"]
    assert statuses == [(status, 0, "MALFORMED"), (status, 0, "BAD_CRC"),
                        (status, 77, "UNKNOWN_TYPE"), (status, 0, "TOO_LONG")]

    # Still in step afterwards, same session.
    device.send(p.encode_frame(spec.MESSAGES["HELLO"], 1235))
    (again,) = device.receive()
    assert again.seq == 1235 and p.parse_info(again.payload)["session_id"] == info["session_id"]


@pytest.mark.slow
def test_hard_fault_ends_the_emulated_run_with_its_exit_code(root, tmp_path):
    """A build that executes an undefined instruction: the HardFault handler must end QEMU
    through semihosting with bsp::kHardFaultExitCode (0xFA)."""
    env = dict(os.environ, PLATFORMIO_SETTING_ENABLE_TELEMETRY="No",
               PLATFORMIO_DISABLE_UPGRADE_CHECK="true", PLATFORMIO_BUILD_DIR=str(tmp_path),
               PLATFORMIO_BUILD_FLAGS="-DTC_TEST_FAULT")
    pio = Path(sys.executable).with_name("pio")
    build = subprocess.run([str(pio), "run", "-d", str(root / "firmware"), "-e", "mps2_an500"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    qemu = subprocess.Popen(
        ["qemu-system-arm", "-M", "mps2-an500", "-display", "none", "-monitor", "none",
         "-semihosting-config", "enable=on,target=native", "-kernel",
         str(tmp_path / "mps2_an500" / "firmware.elf"), "-serial", "null"])
    try:
        assert qemu.wait(timeout=30) == 0xFA
    finally:
        qemu.kill()
        qemu.wait(timeout=10)
