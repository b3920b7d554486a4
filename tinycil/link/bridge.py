"""The host end of the serial link: one request at a time, answered reliably.

`DeviceLink` opens anything pyserial's ``serial_for_url`` opens (``/dev/ttyACM0``, ``COM3``,
``socket://127.0.0.1:PORT`` for the emulated board) and sends requests framed by
``tinycil.link.protocol``. Every request carries a fresh sequence number and every answer carries the
number of its request, which makes the link robust with little code:

- no answer in time, or a STATUS saying the device received a damaged frame (BAD_CRC, MALFORMED,
  TOO_LONG): send the same frame again, up to ``retries`` times;
- an answer whose sequence number is not the outstanding one is a late duplicate of an earlier
  exchange: dropped;
- LOG and PROGRESS frames the device sends on its own are collected (or handed to a callback) and
  never mistaken for an answer.

The windowed, flow-controlled transfer of many samples (tinycil.link.session) builds on this class
through its small public plumbing: ``write`` (raw bytes out), ``read_frames`` (whatever frames
arrived, never waiting long) and ``handle_unsolicited`` (a LOG or PROGRESS frame it came across).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import serial
import serial.tools.list_ports

from tinycil.link import protocol
from tinycil import protocol_spec as spec

MSG = spec.MESSAGES
# Answers that mean "your frame arrived damaged": the request never ran, so resending is safe.
_RESEND_STATUSES = {spec.STATUS["BAD_CRC"], spec.STATUS["MALFORMED"], spec.STATUS["TOO_LONG"]}
_UNSOLICITED = {MSG["LOG"], MSG["PROGRESS"]}


from tinycil.link.protocol import DeviceError  # noqa: E402  (re-exported: callers import it here)


class PortNotFound(DeviceError):
    pass


class NoAnswer(DeviceError):
    pass


class ProtocolMismatch(DeviceError):
    pass


class DeviceStatusError(DeviceError):
    """The device answered with a STATUS other than OK."""

    def __init__(self, code: int, name: str, detail: int, text: str, request: str):
        self.code, self.name, self.detail, self.text = code, name, detail, text
        msg = f"device refused {request}: {name} (detail {detail})"
        super().__init__(msg + (f": {text}" if text else ""))


def available_ports() -> list[str]:
    return [f"{p.device} ({p.description})" if p.description and p.description != "n/a" else p.device
            for p in serial.tools.list_ports.comports()]


def _type_name(msg_type: int) -> str:
    for name, value in MSG.items():
        if value == msg_type:
            return name
    return f"0x{msg_type:02X}"


@dataclass
class LinkStats:
    sent_frames: int = 0
    resent_frames: int = 0
    received_frames: int = 0
    stale_frames: int = 0       # answers to an earlier request (duplicates), dropped
    frame_errors: int = 0       # undecodable frames (bad CRC, bad COBS, garbage) on the host side
    damage_reports: int = 0     # STATUS replies saying the device received a damaged frame
    bytes_in: int = 0
    bytes_out: int = 0
    errors_by_kind: dict = field(default_factory=dict)


class DeviceLink:
    """A serial session with a tinycil device.

    ``port`` is a device path or a pyserial URL. Use as a context manager, or call ``close()``.
    """

    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 1.0, retries: int = 3,
                 on_log=None, on_progress=None, lossy_for: float = 20.0):
        self.port = port
        # A link that keeps delivering bytes is lossy, not dead: request() goes on resending past
        # `retries` for up to this many seconds while bytes arrive.
        self.lossy_for = lossy_for
        self.baudrate = baudrate
        self.timeout = timeout
        self.retries = retries
        self.on_log = on_log
        self.on_progress = on_progress
        self.logs: list[str] = []
        self.progress: list[protocol.Frame] = []
        self.stats = LinkStats()
        # A random start: a device that drops duplicates by seq must not take this session's
        # first request for a repeat of the previous session's last one.
        self._seq = int.from_bytes(os.urandom(2), "little")
        self._decoder = protocol.FrameDecoder()
        self._pending: list = []  # frames decoded but not yet handled
        self._serial = self._open()
        # A delimiter first: if an earlier client vanished mid-frame, the device's decoder is
        # left holding a partial frame; this ends it so our first request is read cleanly.
        self.write(b"\x00")

    # ---- opening ---------------------------------------------------------------------------------
    def _open(self):
        try:
            # A short read timeout: request() keeps its own deadline and polls.
            return serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.05,
                                         write_timeout=5.0)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise self._open_error(exc) from exc

    def _open_error(self, exc: Exception) -> DeviceError:
        if self.port.startswith("socket://"):
            return PortNotFound(
                f"nothing listens at {self.port} ({exc}). For the emulated board start it with "
                "`tinycil flash --board mps2_an500`; otherwise check the host and port.")
        text = str(exc)
        if "Permission denied" in text or "Errno 13" in text:
            return PortNotFound(
                f"no permission to open {self.port}: on Linux add yourself to the 'dialout' group "
                "(`sudo usermod -aG dialout $USER`, then log in again).")
        if "busy" in text.lower() or "Errno 16" in text:
            return PortNotFound(f"{self.port} is busy: close the other program using it "
                                "(a serial monitor, another tinycil).")
        ports = available_ports()
        listing = ", ".join(ports) if ports else "none (is the board plugged in?)"
        return PortNotFound(f"cannot open serial port {self.port} ({text}). Ports present: {listing}")

    # ---- plumbing ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            finally:
                self._serial = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, data: bytes) -> None:
        """Send raw bytes (already framed); counted in ``stats.bytes_out``."""
        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"writing to {self.port} failed ({exc}): was the device unplugged "
                              "or the emulator stopped?") from exc
        self.stats.bytes_out += len(data)

    def read_frames(self) -> list:
        """Frames (and FrameErrors) received so far, decoded; waits at most one short read
        timeout (50 ms) when nothing is there. An empty list means nothing arrived."""
        if self._pending:  # decoded along with an earlier answer, not yet looked at
            frames, self._pending = self._pending, []
            return frames
        try:
            data = self._serial.read(max(1, self._serial.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"reading from {self.port} failed ({exc}): was the device unplugged "
                              "or the emulator stopped?") from exc
        if not data:
            return []
        self.stats.bytes_in += len(data)
        return self._decoder.feed(data)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def handle_unsolicited(self, frame) -> None:
        """Keep a LOG or PROGRESS frame the device sent on its own (and call the callback)."""
        if frame.type == MSG["LOG"]:
            text = frame.payload.decode("utf-8", errors="replace")
            self.logs.append(text)
            if self.on_log:
                self.on_log(text)
        else:
            self.progress.append(frame)
            if self.on_progress:
                self.on_progress(frame)

    # ---- requests ----------------------------------------------------------------------------------
    def request(self, msg_type: int, payload: bytes = b"", timeout: float | None = None,
                retries: int | None = None):
        """Send one request and return the device's answer (a Frame with the request's seq).

        Resends on timeout or when the device reports a damaged frame; raises NoAnswer when all
        tries are spent and, past them, when no byte arrived during the last try or ``lossy_for``
        seconds have passed (bytes that keep arriving mean a lossy link, not a dead one).
        """
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        seq = self._next_seq()
        frame_bytes = protocol.encode_frame(msg_type, seq, payload)
        tries = 0
        damaged = 0
        started = time.monotonic()
        heard = self.stats.bytes_in
        while tries <= retries or (self.stats.bytes_in > heard
                                   and time.monotonic() - started < self.lossy_for):
            heard = self.stats.bytes_in
            if tries:
                self.stats.resent_frames += 1
            self.write(frame_bytes)
            self.stats.sent_frames += 1
            tries += 1
            deadline = time.monotonic() + timeout
            resend = False
            while not resend and time.monotonic() < deadline:
                frames = self.read_frames()
                for position, item in enumerate(frames):
                    if isinstance(item, protocol.FrameError):
                        self.stats.frame_errors += 1
                        kind = getattr(item, "kind", "error")
                        self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
                        continue
                    self.stats.received_frames += 1
                    if item.type in _UNSOLICITED:
                        self.handle_unsolicited(item)
                        continue
                    if item.type == MSG["STATUS"]:
                        try:
                            code = protocol.parse_status(item.payload)[0]
                        except protocol.ProtocolError as exc:
                            raise ProtocolMismatch(
                                f"the device sent a malformed STATUS ({exc}): is it running "
                                "tinycil firmware? Flash it with this tinycil "
                                "(`tinycil flash --board B`).") from None
                        # A damaged frame's seq cannot be trusted, so a damage report counts
                        # whatever seq it carries.
                        if code in _RESEND_STATUSES:
                            damaged += 1
                            self.stats.damage_reports += 1
                            resend = True
                    if resend or item.seq == seq:
                        self._pending = frames[position + 1:] + self._pending
                        if resend:
                            break
                        return item
                    self.stats.stale_frames += 1
        raise self._no_answer(msg_type, tries, timeout, damaged)

    def _no_answer(self, msg_type: int, tries: int, timeout: float, damaged: int) -> NoAnswer:
        what = f"no answer to {_type_name(msg_type)} from {self.port} after {tries} tries " \
               f"({timeout:g} s each)"
        if damaged:
            return NoAnswer(f"{what}: the device reported {damaged} damaged frame(s); the link "
                            "corrupts data (check the cable and the baud rate).")
        if self.stats.bytes_in and not self.stats.received_frames:
            return NoAnswer(f"{what}: {self.stats.bytes_in} bytes arrived but none formed a valid "
                            f"frame. Is the baud rate right ({self.baudrate})? Is this board "
                            "running tinycil firmware?")
        return NoAnswer(f"{what}. Check that the board is flashed with tinycil firmware "
                        "(`tinycil flash --board B`), that this is its port, and the baud rate "
                        f"({self.baudrate}).")

    def check_status(self, frame, request: str = "the request") -> None:
        """Raise DeviceStatusError unless ``frame`` is a STATUS OK (or a specific reply)."""
        if frame.type != MSG["STATUS"]:
            return
        try:
            code, name, detail, text = protocol.parse_status(frame.payload)
        except protocol.ProtocolError as exc:
            raise ProtocolMismatch(f"the device answered {request} with a malformed STATUS "
                                   f"({exc}): flash the firmware with this tinycil "
                                   "(`tinycil flash --board B`).") from None
        if code != spec.STATUS["OK"]:
            raise DeviceStatusError(code, name, detail, text, request)

    def hello(self, timeout: float | None = None, retries: int | None = None) -> dict:
        """Ask the device who it is: the INFO fields as a dict (see ``protocol.parse_info``)."""
        reply = self.request(MSG["HELLO"], b"", timeout=timeout, retries=retries)
        self.check_status(reply, "HELLO")
        if reply.type != MSG["INFO"]:
            raise DeviceError(f"the device answered HELLO with {_type_name(reply.type)}, not INFO: "
                              "is it running tinycil firmware?")
        # The version is the payload's first field in every version, so it is read before the
        # rest of the layout, which may differ between versions.
        if len(reply.payload) >= 2:
            version = int.from_bytes(reply.payload[:2], "little")
            if version != spec.PROTOCOL_VERSION:
                newer = "an older" if version < spec.PROTOCOL_VERSION else "a newer"
                raise ProtocolMismatch(
                    f"the device speaks protocol version {version}, this tinycil speaks "
                    f"{spec.PROTOCOL_VERSION}: the firmware was built by {newer} tinycil. "
                    "Rebuild and flash it with this one (`tinycil flash --board B`).")
        try:
            return protocol.parse_info(reply.payload)
        except protocol.ProtocolError as exc:
            raise ProtocolMismatch(f"the device's INFO does not parse ({exc}): rebuild and flash "
                                   "the firmware with this tinycil (`tinycil flash --board B`).") from exc
