"""Dataset distillation of one task into a small synthetic replay set.

Two methods, both starting from real samples of each class:

- distribution matching ("dm", default; Zhao & Bilen, WACV 2023): per class, the mean embedding
  of real and synthetic samples under a randomly initialised network is matched; the network
  is drawn afresh every iteration, so the synthetic set matches the class distribution in many
  random feature spaces at once. Cheap: forward passes only, no network training.
- gradient matching ("gm"; Zhao, Mopuri & Bilen, ICLR 2021): per class, the gradient of the
  classification loss with respect to the network's weights on synthetic samples is matched to
  the one on real samples (layer-wise cosine distance per output unit), while the network is
  trained on the synthetic set between matching steps and re-initialised every outer iteration.

Both apply the same random differentiable augmentation to the real and synthetic batch of a
class (shift and amplitude scaling: no flips, which would change what a digit or a garment is),
keep the synthetic samples inside the value range of the real data, and are deterministic for a
seed. One embedding network is built per call and re-initialised in place: building models
inside a compiled step would retrace it every iteration.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

#: Iterations when the caller gives none. DM: one network draw and one update per iteration.
#: GM: one network initialisation per iteration, each followed by GM_INNER_STEPS matching
#: updates. Both distil a 2-class Fashion-MNIST task (12000 -> 120 samples) in minutes on two
#: cores (benchmarks/distill_cost.py measures it).
DEFAULT_ITERATIONS = {"dm": 1000, "gm": 50}
GM_INNER_STEPS = 10
#: Real samples per class in each matching step.
BATCH_REAL = 128
#: Width of the default embedding networks (channels or units).
EMBED_WIDTH = 32
#: Step size of the synthetic samples (Adam), relative to the standard deviation of the data.
LR_RELATIVE = {"dm": 0.02, "gm": 0.01}
#: Learning rate of the GM network's own updates on the synthetic set.
GM_NET_LR = 0.01

METHODS = ("dm", "gm")


class DistillError(ValueError):
    """Bad input to distillation."""


@dataclass
class DistilledSet:
    x: np.ndarray  # float32, [n, *sample shape]
    y: np.ndarray  # int64 class ids
    y_soft: np.ndarray | None = None  # float32 [n, teacher outputs], rows sum to 1
    meta: dict = field(default_factory=dict)  # method, iterations, seconds, ...

    def __len__(self) -> int:
        return len(self.x)


# --------------------------------------------------------------------------------------------
# Sizes and the random baseline


def synthetic_size(n: int, fraction: float, n_classes: int) -> int:
    """max(one per class, round(fraction * n))."""
    return max(n_classes, int(round(fraction * n)))


def class_allocation(y: np.ndarray, n_total: int) -> dict[int, int]:
    """Class-balanced counts per class id summing to n_total (at least one each).

    The remainder of an uneven split goes to the classes with the most samples (then the
    smaller class id); no class gets more than it has.
    """
    classes, counts = np.unique(y, return_counts=True)
    k = len(classes)
    base, extra = divmod(n_total, k)
    alloc = {int(c): base for c in classes}
    order = sorted(range(k), key=lambda i: (-counts[i], classes[i]))
    for i in order[:extra]:
        alloc[int(classes[i])] += 1
    for c, have in zip(classes, counts):
        alloc[int(c)] = max(1, min(alloc[int(c)], int(have)))
    return alloc


def _check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise DistillError(
            f"need x of shape [n, ...] and y of shape [n] with n > 0, got {x.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DistillError(f"y must hold integer class ids, got dtype {y.dtype}")
    if not np.all(np.isfinite(x)):
        raise DistillError("x holds NaN or infinite values: clean the data first")
    return x, y.astype(np.int64)


def _pick_per_class(y: np.ndarray, alloc: dict[int, int], rng) -> np.ndarray:
    """Indices of alloc[c] distinct random samples of each class, classes in increasing order."""
    picks = []
    for c in sorted(alloc):
        idx = np.flatnonzero(y == c)
        picks.append(np.sort(rng.choice(idx, size=alloc[c], replace=False)))
    return np.concatenate(picks)


def random_subset(x, y, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The random-replay baseline: n real samples, class-balanced like a distilled set."""
    x, y = _check_xy(x, y)
    n_classes = len(np.unique(y))
    if n < n_classes:
        n = n_classes
    idx = _pick_per_class(y, class_allocation(y, n), np.random.default_rng(seed))
    return x[idx].copy(), y[idx].copy()


