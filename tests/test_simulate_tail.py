"""The numpy tail of the device reference: forward and gradients against TensorFlow, clipping,
SGD with momentum, function-preserving growth, class-balanced replay draws."""

import numpy as np
import pytest

from tinycil.learn.prng import Prng
from tinycil.learn.simulate import ReplayBuffer, Tail, stream_order


def _random_tail(rng, sizes):
    ws = [rng.normal(0, 0.3, (a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.normal(0, 0.1, b).astype(np.float32) for b in sizes[1:]]
    return Tail(ws, bs)


def _rel_close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.max(np.abs(b)), 1e-12)
    assert np.max(np.abs(a - b)) <= rtol * scale, np.max(np.abs(a - b)) / scale


@pytest.mark.slow  # imports TensorFlow
@pytest.mark.parametrize("sizes", [[20, 6], [20, 12, 6], [16, 10, 8, 5]])
def test_forward_and_gradients_agree_with_tensorflow(sizes):
    import tensorflow as tf

    rng = np.random.default_rng(len(sizes))
    tail = _random_tail(rng, sizes)
    x = rng.normal(0, 1, (24, sizes[0])).astype(np.float32)
    x[:, :3] = np.maximum(x[:, :3], 0)  # latents after a ReLU look like this
    target = rng.integers(0, sizes[-1], 24)

    tw = [tf.Variable(w) for w in tail.weights]
    tb = [tf.Variable(b) for b in tail.biases]
    with tf.GradientTape() as tape:
        h = tf.constant(x)
        for l, (w, b) in enumerate(zip(tw, tb)):
            h = tf.matmul(h, w) + b
            if l < len(tw) - 1:
                h = tf.nn.relu(h)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(target, h))
    grads = tape.gradient(loss, tw + tb)

    _rel_close(tail.logits(x), h.numpy())
    my_loss, gw, gb = tail.loss_and_grads(x, target)
    assert abs(my_loss - float(loss)) <= 1e-5 * abs(float(loss))
    for mine, theirs in zip(gw + gb, grads):
        assert mine.dtype == np.float32
        _rel_close(mine, theirs.numpy())


@pytest.mark.slow
def test_clipping_and_momentum_sgd_follow_the_formulas():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    tail = _random_tail(rng, [8, 5, 3])
    x = rng.normal(0, 3, (10, 8)).astype(np.float32)
    t = rng.integers(0, 3, 10)
    _, gw, gb = tail.loss_and_grads(x, t)
    cw, cb, norm = Tail.clip(gw, gb, 0.05)
    ref, ref_norm = tf.clip_by_global_norm([tf.constant(g) for g in gw + gb], 0.05)
    assert abs(norm - float(ref_norm)) <= 1e-5 * norm
    for mine, theirs in zip(cw + cb, ref):
        _rel_close(mine, theirs.numpy())
    # no clipping below the threshold
    same_w, _, _ = Tail.clip(gw, gb, 1e9)
    assert all(np.array_equal(a, b) for a, b in zip(same_w, gw))

    # two SGD steps by hand: v = m v + g; w -= lr v
    w0 = tail.weights[0].copy()
    tail.sgd_step(gw, gb, lr=0.1, momentum=0.9)
    tail.sgd_step(gw, gb, lr=0.1, momentum=0.9)
    v1 = gw[0]
    v2 = np.float32(0.9) * v1 + gw[0]
    np.testing.assert_allclose(tail.weights[0], w0 - np.float32(0.1) * v1 - np.float32(0.1) * v2,
                               rtol=1e-6, atol=1e-7)


def test_growth_changes_no_old_logit_and_new_units_learn():
    rng = np.random.default_rng(5)
    tail = _random_tail(rng, [16, 6, 2])
    x = np.maximum(rng.normal(0, 1, (40, 16)), 0).astype(np.float32)
    before = tail.logits(x)
    tail.grow([10], 4, Prng(1))
    after = tail.logits(x)
    assert after.shape == (40, 4)
    assert np.array_equal(after[:, :2], before)  # bit for bit
    assert np.all(after[:, 2:] == 0)  # new classes: zero rows and bias
    assert np.all(tail.weights[1][6:] == 0)  # new hidden units: zero outgoing weights
    assert np.all(tail.weights[0][:, 6:] != 0)  # ... and random incoming weights
    # incoming weights of the new units: unit by unit, input by input, He scale over 16 inputs
    expected = Prng(1).he_normal(4 * 16, 16).reshape(4, 16).T
    assert np.array_equal(tail.weights[0][:, 6:], expected)
    # the new units' outgoing weights learn on the next step
    tail.train_step(x, np.full(40, 3), lr=0.1, momentum=0.0, clip_norm=10.0)
    assert np.any(tail.weights[1][6:] != 0)
    with pytest.raises(ValueError, match="shrink"):
        tail.grow([8], 4, Prng(1))


def test_replay_draws_are_class_balanced_and_reproducible():
    buf = ReplayBuffer()
    y = np.array([4] * 30 + [7] * 3 + [1] * 1)
    buf.add(np.zeros((34, 2), np.int8), y, np.zeros((34, 3), np.float32))
    assert buf.classes == [4, 7, 1]
    draws = buf.draw(Prng(2), 3000)
    assert draws == buf.draw(Prng(2), 3000)
    counts = np.bincount([buf.y[i] for i in draws], minlength=8)
    assert all(900 < counts[c] < 1100 for c in (4, 7, 1))
    # the first draw by hand: class, then member
    p = Prng(2)
    c = buf.classes[p.index(3)]
    assert draws[0] == buf.members[c][p.index(len(buf.members[c]))]


def test_stream_order_is_the_documented_permutation():
    assert np.array_equal(stream_order(50, 3, 2, 4), np.random.default_rng(2007).permutation(50))
