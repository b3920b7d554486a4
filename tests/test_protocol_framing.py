"""Framing of the serial protocol: the Python side, and the firmware's C++ library built for the
host and fed the very same byte streams."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from tinycil.link import protocol as p
from tinycil import protocol_spec as spec

HELLO = spec.MESSAGES["HELLO"]


def decode_all(data: bytes, chunk: int | None = None):
    decoder = p.FrameDecoder()
    if chunk is None:
        return decoder.feed(data)
    events = []
    for i in range(0, len(data), chunk):
        events += decoder.feed(data[i:i + chunk])
    return events


def payload_cases():
    rng = random.Random(1234)
    cases = [b"", b"\x00", b"\x00" * 7, bytes(range(1, 256)), b"\x00" * spec.MAX_PAYLOAD,
             bytes([0x5A]) * spec.MAX_PAYLOAD, bytes([1]) * 253, bytes([1]) * 254,
             bytes([1]) * 255, bytes([1]) * 508, bytes([7]) * 254 + b"\x00"]
    for length in (1, 2, 100, 247, 248, 249, 500, 1000, spec.MAX_PAYLOAD - 1, spec.MAX_PAYLOAD):
        cases.append(bytes(rng.randrange(256) for _ in range(length)))
        cases.append(bytes(rng.randrange(1, 256) for _ in range(length)))  # no zero at all
    return cases


# ---- COBS ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, encoded", [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),                     # 254 non-zero
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),                 # 0 + 254
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),       # 255 non-zero
])
def test_cobs_known_encodings(data, encoded):
    assert p.cobs_encode(data) == encoded
    assert p.cobs_decode(encoded) == data


def test_cobs_round_trip_and_no_zero():
    for data in payload_cases():
        encoded = p.cobs_encode(data)
        assert 0 not in encoded
        assert len(encoded) <= len(data) + len(data) // 254 + 1
        assert p.cobs_decode(encoded) == data


@pytest.mark.parametrize("bad", [b"\x05\x11\x22", b"\x03\x11\x00", b"\x00", b"\xff\x01"])
def test_cobs_malformed(bad):
    with pytest.raises(p.ProtocolError):
        p.cobs_decode(bad)


def test_crc32_is_ieee():
    assert p.crc32(b"123456789") == 0xCBF43926  # the standard check value of CRC-32/IEEE


# ---- frames -------------------------------------------------------------------------------------
def test_frame_round_trips():
    for seq, payload in enumerate(payload_cases()):
        wire = p.encode_frame(0x04, seq, payload, flags=seq & 0xFF)
        assert wire.endswith(b"\x00") and 0 not in wire[:-1]
        assert len(wire) <= spec.MAX_ENCODED_FRAME
        assert decode_all(wire) == [p.Frame(0x04, seq & 0xFF, seq, payload)]


def test_stream_of_frames_in_any_chunking():
    frames = [p.Frame(HELLO, 0, i, payload) for i, payload in enumerate(payload_cases())]
    wire = b"".join(p.encode_frame(f.type, f.seq, f.payload, f.flags) for f in frames)
    for chunk in (1, 7, 1000, None):
        assert decode_all(wire, chunk) == frames


def test_corrupted_crc_detected():
    wire = bytearray(p.encode_frame(HELLO, 5, b"abc"))
    raw = bytearray(p.cobs_decode(bytes(wire[:-1])))
    raw[-1] ^= 0x40
    events = decode_all(p.cobs_encode(bytes(raw)) + b"\x00")
    assert len(events) == 1 and events[0].kind == "bad_crc"
    # A flipped payload bit too.
    raw = bytearray(p.cobs_decode(bytes(wire[:-1])))
    raw[6] ^= 1
    assert decode_all(p.cobs_encode(bytes(raw)) + b"\x00")[0].kind == "bad_crc"


def test_garbage_before_a_frame_then_resync():
    good = p.encode_frame(HELLO, 42)
    events = decode_all(b"\x13\x37garbage\xff\xfe" + b"\x00" + good)
    assert events[0].kind in ("malformed", "bad_crc")
    assert events[1] == p.Frame(HELLO, 0, 42, b"")
    # Garbage without a delimiter of its own swallows the next frame; a leading 0x00 (which
    # senders put before a frame) keeps the frame intact.
    assert decode_all(b"\x13\x37" + good)[0].kind in ("malformed", "bad_crc")
    assert decode_all(b"\x13\x37" + b"\x00" + good)[-1] == p.Frame(HELLO, 0, 42, b"")


def test_empty_frames_are_ignored():
    assert decode_all(b"\x00\x00\x00" + p.encode_frame(HELLO, 1) + b"\x00") == [
        p.Frame(HELLO, 0, 1, b"")]


def test_payload_over_maximum_refused():
    with pytest.raises(p.ProtocolError, match="exceeds the maximum"):
        p.encode_frame(HELLO, 0, bytes(spec.MAX_PAYLOAD + 1))
    # A sender that ignores the limit: the receiver reports too_long and recovers.
    raw = struct_frame(HELLO, 0, bytes([1]) * (spec.MAX_PAYLOAD + 1))
    events = decode_all(p.cobs_encode(raw) + b"\x00" + p.encode_frame(HELLO, 3))
    assert [type(e) for e in events] == [p.FrameError, p.Frame]
    assert events[0].kind == "too_long" and events[1].seq == 3
    # Endless bytes without a delimiter: too_long once the delimiter comes, then back in step.
    events = decode_all(b"\x55" * 5000 + b"\x00" + p.encode_frame(HELLO, 4))
    assert events[0].kind == "too_long" and events[1].seq == 4


def struct_frame(msg_type, seq, payload):
    """A raw (unencoded) frame with a correct CRC, without the payload limit check."""
    import struct
    raw = struct.pack("<BBHH", msg_type, 0, seq, len(payload) & 0xFFFF) + payload
    return raw + struct.pack("<I", p.crc32(raw))


def test_truncated_frames():
    wire = p.encode_frame(HELLO, 9, b"payload!")
    for cut in range(1, len(wire) - 1):
        events = decode_all(wire[:cut] + b"\x00")
        assert len(events) == 1 and isinstance(events[0], p.FrameError), cut
        assert events[0].kind in ("malformed", "bad_crc")
    # Shorter than a header: malformed.
    assert decode_all(p.cobs_encode(b"\x01\x02\x03") + b"\x00")[0].kind == "malformed"


def test_length_field_disagreeing_is_malformed():
    raw = bytearray(struct_frame(HELLO, 1, b"abcd"))
    raw[4] = 3  # claims 3 bytes of payload, CRC recomputed so only the length is wrong
    raw = bytes(raw[:-4])
    raw += p.crc32(raw).to_bytes(4, "little")
    assert decode_all(p.cobs_encode(raw) + b"\x00")[0].kind == "malformed"


def test_info_pack_parse_round_trip():
    info = {"protocol_version": spec.PROTOCOL_VERSION, "max_payload": spec.MAX_PAYLOAD,
            "board": "mps2_an500", "build_id": "abc-20250101", "clock_hz": 25_000_000,
            "counter_kind": spec.COUNTER_KINDS["INSTRUCTIONS"], "input_type": 1, "input_rank": 3,
            "input_shape": [28, 28, 1], "model_signature": "0102030405060708",
            "classes_max": 10, "ram_used": 1000, "ram_total": 327680}
    payload = p.pack_info(info)
    assert len(payload) == spec.INFO_SIZE
    parsed = p.parse_info(payload)
    for key, value in info.items():
        assert parsed[key] == value
    assert parsed["counter_kind_name"] == "INSTRUCTIONS" and parsed["input_type_name"] == "INT8"
    with pytest.raises(p.ProtocolError, match="rebuild"):
        p.parse_info(payload[:-1])


def test_status_parse():
    code, name, detail, text = p.parse_status(p.pack_status(spec.STATUS["UNKNOWN_TYPE"], 0x33, "x"))
    assert (code, name, detail, text) == (3, "UNKNOWN_TYPE", 0x33, "x")


# ---- the C++ library, built for the host -----------------------------------------------------
HARNESS = r"""
// Host harness around firmware/lib/protocol. Modes (argv[1]):
//   decode   : stdin = byte stream; stdout = one line per event
//   encode   : stdin = lines "type flags seq hexpayload"; stdout = hex of each frame
//   dispatch : stdin = byte stream; stdout = the raw reply bytes (HELLO answered with "pong")
#include <stdio.h>
#include <string.h>
#include <string>
#include <vector>
#include <iostream>
#include "tc_dispatch.h"
#include "tc_frame.h"

