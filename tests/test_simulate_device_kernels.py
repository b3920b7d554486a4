"""The numpy twin against the firmware's own float kernels built for the host (g++,
-ffp-contract=off): whole training steps of a grown tail (batched, and at a batch of one where
the weight gradient is never stored), clipped and not, must agree bit for bit."""

import shutil

import numpy as np
import pytest

from tinycil.learn.prng import Prng
from tinycil.learn.simulate import Tail, expf

pytestmark = [pytest.mark.slow,  # builds the kernels with g++
              pytest.mark.skipif(shutil.which("g++") is None, reason="needs the host C++ compiler")]


@pytest.fixture(scope="module")
def k():
    from kernels_host.host_lib import kernels

    return kernels()


def test_expf_is_the_devices(k):
    x = np.concatenate([np.linspace(-90, 0, 20001, dtype=np.float32),
                        np.random.default_rng(0).normal(0, 5, 5000).astype(np.float32)])
    assert np.array_equal(expf(x).view(np.uint32), k.expf(x).view(np.uint32))


def _factor(norm, clip_norm):
    """tc_clip_factor_f32."""
    f32 = np.float32
    return float(f32(clip_norm) / f32(norm)) if 0 < clip_norm < norm else 1.0


def _device_step(k, weights, biases, vel_w, vel_b, x, target, lr, momentum, clip_norm):
    """One train step with the firmware kernels as the runtime sequences them (weights in the
    device's [out][in] layout): the batch's gradient, its norm as a fmaf sum of squares, the
    clipping factor folded into the fused momentum update; at a batch of one the dense weight
    gradient is the outer product dy x^T, never stored."""
    acts = [x]
    for l, (w, b) in enumerate(zip(weights, biases)):
        y = k.dense_f32_fwd(acts[-1], w, b)
        acts.append(k.relu_f32(y) if l < len(weights) - 1 else y)
    _, dy = k.softmax_ce_f32(acts[-1], target)
    gw, gb = [None] * len(weights), [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        dx, gw[l], gb[l] = k.dense_f32_bwd(acts[l], weights[l], dy)
        if l > 0:
            dy = k.relu_f32(acts[l], dx)
    single = len(x) == 1
    total = 0.0
    for l in range(len(weights)):
        if single:
            d2 = k.sum_squares_f32(gb[l])
            total = float(np.float32(np.float32(np.float64(d2) * k.sum_squares_f32(acts[l][0])
                                                + total) + np.float32(d2)))
        else:
            total = k.sum_squares_f32(gb[l], k.sum_squares_f32(gw[l], total))
    scale = _factor(float(np.sqrt(np.float32(total))), clip_norm)
    new_w, new_b, new_vw, new_vb = [], [], [], []
    for l in range(len(weights)):
        if single:
            w, v = k.sgd_momentum_outer_f32(weights[l], vel_w[l], gb[l], acts[l][0], lr,
                                            momentum, scale)
        else:
            w, v = k.sgd_momentum_fma_f32(weights[l], vel_w[l], gw[l], lr, momentum, scale)
        b, vb = k.sgd_momentum_fma_f32(biases[l], vel_b[l], gb[l], lr, momentum, scale)
        new_w.append(w), new_vw.append(v), new_b.append(b), new_vb.append(vb)
    return new_w, new_b, new_vw, new_vb


def test_training_steps_agree_bit_for_bit_with_the_device_kernels(k):
    rng = np.random.default_rng(1)
    latent, hidden, classes = 36, 9, 2
    tail = Tail([rng.normal(0, 0.3, (latent, hidden)).astype(np.float32),
                 rng.normal(0, 0.3, (hidden, classes)).astype(np.float32)],
                [rng.normal(0, 0.1, hidden).astype(np.float32),
                 rng.normal(0, 0.1, classes).astype(np.float32)])
    tail.grow([13], 4, Prng(3))  # growth, then training of old and new units
    dev_w = [w.T.copy() for w in tail.weights]
    dev_b = [b.copy() for b in tail.biases]
    dev_vw = [np.zeros_like(w) for w in dev_w]
    dev_vb = [np.zeros_like(b) for b in dev_b]
    for step in range(8):
        n = 1 if step >= 6 else 48  # batched steps, then steps at a batch of one
        x = np.maximum(rng.normal(0, 1, (n, latent)), 0).astype(np.float32)
        t = rng.integers(0, 4, n)
        clip = 0.5 if step % 2 else 50.0  # clipped and unclipped steps
        tail.train_step(x, t, lr=0.05, momentum=0.9, clip_norm=clip)
        dev_w, dev_b, dev_vw, dev_vb = _device_step(k, dev_w, dev_b, dev_vw, dev_vb, x, t,
                                                    0.05, 0.9, clip)
        for mine, dev in zip(tail.weights + tail.biases + tail.vel_w + tail.vel_b,
                             [w.T for w in dev_w] + dev_b + [v.T for v in dev_vw] + dev_vb):
            assert np.array_equal(mine.view(np.uint32), np.ascontiguousarray(dev).view(np.uint32))
    assert np.array_equal(tail.logits(x).view(np.uint32),
                          k.dense_f32_fwd(k.relu_f32(k.dense_f32_fwd(x, dev_w[0], dev_b[0])),
                                          dev_w[1], dev_b[1]).view(np.uint32))


@pytest.mark.parametrize("h, w, out_c", [(8, 7, 6), (5, 5, 9), (14, 14, 10)])
def test_a_one_channel_convolution_is_the_simulation_bit_for_bit(k, h, w, out_c):
    """An image model's first layer (one input channel, 3x3, same) has its own paths: filter by
    filter for the output and, without an input gradient (the first layer), for the weight
    gradient; pixel by pixel when the input gradient is asked for. Each must be the simulation's
    (zero-padded input, the blocked loops' order) bit for bit."""
    from tinycil.learn.simulate import NetTail

    rng = np.random.default_rng(h * 100 + out_c)
    x = rng.normal(0, 1, (2, h, w, 1)).astype(np.float32)
    wt = rng.normal(0, 0.5, (out_c, 3, 3, 1)).astype(np.float32)
    b = rng.normal(0, 0.1, out_c).astype(np.float32)
    sim = NetTail([{"op": "conv2d", "in_hw": (h, w), "kernel": (3, 3), "strides": (1, 1),
                    "padding": "SAME", "in_c": 1, "out_c": out_c, "relu": False,
                    "weights": wt, "bias": b}])
    layer = sim.layers[0]
    y = k.conv2d_f32_fwd(x, wt, b, 1, "same")
    assert np.array_equal(y.view(np.uint32), sim._layer_forward(layer, x).view(np.uint32))
    dy = rng.normal(0, 1, y.shape).astype(np.float32)
    dx, dw, db = k.conv2d_f32_bwd(x, wt, dy, 1, "same")
    sdw, sdb, sdx = sim._layer_backward(layer, x, dy, True, None)
    assert np.array_equal(dw.view(np.uint32), sdw.astype(np.float32).view(np.uint32))
    assert np.array_equal(db.view(np.uint32), sdb.astype(np.float32).view(np.uint32))
    assert np.array_equal(dx.view(np.uint32), sdx.astype(np.float32).view(np.uint32))
    _, dw1, db1 = k.conv2d_f32_bwd(x, wt, dy, 1, "same", need_dx=False)
    sdw1, sdb1, _ = sim._layer_backward(layer, x, dy, False, None)
    assert np.array_equal(dw1.view(np.uint32), sdw1.astype(np.float32).view(np.uint32))
    assert np.array_equal(db1.view(np.uint32), sdb1.astype(np.float32).view(np.uint32))
