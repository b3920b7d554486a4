"""Float32 kernels (host build of the firmware sources) against TensorFlow: forward outputs and
every gradient from tf.GradientTape, several shapes including odd channel counts."""

import zlib

import numpy as np
import pytest

from kernels_host.host_lib import kernels

RTOL = 1e-4


@pytest.fixture(scope="module")
def k():
    return kernels()


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf
    return tf


def rel_err(got, want) -> float:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-6))


def check(name, got, want):
    err = rel_err(got, want)
    assert err <= RTOL, f"{name}: relative error {err:.3g} > {RTOL}"


def tape_grads(tf, fn, tensors, dy_seed):
    """y = fn(*tensors); returns y and d(sum(y * dy))/d tensors for a random dy."""
    vs = [tf.Variable(t) for t in tensors]
    with tf.GradientTape() as tape:
        y = fn(*vs)
        dy = tf.constant(np.random.default_rng(dy_seed).standard_normal(y.shape), tf.float32)
        loss = tf.reduce_sum(y * dy)
    grads = tape.gradient(loss, vs)
    return y.numpy(), dy.numpy(), [g.numpy() for g in grads]


CONV_CASES = [
    # (batch, h, w, in_c, out_c, k, stride, padding)
    (2, 8, 8, 1, 3, 3, 1, "same"),
    (1, 9, 7, 3, 7, 3, 2, "same"),
    (2, 10, 10, 7, 13, 5, 1, "valid"),
    (1, 11, 9, 13, 8, 5, 2, "valid"),
    (2, 6, 6, 16, 16, 3, 1, "same"),
    (1, 5, 7, 4, 1, 3, 2, "same"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv2d_f32_fwd_bwd(k, tf, case):
    b, h, w, ci, co, ks, s, pad = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x = rng.standard_normal((b, h, w, ci)).astype(np.float32)
    wt = (rng.standard_normal((ks, ks, ci, co)) / np.sqrt(ks * ks * ci)).astype(np.float32)
    bias = rng.standard_normal(co).astype(np.float32)
    fn = lambda x_, w_, b_: tf.nn.conv2d(x_, w_, s, pad.upper()) + b_  # noqa: E731
    y, dy, (dx, dw, db) = tape_grads(tf, fn, [x, wt, bias], 1)
    w_ours = wt.transpose(3, 0, 1, 2)  # [out][kh][kw][in]
    check("y", k.conv2d_f32_fwd(x, w_ours, bias, s, pad), y)
    gx, gw, gb = k.conv2d_f32_bwd(x, w_ours, dy, s, pad)
    check("dx", gx, dx)
    check("dw", gw, dw.transpose(3, 0, 1, 2))
    check("db", gb, db)


ONE_CHANNEL_CASES = [
    # (batch, h, w, out_c, stride, padding): one input channel, 3x3
    (2, 8, 8, 16, 1, "same"),
    (1, 9, 7, 5, 2, "same"),
    (2, 7, 6, 3, 1, "valid"),
    (1, 5, 8, 4, 2, "valid"),
    (1, 2, 3, 2, 1, "same"),
]


@pytest.mark.parametrize("case", ONE_CHANNEL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_one_channel_conv2d_f32_weight_gradient_without_input_gradient(k, tf, case):
    """A first layer (one input channel, 3x3) asks for no input gradient and takes its own
    filter-by-filter path: its weight and bias gradients must be TensorFlow's, and bit for bit the
    ones the pixel-by-pixel path gives when the input gradient is asked for too."""
    b, h, w, co, s, pad = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x = rng.standard_normal((b, h, w, 1)).astype(np.float32)
    wt = (rng.standard_normal((3, 3, 1, co)) / 3.0).astype(np.float32)
    bias = rng.standard_normal(co).astype(np.float32)
    fn = lambda x_, w_, b_: tf.nn.conv2d(x_, w_, s, pad.upper()) + b_  # noqa: E731
    y, dy, (_, dw, db) = tape_grads(tf, fn, [x, wt, bias], 1)
    w_ours = wt.transpose(3, 0, 1, 2)
    check("y", k.conv2d_f32_fwd(x, w_ours, bias, s, pad), y)
    gx, gw, gb = k.conv2d_f32_bwd(x, w_ours, dy, s, pad, need_dx=False)
    assert gx is None
    check("dw", gw, dw.transpose(3, 0, 1, 2))
    check("db", gb, db)
    _, gw_px, gb_px = k.conv2d_f32_bwd(x, w_ours, dy, s, pad)
    assert np.array_equal(gw.view(np.uint32), gw_px.view(np.uint32))
    assert np.array_equal(gb.view(np.uint32), gb_px.view(np.uint32))


DW_CASES = [
    # (batch, h, w, in_c, mult, k, stride, padding)
    (2, 8, 8, 1, 1, 3, 1, "same"),
    (1, 9, 7, 3, 1, 3, 2, "same"),
    (2, 10, 10, 7, 1, 5, 1, "valid"),
    (1, 7, 9, 13, 1, 5, 2, "same"),
    (1, 6, 6, 3, 2, 3, 1, "valid"),
]


@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "x".join(map(str, c)))
def test_depthwise_conv2d_f32_fwd_bwd(k, tf, case):
    b, h, w, ci, m, ks, s, pad = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x = rng.standard_normal((b, h, w, ci)).astype(np.float32)
    wt = rng.standard_normal((ks, ks, ci, m)).astype(np.float32) / ks
    bias = rng.standard_normal(ci * m).astype(np.float32)
    fn = lambda x_, w_, b_: tf.nn.depthwise_conv2d(x_, w_, [1, s, s, 1], pad.upper()) + b_  # noqa
    y, dy, (dx, dw, db) = tape_grads(tf, fn, [x, wt, bias], 2)
    w_ours = wt.reshape(ks, ks, ci * m)
    check("y", k.depthwise_f32_fwd(x, w_ours, bias, s, pad, m), y)
    gx, gw, gb = k.depthwise_f32_bwd(x, w_ours, dy, s, pad, m)
    check("dx", gx, dx)
    check("dw", gw, dw.reshape(ks, ks, ci * m))
    check("db", gb, db)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 13), (2, 64, 10), (4, 33, 5), (1, 256, 64)])
