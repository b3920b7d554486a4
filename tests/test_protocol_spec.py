"""The firmware's protocol header is generated from tinycil/protocol_spec.py and must not drift."""

from tinycil import protocol_spec as spec


def test_committed_header_is_generated(root):
    header = root / "firmware" / "lib" / "protocol" / "tc_protocol_spec.h"
    assert header.read_text() == spec.render_header(), (
        "firmware/lib/protocol/tc_protocol_spec.h is stale: regenerate it with "
        "`python -m tinycil.protocol_spec > firmware/lib/protocol/tc_protocol_spec.h`")


def test_limits_are_consistent():
    assert spec.MAX_RAW_FRAME == spec.HEADER_SIZE + spec.MAX_PAYLOAD + spec.CRC_SIZE
    # COBS worst case of the largest frame, plus its delimiter, fits the encoded limit.
    assert spec.MAX_RAW_FRAME + spec.MAX_RAW_FRAME // 254 + 1 + 1 <= spec.MAX_ENCODED_FRAME
    assert spec.DEVICE_RX_RING & (spec.DEVICE_RX_RING - 1) == 0
    assert spec.DEVICE_RX_RING >= spec.MAX_ENCODED_FRAME
    assert len(set(spec.MESSAGES.values())) == len(spec.MESSAGES)
    assert len(set(spec.STATUS.values())) == len(spec.STATUS)
