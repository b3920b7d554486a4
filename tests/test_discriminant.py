"""The linear discriminant over the last hidden features (tinycil.learn.discriminant): the
closed form, where its covariance comes from, and its place in the experiment's evaluation."""

import numpy as np
import pytest

from tinycil.learn.discriminant import fit_head, hidden_features, predict_with_head


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


def test_the_head_is_the_linear_discriminant_of_the_buffers_means_and_class_averaged_scatter():
    model = _identity_model(3, 3)
    bx, by = _gaussians(40, MEANS, COV, seed=0)
    keep = np.concatenate([np.flatnonzero(by == 0)[:10], np.flatnonzero(by > 0)])
    bx, by = bx[keep], by[keep]                        # 10, 40, 40: unequal counts
    head = fit_head(model, (bx, by), (bx[:0], by[:0]), 3, shrinkage=0.0)
    # nothing observed: every class's buffer scatter, divided by its own count, averaged
    assert head.forward_samples == 2 * len(bx)         # the means' pass, the scatter's pass
    means = np.stack([bx[by == c].mean(0) for c in range(3)]).astype(np.float64)
    cov = sum((bx[by == c] - means[c]).T @ (bx[by == c] - means[c]) / np.sum(by == c)
              for c in range(3)) / 3
    s_inv = np.linalg.inv(cov)
    np.testing.assert_allclose(head.weights, means @ s_inv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(head.bias, -0.5 * np.einsum("cd,de,ce->c", means, s_inv, means),
                               rtol=1e-4, atol=1e-4)
    # on fresh samples of the same classes it beats the nearest mean, which ignores the covariance
    tx, ty = _gaussians(300, MEANS, COV, seed=1)
    lda = np.mean(predict_with_head(model, head, 1.0, tx, 3) == ty)
    nearest = np.mean(np.argmin(((tx[:, None, :] - means[None]) ** 2).sum(-1), axis=1) == ty)
    assert lda > nearest + 0.05, (lda, nearest)


def test_the_tasks_own_classes_take_their_scatter_from_their_samples():
    model = _identity_model(3, 3)
    bx, by = _gaussians(2, MEANS, COV * 4.0, seed=2)  # 2 buffer samples per class, noisy
    tx, ty = _gaussians(50, MEANS[1:], COV, seed=3)
    ty = ty + 1                                        # the task: classes 1 and 2
    head = fit_head(model, (bx, by), (tx, ty), 3, shrinkage=0.1)
    assert head.forward_samples == len(bx) + len(tx) + 2  # class 0's buffer scatter
    means = np.stack([bx[by == c].mean(0) for c in range(3)]).astype(np.float64)
    own = sum((tx[ty == c] - tx[ty == c].mean(0)).T @ (tx[ty == c] - tx[ty == c].mean(0))
              for c in (1, 2)) * 2 / len(tx)         # pooled, counted as two classes
    z0 = bx[by == 0] - means[0]
    cov = (own + z0.T @ z0 / 2) / 3
    s = 0.9 * cov + 0.1 * np.trace(cov) / 3 * np.eye(3)
    np.testing.assert_allclose(head.weights, np.linalg.solve(s, means.T).T, rtol=1e-4, atol=1e-4)
    assert head.flops > 0


def test_the_device_fits_the_same_head_in_float32():
    """simulate.fit_head_device (the runtime's arithmetic, float32 step for step) and the host's
    float64 fit are one procedure: the same head up to float32 rounding."""
    from tinycil.learn.simulate import ReplayBuffer, Tail, fit_head_device

    model = _identity_model(3, 3)
    bx, by = _gaussians(3, MEANS, COV, seed=6)
    tx, ty = _gaussians(30, MEANS[1:], COV, seed=7)
    ty = ty + 1
    host = fit_head(model, (bx, by), (tx, ty), 3, shrinkage=0.1)
    tail = Tail([np.eye(3, dtype=np.float32), np.zeros((3, 3), np.float32)],
                [np.zeros(3, np.float32), np.zeros(3, np.float32)])
    buffer = ReplayBuffer()
    buffer.add(np.zeros((len(bx), 1), np.int8), by, bx)
    # identity features need non-negative inputs (the hidden layer has a ReLU): shift them all
    shift = 10.0
    buffer.latents = [l + np.float32(shift) for l in buffer.latents]
    head, info = fit_head_device(tail, buffer, {0: 0, 1: 1, 2: 2}, tx + np.float32(shift), ty, 0.1)
    assert info == {"buffer": 9, "observed": 60, "buffer_scatter": 3, "features": 3, "classes": 3}
    # moving every feature by the same vector moves every class's logit by the same amount: the
    # differences between classes (what decides) are the host's
    f = _gaussians(20, MEANS, COV, seed=8)[0].astype(np.float64)
    device = (f + shift) @ head.weights.T.astype(np.float64) + head.bias
    expected = host.logits(f)
    np.testing.assert_allclose(device - device[:, :1], expected - expected[:, :1],
                               rtol=1e-3, atol=2e-3)


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
    off = run_experiment("digits", 5, seed=0, runs=runs, quick=True, progress=False,
                         train_options={"discriminant_weight": 0.0})
    on = run_experiment("digits", 5, seed=0, runs=runs, quick=True, progress=False)  # default
    for name, a, b in (("method", off["method"], on["method"]),
                       ("fixed_size", off["baselines"]["fixed_size"],
                        on["baselines"]["fixed_size"])):
        # the same training (the head leaves the output layer alone), more FLOPs (the statistics
        # pass), other predictions
        assert b["train_flops"] > a["train_flops"], name
        assert b["accuracy_matrix"] != a["accuracy_matrix"], name
