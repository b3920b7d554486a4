"""Int8 MEAN (global average pooling) of the host-built firmware kernel against the LiteRT
interpreter, on single-operator models from the TFLite converter. The multiplier is the one the
exporter writes (tinycil.deploy.export.quantize_multiplier of input scale / output scale)."""

import math

import numpy as np
import pytest

from kernels_host.host_lib import kernels
from test_kernels_int8 import RESOLVERS, Op, convert, seed_of


@pytest.fixture(scope="module")
def k():
    return kernels()


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf
    return tf


def equal_quantisation(model: bytes) -> bytes:
    """The same model with MEAN's output quantised exactly like its input (the converter
    calibrates them apart; TFLite then still requantises, with multiplier 2^30 and shift 1)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    sg = m.subgraphs[0]
    (op,) = [o for o in sg.operators
             if m.operatorCodes[o.opcodeIndex].builtinCode == schema.BuiltinOperator.MEAN]
    src, dst = sg.tensors[op.inputs[0]].quantization, sg.tensors[op.outputs[0]].quantization
    dst.scale, dst.zeroPoint = list(src.scale), list(src.zeroPoint)
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def run_case(k, model, shape, resolvers, seed):
    from tinycil.deploy.export import quantize_multiplier

    for resolver in resolvers:
        op = Op(model, "MEAN", resolver)
        in_s, in_zp = op.qparams(op.op["inputs"][0])
        out_s, out_zp = op.qparams(op.op["outputs"][0])
        axes = sorted(int(a) % len(shape) for a in np.ravel(op.tensor(1)))
        assert axes == list(range(1, len(shape) - 1)), axes  # the spatial axes, as the converter emits
        mult, shift = quantize_multiplier(float(in_s[0]) / float(out_s[0]))
        rng = np.random.default_rng(seed)
        for x in (rng.integers(-128, 128, shape),                    # full range
                  np.clip(rng.normal(-20, 25, shape), -128, 127),     # typical activations
                  np.full(shape, -128), np.full(shape, 127)):         # extremes of the sum
            x = x.astype(np.int8)
            want = op.run(x).reshape(shape[0], shape[-1])
            got = k.mean_s8(x, int(in_zp[0]), int(out_zp[0]), mult, shift)
            np.testing.assert_array_equal(got, want, err_msg=f"{resolver} {shape}")


MEAN_CASES = [
    # (layer, shape (with batch), keepdims)
    ("gap2d", (1, 7, 5, 9), False),
    ("gap2d", (1, 25, 7, 16), False),   # dscnn's last map
    ("gap2d", (2, 3, 3, 33), False),
    ("gap2d", (1, 1, 1, 5), False),     # count 1
    ("gap2d", (1, 16, 16, 4), False),   # count a power of two
    ("gap1d", (1, 50, 16), False),      # cnn1d's last map
    ("gap1d", (1, 13, 7), True),
    ("gap1d", (3, 100, 3), False),
    ("reduce_mean", (1, 6, 9, 10), False),
    ("reduce_mean", (1, 11, 6), True),
]


def mean_layer(tf, kind, shape, keepdims):
    if kind == "gap2d":
        return tf.keras.layers.GlobalAveragePooling2D(keepdims=keepdims)
    if kind == "gap1d":
        return tf.keras.layers.GlobalAveragePooling1D(keepdims=keepdims)
    axes = list(range(1, len(shape) - 1))
    return tf.keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=axes, keepdims=keepdims))


@pytest.mark.parametrize("case", MEAN_CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}"
                         + ("-keep" if c[2] else ""))
def test_mean_s8_matches_litert(k, tf, case):
    kind, shape, keepdims = case
    model = convert(tf, mean_layer(tf, kind, shape, keepdims), shape, seed_of(case))
    run_case(k, model, shape, RESOLVERS, seed_of(case) + 1)
    run_case(k, equal_quantisation(model), shape, RESOLVERS, seed_of(case) + 2)


def test_mean_s8_keepdims_4d_matches_reference_kernels(k, tf):
    """keep_dims over H, W of a 4-D tensor: LiteRT's optimised builtin kernel takes a separate
    float-derived path there (the exporter refuses such a model); the kernel matches LiteRT's
    reference kernel."""
    shape = (1, 6, 6, 16)
    model = convert(tf, tf.keras.layers.GlobalAveragePooling2D(keepdims=True), shape, 5)
    run_case(k, model, shape, ["BUILTIN_REF"], 6)


def _fold_reference(mult, shift, count):
    s = min(int(math.floor(math.log2(count))), 32, 31 + shift)
    return int((mult << s) // count), shift - s


@pytest.mark.parametrize("mult,shift,count", [
    (1 << 30, 1, 1), (1 << 30, 1, 2), (1 << 30, 1, 350), (2147483647, -3, 7),
    (1518500250, -31, 1000), (1518500250, -30, 4096), (1073741824, 30, 65535),
    (1999999999, 0, 2 ** 30 + 5),
])
def test_mean_count_multiplier_folds_like_tflite(k, mult, shift, count):
    assert k.mean_s8_count_multiplier(mult, shift, count) == _fold_reference(mult, shift, count)
