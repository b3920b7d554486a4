"""A tiny exported model, written in the export's format (firmware/lib/runtime/tc_model.h) for the
persistence tests: an int8 input of 6 values fed straight to a two-layer float32 tail (no backbone
layers), growing over three plan steps from 2 to 6 classes, with 4 known-task samples in flash and
room for 8 field samples in RAM. Small enough to build in a second and to run anywhere, yet it
drives the real runtime: growth, training, replay and the state it persists."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinycil.deploy import memplan

INPUT = 6
TAIL_MAX = ((INPUT, 8), (8, 6))          # (in, out) at the final size
TAIL_INIT = ((INPUT, 4), (4, 2))
PLAN = ((2, (4, 2)), (4, (6, 4)), (6, (8, 6)))  # (classes_seen, widths)
FLASH_SAMPLES = 4
RAM_CAPACITY = 8
MAX_BATCH = 6
SIGNATURE = bytes([0x7E, 0x51, 0x0A, 0x11, 0xC0, 0xDE, 0x00, 0x42])
# The device key of this model (protocol_spec.DEVICE_KEY_BYTES), as export writes a run's: a host
# session presents it (Session.unlock) before it teaches a firmware built with this model.
DEVICE_KEY = bytes(range(0xA0, 0xB0))


def footprint() -> memplan.Footprint:
    return memplan.Footprint(
        input_size=INPUT, latent_size=INPUT, tail=TAIL_MAX, tail_init=TAIL_INIT,
        max_batch=MAX_BATCH, scratch_bytes=0, kernel_scratch_bytes=0,
        buffer_flash_count=FLASH_SAMPLES, buffer_ram_capacity=RAM_CAPACITY, backbone_bytes=0,
        plan_steps=len(PLAN))


def _floats(a) -> str:
    return ", ".join(f"{float(v)!r}f".replace("inf", "INFINITY") for v in np.asarray(a).ravel())


def write(out_dir: Path) -> Path:
    """Writes model_data.h and model_data.cpp into out_dir; returns out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    w0 = (rng.standard_normal(TAIL_INIT[0][::-1]) * 0.5).astype(np.float32)
    b0 = np.zeros(TAIL_INIT[0][1], np.float32)
    w1 = (rng.standard_normal(TAIL_INIT[1][::-1]) * 0.5).astype(np.float32)
    b1 = np.zeros(TAIL_INIT[1][1], np.float32)
    bx = rng.integers(-20, 20, size=(FLASH_SAMPLES, INPUT)).astype(np.int8)
    by = np.array([0, 1, 0, 1], np.uint8)
    arena = memplan.arena_bytes(footprint())
    (out_dir / "model_data.h").write_text(
        "#pragma once\n#include \"tc_model.h\"\n#define TC_HAS_MODEL 1\n"
        f"#define TC_ARENA_BYTES {arena}u\n"
        "#define TC_DEVICE_KEY {" + ", ".join(f"0x{b:02x}" for b in DEVICE_KEY) + "}\n"
        "extern const tc_model tc_model_data;\n")
    plan = ", ".join("{%d, {%s}}" % (c, ", ".join(map(str, w))) for c, w in PLAN)
    sig = ", ".join(str(b) for b in SIGNATURE)
    (out_dir / "model_data.cpp").write_text(f"""#include "model_data.h"
alignas(16) static const float w0[] = {{{_floats(w0)}}};
alignas(16) static const float b0[] = {{{_floats(b0)}}};
alignas(16) static const float w1[] = {{{_floats(w1)}}};
alignas(16) static const float b1[] = {{{_floats(b1)}}};
alignas(16) static const int8_t bx[] = {{{", ".join(map(str, bx.ravel()))}}};
static const uint8_t by[] = {{{", ".join(map(str, by))}}};
static const tc_tail_layer tail[] = {{
    {{TC_OP_DENSE, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1,
      {TAIL_INIT[0][0]}, {TAIL_INIT[0][1]}, {TAIL_MAX[0][0]}, {TAIL_MAX[0][1]}, w0, b0}},
    {{TC_OP_DENSE, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
      {TAIL_INIT[1][0]}, {TAIL_INIT[1][1]}, {TAIL_MAX[1][0]}, {TAIL_MAX[1][1]}, w1, b1}},
}};
static const tc_plan_step plan[] = {{{plan}}};
const tc_model tc_model_data = {{
    TC_MODEL_FORMAT_VERSION, {{{sig}}},
    1, {{{INPUT}, 0, 0, 0}}, {INPUT}, 1.0f / 64, 0,
    0, nullptr, 0, 0,
    {INPUT}, 1.0f / 64, 0,
    2, tail, {len(PLAN)}, 1, plan, 6,
    {FLASH_SAMPLES}, bx, by, {RAM_CAPACITY},
    {MAX_BATCH}, {{0.05f, 0.0f, 5.0f, 4, 2, 7, 0.1f, 0, 0, 0, 0.0f, 0.1f}},
    TC_ARENA_BYTES, TC_BUFFER_STORES_INPUTS,
}};
""")
    return out_dir
