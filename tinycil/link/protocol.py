"""Framing of the serial protocol, pure Python (no I/O).

A frame on the wire is ``COBS(header + payload + crc32) + b"\\x00"``; the layout and every constant
come from :mod:`tinycil.protocol_spec`, the same source the firmware's header is generated from.
The firmware's C++ implementation (firmware/lib/protocol) behaves identically; the tests feed
both the same byte streams.

Decoding rules, in this order, for the bytes between two delimiters (empty frames are ignored):
more than ``MAX_ENCODED_FRAME - 1`` bytes -> ``too_long``; bad COBS -> ``malformed``; more than
``MAX_RAW_FRAME`` decoded bytes -> ``too_long``; fewer than header + CRC -> ``malformed``; CRC
mismatch -> ``bad_crc``; length field disagreeing with the frame -> ``malformed``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from tinycil import protocol_spec as spec

MESSAGE_NAMES = {value: name for name, value in spec.MESSAGES.items()}
STATUS_NAMES = {value: name for name, value in spec.STATUS.items()}
COUNTER_KIND_NAMES = {value: name for name, value in spec.COUNTER_KINDS.items()}
INPUT_TYPE_NAMES = {value: name for name, value in spec.INPUT_TYPES.items()}
BUFFER_STORE_NAMES = {v: k for k, v in spec.BUFFER_STORES.items()}

_HEADER = struct.Struct("<BBHH")
_CRC = struct.Struct("<I")
_STATUS_HEAD = struct.Struct("<BBH")

ERROR_KINDS = ("bad_crc", "malformed", "too_long")


class DeviceError(RuntimeError):
    """Anything that stops a conversation with the device; the message says what to do.
    (Defined here, below the bridge, so that a reply that does not parse is one too.)"""


class ProtocolError(DeviceError):
    """A frame or payload that does not follow the protocol."""


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    seq: int
    payload: bytes

    @property
    def type_name(self) -> str:
        return MESSAGE_NAMES.get(self.type, f"0x{self.type:02X}")


@dataclass(frozen=True)
class FrameError:
    kind: str  # one of ERROR_KINDS
    detail: str


# ---- COBS ---------------------------------------------------------------------------------------
def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (canonical form: no empty block after a final 254-byte run)."""
    out = bytearray()
    block = bytearray()
    after_full_block = False
    for byte in data:
        after_full_block = False
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
            continue
        block.append(byte)
        if len(block) == 254:
            out.append(0xFF)
            out += block
            block.clear()
            after_full_block = True
    if not after_full_block:
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block sequence (no delimiter); raises ProtocolError when malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        i += 1
        if code == 0:
            raise ProtocolError("COBS data contains a zero byte")
        run = code - 1
        if run > n - i:
            raise ProtocolError("COBS block runs past the end of the frame")
        chunk = data[i:i + run]
        if 0 in chunk:
            raise ProtocolError("COBS data contains a zero byte")
        out += chunk
        i += run
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def crc32(data: bytes, crc: int = 0) -> int:
    """CRC-32 of IEEE 802.3 (reflected 0xEDB88320, init and xorout 0xFFFFFFFF)."""
    return zlib.crc32(data, crc) & 0xFFFFFFFF


