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

The covariance: the buffer's within-class scatter when the buffer holds at least
BUFFER_SAMPLES_PER_FEATURE samples per feature (a sample covariance of fewer is mostly noise);
otherwise pooled with the scatter of the task's own samples, which the end-of-task statistics
pass forwards once. Shrunk toward its mean variance (`shrinkage`), so it is always invertible.

Host only so far (an ablation row): the device does not run it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BUFFER_SAMPLES_PER_FEATURE = 2


@dataclass
class DiscriminantHead:
    weights: np.ndarray          # (classes, features)
    bias: np.ndarray             # (classes,)
    source: str                  # "buffer" or "buffer + task": where the covariance came from
    forward_samples: int         # samples the statistics pass forwarded through the model
    flops: float                 # the pass's forward FLOPs are counted by the caller; these are
                                 # the statistics' and the solve's

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights.T + self.bias


def hidden_features(model, x: np.ndarray) -> np.ndarray:
    """The input of the output layer (the last hidden layer's activations) for every sample."""
    import keras

    f = keras.Model(model.inputs, model.layers[-1].input)
    return np.asarray(f.predict(x, verbose=0, batch_size=1024), np.float64)


def fit_head(model, buffer: tuple[np.ndarray, np.ndarray], task: tuple[np.ndarray, np.ndarray],
             n_active: int, shrinkage: float) -> DiscriminantHead:
    """The discriminant over the first `n_active` classes: means from `buffer` (every class seen
    has samples there), covariance from the buffer or, when it is small, the buffer and `task`."""
    bx, by = buffer
    fb = hidden_features(model, bx)
    d = fb.shape[1]
    means = np.zeros((n_active, d))
    present = [c for c in range(n_active) if np.any(by == c)]
    if len(present) < n_active:
        # distillation gives every class at least one buffer sample
        raise ValueError(f"the buffer has no samples of classes "
                         f"{sorted(set(range(n_active)) - set(present))}: no mean to place them")
    for c in present:
        means[c] = fb[by == c].mean(axis=0)
    deviations = [fb[by == c] - means[c] for c in present]
    forward = len(bx)
    source = "buffer"
    if len(bx) < BUFFER_SAMPLES_PER_FEATURE * d:
        tx, ty = task
        ft = hidden_features(model, tx)
        forward += len(tx)
        deviations += [ft[ty == c] - ft[ty == c].mean(axis=0) for c in np.unique(ty)]
        source = "buffer + task"
    z = np.concatenate(deviations)
    cov = z.T @ z / len(z)
    s = (1.0 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)
    w = np.linalg.solve(s, means.T).T
    b = -0.5 * np.sum(w * means, axis=1)
    # means and scatter (2 FLOPs per feature pair per sample), the solve (d^3 / 3 for the
    # factorisation, 2 d^2 per class for the substitutions), the bias
    flops = 2.0 * len(z) * d * d + d ** 3 / 3.0 + 2.0 * d * d * n_active + 2.0 * d * n_active
    return DiscriminantHead(w.astype(np.float32), b.astype(np.float32), source, forward, flops)


def predict_with_head(model, head: DiscriminantHead | None, weight: float, x: np.ndarray,
                      n_active: int) -> np.ndarray:
    """The class of every sample: the output layer's logits plus `weight` times the head's."""
    from tinycil.learn.train import logits

    out = logits(model, x)[:, :n_active].astype(np.float64)
    if head is not None and weight > 0:
        out = out + weight * head.logits(hidden_features(model, x))[:, :n_active]
    return out.argmax(axis=1)