static const char* kind(tc::FrameEvent e) {
    switch (e) {
        case tc::FrameEvent::bad_crc: return "bad_crc";
        case tc::FrameEvent::malformed: return "malformed";
        case tc::FrameEvent::too_long: return "too_long";
        default: return "?";
    }
}

static std::vector<uint8_t> read_stdin() {
    std::vector<uint8_t> data;
    int c;
    while ((c = getchar()) != EOF) data.push_back(static_cast<uint8_t>(c));
    return data;
}

static size_t write_stdout(const uint8_t* data, size_t n) { return fwrite(data, 1, n, stdout); }

static void pong(const tc::Frame& request, tc::Responder& out) {
    out.send(TC_MSG_INFO, request.seq, "pong", 4);
}

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "decode") {
        static tc::FrameDecoder decoder;
        for (uint8_t byte : read_stdin()) {
            const tc::FrameEvent event = decoder.feed(byte);
            if (event == tc::FrameEvent::frame) {
                const tc::Frame& f = decoder.frame();
                printf("frame %u %u %u ", f.type, f.flags, f.seq);
                for (size_t i = 0; i < f.length; ++i) printf("%02x", f.payload[i]);
                printf("\n");
            } else if (event != tc::FrameEvent::none) {
                printf("error %s\n", kind(event));
            }
        }
        return 0;
    }
    if (mode == "encode") {
        unsigned type, flags, seq;
        std::string hex;
        static uint8_t out[TC_MAX_ENCODED_FRAME];
        while (std::cin >> type >> flags >> seq >> hex) {
            if (hex == "-") hex.clear();
            std::vector<uint8_t> payload;
            for (size_t i = 0; i + 1 < hex.size(); i += 2)
                payload.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
            const size_t n = tc::encode_frame(type, flags, seq, payload.data(), payload.size(),
                                              out, sizeof(out));
            if (n == 0) printf("refused");
            for (size_t i = 0; i < n; ++i) printf("%02x", out[i]);
            printf("\n");
        }
        return 0;
    }
    if (mode == "dispatch") {
        static tc::Responder responder(write_stdout);
        static const tc::Route routes[] = {{TC_MSG_HELLO, pong}};
        static tc::Dispatcher dispatcher(routes, 1, responder);
        const std::vector<uint8_t> data = read_stdin();
        dispatcher.receive(data.data(), data.size());
        return 0;
    }
    fprintf(stderr, "usage: harness decode|encode|dispatch\n");
    return 2;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory, root):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is needed to build the firmware's protocol library for the host: "
                    "sudo apt-get install g++")
    build = tmp_path_factory.mktemp("protocol_host")
    source = build / "harness.cpp"
    source.write_text(HARNESS)
    lib = root / "firmware" / "lib" / "protocol"
    exe = build / "harness"
    cmd = [compiler, "-std=gnu++17", "-O2", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
           "-I", str(lib), str(source), *sorted(str(f) for f in lib.glob("*.cpp")), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)

    def run(mode: str, data: bytes) -> bytes:
        return subprocess.run([str(exe), mode], input=data, capture_output=True, check=True,
                              timeout=60).stdout
    return run