def test_dense_f32_fwd_bwd(k, tf, shape):
    b, n_in, n_out = shape
    rng = np.random.default_rng(n_in * 100 + n_out)
    x = rng.standard_normal((b, n_in)).astype(np.float32)
    wt = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    y, dy, (dx, dw, db) = tape_grads(tf, lambda x_, w_, b_: x_ @ w_ + b_, [x, wt, bias], 3)
    check("y", k.dense_f32_fwd(x, wt.T, bias), y)
    gx, gw, gb = k.dense_f32_bwd(x, wt.T, dy)
    check("dx", gx, dx)
    check("dw", gw, dw.T)
    check("db", gb, db)


POOL_CASES = [
    # (kind, batch, h, w, c, k, stride, padding)
    ("max", 2, 8, 8, 3, 2, 2, "valid"),
    ("max", 1, 7, 9, 5, 3, 2, "same"),
    ("avg", 2, 8, 8, 3, 2, 2, "valid"),
    ("avg", 1, 7, 9, 13, 3, 2, "same"),
    ("avg", 1, 5, 5, 1, 3, 1, "same"),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_pool_f32_fwd_bwd(k, tf, case):
    kind, b, h, w, c, ks, s, pad = case
    x = np.random.default_rng(7).standard_normal((b, h, w, c)).astype(np.float32)
    op = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
    y, dy, (dx,) = tape_grads(tf, lambda x_: op(x_, ks, s, pad.upper()), [x], 4)
    check("y", k.pool_f32_fwd(kind, x, ks, s, pad), y)
    check("dx", k.pool_f32_bwd(kind, x, dy, ks, s, pad), dx)


@pytest.mark.parametrize("k_, s_, pad", [(2, 2, "valid"), (2, 1, "valid"), (2, 2, "same"),
                                         (3, 2, "same")])
def test_max_pool_f32_ties_go_to_the_first_maximum(k, k_, s_, pad):
    """Inputs drawn from three values, so most windows hold ties: the gradient goes to the first
    maximum in scan order (row, then column), overlapping windows add up, and the 2x2 windows'
    own path gives what the general one does (SAME's clipped windows take the general path)."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, (2, 7, 6, 5)).astype(np.float32)
    g = k.geometry(x.shape, 5, k_, s_, pad, 1)
    oh, ow, pt, pl = k.window(g)
    dy = rng.standard_normal((2, oh, ow, 5)).astype(np.float32)
    want_y = np.full(dy.shape, -np.inf, np.float32)
    want_dx = np.zeros_like(x)
    for b in range(2):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(5):
                    at = None
                    for iy in range(max(oy * s_ - pt, 0), min(oy * s_ - pt + k_, 7)):
                        for ix in range(max(ox * s_ - pl, 0), min(ox * s_ - pl + k_, 6)):
                            if at is None or x[b, iy, ix, c] > x[b, at[0], at[1], c]:
                                at = (iy, ix)
                    want_y[b, oy, ox, c] = x[b, at[0], at[1], c]
                    want_dx[b, at[0], at[1], c] += dy[b, oy, ox, c]
    np.testing.assert_array_equal(k.pool_f32_fwd("max", x, k_, s_, pad), want_y)
    np.testing.assert_array_equal(k.pool_f32_bwd("max", x, dy, k_, s_, pad), want_dx)


@pytest.mark.parametrize("six", [False, True])
def test_relu_f32_fwd_bwd(k, tf, six):
    x = (np.random.default_rng(5).standard_normal((3, 37)) * 5).astype(np.float32)
    op = tf.nn.relu6 if six else tf.nn.relu
    y, dy, (dx,) = tape_grads(tf, op, [x], 5)
    np.testing.assert_array_equal(k.relu_f32(x, six=six), y)
    np.testing.assert_array_equal(k.relu_f32(x, dy, six=six), dx)


def test_expf_logf_accuracy(k):
    x = np.linspace(-87, 88, 20001, dtype=np.float32)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(k.expf(x) / want - 1)) < 5e-7
    p = np.exp(np.linspace(-80, 80, 20001)).astype(np.float32)
    got = k.logf(p).astype(np.float64)
    assert np.max(np.abs(got - np.log(p.astype(np.float64)))) < 2e-5  # |log| up to 80
    assert k.expf(np.array([-100.0], np.float32))[0] == 0.0
    assert np.isneginf(k.logf(np.array([0.0], np.float32))[0])


@pytest.mark.parametrize("use_mask", [False, True])
def test_softmax_ce_masked(k, tf, use_mask):
    rng = np.random.default_rng(11)
    batch, classes = 5, 10
    logits = (rng.standard_normal((batch, classes)) * 3).astype(np.float32)
    if use_mask:
        mask = np.zeros(classes, np.uint8)
        mask[[0, 2, 3, 7, 9]] = 1
        valid = np.flatnonzero(mask)
        labels = rng.choice(valid, batch).astype(np.int32)
        loss, dz = k.softmax_ce_f32(logits, labels, mask=mask)
    else:
        valid = np.arange(6)  # first K = 6 classes seen so far
        labels = rng.integers(0, 6, batch).astype(np.int32)
        loss, dz = k.softmax_ce_f32(logits, labels, num_valid=6)
    z = tf.Variable(logits[:, valid])
    with tf.GradientTape() as tape:
        ref = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            np.searchsorted(valid, labels), z))
    ref_dz = np.zeros_like(logits)
    ref_dz[:, valid] = tape.gradient(ref, z).numpy()
    assert abs(loss - float(ref)) <= RTOL * abs(float(ref))
    check("dlogits", dz, ref_dz)
    # Masked logits have no influence at all, even when huge.
    big = logits.copy()
    big[:, np.setdiff1d(np.arange(classes), valid)] = 1e4
    loss2, dz2 = (k.softmax_ce_f32(big, labels, mask=mask) if use_mask
                  else k.softmax_ce_f32(big, labels, num_valid=6))
    assert loss2 == loss
    np.testing.assert_array_equal(dz2, dz)


def test_softmax_ce_rejects_masked_label(k):
    logits = np.zeros((1, 4), np.float32)
    loss, _ = k.softmax_ce_f32(logits, np.array([3], np.int32), num_valid=2)
    assert np.isnan(loss)


def test_sgd_momentum_matches_numpy(k):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(1001).astype(np.float32)
    v = rng.standard_normal(1001).astype(np.float32)
    lr, m = np.float32(0.05), np.float32(0.9)
    want_w, want_v = w.copy(), v.copy()
    for step in range(3):
        g = rng.standard_normal(1001).astype(np.float32)
        want_v = m * want_v + g
        want_w = want_w - lr * want_v
        w, v = k.sgd_momentum_f32(w, v, g, lr, m)
    # Each product is rounded on its own: the float32 numpy formula, bit for bit.
    np.testing.assert_array_equal(v, want_v)
    np.testing.assert_array_equal(w, want_w)


def test_clip_grad_global_norm(k):
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(7, 3), (13,), (1,)]]
    norm_ref = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    norm, clipped = k.clip_grad_global_norm_f32(grads, 1.0)
    assert abs(norm - norm_ref) <= 1e-5 * norm_ref
    for g, c in zip(grads, clipped):
        np.testing.assert_allclose(c, g * (1.0 / norm_ref), rtol=1e-5)
    clipped_norm = np.sqrt(sum(np.sum(c.astype(np.float64) ** 2) for c in clipped))
    assert abs(clipped_norm - 1.0) < 1e-5
    # Below the limit nothing changes.
    norm2, same = k.clip_grad_global_norm_f32(grads, 1e6)
    for g, c in zip(grads, same):
        np.testing.assert_array_equal(c, g)


# --- the training loop's own kernels: fused update, outer-product update, accumulation -------
def fma32(a, b, c):
    """fmaf in float64 (a*b is exact there), rounded once to float32."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64)
            + np.asarray(c, np.float64)).astype(np.float32)


