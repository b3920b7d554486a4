"""A second classifier over the model's last hidden features, fitted after every task: a linear
discriminant (Gaussian classes sharing one covariance) whose class means come from the buffer.

Why: the output layer learns the old classes only from the buffer, one or two samples per class on
small data sets, and its rows drift toward the newest task. A linear probe trained on the final
features with every sample reaches the fixed-size model's accuracy (the features are as good;
benchmarks/results/host_study.md), so the loss sits in the output layer. The discriminant needs no
training: class means of the buffer's features and one shared within-class covariance. The
prediction adds its logits to the output layer's, weight w:

    argmax_c  out_c(f) + w * (m_c' S^-1 f - m_c' S^-1 m_c / 2)

which is the argmax of the sum of both classifiers' log-probabilities (their normalisers are the
same for every class of a sample). The output layer itself is left as it is: folding the
discriminant into it and training on from there lost accuracy.

The covariance averages the classes' scatters, so that no class dominates its shape: the task's
own classes, whose real samples the end-of-task statistics pass forwards once more, count as many
classes as they are (their scatter about their own means pooled, times classes / samples); every
other class with at least two buffer samples adds its buffer scatter divided by its count; the sum
is divided by the number of classes counted. Shrunk toward its mean variance (`shrinkage`), so it
is always invertible. The device runs the same procedure in float32 (tc_runtime.cpp's head_fit,
tinycil.learn.simulate.fit_head_device); here it runs in float64 on the Keras model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np



@dataclass
class DiscriminantHead:
    weights: np.ndarray          # (classes, features)
    bias: np.ndarray             # (classes,)
    forward_samples: int         # samples the statistics pass forwarded through the model
    flops: float                 # the pass's forward FLOPs are counted by the caller; these are
                                 # the statistics' and the solve's

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights.T + self.bias


def head_fit_flops(features: int, observed: int, buffer: int, buffer_scatter: int,
                   classes: int) -> float:
    """FLOPs of the head's statistics and solve (the forward passes are counted apart): the
    buffer's means (an add per feature per sample, a division per feature per class); per
    observed and per buffer-scatter sample a deviation, a sum and a lower-triangle outer product;
    per class the centring; the Cholesky factorisation (d^3 / 3) and two substitutions and a bias
    per class."""
    d = float(features)
    outer = d * (d + 1.0)
    return (buffer * d + classes * d
            + (observed + buffer_scatter) * (outer + 2.0 * d)
            + classes * (outer + d)
            + d ** 3 / 3.0 + classes * (2.0 * d * d + 2.0 * d))


def hidden_features(model, x: np.ndarray) -> np.ndarray:
    """The input of the output layer (the last hidden layer's activations) for every sample."""
    import keras

    f = keras.Model(model.inputs, model.layers[-1].input)
    if len(x) == 0:  # Keras cannot predict on no samples
        return np.zeros((0, int(np.prod(f.output.shape[1:]))))
    return np.asarray(f.predict(x, verbose=0, batch_size=1024), np.float64).reshape(len(x), -1)


def fit_head(model, buffer: tuple[np.ndarray, np.ndarray], task: tuple[np.ndarray, np.ndarray],
             n_active: int, shrinkage: float) -> DiscriminantHead:
    """The discriminant over the first `n_active` classes: means from `buffer` (every class seen
    has samples there), the class-averaged covariance of the task's own samples (`task`) and of
    the other classes' buffer samples."""
    bx, by = buffer
    fb = hidden_features(model, bx)
    d = fb.shape[1]
    present = [c for c in range(n_active) if np.any(by == c)]
    if len(present) < n_active:
        # distillation gives every class at least one buffer sample
        raise ValueError(f"the buffer has no samples of classes "
                         f"{sorted(set(range(n_active)) - set(present))}: no mean to place them")
    means = np.stack([fb[by == c].mean(axis=0) for c in range(n_active)])
    tx, ty = task
    ft = hidden_features(model, tx)
    observed = [int(c) for c in np.unique(ty)]
    scatter = np.zeros((d, d))
    for c in observed:
        z = ft[ty == c] - ft[ty == c].mean(axis=0)
        scatter += z.T @ z
    scatter *= len(observed) / max(len(ty), 1)
    others = [c for c in range(n_active) if c not in observed and np.sum(by == c) >= 2]
    for c in others:
        z = fb[by == c] - means[c]
        scatter += z.T @ z / len(z)
    counted = len(observed) + len(others)
    cov = scatter / counted
    s = (1.0 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)
    w = np.linalg.solve(s, means.T).T
    b = -0.5 * np.sum(w * means, axis=1)
    scatter_samples = int(sum(np.sum(by == c) for c in others))
    flops = head_fit_flops(d, len(ty), len(by), scatter_samples, n_active)
    return DiscriminantHead(w.astype(np.float32), b.astype(np.float32),
                            len(bx) + len(tx) + scatter_samples, flops)


def predict_with_head(model, head: DiscriminantHead | None, weight: float, x: np.ndarray,
                      n_active: int) -> np.ndarray:
    """The class of every sample: the output layer's logits plus `weight` times the head's."""
    from tinycil.learn.train import logits

    out = logits(model, x)[:, :n_active].astype(np.float64)
    if head is not None and weight > 0:
        out = out + weight * head.logits(hidden_features(model, x))[:, :n_active]
    return out.argmax(axis=1)
