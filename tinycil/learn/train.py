"""Host training in TensorFlow: one task at a time, new samples mixed with class-balanced replay.

The loop follows the device procedure (DESIGN.md, ml-contracts): the task's samples are shuffled
each epoch with ``default_rng(seed + 1000 * task + epoch)`` and cut into full mini-batches of
``batch_new``; each mini-batch gets ``batch_replay`` samples from the replay buffer (a class drawn
uniformly among the buffer's classes, then a sample uniformly within it); the loss is softmax
cross-entropy over the output units of the classes seen so far (the others are masked out); the
global gradient norm is clipped to ``clip_norm``; SGD with momentum (v = m*v + g; w -= lr*v) whose
velocity is reset at every task boundary. Why the reset and the clipping: a new task's first steps
bring large gradients, and stale momentum from the previous task plus an unclipped step once
collapsed plain fine-tuning to a dead network.

Labels here are output-unit indices (class ``classes_seen[k]`` is unit k), not class ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MASKED_LOGIT = -1e9


@dataclass
class TrainConfig:
    epochs: int = 5
    lr: float = 0.05
    momentum: float = 0.9
    batch_new: int = 32
    batch_replay: int = 32
    clip_norm: float = 5.0

    def to_dict(self) -> dict:
        return asdict(self)


class Trainer:
    """Trains one Keras model (a new Trainer after every growth: the graph depends on shapes)."""

    def __init__(self, model, config: TrainConfig):
        import tensorflow as tf

        self.model = model
        self.config = config
        self._vars = list(model.trainable_variables)
        self._velocity = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self._vars]
        # One trace per model: steps and batch size may change between tasks and epochs.
        sample = tuple(int(d) for d in model.input_shape[1:])
        self._epoch_fn = tf.function(self._epoch, input_signature=[
            tf.TensorSpec((None, None) + sample, tf.float32), tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((int(model.output_shape[-1]),), tf.bool)])

    def reset_momentum(self) -> None:
        for v in self._velocity:
            v.assign(np.zeros(v.shape, np.float32))

    def _epoch(self, xb, yb, mask):
        """One epoch of SGD steps: xb (steps, batch, ...), yb (steps, batch) output indices."""
        import tensorflow as tf

        cfg = self.config
        total = tf.constant(0.0)
        steps = tf.shape(xb)[0]
        for s in tf.range(steps):
            x, y = xb[s], yb[s]
            with tf.GradientTape() as tape:
                logits = self.model(x, training=True)
                logits = tf.where(mask[None, :], logits, MASKED_LOGIT)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            grads = tape.gradient(loss, self._vars)
            grads, _ = tf.clip_by_global_norm(grads, cfg.clip_norm)
            for var, vel, g in zip(self._vars, self._velocity, grads):
                vel.assign(cfg.momentum * vel + g)
                var.assign_sub(cfg.lr * vel)
            total += loss
        return total / tf.maximum(tf.cast(steps, tf.float32), 1.0)

    def train_task(self, x_new: np.ndarray, y_new: np.ndarray, n_active: int, *, task: int, seed: int,
                   replay: tuple[np.ndarray, np.ndarray] | None = None, progress=None) -> dict:
        """Learn one task. Returns {"samples": samples processed (new + replay), "steps", "loss"}.

        ``n_active``: the output units of the classes seen so far (units >= n_active are masked).
        ``progress``: an optional tqdm bar, advanced by one per epoch.
        """
        import tensorflow as tf

        cfg = self.config
        self.reset_momentum()
        n = len(x_new)
        if n == 0:
            raise ValueError(f"task {task} has no training samples")
        batch_new = min(cfg.batch_new, n)
        use_replay = replay is not None and len(replay[0]) > 0 and cfg.batch_replay > 0
        if use_replay:
            rx, ry = replay
            buffer_classes = np.unique(ry)
            by_class = [np.flatnonzero(ry == c) for c in buffer_classes]
        mask = tf.constant(np.arange(_outputs(self.model)) < n_active)
        samples = steps = 0
        loss = float("nan")
        for epoch in range(cfg.epochs):
            order = np.random.default_rng(seed + 1000 * task + epoch).permutation(n)
            n_steps = n // batch_new
            idx = order[:n_steps * batch_new].reshape(n_steps, batch_new)
            xb, yb = x_new[idx], y_new[idx]
            if use_replay:
                rng = np.random.default_rng([seed, task, epoch, 1])  # separate stream from the order
                cls = rng.integers(0, len(by_class), size=(n_steps, cfg.batch_replay))
                pick = np.empty_like(cls)
                for k, members in enumerate(by_class):
                    where = cls == k
                    pick[where] = members[rng.integers(0, len(members), size=int(where.sum()))]
                xb = np.concatenate([xb, rx[pick]], axis=1)
                yb = np.concatenate([yb, ry[pick]], axis=1)
            loss = float(self._epoch_fn(tf.constant(xb, tf.float32), tf.constant(yb, tf.int32), mask))
            if not np.isfinite(loss):
                raise FloatingPointError(f"training diverged on task {task} (loss {loss}); lower --lr")
            steps += n_steps
            samples += int(xb.shape[0] * xb.shape[1])
            if progress is not None:
                progress.update(1)
        return {"samples": samples, "steps": steps, "loss": loss}


def logits(model, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    out = [np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, _outputs(model)), np.float32)


def predict(model, x: np.ndarray, n_active: int) -> np.ndarray:
    """Output unit with the largest logit among the first ``n_active`` (the classes seen)."""
    return logits(model, x)[:, :n_active].argmax(axis=1)


def accuracy(model, x: np.ndarray, y: np.ndarray, n_active: int) -> float:
    if len(x) == 0:
        raise ValueError("no test samples to evaluate")
    return float(np.mean(predict(model, x, n_active) == y))


def _outputs(model) -> int:
    return int(model.output_shape[-1])