@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_sgd_momentum_fma_matches_numpy(k, scale):
    rng = np.random.default_rng(5)
    w = rng.standard_normal(1003).astype(np.float32)
    v = rng.standard_normal(1003).astype(np.float32)
    lr, m, s = np.float32(0.05), np.float32(0.9), np.float32(scale)
    want_w, want_v = w.copy(), v.copy()
    for step in range(3):
        g = rng.standard_normal(1003).astype(np.float32)
        gs = g if scale == 1.0 else (g * s).astype(np.float32)
        want_v = fma32(m, want_v, gs)
        want_w = fma32(-lr, want_v, want_w)
        w, v = k.sgd_momentum_fma_f32(w, v, g, lr, m, scale)
    np.testing.assert_array_equal(v, want_v)
    np.testing.assert_array_equal(w, want_w)


@pytest.mark.parametrize("shape", [(7, 19), (6, 12), (9, 44), (1, 3), (4, 196)])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_outer_update_equals_the_stored_gradient_update(k, shape, scale):
    # Batch 1: the update that forms g = (dy * scale) x^T in registers gives the very bits of
    # storing that gradient and running the fused update on it.
    rows, cols = shape
    rng = np.random.default_rng(rows * 100 + cols)
    w = rng.standard_normal(shape).astype(np.float32)
    v = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(rows).astype(np.float32)
    x = rng.standard_normal(cols).astype(np.float32)
    a = dy if scale == 1.0 else (dy * np.float32(scale)).astype(np.float32)
    g = (a[:, None] * x[None, :]).astype(np.float32)
    want_w, want_v = k.sgd_momentum_fma_f32(w, v, g, 0.05, 0.9, 1.0)
    got_w, got_v = k.sgd_momentum_outer_f32(w, v, dy, x, 0.05, 0.9, scale)
    np.testing.assert_array_equal(got_v, want_v)
    np.testing.assert_array_equal(got_w, want_w)