def cxx_events(run, data: bytes):
    events = []
    for line in run("decode", data).decode().splitlines():
        parts = line.split(" ")
        if parts[0] == "frame":
            events.append(p.Frame(int(parts[1]), int(parts[2]), int(parts[3]),
                                  bytes.fromhex(parts[4]) if len(parts) > 4 else b""))
        else:
            events.append(parts[1])
    return events


def py_events(data: bytes):
    return [e if isinstance(e, p.Frame) else e.kind for e in p.FrameDecoder().feed(data)]


@pytest.mark.slow
def test_cxx_encoder_matches_python(harness):
    cases = [(0x04, i & 0xFF, (i * 7919) & 0xFFFF, payload)
             for i, payload in enumerate(payload_cases())]
    lines = "".join(f"{t} {fl} {s} {pl.hex() or '-'}\n" for t, fl, s, pl in cases)
    lines += f"1 0 0 {bytes(spec.MAX_PAYLOAD + 1).hex()}\n"
    outputs = harness("encode", lines.encode()).decode().splitlines()
    assert len(outputs) == len(cases) + 1
    for (t, fl, s, pl), out in zip(cases, outputs):
        assert bytes.fromhex(out) == p.encode_frame(t, s, pl, flags=fl)
    assert outputs[-1] == "refused"  # over the maximum payload, like ProtocolError in Python


