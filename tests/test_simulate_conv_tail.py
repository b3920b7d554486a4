"""The numpy simulation of a trainable part with convolutions (NetTail) against the host twin
(the firmware's runtime built for the host): after growth and SGD steps with momentum, clipped
and not, at a mini-batch and at a batch of one, every weight, bias and logit is the same.

Two models cover the layer kinds the device trains: conv2d with SAME padding and max pooling
(cnn2d), depthwise convolutions and pooling (dscnn)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from test_trainable_conv import _export, _inputs

pytestmark = [pytest.mark.slow,  # builds the twin with g++ and imports TensorFlow
              pytest.mark.skipif(shutil.which("g++") is None, reason="needs the host C++ compiler")]


@pytest.mark.parametrize("family, shape, widths, grown", [
    ("cnn2d", (8, 8, 1), [3, 4, 6], [5, 7, 9]),
    ("dscnn", (10, 6, 1), [4, 6, 6, 8], [5, 7, 7, 9]),
])
def test_conv_tail_simulation_equals_the_twin_entry_for_entry(tmp_path, family, shape, widths,
                                                              grown):
    from tinycil.deploy.twin import Twin
    from tinycil.learn.models import build_model, split_model, tail_layer_specs, weight_layers
    from tinycil.learn.prng import Prng
    from tinycil.learn.simulate import NetTail

    model = build_model(family, shape, 2, widths, seed=11)
    n = len(weight_layers(model))
    _export(model, family, [widths, grown], [2, 4], tmp_path / "m")
    twin = Twin(model_dir=tmp_path / "m")
    sim = NetTail(tail_layer_specs(split_model(model, n)[1]))
    twin.begin_task([2, 3])
    sim.grow(grown, 4, Prng.for_task(3, 1))  # the PRNG draws of BEGIN_TASK (seed 3, task 1)

    rng = np.random.default_rng(5)
    # (batch, clipping limit): plain steps, steps the limit scales, and steps at a batch of one
    for step, (batch, clip) in enumerate([(8, 0.0), (8, 0.05), (8, 100.0), (1, 0.0), (1, 0.05),
                                          (8, 0.0)]):
        twin.set_training(lr=0.05, momentum=0.9, batch_new=batch, batch_replay=0,
                          clip_norm=clip, seed=3)
        x8, x = _inputs(shape, batch, seed=100 + step)
        y = rng.integers(0, 4, batch)
        rep = twin.train_samples(x8, y, end_of_batch=True)
        assert rep["stepped"] == 1 and rep["batch"] == batch
        sim.train_step(x, y, lr=0.05, momentum=0.9, clip_norm=clip)
        for i, ((tw, tb), layer) in enumerate(zip(twin.tail_params(), sim.layers)):
            if layer["weights"] is None:
                continue
            assert np.array_equal(np.ravel(tw), layer["weights"].ravel()), (step, i)
            assert np.array_equal(tb, layer["bias"]), (step, i)
    x8, x = _inputs(shape, 16, seed=99)
    assert np.array_equal(twin.logits(x8), sim.logits(x))


@pytest.mark.parametrize("family, shape, widths", [
    ("cnn2d", (6, 5, 3), [3, 4, 6]),   # moved in height and width, three channels
    ("cnn1d", (12, 2), [3, 4, 6]),     # a series: moved in time only
])
def test_replay_shift_moves_replayed_samples_as_the_simulation_does(tmp_path, family, shape, widths):
    """Replayed buffer samples moved by up to one cell (replay_shift): the twin's steps and the
    simulation's (replay_draw with the same PRNG) leave every weight the same, bit for bit, and
    differ from steps without the shift."""
    from tinycil.deploy.twin import Twin
    from tinycil.learn.models import build_model, split_model, tail_layer_specs, weight_layers
    from tinycil.learn.prng import Prng
    from tinycil.learn.simulate import NetTail, ReplayBuffer, replay_draw

    model = build_model(family, shape, 2, widths, seed=4)
    n = len(weight_layers(model))
    bx8, bx = _inputs(shape, 6, seed=7)
    by = np.array([0, 0, 0, 1, 1, 1], np.uint8)
    out = _export(model, family, [widths, widths], [2, 2], tmp_path / "m", buffer=(bx8, by))
    after = {}
    for shift in (0, 1):
        twin = Twin(model_dir=out)  # a fresh runtime state
        sim = NetTail(tail_layer_specs(split_model(model, n)[1]))
        buffer = ReplayBuffer()
        buffer.add(bx8, by, bx.reshape(len(bx), -1))
        twin.set_training(lr=0.05, momentum=0.9, batch_new=4, batch_replay=4, clip_norm=0.0,
                          seed=3, replay_shift=shift)
        twin.begin_task([0, 1])
        prng = Prng.for_task(3, 0)  # BEGIN_TASK without new classes: plan step 0, no growth
        rng = np.random.default_rng(5)
        for step in range(4):
            x8, x = _inputs(shape, 4, seed=200 + step)
            y = rng.integers(0, 2, 4)
            twin.train_samples(x8, y, end_of_batch=True)
            xr, yr = replay_draw(buffer, {0: 0, 1: 1}, prng, 4, shift, sim.input_map)
            sim.train_step(np.concatenate([x.reshape(4, -1), xr]), np.concatenate([y, yr]),
                           lr=0.05, momentum=0.9, clip_norm=0.0)
            for i, ((tw, tb), layer) in enumerate(zip(twin.tail_params(), sim.layers)):
                if layer["weights"] is None:
                    continue
                assert np.array_equal(np.ravel(tw), layer["weights"].ravel()), (shift, step, i)
                assert np.array_equal(tb, layer["bias"]), (shift, step, i)
        after[shift] = [np.ravel(w).copy() for w, _ in twin.tail_params()]
    assert any(not np.array_equal(a, b) for a, b in zip(after[0], after[1]))