# --------------------------------------------------------------------------------------------
# Embedding networks


def _blocks(length: int) -> int:
    """Conv blocks (each halving the size) for a spatial/temporal length: 8 -> 2, 28 -> 3."""
    return int(min(3, max(1, math.floor(math.log2(max(length, 2))) - 1)))


def default_embedding_net(input_shape, width: int = EMBED_WIDTH):
    """A narrow random embedding network chosen from the sample shape.

    (H, W, C): ConvNet blocks conv3x3 -> instance norm -> ReLU -> 2x2 average pooling;
    (T, C): the same with 1-D convolutions; flat vectors: a two-layer MLP. The output is the
    flattened feature vector (no classifier).
    """
    import keras

    shape = tuple(int(d) for d in input_shape)
    inp = keras.Input(shape)
    h = inp
    if len(shape) == 3:
        for i in range(_blocks(min(shape[0], shape[1]))):
            h = keras.layers.Conv2D(width, 3, padding="same", name=f"conv{i}")(h)
            h = keras.layers.GroupNormalization(groups=width, name=f"norm{i}")(h)
            h = keras.layers.ReLU()(h)
            h = keras.layers.AveragePooling2D(2, name=f"pool{i}")(h)
    elif len(shape) == 2:
        for i in range(_blocks(shape[0])):
            h = keras.layers.Conv1D(width, 3, padding="same", name=f"conv{i}")(h)
            h = keras.layers.GroupNormalization(groups=width, name=f"norm{i}")(h)
            h = keras.layers.ReLU()(h)
            h = keras.layers.AveragePooling1D(2, name=f"pool{i}")(h)
    elif len(shape) == 1:
        for i in range(2):
            h = keras.layers.Dense(width, activation="relu", name=f"dense{i}")(h)
    else:
        raise DistillError(
            f"no default embedding network for samples of shape {shape}: "
            "pass net_factory= (a function returning a keras.Model)"
        )
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, h, name="embedding")


class _Reinit:
    """Re-draws a network's weights in place: kernels He-normal, everything else (biases,
    normalisation scales) back to its value at construction."""

    def __init__(self, variables, layers=()):
        import tensorflow as tf

        depthwise = set()
        for layer in layers:
            if type(layer).__name__.startswith("DepthwiseConv"):
                depthwise.update(id(v) for v in layer.weights)
        self.items = []
        for v in variables:
            shape = tuple(int(d) for d in v.shape)
            if len(shape) >= 2:
                # a depthwise kernel (..., channels, 1): its fan-in is its taps
                fan_in = int(np.prod(shape[:-2] if id(v) in depthwise else shape[:-1]))
                self.items.append((v, math.sqrt(2.0 / max(fan_in, 1)), None))
            else:
                self.items.append((v, None, tf.constant(v.numpy())))

    def __call__(self, gen):
        for v, std, initial in self.items:
            if std is not None:
                v.assign(gen.normal(v.shape, dtype=v.dtype) * std)
            else:
                v.assign(initial)


