"""The serial protocol's constants: the one source of truth for host and firmware.

Everything both sides must agree on lives here: frame layout, limits, message types, status codes
and the layout of the fixed-size payloads. The firmware reads them from a generated header,
``firmware/lib/protocol/tc_protocol_spec.h``; regenerate it with

    python -m tinycil.protocol_spec > firmware/lib/protocol/tc_protocol_spec.h

A test regenerates it and fails if the committed header differs, so the two cannot drift.

Frame on the wire: COBS(header + payload + crc32) followed by one 0x00 delimiter.

    offset  size  field
    0       1     type      (MSG_*)
    1       1     flags     (FLAG_*)
    2       2     seq       little endian; a reply carries the seq of its request
    4       2     length    of the payload, little endian, <= MAX_PAYLOAD
    6       n     payload
    6+n     4     crc32     IEEE 802.3 (reflected 0xEDB88320, init and xorout 0xFFFFFFFF) of bytes 0..6+n
"""

from __future__ import annotations

import struct
import sys

PROTOCOL_VERSION = 1

# ---- limits -------------------------------------------------------------------------------------
HEADER_SIZE = 6
CRC_SIZE = 4
MAX_PAYLOAD = 1024
MAX_RAW_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
# COBS adds one byte per 254 bytes (rounded up) plus one; the delimiter is one more.
MAX_ENCODED_FRAME = MAX_RAW_FRAME + (MAX_RAW_FRAME + 253) // 254 + 1 + 1
DEVICE_RX_RING = 4096  # bytes of the firmware's interrupt-driven receive ring (power of two)

# ---- flags --------------------------------------------------------------------------------------
FLAG_NONE = 0x00

# ---- message types ------------------------------------------------------------------------------
# Requests from the host are 0x01-0x3F. A request's specific reply is request | 0x80; any request
# may instead be answered by MSG_STATUS (errors, or plain acknowledgement). 0x40-0x7F are frames
# the device sends on its own (progress, log).
MESSAGES = {
    "HELLO": 0x01,          # -> INFO
    "RESET": 0x02,          # -> STATUS, then the device restarts
    "BEGIN_TASK": 0x03,     # new class ids -> the device grows the model; -> STATUS
    "TRAIN_SAMPLES": 0x04,  # labelled int8 samples of the current task; -> STATUS
    "TRAIN_CONTROL": 0x05,  # epochs, learning rate, momentum, batch mix; -> STATUS
    "BUFFER_SAMPLES": 0x06, # host-distilled samples that join the replay buffer; -> STATUS
    "EVAL_SAMPLES": 0x07,   # int8 samples -> EVAL_RESULT (one prediction per sample)
    "STATS": 0x08,          # -> STATS_RESULT
    "TRAIN_RUN": 0x09,      # train on what was streamed; PROGRESS frames, then STATUS
    "INFO": 0x81,
    "EVAL_RESULT": 0x87,
    "STATS_RESULT": 0x88,
    "PROGRESS": 0x40,       # device -> host while training
    "LOG": 0x41,            # device -> host, UTF-8 text
    "STATUS": 0x7F,         # reply: u8 code, u8 reserved, u16 detail, then UTF-8 text
}
REPLY_BIT = 0x80

# ---- status codes -------------------------------------------------------------------------------
STATUS = {
    "OK": 0,
    "BAD_CRC": 1,        # frame decoded but its CRC did not match
    "MALFORMED": 2,      # bad COBS, too short, or length field disagrees with the frame
    "UNKNOWN_TYPE": 3,   # type is not a request this firmware knows
    "TOO_LONG": 4,       # more than MAX_ENCODED_FRAME bytes before a delimiter
    "BAD_STATE": 5,      # request not valid now (for example TRAIN_RUN before BEGIN_TASK)
    "NO_MODEL": 6,       # firmware built without a model
    "FULL": 7,           # no room left (buffer, task samples)
    "BAD_ARGUMENT": 8,   # payload fields out of range
    "RX_OVERRUN": 9,     # bytes were lost in the receive path (ring full or UART overrun)
}

# ---- counter kinds (INFO.counter_kind) ----------------------------------------------------------
COUNTER_KINDS = {"NONE": 0, "CYCLES": 1, "INSTRUCTIONS": 2}

# ---- input element types (INFO.input_type) ------------------------------------------------------
INPUT_TYPES = {"NONE": 0, "INT8": 1, "FLOAT32": 2}