def test_sum_squares_in_order(k):
    p = np.random.default_rng(6).standard_normal(77).astype(np.float32)
    acc = np.float32(0.25)
    for value in p:
        acc = fma32(value, value, acc)
    assert k.sum_squares_f32(p, 0.25) == float(acc)


@pytest.mark.parametrize("shape", [(5, 37, 10), (3, 196, 64), (2, 8, 3)])
def test_dense_bwd_accumulated_sample_by_sample_equals_the_batch(k, shape):
    # Gradients summed one sample at a time (the first overwrites, no clearing) are the batched
    # kernel's, bit for bit: the same additions in the same order.
    b, n_in, n_out = shape
    rng = np.random.default_rng(b * 1000 + n_in)
    x = rng.standard_normal((b, n_in)).astype(np.float32)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    dy = rng.standard_normal((b, n_out)).astype(np.float32)
    dx, dw, db = k.dense_f32_bwd(x, w, dy)
    gw = np.full_like(dw, np.nan)  # stale contents: the first sample must overwrite them
    gb = np.full_like(db, np.nan)
    for n in range(b):
        gx, gw, gb = k.dense_f32_bwd_acc(x[n:n + 1], w, dy[n:n + 1], gw, gb, accumulate=n > 0)
        np.testing.assert_array_equal(gx, dx[n:n + 1])
    np.testing.assert_array_equal(gw, dw)
    np.testing.assert_array_equal(gb, db)


@pytest.mark.parametrize("use_mask", [False, True])
def test_softmax_ce_row_equals_the_batched_kernel(k, use_mask):
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((4, 10)) * 3).astype(np.float32)
    labels = np.array([0, 4, 2, 1], np.int32)
    mask = np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 0], np.uint8) if use_mask else None
    num_valid = None if use_mask else 7
    loss, dz = k.softmax_ce_f32(logits, labels, mask=mask, num_valid=num_valid)
    scale = float(np.float32(1) / np.float32(4))
    losses = []
    for n in range(4):
        row_loss, row_dz = k.softmax_ce_row_f32(logits[n], labels[n], scale, mask=mask,
                                                num_valid=num_valid)
        np.testing.assert_array_equal(row_dz, dz[n])
        losses.append(row_loss)
    assert abs(np.float32(sum(np.float32(v) for v in losses)) * np.float32(0.25) - loss) <= 1e-6
