"""Int8 kernels (host build of the firmware sources) against the LiteRT interpreter: small
single-operator models converted to full int8 by the TFLite converter; outputs must be equal."""

import contextlib
import io
import zlib

import numpy as np
import pytest

from kernels_host.host_lib import kernels


@pytest.fixture(scope="module")
def k():
    return kernels()


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf
    return tf


# XNNPACK (the default delegate) requantises in floating point and is not the arithmetic the
# firmware runs. Operators without a multiplier's rounding (pooling, QUANTIZE) and MEAN give the
# same bits in the interpreter's optimised builtin kernels and in its reference kernels: they are
# checked against both.
RESOLVERS = ["BUILTIN_WITHOUT_DEFAULT_DELEGATES", "BUILTIN_REF"]
# CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED round half-way results differently in the two:
# the optimised kernels round the last shift's ties up (and the depthwise one only in its SIMD
# channel blocks, away from zero in the leftover channels), the reference kernels as TFLite's
# MultiplyByQuantizedMultiplier (CONV_2D, DEPTHWISE_CONV_2D; ties away from zero) or in one
# rounding (FULLY_CONNECTED). The host simulation runs the reference kernels
# (tinycil.learn.quantize.make_interpreter), and the firmware reproduces those.
WEIGHT_RESOLVERS = ["BUILTIN_REF"]