@pytest.mark.slow
def test_cxx_decoder_matches_python(harness):
    rng = random.Random(99)
    good = b"".join(p.encode_frame(HELLO, i, payload) for i, payload in enumerate(payload_cases()))
    streams = [good]
    # Garbage, corruption, truncation and overlong frames mixed into one stream.
    pieces = []
    for i, payload in enumerate(payload_cases()):
        wire = bytearray(p.encode_frame(0x05, i, payload))
        action = i % 5
        if action == 1 and len(wire) > 3:
            wire[rng.randrange(len(wire) - 1)] ^= 1 << rng.randrange(8)
        elif action == 2:
            wire = wire[:rng.randrange(1, len(wire))] + b"\x00"
        elif action == 3:
            wire = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) + b"\x00" + wire
        pieces.append(bytes(wire))
    pieces.append(p.cobs_encode(struct_frame(HELLO, 1, bytes([1]) * (spec.MAX_PAYLOAD + 1))) + b"\x00")
    pieces.append(b"\x55" * 3000 + b"\x00")
    pieces.append(p.cobs_encode(b"\x01\x02") + b"\x00")
    pieces.append(b"\x05\x11\x22\x00")
    streams.append(b"".join(pieces) + p.encode_frame(HELLO, 77))
    streams.append(bytes(rng.randrange(256) for _ in range(20000)))
    for stream in streams:
        expected = py_events(stream)
        assert cxx_events(harness, stream) == expected
    assert {"bad_crc", "malformed", "too_long"} <= set(py_events(streams[1]))


@pytest.mark.slow
def test_cxx_dispatcher_replies(harness):
    stream = (p.encode_frame(HELLO, 300) + b"junk\x00" + p.encode_frame(0x3E, 301)
              + bytes(5000) + b"\x07" * 1500 + b"\x00")
    bad = bytearray(struct_frame(HELLO, 302, b""))
    bad[-1] ^= 0x10
    stream += p.cobs_encode(bytes(bad)) + b"\x00"
    replies = p.FrameDecoder().feed(harness("dispatch", stream))
    assert all(isinstance(r, p.Frame) for r in replies)
    assert (replies[0].type, replies[0].seq, replies[0].payload) == (spec.MESSAGES["INFO"], 300,
                                                                   b"pong")
    statuses = [(r.seq, p.parse_status(r.payload)[1]) for r in replies[1:]]
    assert statuses == [(0, "MALFORMED"), (301, "UNKNOWN_TYPE"), (0, "TOO_LONG"),
                        (0, "BAD_CRC")]
    assert p.parse_status(replies[2].payload)[2] == 0x3E  # detail: the unknown type