# ---- fixed payload layouts ----------------------------------------------------------------------
# (name, C type, count). Little endian, packed, in this order.
_CTYPES = {"u8": ("uint8_t", "B"), "u16": ("uint16_t", "H"), "u32": ("uint32_t", "I"),
           "i32": ("int32_t", "i"), "f32": ("float", "f"), "char": ("char", "s")}

INFO_FIELDS = [
    ("protocol_version", "u16", 1),
    ("max_payload", "u16", 1),
    ("board", "char", 16),             # board id, NUL padded (for example "mps2_an500")
    ("build_id", "char", 24),          # firmware build id, NUL padded
    ("clock_hz", "u32", 1),            # core clock
    ("counter_kind", "u8", 1),         # COUNTER_KINDS
    ("input_type", "u8", 1),           # INPUT_TYPES
    ("input_rank", "u8", 1),
    ("reserved0", "u8", 1),
    ("input_shape", "u16", 4),         # first input_rank entries are used (no batch dimension)
    ("model_signature", "u8", 8),      # hash of the exported model; all zero: no model
    ("classes_max", "u16", 1),         # classes the final grown model can hold
    ("classes_seen", "u16", 1),
    ("buffer_capacity", "u32", 1),     # replay buffer slots
    ("buffer_fill", "u32", 1),
    ("ram_used", "u32", 1),            # bytes of static RAM (data + bss + stack reserve)
    ("ram_total", "u32", 1),
    ("flash_used", "u32", 1),
    ("flash_total", "u32", 1),
    ("session_id", "u32", 1),          # new value at every boot: a reset is detected by a change
    ("rx_overruns", "u32", 1),         # bytes lost in the receive path since boot
]


def struct_format(fields) -> str:
    """The ``struct`` format string (little endian, packed) of a payload layout."""
    parts = ["<"]
    for _name, kind, count in fields:
        code = _CTYPES[kind][1]
        parts.append(f"{count}{code}" if count > 1 or kind == "char" else code)
    return "".join(parts)


INFO_FORMAT = struct_format(INFO_FIELDS)
INFO_SIZE = struct.calcsize(INFO_FORMAT)


def render_header() -> str:
    """The C header the firmware includes; generated from the tables above."""
    out = [
        "// Generated by `python -m tinycil.protocol_spec`: do not edit.",
        "// The protocol's constants, shared with the host (tinycil/protocol_spec.py).",
        "#pragma once",
        "#include <stdint.h>",
        "",
        f"#define TC_PROTOCOL_VERSION {PROTOCOL_VERSION}",
        f"#define TC_HEADER_SIZE {HEADER_SIZE}",
        f"#define TC_CRC_SIZE {CRC_SIZE}",
        f"#define TC_MAX_PAYLOAD {MAX_PAYLOAD}",
        f"#define TC_MAX_RAW_FRAME {MAX_RAW_FRAME}",
        f"#define TC_MAX_ENCODED_FRAME {MAX_ENCODED_FRAME}",
        f"#define TC_DEVICE_RX_RING {DEVICE_RX_RING}",
        f"#define TC_REPLY_BIT 0x{REPLY_BIT:02X}",
        f"#define TC_FLAG_NONE 0x{FLAG_NONE:02X}",
        "",
    ]
    out += [f"#define TC_MSG_{name} 0x{value:02X}" for name, value in MESSAGES.items()]
    out.append("")
    out += [f"#define TC_STATUS_{name} {value}" for name, value in STATUS.items()]
    out.append("")
    out += [f"#define TC_COUNTER_{name} {value}" for name, value in COUNTER_KINDS.items()]
    out.append("")
    out += [f"#define TC_INPUT_{name} {value}" for name, value in INPUT_TYPES.items()]
    out += ["", "typedef struct __attribute__((packed)) {"]
    for name, kind, count in INFO_FIELDS:
        ctype = _CTYPES[kind][0]
        out.append(f"    {ctype} {name}[{count}];" if count > 1 else f"    {ctype} {name};")
    out += ["} tc_info_t;", "",
            f"#define TC_INFO_SIZE {INFO_SIZE}",
            "#ifdef __cplusplus",
            "static_assert(sizeof(tc_info_t) == TC_INFO_SIZE, \"INFO layout differs from the host\");",
            "#endif", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render_header())