def convert(tf, layer, input_shape, seed, per_channel_dense=True):
    inp = tf.keras.Input(shape=input_shape[1:], batch_size=input_shape[0])
    model = tf.keras.Model(inp, layer(inp))
    rng = np.random.default_rng(seed)
    # Non-trivial weights and a shifted input range (non-zero input zero point).
    for v in model.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.float32) * 0.3)

    def representative():
        for _ in range(8):
            yield [(rng.standard_normal(input_shape) * 1.5 + 0.7).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    # One weight scale for a whole Dense layer, as older converters wrote them and a user's
    # .tflite may still hold (FULLY_CONNECTED with per_channel == 0 on the device).
    conv._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return conv.convert()


class Op:
    """The single operator of a converted model: its tensors and quantisation."""

    def __init__(self, model: bytes, op_name: str, resolver: str):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        self.it = Interpreter(model_content=model,
                              experimental_op_resolver_type=getattr(OpResolverType, resolver))
        self.it.allocate_tensors()
        ops = [o for o in self.it._get_ops_details() if o["op_name"] == op_name]
        assert len(ops) == 1, [o["op_name"] for o in self.it._get_ops_details()]
        self.op = ops[0]
        self.details = {d["index"]: d for d in self.it.get_tensor_details()}

    def tensor(self, i):
        return self.it.get_tensor(self.op["inputs"][i])

    def qparams(self, index):
        q = self.details[index]["quantization_parameters"]
        return q["scales"].astype(np.float32), q["zero_points"].astype(np.int32)

    def run(self, x):
        inp = self.it.get_input_details()[0]
        self.it.set_tensor(inp["index"], x)
        self.it.invoke()
        return self.it.get_tensor(self.it.get_output_details()[0]["index"])

    def requant(self, k, weight_input=1):
        """Per-channel multipliers as TFLite derives them (double precision)."""
        in_s, in_zp = self.qparams(self.op["inputs"][0])
        w_s, _ = self.qparams(self.op["inputs"][weight_input])
        out_s, out_zp = self.qparams(self.op["outputs"][0])
        mults, shifts = zip(*[k.quantize_multiplier(float(in_s[0]) * float(ws) / float(out_s[0]))
                              for ws in w_s])
        return int(in_zp[0]), int(out_zp[0]), np.array(mults), np.array(shifts), out_s[0]


def act_range(kind, out_scale, out_zp):
    lo, hi = -128, 127
    if kind in ("relu", "relu6"):
        lo = max(lo, out_zp)
    if kind == "relu6":
        hi = min(hi, out_zp + int(round(6.0 / out_scale)))
    return lo, hi


def int8_input(op, shape, seed):
    s, zp = op.qparams(op.it.get_input_details()[0]["index"])
    x = np.random.default_rng(seed).standard_normal(shape) * 1.5 + 0.7
    return np.clip(np.round(x / s[0]) + zp[0], -128, 127).astype(np.int8)


def seed_of(case):
    return zlib.crc32(repr(case).encode())


CONV_CASES = [
    # (batch, h, w, in_c, out_c, k, stride, padding, activation)
    (1, 8, 8, 1, 4, 3, 1, "same", None),
    (2, 9, 7, 3, 7, 3, 2, "same", "relu"),
    (1, 10, 10, 7, 13, 5, 1, "valid", "relu6"),
    (1, 11, 9, 13, 8, 5, 2, "valid", None),
    (1, 6, 6, 16, 16, 3, 1, "same", "relu"),
    # one input channel, 3x3, stride 1: the first layer's row-sliding path (odd and even
    # widths, both paddings, more channels than one pass of 32)
    (1, 14, 14, 1, 5, 3, 1, "same", "relu"),
    (1, 5, 6, 1, 35, 3, 1, "same", "relu6"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv2d_s8_matches_litert(k, tf, case):
    b, h, w, ci, co, ks, s, pad, act = case
    layer = tf.keras.layers.Conv2D(co, ks, strides=s, padding=pad, activation=act)
    model = convert(tf, layer, (b, h, w, ci), seed_of(case))
    for resolver in WEIGHT_RESOLVERS:
        op = Op(model, "CONV_2D", resolver)
        in_zp, out_zp, mults, shifts, out_s = op.requant(k)
        x = int8_input(op, (b, h, w, ci), seed_of(case) + 1)
        want = op.run(x)
        # Neither channel blocking nor the two-pixel layout of the least scratch (block 0)
        # may change a single bit.
        for block in (0, 2, 64):
            got = k.conv2d_s8(x, op.tensor(1), op.tensor(2), s, pad, in_zp, out_zp, mults,
                              shifts, act_range(act, out_s, out_zp), out_block=block)
            np.testing.assert_array_equal(got, want, err_msg=resolver)
        assert len(np.unique(want)) > 10  # a real spread of outputs, not a saturated tensor


DW_CASES = [
    # (batch, h, w, in_c, mult, k, stride, padding, activation)
    (1, 8, 8, 1, 1, 3, 1, "same", None),
    (2, 9, 7, 3, 1, 3, 2, "same", "relu"),
    (1, 10, 10, 7, 1, 5, 1, "valid", "relu6"),
    (1, 7, 9, 13, 2, 3, 2, "same", None),
]


@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "x".join(map(str, c)))
def test_depthwise_conv2d_s8_matches_litert(k, tf, case):
    b, h, w, ci, m, ks, s, pad, act = case
    layer = tf.keras.layers.DepthwiseConv2D(ks, strides=s, padding=pad, depth_multiplier=m,
                                            activation=act)
    model = convert(tf, layer, (b, h, w, ci), seed_of(case))
    for resolver in WEIGHT_RESOLVERS:
        op = Op(model, "DEPTHWISE_CONV_2D", resolver)
        in_zp, out_zp, mults, shifts, out_s = op.requant(k)
        x = int8_input(op, (b, h, w, ci), seed_of(case) + 1)
        want = op.run(x)
        got = k.depthwise_s8(x, op.tensor(1).reshape(ks, ks, ci * m), op.tensor(2), s, pad, m,
                             in_zp, out_zp, mults, shifts, act_range(act, out_s, out_zp))
        np.testing.assert_array_equal(got, want, err_msg=resolver)


FC_CASES = [(1, 1, 1, None), (3, 7, 13, "relu"), (2, 64, 10, None), (1, 33, 5, "relu6"),
            # inputs over one widened chunk (256) with a 4 and a 1-3 remainder, outputs over one
            # accumulator group (32) and odd
            (2, 301, 37, "relu"), (1, 44, 2, None)]


@pytest.mark.parametrize("case", FC_CASES, ids=lambda c: "x".join(map(str, c)))
def test_fully_connected_s8_matches_litert(k, tf, case):
    b, n_in, n_out, act = case
    layer = tf.keras.layers.Dense(n_out, activation=act)
    model = convert(tf, layer, (b, n_in), seed_of(case))
    for resolver in WEIGHT_RESOLVERS:
        op = Op(model, "FULLY_CONNECTED", resolver)
        in_zp, out_zp, mults, shifts, out_s = op.requant(k)
        x = int8_input(op, (b, n_in), seed_of(case) + 1)
        want = op.run(x)
        bias = op.tensor(2) if len(op.op["inputs"]) > 2 and op.op["inputs"][2] >= 0 else None
        got = k.fully_connected_s8(x, op.tensor(1), bias, in_zp, out_zp, mults, shifts,
                                   act_range(act, out_s, out_zp))
        np.testing.assert_array_equal(got, want, err_msg=resolver)


# Linear layers (no activation) over many outputs. A ReLU layer's output zero point clamps every
# negative requantised value, so only positive half-way cases reach its output, and those round
# alike under every rule LiteRT uses: the differences between its kernels (and a device that
# followed the wrong one) show only in linear layers, on about one output in a thousand. Each
# case holds enough outputs to reach such ties: the optimised kernels' result must differ from
# the reference kernels' somewhere, or the case could not tell the rounding rules apart.
LINEAR_CASES = [
    # (kind, input shape with batch, outputs)
    ("conv", (12, 10, 10, 8), 16),          # the general path
    ("conv", (12, 14, 14, 1), 8),           # one input channel, 3x3: the row-sliding path
    ("depthwise", (12, 10, 10, 16), 16),
    ("depthwise", (12, 9, 9, 13), 26),      # depth multiplier 2, channels beyond a SIMD block
    ("dense", (400, 64), 40),               # per-channel multipliers
    ("dense_per_tensor", (400, 64), 40),    # one multiplier
]


@pytest.mark.parametrize("case", LINEAR_CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}")
def test_linear_layers_match_litert_reference_kernels_bit_for_bit(k, tf, case):
    kind, shape, n_out = case
    L = tf.keras.layers
    if kind == "conv":
        layer, name = L.Conv2D(n_out, 3, padding="same"), "CONV_2D"
    elif kind == "depthwise":
        layer = L.DepthwiseConv2D(3, padding="same", depth_multiplier=n_out // shape[-1])
        name = "DEPTHWISE_CONV_2D"
    else:
        layer, name = L.Dense(n_out), "FULLY_CONNECTED"
    model = convert(tf, layer, shape, seed_of(case), per_channel_dense=kind != "dense_per_tensor")
    op = Op(model, name, "BUILTIN_REF")
    in_zp, out_zp, mults, shifts, out_s = op.requant(k)
    assert len(mults) == (1 if kind == "dense_per_tensor" else n_out)
    x = int8_input(op, shape, seed_of(case) + 1)
    want = op.run(x)
    assert np.count_nonzero(want < out_zp) > want.size // 4  # linear: many negative outputs
    optimised = Op(model, name, "BUILTIN_WITHOUT_DEFAULT_DELEGATES").run(x)
    assert np.any(optimised != want), "no rounding tie in the data: the case checks nothing"
    full = (-128, 127)  # no activation: the clamp is the int8 range
    if kind == "conv":
        for block in (0, 64):
            got = k.conv2d_s8(x, op.tensor(1), op.tensor(2), 1, "same", in_zp, out_zp, mults,
                              shifts, full, out_block=block)
            np.testing.assert_array_equal(got, want, err_msg=f"out_block {block}")
    elif kind == "depthwise":
        got = k.depthwise_s8(x, op.tensor(1).reshape(3, 3, n_out), op.tensor(2), 1, "same",
                             n_out // shape[-1], in_zp, out_zp, mults, shifts, full)
        np.testing.assert_array_equal(got, want)
    else:
        got = k.fully_connected_s8(x, op.tensor(1), op.tensor(2), in_zp, out_zp, mults, shifts,
                                   full)
        np.testing.assert_array_equal(got, want)


POOL_CASES = [
    ("max", 2, 8, 8, 3, 2, 2, "valid"),
    ("max", 1, 7, 9, 5, 3, 2, "same"),
    ("avg", 2, 8, 8, 3, 2, 2, "valid"),
    ("avg", 1, 7, 9, 13, 3, 2, "same"),
    ("avg", 1, 5, 5, 1, 3, 1, "same"),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_pool_s8_matches_litert(k, tf, case):
    kind, b, h, w, c, ks, s, pad = case
    cls = tf.keras.layers.MaxPooling2D if kind == "max" else tf.keras.layers.AveragePooling2D
    name = "MAX_POOL_2D" if kind == "max" else "AVERAGE_POOL_2D"
    model = convert(tf, cls(ks, s, padding=pad), (b, h, w, c), seed_of(case))
    for resolver in RESOLVERS:
        op = Op(model, name, resolver)
        x = int8_input(op, (b, h, w, c), seed_of(case) + 1)
        np.testing.assert_array_equal(k.pool_s8(kind, x, ks, s, pad), op.run(x),
                                      err_msg=resolver)


def test_quantize_dequantize_match_litert(k, tf):
    tf.keras.utils.set_random_seed(9)  # the Dense initialiser: same model whatever ran before
    inp = tf.keras.Input(shape=(50,), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(20)(inp))
    rng = np.random.default_rng(9)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.standard_normal((1, 50)).astype(np.float32) * 2]
                                           for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model_bytes = conv.convert()  # float in/out: QUANTIZE ... DEQUANTIZE around the op
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    x = np.concatenate([rng.standard_normal(46) * 2, [1e3, -1e3, 0.0, -0.0]]).astype(np.float32)
    for resolver in RESOLVERS:
        it = Interpreter(model_content=model_bytes,
                         experimental_op_resolver_type=getattr(OpResolverType, resolver),
                         experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        ops = it._get_ops_details()
        names = [o["op_name"] for o in ops]
        assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE", names
        details = {d["index"]: d for d in it.get_tensor_details()}
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        qin = details[ops[0]["outputs"][0]]["quantization_parameters"]
        q = k.quantize_s8(x, float(qin["scales"][0]), int(qin["zero_points"][0]))
        np.testing.assert_array_equal(q[None], it.get_tensor(ops[0]["outputs"][0]))
        deq = details[ops[-1]["inputs"][0]]["quantization_parameters"]
        got = k.dequantize_s8(it.get_tensor(ops[-1]["inputs"][0]), float(deq["scales"][0]),
                              int(deq["zero_points"][0]))
        want = it.get_tensor(it.get_output_details()[0]["index"])
        if resolver == "BUILTIN_REF":
            np.testing.assert_array_equal(got, want)  # scale * (q - zp), one rounding
        else:
            # The optimised kernel folds the zero point into an offset (two roundings): within
            # one unit in the last place of the exact product.
            np.testing.assert_array_max_ulp(got, want, maxulp=1)


def test_multiply_by_quantized_multiplier_edge_cases(k):
    """Rounding of the fixed-point requantisation, computed exactly with Python integers."""
    def ref(x, m, s):
        left, right = max(s, 0), max(-s, 0)
        a = (x << left)
        a = ((a << 32) >> 32)  # 32-bit wrap as in the reference
        if a == m == -2**31:
            hi = 2**31 - 1
        else:
            ab = a * m
            nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
            hi = _trunc_div(ab + nudge, 2**31)
        mask = (1 << right) - 1
        rem = hi & mask
        thr = (mask >> 1) + (1 if hi < 0 else 0)
        return (hi >> right) + (1 if rem > thr else 0)

    rng = np.random.default_rng(0)
    xs = [0, 1, -1, 2**31 - 1, -2**31, 12345, -12345] + list(rng.integers(-2**20, 2**20, 300))
    for x in xs:
        for m, s in [(2**30, 0), (2**31 - 1, -1), (1518500250, -7), (1073741825, -31),
                     (1431655765, 2), (2**30 + 12345, -12)]:
            if s > 0 and abs(int(x)) > 2**20:
                continue
            want = ref(int(x), m, s)
            assert k.multiply_by_quantized_multiplier(int(x), m, s) == want, (x, m, s)
            assert k.requant_channel_apply(int(x), m, s) == want, (x, m, s)
    # The high multiply rounds ties up (1.5 -> 2, -1.5 -> -1); the power-of-two division rounds
    # them away from zero (-2.5 -> -3). Double rounding: 5 * 0.5 / 2 = 1.25 gives 2 (2.5 -> 3
    # first, then 1.5 -> 2), not 1.
    # The rearranged per-channel form on every rounding tie and near-tie of the high multiply
    # and the shift, for both signs, and on random accumulators with TFLite-like multipliers.
    ties = [sign * (t * 2**j + e) for sign in (1, -1) for t in (1, 3, 5, 7) for j in range(12)
            for e in (-1, 0, 1)]
    big = list(rng.integers(-2**31, 2**31, 2000)) + [2**31 - 1, -2**31, 2**31 - 2]
    for x in ties + big:
        for m, s in [(2**30, 0), (2**30, -1), (2**30, -3), (1518500250, -7), (2**31 - 1, -31),
                     (1073741825, -30), (int(rng.integers(2**30, 2**31)), -9), (0, -4),
                     (-(2**31 - 1), -2), (1431655765, 1)]:
            if s > 0 and abs(int(x)) > 2**29:
                continue
            assert k.requant_channel_apply(int(x), m, s) == ref(int(x), m, s), (x, m, s)
    assert k.multiply_by_quantized_multiplier(3, 2**30, 0) == 2
    assert k.multiply_by_quantized_multiplier(-3, 2**30, 0) == -1
    assert k.multiply_by_quantized_multiplier(-10, 2**30, -1) == -3
    assert k.multiply_by_quantized_multiplier(5, 2**30, -1) == 2
    assert k.quantize_multiplier(0.5) == (2**30, 0)
    assert k.quantize_multiplier(0.75) == (3 * 2**29, 0)


def test_single_rounding_requantisation_edge_cases(k):
    """FULLY_CONNECTED's one rounding, floor((x * M + 2^(30 - s)) / 2^(31 - s)), computed exactly
    with Python integers, for the general path and the two-instruction path (|x| < 2^30, s < 0)
    on every half-way case and its neighbours, both signs, and random accumulators."""
    def ref(x, m, s):
        v = (x * m + (1 << (30 - s))) >> (31 - s)
        return max(-2**31, min(2**31 - 1, v))

    rng = np.random.default_rng(1)
    ties = [sign * (t * 2**j + e) for sign in (1, -1) for t in (1, 3, 5, 7) for j in range(24)
            for e in (-1, 0, 1)]
    big = list(rng.integers(-2**31, 2**31, 2000)) + [2**31 - 1, -2**31, 2**30 - 1, -(2**30) + 1,
                                                      2**30, -(2**30)]
    mults = [(2**30, 0), (2**30, -1), (2**30, -3), (1518500250, -7), (2**31 - 1, -31),
             (1073741825, -30), (int(rng.integers(2**30, 2**31)), -9), (0, -4),
             (1431655765, 1), (2**31 - 1, 30), (1350136951, -8)]
    for x in ties + big:
        for m, s in mults:
            want = ref(int(x), m, s)
            assert k.multiply_by_quantized_multiplier_single(int(x), m, s) == want, (x, m, s)
            assert k.fully_connected_requant(int(x), m, s) == want, (x, m, s)
    # Where one rounding and the convolutions' two differ: -2160 * M / 2^39 = -5.49899 rounds to
    # -5; the double rounding's high multiply gives -1408 = -5.5 * 2^8, which rounds to -6.
    assert k.fully_connected_requant(-2160, 1399585810, -8) == -5
    assert k.multiply_by_quantized_multiplier(-2160, 1399585810, -8) == -6


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@pytest.mark.parametrize("shape,out_c,ksize,block", [
    ((1, 18, 18, 32), 32, 3, 32), ((1, 8, 8, 1), 5, 3, 6), ((1, 7, 7, 3), 7, 5, 2),
    ((1, 9, 9, 13), 16, 3, 16)])
def test_exporter_plans_the_scratch_the_conv_kernel_wants(k, shape, out_c, ksize, block):
    """The exporter sizes the arena's kernel scratch with a Python mirror of the C formula."""
    from tinycil.deploy.export import conv2d_s8_scratch_bytes
    got = conv2d_s8_scratch_bytes(ksize, ksize, shape[3], block)
    assert got == k.conv2d_s8_scratch_bytes(shape, out_c, ksize, 1, "valid", block)


@pytest.mark.parametrize("shape", [(2, 9, 19, "valid"), (1, 17, 16, "same"), (1, 3, 21, "same")])
def test_conv2d_s8_first_layer_path_equals_the_general_path(k, shape):
    # One input channel, 3x3, stride 1: the least scratch (block 0, 108 bytes) cannot hold three
    # widened rows of 16 or more outputs (120 bytes and up), so it takes the general path; with
    # more scratch the row-sliding one runs; both must give the same bits
    # (TFLite's double-rounding requantisation) for odd and even widths and both paddings.
    b, h, w, pad = shape
    rng = np.random.default_rng(h * 100 + w)
    x = rng.integers(-128, 128, (b, h, w, 1)).astype(np.int8)
    wt = rng.integers(-128, 128, (7, 3, 3, 1)).astype(np.int8)
    bias = rng.integers(-20000, 20000, 7).astype(np.int32)
    ms, ss = zip(*[k.quantize_multiplier(r) for r in rng.uniform(0.0002, 0.004, 7)])
    ms, ss = np.array(ms, np.int32), np.array(ss, np.int32)
    general = k.conv2d_s8(x, wt, bias, 1, pad, -5, 3, ms, ss, (3, 127), out_block=0)
    sliding = k.conv2d_s8(x, wt, bias, 1, pad, -5, 3, ms, ss, (3, 127), out_block=64)
    np.testing.assert_array_equal(sliding, general)
    assert len(np.unique(general)) > 20
