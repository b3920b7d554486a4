"""The export's signature and C sources, on a small model built here (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np

from tinycil.deploy.export import (OP_DENSE, ExportModel, quantize_multiplier, render_sources, signature)


def small_model(**change) -> ExportModel:
    rng = np.random.default_rng(0)
    dense = {"op": OP_DENSE, "padding": 0, "stride_h": 1, "stride_w": 1, "k_h": 1, "k_w": 1,
             "depth_multiplier": 0, "in": (1, 1, 16), "out": (1, 1, 8), "in_zero_point": -3,
             "out_zero_point": -128, "act_min": -128, "act_max": 127,
             "weights": rng.integers(-127, 128, 128).astype(np.int8),
             "bias": rng.integers(-500, 500, 8).astype(np.int32),
             "multiplier": np.full(8, 1 << 30, np.int32), "shift": np.full(8, -7, np.int32),
             "name": "FULLY_CONNECTED"}
    fields = dict(
        name="small", input_shape=(4, 4), input_scale=0.02, input_zero_point=-3, table=[dense],
        latent_size=8, latent_scale=0.05, latent_zero_point=-128,
        tail_weights=[rng.normal(size=(4, 8)).astype(np.float32),
                      rng.normal(size=(2, 4)).astype(np.float32)],
        tail_biases=[np.zeros(4, np.float32), np.zeros(2, np.float32)],
        tail_max=[(8, 6), (6, 4)],
        plan=[{"classes_seen": 2, "out": [4, 2]}, {"classes_seen": 4, "out": [6, 4]}],
        known_tasks=1, classes_max=4,
        buffer_x=rng.integers(-128, 128, (3, 16)).astype(np.int8),
        buffer_y=np.array([0, 1, 1], np.uint8), buffer_ram_capacity=4,
        defaults={"lr": 0.05, "momentum": 0.9, "clip_norm": 5.0, "batch_new": 8,
                  "batch_replay": 8, "seed": 0})
    fields.update(change)
    return ExportModel(**fields)


def test_signature_changes_when_the_model_changes():
    base = small_model()
    sig = signature(base)
    assert len(sig) == 8 and sig == signature(small_model())
    w = [x.copy() for x in base.tail_weights]
    w[1][0, 0] = np.nextafter(w[1][0, 0], np.float32(np.inf))  # one ulp of one weight
    assert signature(small_model(tail_weights=w)) != sig
    assert signature(small_model(buffer_y=np.array([0, 1, 0], np.uint8))) != sig
    assert signature(small_model(latent_zero_point=-127)) != sig
    plan = [{"classes_seen": 2, "out": [4, 2]}, {"classes_seen": 4, "out": [5, 4]}]
    assert signature(small_model(plan=plan, tail_max=[(8, 5), (5, 4)])) != sig


def test_sources_name_the_run_and_signature_and_are_exact():
    em = small_model()
    sig = signature(em)
    src = render_sources(em, sig, 4096, "my-run")
    assert f"run \"my-run\", model signature {sig.hex()}" in src["model_data.h"]
    assert "#define TC_HAS_MODEL 1" in src["model_data.h"]
    cpp = src["model_data.cpp"]
    assert "alignas(16) const float tail0_weights[32]" in cpp
    # floats are written as exact hexadecimal literals
    assert float(em.tail_weights[0][0, 0]).hex() in cpp


def test_quantize_multiplier_like_tflite():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    m, s = quantize_multiplier(0.0072)
    assert (1 << 30) <= m < (1 << 31)
    assert abs(m * 2.0 ** (s - 31) - 0.0072) < 1e-9
    # a value that rounds up to 2^31 moves to the next exponent
    assert quantize_multiplier(1.0 - 2.0 ** -40) == (1 << 30, 1)