# ---- frames -------------------------------------------------------------------------------------
def encode_frame(msg_type: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """One complete frame on the wire: COBS(header + payload + crc) and the 0x00 delimiter."""
    payload = bytes(payload)
    if len(payload) > spec.MAX_PAYLOAD:
        raise ProtocolError(
            f"payload of {len(payload)} bytes exceeds the maximum of {spec.MAX_PAYLOAD}: "
            "split it over several frames")
    if not 0 <= msg_type <= 0xFF or not 0 <= flags <= 0xFF or not 0 <= seq <= 0xFFFF:
        raise ProtocolError(f"type/flags must fit a byte and seq 16 bits (got {msg_type}, "
                            f"{flags}, {seq})")
    raw = _HEADER.pack(msg_type, flags, seq, len(payload)) + payload
    raw += _CRC.pack(crc32(raw))
    return cobs_encode(raw) + b"\x00"


def decode_body(body: bytes) -> Frame | FrameError:
    """Decode the bytes between two delimiters (not empty) into a Frame or a FrameError."""
    if len(body) > spec.MAX_ENCODED_FRAME - 1:
        return FrameError("too_long", f"{len(body)} encoded bytes before the delimiter")
    try:
        raw = cobs_decode(body)
    except ProtocolError as exc:
        return FrameError("malformed", str(exc))
    if len(raw) > spec.MAX_RAW_FRAME:
        return FrameError("too_long", f"{len(raw)} decoded bytes, at most {spec.MAX_RAW_FRAME}")
    if len(raw) < spec.HEADER_SIZE + spec.CRC_SIZE:
        return FrameError("malformed", f"only {len(raw)} bytes, shorter than header and CRC")
    body_len = len(raw) - spec.CRC_SIZE
    (expected,) = _CRC.unpack_from(raw, body_len)
    actual = crc32(raw[:body_len])
    if actual != expected:
        return FrameError("bad_crc", f"CRC 0x{actual:08X}, frame says 0x{expected:08X}")
    msg_type, flags, seq, length = _HEADER.unpack_from(raw, 0)
    if length != body_len - spec.HEADER_SIZE:
        return FrameError("malformed",
                          f"length field {length}, payload has {body_len - spec.HEADER_SIZE} bytes")
    return Frame(msg_type, flags, seq, bytes(raw[spec.HEADER_SIZE:body_len]))


class FrameDecoder:
    """Streaming decoder: feed it bytes as they arrive, get Frames and FrameErrors back.

    Every 0x00 ends a frame, so the decoder is back in step after garbage at the next delimiter.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overflow = 0  # bytes discarded beyond the maximum frame size

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        events: list[Frame | FrameError] = []
        limit = spec.MAX_ENCODED_FRAME - 1
        start = 0
        while True:
            end = data.find(b"\x00", start)
            chunk = data[start:] if end < 0 else data[start:end]
            room = limit - len(self._buffer)
            if len(chunk) > room:
                self._buffer += chunk[:room]
                self._overflow += len(chunk) - room
            else:
                self._buffer += chunk
            if end < 0:
                return events
            if self._overflow:
                events.append(FrameError(
                    "too_long", f"{len(self._buffer) + self._overflow} bytes before the delimiter"))
            elif self._buffer:
                events.append(decode_body(bytes(self._buffer)))
            self._buffer.clear()
            self._overflow = 0
            start = end + 1

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held so far."""
        return len(self._buffer) + self._overflow


# ---- payloads -----------------------------------------------------------------------------------
def _field_slices():
    index = 0
    for name, kind, count in spec.INFO_FIELDS:
        width = 1 if kind == "char" or count == 1 else count
        yield name, kind, count, index, width
        index += width


def parse_info(payload: bytes) -> dict:
    """The INFO payload as a dict of its fields (names from protocol_spec.INFO_FIELDS)."""
    if len(payload) != spec.INFO_SIZE:
        raise ProtocolError(
            f"INFO payload has {len(payload)} bytes, protocol version "
            f"{spec.PROTOCOL_VERSION} expects {spec.INFO_SIZE}: host and firmware differ, "
            "rebuild and flash the firmware from this checkout")
    values = struct.unpack(spec.INFO_FORMAT, payload)
    info: dict = {}
    for name, kind, count, index, width in _field_slices():
        if kind == "char":
            info[name] = values[index].split(b"\x00", 1)[0].decode("utf-8", "replace")
        elif count > 1:
            info[name] = list(values[index:index + width])
        else:
            info[name] = values[index]
    info["model_signature"] = bytes(info["model_signature"]).hex()
    info["input_shape"] = info["input_shape"][:info["input_rank"]]
    info["counter_kind_name"] = COUNTER_KIND_NAMES.get(info["counter_kind"], "UNKNOWN")
    info["input_type_name"] = INPUT_TYPE_NAMES.get(info["input_type"], "UNKNOWN")
    info["buffer_store_name"] = BUFFER_STORE_NAMES.get(info["buffer_store"], "UNKNOWN")
    return info


def pack_info(info: dict) -> bytes:
    """Inverse of parse_info (missing fields are zero); used by tests and simulators."""
    values: list = []
    for name, kind, count, _index, _width in _field_slices():
        value = info.get(name)
        if kind == "char":
            values.append((value or "").encode("utf-8"))
        elif name == "model_signature":
            raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value or b"")
            values.extend(raw.ljust(count, b"\x00")[:count])
        elif count > 1:
            items = list(value or [])[:count]
            values.extend(items + [0] * (count - len(items)))
        else:
            values.append(value or 0)
    return struct.pack(spec.INFO_FORMAT, *values)


def parse_status(payload: bytes) -> tuple[int, str, int, str]:
    """(code, code_name, detail, text) of a STATUS payload."""
    if len(payload) < _STATUS_HEAD.size:
        raise ProtocolError(f"STATUS payload of {len(payload)} bytes is shorter than "
                            f"{_STATUS_HEAD.size}")
    code, _reserved, detail = _STATUS_HEAD.unpack_from(payload, 0)
    text = payload[_STATUS_HEAD.size:].decode("utf-8", "replace")
    return code, STATUS_NAMES.get(code, f"UNKNOWN_{code}"), detail, text


def pack_status(code: int, detail: int = 0, text: str = "") -> bytes:
    """A STATUS payload (the device's format), for tests and simulators."""
    return _STATUS_HEAD.pack(code, 0, detail) + text.encode("utf-8")
