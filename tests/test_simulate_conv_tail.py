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
