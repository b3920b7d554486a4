"""The linear discriminant over the last hidden features (tinycil.learn.discriminant): the
closed form, where its covariance comes from, and its place in the experiment's evaluation."""

import numpy as np
import pytest

from tinycil.learn.discriminant import (BUFFER_SAMPLES_PER_FEATURE, fit_head, hidden_features,
                                        predict_with_head)


def _identity_model(d, classes):
    """Features = the input (an identity hidden layer), logits all zero: the head decides alone."""
    import keras

    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(d, name="hidden"),
                              keras.layers.Dense(classes, name="out")])
    model.get_layer("hidden").set_weights([np.eye(d, dtype=np.float32), np.zeros(d, np.float32)])
    out = model.get_layer("out")
    out.set_weights([np.zeros((d, classes), np.float32), np.zeros(classes, np.float32)])
    return model


def _gaussians(n_per, means, cov, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.multivariate_normal(m, cov, size=n_per) for m in means])
    y = np.repeat(np.arange(len(means)), n_per)
    return x.astype(np.float32), y


MEANS = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
# strongly correlated features: a nearest-mean classifier is far from the best here
COV = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.2]])


def test_the_head_is_the_linear_discriminant_of_the_buffers_means_and_scatter():
    model = _identity_model(3, 3)
    bx, by = _gaussians(40, MEANS, COV, seed=0)       # 120 >= 2 per feature: buffer only
    head = fit_head(model, (bx, by), (bx[:0], by[:0]), 3, shrinkage=0.0)
    assert head.source == "buffer" and head.forward_samples == len(bx)
    means = np.stack([bx[by == c].mean(0) for c in range(3)]).astype(np.float64)
    z = np.concatenate([bx[by == c] - means[c] for c in range(3)])
    s_inv = np.linalg.inv(z.T @ z / len(z))
    np.testing.assert_allclose(head.weights, means @ s_inv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(head.bias, -0.5 * np.einsum("cd,de,ce->c", means, s_inv, means),
                               rtol=1e-4, atol=1e-4)
    # on fresh samples of the same classes it beats the nearest mean, which ignores the covariance
    tx, ty = _gaussians(300, MEANS, COV, seed=1)
    lda = np.mean(predict_with_head(model, head, 1.0, tx, 3) == ty)
    nearest = np.mean(np.argmin(((tx[:, None, :] - means[None]) ** 2).sum(-1), axis=1) == ty)
    assert lda > nearest + 0.05, (lda, nearest)


def test_a_small_buffer_pools_its_scatter_with_the_tasks_own_samples():
    model = _identity_model(3, 3)
    bx, by = _gaussians(1, MEANS, COV, seed=2)        # 3 samples < 2 per feature
    assert len(bx) < BUFFER_SAMPLES_PER_FEATURE * 3
    tx, ty = _gaussians(50, MEANS[1:], COV, seed=3)
    head = fit_head(model, (bx, by), (tx, ty + 1), 3, shrinkage=0.1)
    assert head.source == "buffer + task" and head.forward_samples == len(bx) + len(tx)
    # the means stay the buffer's: class 0 is the one buffer sample's feature
    m0 = bx[by == 0][0].astype(np.float64)
    assert np.isfinite(head.weights).all() and head.flops > 0
    np.testing.assert_allclose(head.logits(m0[None])[0, 0],
                               0.5 * m0 @ head.weights[0].astype(np.float64), rtol=1e-3)


def test_the_output_layer_alone_decides_without_a_head_or_at_weight_zero():
    model = _identity_model(3, 3)
    out = model.get_layer("out")
    k = np.zeros((3, 3), np.float32)
    k[2, 1] = 5.0                                     # the output layer says "class 1" on x[2]
    out.set_weights([k, np.zeros(3, np.float32)])
    x = np.array([[0.0, 0.0, 1.0]], np.float32)
    bx, by = _gaussians(40, MEANS, COV, seed=4)
    head = fit_head(model, (bx, by), (bx[:0], by[:0]), 3, shrinkage=0.1)
    assert predict_with_head(model, None, 0.5, x, 3)[0] == 1
    assert predict_with_head(model, head, 0.0, x, 3)[0] == 1
    np.testing.assert_array_equal(hidden_features(model, x), x)


def test_a_class_missing_from_the_buffer_is_an_error():
    model = _identity_model(3, 3)
    bx, by = _gaussians(10, MEANS[:2], COV, seed=5)
    with pytest.raises(ValueError, match=r"no samples of classes \[2\]"):
        fit_head(model, (bx, by), (bx, by), 3, shrinkage=0.1)


@pytest.mark.slow
def test_the_experiment_evaluates_with_the_head_and_counts_its_pass():
    from tinycil.learn.experiment import run_experiment

    runs = ("method", "fixed_size")
    off = run_experiment("digits", 5, seed=0, runs=runs, quick=True, progress=False)
    on = run_experiment("digits", 5, seed=0, runs=runs, quick=True, progress=False,
                        train_options={"discriminant_weight": 0.5})
    for name, a, b in (("method", off["method"], on["method"]),
                       ("fixed_size", off["baselines"]["fixed_size"],
                        on["baselines"]["fixed_size"])):
        # the same training (the head leaves the output layer alone), more FLOPs (the statistics
        # pass), other predictions
        assert b["train_flops"] > a["train_flops"], name
        assert b["accuracy_matrix"] != a["accuracy_matrix"], name
    # digits' buffer is far smaller than two samples per feature: pooled with the task's samples
    assert on["details"]["runs"]["method"]["discriminant_covariance"] == ["buffer + task"] * 5
    assert "discriminant_covariance" not in off["details"]["runs"]["method"]