def _augment(gen, x_list, kind: str):
    """The same random shift and amplitude scale applied to every tensor in x_list."""
    import tensorflow as tf

    scale = gen.uniform([], 0.9, 1.1)
    if kind == "image":
        h, w = int(x_list[0].shape[1]), int(x_list[0].shape[2])
        p = max(1, min(h, w) // 8)
        dy = gen.uniform([], 0, 2 * p + 1, dtype=tf.int32)
        dx = gen.uniform([], 0, 2 * p + 1, dtype=tf.int32)
        out = []
        for x in x_list:
            padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
            out.append(tf.slice(padded, tf.stack([0, dy, dx, 0]), tf.shape(x)) * scale)
        return out
    if kind == "signal":
        t = int(x_list[0].shape[1])
        p = max(1, t // 8)
        dt = gen.uniform([], 0, 2 * p + 1, dtype=tf.int32)
        out = []
        for x in x_list:
            padded = tf.pad(x, [[0, 0], [p, p], [0, 0]])
            out.append(tf.slice(padded, tf.stack([0, dt, 0]), tf.shape(x)) * scale)
        return out
    return [x * scale for x in x_list]


def _kind(sample_shape) -> str:
    return {3: "image", 2: "signal"}.get(len(sample_shape), "flat")


# --------------------------------------------------------------------------------------------
# Distillation


class _Problem:
    """Per-class real data and the synthetic set as TensorFlow state, shared by both methods."""

    def __init__(self, x, y, alloc, rng, batch_real):
        import tensorflow as tf

        self.classes = sorted(alloc)
        self.counts = [alloc[c] for c in self.classes]
        self.bounds = np.concatenate([[0], np.cumsum(self.counts)]).astype(int)
        self.real = [tf.constant(x[y == c]) for c in self.classes]
        self.real_n = [int((y == c).sum()) for c in self.classes]
        self.batch_real = batch_real
        init_idx = _pick_per_class(y, alloc, rng)
        self.init_x = x[init_idx].copy()
        self.syn_y = y[init_idx].copy()
        self.syn = tf.Variable(self.init_x, name="synthetic")
        self.lo, self.hi = float(x.min()), float(x.max())
        self.kind = _kind(x.shape[1:])
        self.rng = rng

    def batch_indices(self):
        """[classes, batch_real] indices into each class's real samples."""
        rows = []
        for n in self.real_n:
            rows.append(self.rng.choice(n, size=self.batch_real, replace=n < self.batch_real))
        return np.stack(rows).astype(np.int32)

    def syn_of(self, i):
        return self.syn[self.bounds[i] : self.bounds[i + 1]]


class _Adam:
    """Adam on the synthetic samples, followed by projection onto the data's value range."""

    def __init__(self, var, lr, lo, hi):
        import tensorflow as tf

        self.var, self.lr, self.lo, self.hi = var, lr, lo, hi
        self.m = tf.Variable(tf.zeros_like(var))
        self.v = tf.Variable(tf.zeros_like(var))
        self.t = tf.Variable(0.0)

    def apply(self, grad):
        import tensorflow as tf

        b1, b2 = 0.9, 0.999
        self.t.assign_add(1.0)
        self.m.assign(b1 * self.m + (1 - b1) * grad)
        self.v.assign(b2 * self.v + (1 - b2) * tf.square(grad))
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        step = self.lr * m_hat / (tf.sqrt(v_hat) + 1e-8)
        self.var.assign(tf.clip_by_value(self.var - step, self.lo, self.hi))


def _dm_step_fn(prob: _Problem, net, reinit: _Reinit, gen, opt: _Adam, augment: bool):
    import tensorflow as tf

    @tf.function
    def step(idx):
        reinit(gen)
        with tf.GradientTape() as tape:
            loss = 0.0
            for i in range(len(prob.classes)):
                real = tf.gather(prob.real[i], idx[i])
                syn = prob.syn_of(i)
                if augment:
                    real, syn = _augment(gen, [real, syn], prob.kind)
                mean_real = tf.stop_gradient(tf.reduce_mean(net(real, training=False), axis=0))
                mean_syn = tf.reduce_mean(net(syn, training=False), axis=0)
                loss += tf.reduce_sum(tf.square(mean_real - mean_syn))
        opt.apply(tape.gradient(loss, prob.syn))
        return loss

    return step


def _gradient_distance(g_real, g_syn):
    """Sum over layers and output units of (1 - cosine) between gradients; biases skipped."""
    import tensorflow as tf

    total = 0.0
    for gr, gs in zip(g_real, g_syn):
        if gr is None or gs is None or len(gr.shape) < 2:
            continue
        out = int(gr.shape[-1])
        a = tf.reshape(gr, [-1, out])
        b = tf.reshape(gs, [-1, out])
        dot = tf.reduce_sum(a * b, axis=0)
        norms = tf.norm(a, axis=0) * tf.norm(b, axis=0)
        total += tf.reduce_sum(1.0 - dot / (norms + 1e-6))
    return total


def _gm_fns(prob: _Problem, net, gen, opt: _Adam, augment: bool, net_lr: float):
    import tensorflow as tf

    k = len(prob.classes)
    emb_dim = int(net.output_shape[-1])
    head_w = tf.Variable(tf.zeros([emb_dim, k]), name="head_w")
    head_b = tf.Variable(tf.zeros([k]), name="head_b")
    variables = list(net.trainable_variables) + [head_w, head_b]
    reinit = _Reinit(variables, net.layers)
    local_y = np.repeat(np.arange(k), prob.counts).astype(np.int32)

    def loss_of(x, labels):
        logits = tf.matmul(net(x, training=False), head_w) + head_b
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )

    @tf.function
    def reset():
        reinit(gen)

    @tf.function
    def step(idx):
        total = 0.0
        with tf.GradientTape() as outer:
            for i in range(k):
                real = tf.gather(prob.real[i], idx[i])
                syn = prob.syn_of(i)
                if augment:
                    real, syn = _augment(gen, [real, syn], prob.kind)
                with outer.stop_recording():
                    with tf.GradientTape() as t_real:
                        loss_real = loss_of(real, tf.fill([tf.shape(real)[0]], i))
                    g_real = [tf.stop_gradient(g) for g in t_real.gradient(loss_real, variables)]
                with tf.GradientTape() as t_syn:
                    loss_syn = loss_of(syn, tf.fill([tf.shape(syn)[0]], i))
                g_syn = t_syn.gradient(loss_syn, variables)
                total += _gradient_distance(g_real, g_syn)
        opt.apply(outer.gradient(total, prob.syn))
        # The network learns on the synthetic set between matching steps, so that later steps
        # match gradients of a network in training, not only at initialisation.
        with tf.GradientTape() as t_net:
            loss_net = loss_of(tf.stop_gradient(prob.syn), local_y)
        for v, g in zip(variables, t_net.gradient(loss_net, variables)):
            if g is not None:
                v.assign_sub(net_lr * g)
        return total

    return reset, step


def distill_task(
    x,
    y,
    *,
    fraction: float = 0.01,
    method: str = "dm",
    iterations: int | None = None,
    seed: int = 0,
    net_factory=None,
    teacher=None,
    augment: bool = True,
    progress: bool = True,
    batch_real: int = BATCH_REAL,
    lr: float | None = None,
    temperature: float = 1.0,
    inner_steps: int = GM_INNER_STEPS,
) -> DistilledSet:
    """Distil one task's training data (x, y) into max(1 per class, round(fraction * n))
    class-balanced synthetic samples.

    method: "dm" (distribution matching, default) or "gm" (gradient matching).
    iterations: DM updates, or GM network initialisations of inner_steps updates each
        (default DEFAULT_ITERATIONS[method]).
    net_factory: () -> keras.Model mapping a batch of samples to feature vectors; called once,
        its weights are re-drawn in place (default: default_embedding_net for the shape).
    teacher: a trained keras.Model; then y_soft = softmax(teacher(x_syn) / temperature).
    lr: step size of the synthetic samples (default LR_RELATIVE[method] * std of x).
    """
    import tensorflow as tf

    if method not in METHODS:
        raise DistillError(f"unknown distillation method {method!r}: use one of {METHODS}")
    if not 0.0 < fraction <= 1.0:
        raise DistillError(f"fraction must be in (0, 1], got {fraction} (0.01 keeps 1%)")
    x, y = _check_xy(x, y)
    if iterations is None:
        iterations = DEFAULT_ITERATIONS[method]
    if iterations < 0 or batch_real < 1 or inner_steps < 1:
        raise DistillError("iterations must be >= 0, batch_real and inner_steps >= 1")

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    gen = tf.random.Generator.from_seed(seed)
    n_classes = len(np.unique(y))
    alloc = class_allocation(y, synthetic_size(len(x), fraction, n_classes))
    prob = _Problem(x, y, alloc, rng, batch_real)

    net = net_factory() if net_factory is not None else default_embedding_net(x.shape[1:])
    if lr is None:
        lr = LR_RELATIVE[method] * float(x.std() or 1.0)
    opt = _Adam(prob.syn, lr, prob.lo, prob.hi)

    from tqdm.auto import tqdm

    losses = []
    bar = tqdm(total=iterations, desc=f"distill ({method})", unit="it", disable=not progress)
    if method == "dm":
        reinit = _Reinit(net.trainable_variables, net.layers)
        step = _dm_step_fn(prob, net, reinit, gen, opt, augment)
        for it in range(iterations):
            losses.append(float(step(tf.constant(prob.batch_indices()))))
            bar.update(1)
            if it % 25 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
    else:
        reset, step = _gm_fns(prob, net, gen, opt, augment, GM_NET_LR)
        for it in range(iterations):
            reset()
            inner = [float(step(tf.constant(prob.batch_indices()))) for _ in range(inner_steps)]
            losses.append(float(np.mean(inner)))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    bar.close()

    x_syn = prob.syn.numpy().astype(np.float32)
    y_soft = None
    if teacher is not None:
        logits = np.concatenate(
            [np.asarray(teacher(x_syn[i : i + 256], training=False)) for i in range(0, len(x_syn), 256)]
        )
        y_soft = np.asarray(tf.nn.softmax(logits / float(temperature), axis=-1), dtype=np.float32)

    tenth = max(1, len(losses) // 10)
    meta = {
        "method": method,
        "iterations": int(iterations),
        "seconds": time.perf_counter() - started,
        "seed": int(seed),
        "fraction": float(fraction),
        "samples": int(len(x_syn)),
        "per_class": {int(c): int(n) for c, n in alloc.items()},
        "lr": float(lr),
        "batch_real": int(batch_real),
        "augment": bool(augment),
        "loss_first": float(np.mean(losses[:tenth])) if losses else None,
        "loss_last": float(np.mean(losses[-tenth:])) if losses else None,
        "mean_abs_change": float(np.mean(np.abs(x_syn - prob.init_x))),
    }
    if method == "gm":
        meta["inner_steps"] = int(inner_steps)
    if teacher is not None:
        meta["temperature"] = float(temperature)
    return DistilledSet(x=x_syn, y=prob.syn_y.copy(), y_soft=y_soft, meta=meta)


def matching_loss(x, y, x_syn, y_syn, *, net_factory=None, n_nets: int = 8, seed: int = 0) -> float:
    """The DM objective measured without sampling noise: the mean over n_nets fixed random
    networks of sum over classes ||mean embedding(all real) - mean embedding(synthetic)||^2."""
    import tensorflow as tf

    x, y = _check_xy(x, y)
    x_syn, y_syn = _check_xy(x_syn, y_syn)
    net = net_factory() if net_factory is not None else default_embedding_net(x.shape[1:])
    reinit = _Reinit(net.trainable_variables, net.layers)
    gen = tf.random.Generator.from_seed(seed)
    total = 0.0
    for _ in range(n_nets):
        reinit(gen)
        for c in np.unique(y_syn):
            real = x[y == c]
            feats = np.concatenate(
                [np.asarray(net(real[i : i + 512], training=False)) for i in range(0, len(real), 512)]
            )
            syn = np.asarray(net(x_syn[y_syn == c], training=False))
            total += float(np.sum((feats.mean(0) - syn.mean(0)) ** 2))
    return total / n_nets
