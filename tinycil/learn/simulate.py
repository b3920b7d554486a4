"""Host reference of a device run: the device procedure, step for step, in float32 numpy.

The device keeps a frozen int8 backbone (possibly empty) and a float32 tail that it trains on
the samples the host streams to it: dense layers (`Tail`) or any chain of conv2d, depthwise
conv2d, pooling and dense layers (`NetTail`); both run every sum in the kernels' order, so they
equal the device (and the host twin, tinycil.deploy.twin) entry for entry.
The device accumulates a mini-batch's gradient sample by sample; for dense layers that is the very
batched sum below (the same fmaf sequence), so the batched formulas describe it exactly. This module runs that procedure on the host with the same inputs,
the same order, the same seeds and the same arithmetic in float32, so every device run has a
reference to be compared with. The int8 backbone is run by the real LiteRT interpreter (the device
kernels are bit-exact with it); the tail is plain numpy, written to read like the C++ runtime.

The procedure, for every task t the device learns (t = known_tasks .. n_tasks-1):

1. BEGIN_TASK: the generator is re-seeded with ``prng.task_seed(seed, t)``. The output rows follow
   the classes in the order they were first seen (output unit k is class ``classes_seen[k]``). The
   tail grows to the plan's widths (`Tail.grow`), and all momentum buffers are set to zero.
2. TRAIN: the task's training samples, in the order of the data set (``task_subset``), are
   permuted each epoch by ``numpy.random.default_rng(seed + 1000 * t + epoch).permutation(n)`` and
   cut into ``n // batch_new`` full mini-batches (the remainder of an epoch is not sent). To each
   mini-batch the device adds ``batch_replay`` buffer samples (`ReplayBuffer.draw`), new samples
   first, and takes one SGD step (`Tail.train_step`).
3. The host-distilled int8 samples of task t join the replay buffer; END_OF_TASK runs the
   class-balanced pass (`end_task`).
4. With a head weight above 0 (TrainConfig.discriminant_weight): the discriminant head's
   statistics over the buffer and the task's training samples once more, all of them in the data
   set's order, then its fit (`fit_head_device`).
5. EVAL: every test sample of every task so far; the prediction is the first output unit with the
   largest logit among the classes seen, the head's term added (`DeviceHead.apply`).

Float order: every float32 step follows the device's kernels (firmware/lib/kernels), so that the
numpy twin and the device agree bit for bit (up to the rare double rounding noted at `fma`):
- latent = (float)(q - zero_point) * scale, per element.
- dense forward: acc = b[o]; acc = fmaf(x[i], W[i][o], acc) for i increasing; ReLU y > 0 ? y : 0
  on hidden layers (the output layer has no activation).
- softmax cross-entropy: `softmax_cross_entropy` (the device's own expf, `expf`).
- backward per layer, last to first: dW[i][o] = fmaf(dy[n][o], x[n][i], dW) over n increasing;
  db[o] += dy[n][o]; dx[n][i] = fmaf(dy[n][o], W[i][o], dx) over o increasing; through ReLU
  dx = x > 0 ? dx : 0 (x: the layer's input, a post-ReLU output). No dx for the first tail layer.
- the batch's gradient accumulates sample by sample; the first sample's overwrites the buffers
  (equal to adding to zeros, so the batched formulas above describe it).
- norm: s = fmaf(g, g, s) over the layers in order, each layer's weights in [out][in] order
  then its bias; norm = sqrtf(s); the clipping factor is clip_norm / norm when norm > clip_norm.
- SGD with momentum, fused, the factor folded in (tc_sgd_momentum_fma_f32): g' = g * factor
  (only when clipping), v = fmaf(momentum, v, g'), w = fmaf(-lr, v, w).
- a batch of one: a dense layer's weight gradient is the outer product dy x^T and is never
  stored; the norm adds s = fmaf(|dy|^2, |x|^2, s) + |dy|^2 per layer (each squared length a
  fmaf sum in element order) and the update forms g = (dy[o] * factor) * x[i] in registers
  (tc_sgd_momentum_outer_f32).
"""

from __future__ import annotations

from array import array

import numpy as np

from tinycil.learn.prng import Prng

F32 = np.float32


class SimulationError(RuntimeError):
    """A run folder that cannot be simulated (missing files, inconsistent plan)."""


# --------------------------------------------------------------------------------------------
# Float32 kernels in the device's operation order
# --------------------------------------------------------------------------------------------
# The device accumulates with fmaf (one rounding per multiply-add) in a fixed order. fma() below
# computes a*b exactly in float64 (24-bit significands), adds c and rounds to float32; that can
# differ from a true fmaf only through double rounding, when the exact result lies within 2^-29
# of a float32 rounding boundary: rare enough that host and device agree bit for bit in practice.
# Vectorised over the batch and the outputs, each accumulation runs its terms in the device's order.
def fma(a, b, c) -> np.ndarray:
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(F32)


class FmaChain:
    """acc = fmaf(a, b, acc) term after term, in place: `fma` without its allocations and
    conversions per term (the accumulator is kept in float64 holding float32 values; each term's
    product is exact in float64, the sum is rounded to float32). The terms' factors should be
    float64 already (`f64`); `sl` updates a part of the accumulator only."""

    def __init__(self, start: np.ndarray):
        self.acc32 = np.array(start, F32)
        self.acc = self.acc32.astype(np.float64)

    def add(self, a, b, sl=...) -> None:
        t = np.multiply(a, b, dtype=np.float64)
        t += self.acc[sl]
        self.acc32[sl] = t  # rounds to float32, as fmaf
        self.acc[sl] = self.acc32[sl]


def f64(a) -> np.ndarray:
    return np.asarray(a, np.float64)


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y[n][o] = bias[o], then y = fmaf(x[n][i], W[i][o], y) for i increasing."""
    y = FmaChain(np.broadcast_to(b, (x.shape[0], w.shape[1])))
    x, w = f64(x), f64(w)
    for i in range(w.shape[0]):
        y.add(x[:, i:i + 1], w[i][None, :])
    return y.acc32


def dense_param_grads(x: np.ndarray, dy: np.ndarray):
    """dW[i][o] = 0, then fmaf(dy[n][o], x[n][i], dW) for n increasing; db[o] += dy[n][o]."""
    dw = FmaChain(np.zeros((x.shape[1], dy.shape[1]), F32))
    db = np.zeros(dy.shape[1], F32)
    x64, dy64 = f64(x), f64(dy)
    for n in range(x.shape[0]):
        dw.add(x64[n][:, None], dy64[n][None, :])
        db = (db + dy[n]).astype(F32)
    return dw.acc32, db


def dense_input_grad(dy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """dx[n][i] = 0, then fmaf(dy[n][o], W[i][o], dx) for o increasing."""
    dx = FmaChain(np.zeros((dy.shape[0], w.shape[0]), F32))
    dy, w = f64(dy), f64(w)
    for o in range(w.shape[1]):
        dx.add(dy[:, o:o + 1], w[:, o][None, :])
    return dx.acc32


_LN2_HI, _LN2_LO, _LOG2E = F32(0.693145751953125), F32(1.428606765330187e-06), F32(1.44269504088896341)
_EXP_COEFFS = [F32(1) / F32(d) for d in (5040, 720, 120, 24, 6)] + [F32(0.5), F32(1), F32(1)]


def expf(x: np.ndarray) -> np.ndarray:
    """The device's tc_expf, operation for operation (Cody-Waite reduction, degree-7 Taylor).

    The C libraries' expf differ in the last bit between newlib and glibc, so the device carries
    its own; this is its twin.
    """
    x = np.minimum(np.asarray(x, F32), F32(88.0))
    t = (x * _LOG2E).astype(F32)
    k = np.where(t >= 0, t + F32(0.5), t - F32(0.5)).astype(F32).astype(np.int32)  # truncation
    kf = k.astype(F32)
    r = fma(-kf, _LN2_HI, x)
    r = fma(-kf, _LN2_LO, r)
    p = np.full_like(r, _EXP_COEFFS[0])
    for c in _EXP_COEFFS[1:]:
        p = fma(p, r, c)
    scale = np.ldexp(np.ones_like(p), np.clip(k, -126, 127)).astype(F32)
    out = (p * scale).astype(F32)
    return np.where(x < F32(-87.3), F32(0), out).astype(F32)


def softmax_cross_entropy(z: np.ndarray, target: np.ndarray, lo=None):
    """Mean cross-entropy and dz as the device's tc_softmax_ce_f32 computes them.

    Per sample: m = max z; s = sum of expf(z[c] - m), c increasing; dz[c] = (expf(z[c] - m) *
    (1 / s) - [c == label]) * (1 / batch). The loss (only reported, it changes no weight) uses
    numpy's log. `lo` (per sample, or None: 0): the softmax spans units lo.. only, the units
    below get dz 0 (the asymmetric cross-entropy); adding their exact 0.0 leaves the sum as the
    device's, which starts at unit lo.
    """
    batch, classes = z.shape
    if lo is None:
        shifted = (z - z.max(axis=1, keepdims=True)).astype(F32)
        e = expf(shifted)
    else:
        valid = np.arange(classes)[None, :] >= np.asarray(lo).reshape(batch, 1)
        zmax = np.where(valid, z, F32(-np.inf)).max(axis=1, keepdims=True)
        shifted = np.where(valid, z - zmax, F32(0)).astype(F32)
        e = np.where(valid, expf(shifted), F32(0)).astype(F32)
    s = np.zeros(batch, F32)
    for c in range(classes):
        s = (s + e[:, c]).astype(F32)
    inv_sum = (F32(1) / s).astype(F32)
    rows = np.arange(batch)
    loss = float(np.mean(np.log(s.astype(np.float64)) - shifted[rows, target]))
    p = (e * inv_sum[:, None]).astype(F32)
    p[rows, target] = (p[rows, target] - F32(1)).astype(F32)
    dz = (p * (F32(1) / F32(batch))).astype(F32)
    return loss, dz


def _sum_squares(tensors, start: float = 0.0) -> float:
    """s = fmaf(g, g, s) over the tensors in order, each in C (row-major) order, from `start`:
    tc_f32_sum_squares. Sequential by nature; g*g is exact in float64, so each step is one
    float64 addition rounded to float32 (the double rounding noted at `fma`)."""
    total = array("f", [start])  # storing into a float32 array rounds, as fmaf does
    for t in tensors:
        for g in np.ascontiguousarray(t, F32).ravel().tolist():
            total[0] = g * g + total[0]
    return float(total[0])


def clip_factor(norm, clip_norm: float):
    """tc_clip_factor_f32: clip_norm / norm (float32) when norm > clip_norm > 0, else None
    (the device's factor 1, which changes nothing)."""
    if clip_norm > 0 and norm > F32(clip_norm):
        return (F32(clip_norm) / F32(norm)).astype(F32)
    return None


def bf16_round(v: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (the upper 16 bits, round to nearest even), as
    float32: how a momentum buffer held in 16 bits keeps them."""
    u = np.ascontiguousarray(v, F32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(F32)


def sgd_fma(w: np.ndarray, v: np.ndarray, g: np.ndarray, lr: float, momentum: float, factor,
            momentum_bits: int = 32):
    """tc_sgd_momentum_fma_f32: g' = g * factor (when given), v = fmaf(momentum, v, g'),
    w = fmaf(-lr, v, w). Returns (w, v); with momentum_bits 16 the kept v is rounded to
    bfloat16 (the weight update uses the float32 value)."""
    if factor is not None:
        g = (g * factor).astype(F32)
    v = fma(F32(momentum), v, g)
    w = fma(-F32(lr), v, w)
    return w, (bf16_round(v) if momentum_bits == 16 else v)


# --------------------------------------------------------------------------------------------
# The trainable tail
# --------------------------------------------------------------------------------------------
class Tail:
    """A chain of dense layers: ReLU after every layer except the last (the logits).

    weights[l] has the Keras kernel layout (inputs, outputs), biases[l] shape (outputs,).
    `momentum_bits` 16: the momentum is kept in bfloat16, as the device keeps it when the
    memory plan asks for it.
    """

    momentum_bits = 32

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray]):
        if len(weights) != len(biases) or not weights:
            raise ValueError("a tail needs at least one layer and one bias per layer")
        self.weights = [np.array(w, dtype=F32) for w in weights]
        self.biases = [np.array(b, dtype=F32) for b in biases]
        for l in range(1, len(self.weights)):
            if self.weights[l].shape[0] != self.weights[l - 1].shape[1]:
                raise ValueError(f"tail layer {l} takes {self.weights[l].shape[0]} inputs but "
                                 f"layer {l - 1} gives {self.weights[l - 1].shape[1]}")
        self.reset_momentum()

    @property
    def hidden_widths(self) -> list[int]:
        return [int(w.shape[1]) for w in self.weights[:-1]]

    @property
    def input_map(self) -> tuple[int, int, int]:
        """(height, width, channels) of the tail's input: a vector has no spatial axes."""
        return 1, 1, int(self.weights[0].shape[0])

    @property
    def num_outputs(self) -> int:
        return int(self.weights[-1].shape[1])

    def reset_momentum(self) -> None:
        self.vel_w = [np.zeros_like(w) for w in self.weights]
        self.vel_b = [np.zeros_like(b) for b in self.biases]

    # forward / backward ---------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Inputs of every layer followed by the logits: [x, h1, ..., logits]."""
        acts = [np.asarray(x, dtype=F32)]
        last = len(self.weights) - 1
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            y = dense_forward(acts[-1], w, b)
            if l != last:
                y = np.where(y > 0, y, F32(0)).astype(F32)
            acts.append(y)
        return acts

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[-1]

    def loss_and_grads(self, x: np.ndarray, target: np.ndarray, lo=None):
        """Mean softmax cross-entropy over the output units and its gradients.

        `target` holds output-unit indices; `lo` as for softmax_cross_entropy. Returns (loss,
        grads_w, grads_b).
        """
        acts = self.forward(x)
        loss, dy = softmax_cross_entropy(acts[-1], np.asarray(target), lo)
        grads_w: list[np.ndarray] = [None] * len(self.weights)  # type: ignore[list-item]
        grads_b: list[np.ndarray] = [None] * len(self.weights)  # type: ignore[list-item]
        for l in range(len(self.weights) - 1, -1, -1):
            x_l = acts[l]
            grads_w[l], grads_b[l] = dense_param_grads(x_l, dy)
            if l > 0:
                dx = dense_input_grad(dy, self.weights[l])
                dy = np.where(x_l > 0, dx, F32(0)).astype(F32)
        return loss, grads_w, grads_b

    @staticmethod
    def clip(grads_w, grads_b, clip_norm: float):
        """Scale all gradients so that their global L2 norm is at most clip_norm.

        The sum of squares runs over the layers in order, each layer's weights in the device's
        [out][in] order, then its bias: s = fmaf(g, g, s). Returns the scaled gradients and the
        norm (the device folds the factor into its update instead: `train_step`).
        """
        norm = F32(np.sqrt(F32(_sum_squares([a for gw, gb in zip(grads_w, grads_b)
                                              for a in (gw.T, gb)]))))
        factor = clip_factor(norm, clip_norm)
        if factor is not None:
            grads_w = [(g * factor).astype(F32) for g in grads_w]
            grads_b = [(g * factor).astype(F32) for g in grads_b]
        return grads_w, grads_b, float(norm)

    def sgd_step(self, grads_w, grads_b, lr: float, momentum: float, factor=None) -> None:
        """The device's fused update (tc_sgd_momentum_fma_f32): g' = g * factor (when
        clipping), v = fmaf(momentum, v, g'), w = fmaf(-lr, v, w)."""
        for l in range(len(self.weights)):
            self.weights[l], self.vel_w[l] = sgd_fma(self.weights[l], self.vel_w[l], grads_w[l],
                                                     lr, momentum, factor, self.momentum_bits)
            self.biases[l], self.vel_b[l] = sgd_fma(self.biases[l], self.vel_b[l], grads_b[l],
                                                    lr, momentum, factor, self.momentum_bits)

    def train_step(self, x, target, *, lr: float, momentum: float, clip_norm: float,
                   lo=None) -> float:
        """One SGD step as the runtime takes it (tc_runtime.cpp train_step): the batch's
        gradient, its global norm, the clipping factor folded into the fused update. At a batch
        of one a dense layer's weight gradient is the outer product dy x^T, never stored: the
        norm adds |dy|^2 |x|^2 + |dy|^2 per layer and the update forms g = (dy * factor) * x.
        `lo`: each sample's lowest output unit in the softmax (None: 0)."""
        if len(x) == 1:
            return self._train_step_single(x, target, lr, momentum, clip_norm, lo)
        loss, gw, gb = self.loss_and_grads(x, target, lo)
        norm = F32(np.sqrt(F32(_sum_squares([a for w, b in zip(gw, gb) for a in (w.T, b)]))))
        self.sgd_step(gw, gb, lr, momentum, clip_factor(norm, clip_norm))
        return loss

    def _train_step_single(self, x, target, lr, momentum, clip_norm, lo=None) -> float:
        acts = self.forward(x)
        loss, dy = softmax_cross_entropy(acts[-1], np.asarray(target), lo)
        deltas: list[np.ndarray] = [None] * len(self.weights)  # type: ignore[list-item]
        for l in range(len(self.weights) - 1, -1, -1):
            deltas[l] = dy[0]
            if l > 0:
                dx = dense_input_grad(dy, self.weights[l])
                dy = np.where(acts[l] > 0, dx, F32(0)).astype(F32)
        total = F32(0)
        for l, d in enumerate(deltas):
            d2 = F32(_sum_squares([d]))
            total = (fma(d2, F32(_sum_squares([acts[l][0]])), total) + d2).astype(F32)
        factor = clip_factor(F32(np.sqrt(total)), clip_norm)
        for l, d in enumerate(deltas):
            a = d if factor is None else (d * factor).astype(F32)
            g = (acts[l][0][:, None] * a[None, :]).astype(F32)  # Keras layout [in][out]
            self.weights[l], self.vel_w[l] = sgd_fma(self.weights[l], self.vel_w[l], g, lr,
                                                     momentum, None, self.momentum_bits)
            self.biases[l], self.vel_b[l] = sgd_fma(self.biases[l], self.vel_b[l], d, lr,
                                                    momentum, factor, self.momentum_bits)
        return loss

    # growth -----------------------------------------------------------------------------------
    def grow(self, hidden_widths: list[int], num_outputs: int, prng: Prng) -> None:
        """Grow to `hidden_widths` and `num_outputs` without changing any existing output.

        Layer by layer, first to last: the inputs that the previous layer's new units feed get
        zero weights (their outgoing weights are zero); then the layer's new units, in increasing
        index, get incoming weights prng.he_normal over the layer's (grown) input width, drawn
        input by input, and a zero bias. New output units (new classes) get zero weights and a
        zero bias. Momentum buffers are reset.
        """
        old_hidden = self.hidden_widths
        if len(hidden_widths) != len(old_hidden):
            raise ValueError(f"the tail has {len(old_hidden)} hidden layers, the plan gives "
                             f"{len(hidden_widths)} widths")
        targets = [int(w) for w in hidden_widths] + [int(num_outputs)]
        current = old_hidden + [self.num_outputs]
        for l, (now, want) in enumerate(zip(current, targets)):
            if want < now:
                raise ValueError(f"tail layer {l} would shrink from {now} to {want} units; "
                                 "growth plans must be non-decreasing")
        last = len(self.weights) - 1
        for l in range(len(self.weights)):
            w, b = self.weights[l], self.biases[l]
            fan_in = self.weights[l - 1].shape[1] if l > 0 else w.shape[0]
            if fan_in > w.shape[0]:  # inputs from the previous layer's new units: zero weights
                w = np.vstack([w, np.zeros((fan_in - w.shape[0], w.shape[1]), dtype=F32)])
            new_units = targets[l] - w.shape[1]
            if new_units > 0:
                if l == last:
                    cols = np.zeros((fan_in, new_units), dtype=F32)
                else:
                    # unit by unit, each unit's fan_in incoming weights in input order
                    cols = prng.he_normal(new_units * fan_in, fan_in).reshape(new_units, fan_in).T
                w = np.hstack([w, cols])
                b = np.concatenate([b, np.zeros(new_units, dtype=F32)])
            self.weights[l], self.biases[l] = w.astype(F32), b.astype(F32)
        self.reset_momentum()

    def copy(self) -> "Tail":
        t = Tail([w.copy() for w in self.weights], [b.copy() for b in self.biases])
        t.momentum_bits = self.momentum_bits
        return t


# --------------------------------------------------------------------------------------------
# A tail of any trainable layers (conv2d, depthwise conv2d, pooling, dense)
# --------------------------------------------------------------------------------------------
def _same_pads(size: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(out, pad before, pad after) of one axis with TensorFlow's rule (tc_window_dims_init)."""
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return out, total // 2, total - total // 2
    return (size - k) // stride + 1, 0, 0


class NetTail:
    """The device's trainable part when it holds more than dense layers over vectors.

    `layers` are models.tail_layer_specs dicts (weights in the runtime's layout: conv2d
    [out][kh][kw][in], depthwise [kh][kw][c], dense [out][in_h][in_w][in]). The procedure is the
    runtime's: forward per layer with ReLU where the layer has one; softmax cross-entropy over the
    output units with the gradient of the batch mean; the gradients of a mini-batch summed over
    its samples; global-norm clipping over the parameter layers in order (weights, then bias);
    SGD with momentum; function-preserving growth with the device's PRNG draws. Every float32
    sum runs in the kernels' order (tests/test_simulate_conv_tail.py: equal to the host twin in
    every weight after growth and steps), vectorised over what the kernels compute independently.
    Cost, Split Fashion-MNIST 14x14, a step of 32 + 32 samples on 2 busy cores: about 0.1 s with
    conv2 trainable, 0.45 s with conv1 too; the full data's 48,000 streamed samples per epoch
    are 3,000 steps over the default 2 epochs (about 6 and 23 minutes).
    """

    momentum_bits = 32  # 16: kept in bfloat16 (as Tail)

    def __init__(self, layers: list[dict]):
        self.layers = [dict(l) for l in layers]
        for l in self.layers:
            if l["weights"] is not None:
                l["weights"] = np.array(l["weights"], F32)
                l["bias"] = np.array(l["bias"], F32)
        self.reset_momentum()

    @property
    def num_outputs(self) -> int:
        return int(self.layers[-1]["out_c"])

    @property
    def hidden_widths(self) -> list[int]:
        return [int(l["out_c"]) for l in self.layers[:-1] if l["op"] in ("conv2d", "dense")]

    @property
    def input_map(self) -> tuple[int, int, int]:
        """(height, width, channels) of the tail's input map (the latent)."""
        first = self.layers[0]
        return int(first["in_hw"][0]), int(first["in_hw"][1]), int(first["in_c"])

    def reset_momentum(self) -> None:
        self.vel = [None if l["weights"] is None else (np.zeros_like(l["weights"]),
                                                         np.zeros_like(l["bias"]))
                    for l in self.layers]

    def copy(self) -> "NetTail":
        t = NetTail([{**l, "weights": None if l["weights"] is None else l["weights"].copy(),
                      "bias": None if l["bias"] is None else l["bias"].copy()}
                     for l in self.layers])
        t.momentum_bits = self.momentum_bits
        return t

    # geometry ---------------------------------------------------------------------------------
    @staticmethod
    def _window(l):
        (ih, iw), (kh, kw), (sh, sw) = l["in_hw"], l["kernel"], l["strides"]
        oh, pt, pb = _same_pads(ih, kh, sh, l["padding"])
        ow, pl, pr = _same_pads(iw, kw, sw, l["padding"])
        return (ih, iw, kh, kw, sh, sw, oh, ow, pt, pb, pl, pr)

    @staticmethod
    def _taps(xp, kh, kw, sh, sw, oh, ow):
        """(ky, kx, patch [B, oh, ow, C]) of a padded input."""
        for ky in range(kh):
            for kx in range(kw):
                yield ky, kx, xp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :]

    # forward / backward -------------------------------------------------------------------------
    # Every float32 sum runs in the kernels' order (firmware/lib/kernels), vectorised over what the
    # kernels compute independently (samples, channels, positions): the results are the device's
    # bit for bit, up to the double rounding noted at `fma` (and the sign of a zero: a padded tap
    # adds fmaf(0, w, acc), which the kernels skip).
    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        first = self.layers[0]
        h = np.asarray(x, F32).reshape(len(x), *first["in_hw"], int(first["in_c"]))
        acts = [h]
        for l in self.layers:
            h = self._layer_forward(l, h)
            if l["relu"]:
                h = np.where(h > 0, h, F32(0)).astype(F32)  # tc_relu_f32_fwd
            acts.append(h.astype(F32))
        return acts

    @staticmethod
    def _dense_w(l) -> np.ndarray:
        """A dense layer's weights as [out][in] over the flattened (h, w, c) input."""
        return l["weights"].reshape(len(l["bias"]), -1)

    def _layer_forward(self, l, x):
        op, B = l["op"], len(x)
        if op == "dense":  # tc_dense_f32_fwd: y = b, then fmaf over the inputs in order
            return dense_forward(x.reshape(B, -1), self._dense_w(l).T, l["bias"]).reshape(B, 1, 1, -1)
        ih, iw, kh, kw, sh, sw, oh, ow, pt, pb, pl, pr = self._window(l)
        C = x.shape[-1]
        if op == "max_pool":
            xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
            y = np.full((B, oh, ow, C), -np.inf, F32)
            for _, _, p in self._taps(xp, kh, kw, sh, sw, oh, ow):
                y = np.maximum(y, p)
            return y
        xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        if op == "avg_pool":  # y = 0; y += x over the window in raster order; y / count
            ones = np.pad(np.ones((1, ih, iw, 1), F32), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
            y = np.zeros((B, oh, ow, C), F32)
            n = np.zeros((1, oh, ow, 1), F32)
            for (_, _, p), (_, _, q) in zip(self._taps(xp, kh, kw, sh, sw, oh, ow),
                                            self._taps(ones, kh, kw, sh, sw, oh, ow)):
                y += p
                n += q
            return (y / n).astype(F32)
        w, b = f64(l["weights"]), l["bias"]
        y = FmaChain(np.broadcast_to(b, (B, oh, ow, len(b))))
        for ky, kx, p in self._taps(f64(xp), kh, kw, sh, sw, oh, ow):
            if op == "conv2d":  # per kernel row one dot product over (kx, c): taps in order
                for c in range(C):
                    y.add(p[..., c:c + 1], w[:, ky, kx, c])
            else:  # depthwise: y = fmaf(x, w, y) per tap in raster order
                y.add(p, w[ky, kx])
        return y.acc32

    def _layer_backward(self, l, x, dy, need_dx: bool, grad):
        """The batch's (dW, db) accumulated sample by sample onto `grad` (None: the batch's first
        sample overwrites), and each sample's dx, as the kernels compute them."""
        op, B = l["op"], len(x)
        if op == "dense":  # tc_dense_f32_bwd_acc
            w = self._dense_w(l)
            d2 = dy.reshape(B, -1)
            dw, db = dense_param_grads(x.reshape(B, -1), d2)
            dw = dw.T.reshape(l["weights"].shape)
            dx = dense_input_grad(d2, w.T).reshape(x.shape) if need_dx else None
            return dw, db, dx
        ih, iw, kh, kw, sh, sw, oh, ow, pt, pb, pl, pr = self._window(l)
        pad = ((0, 0), (pt, pb), (pl, pr), (0, 0))
        dxp = np.zeros(np.pad(x, pad).shape, F32)
        # Each input position gets one term per output pixel whose window covers it, in the
        # pixels' raster order: for one tap every pixel reaches a different position, and a later
        # tap (row, then column) belongs to an earlier pixel. So the taps run backwards.
        taps = [(ky, kx) for ky in range(kh) for kx in range(kw)][::-1]

        def at(ky, kx):
            return (slice(None), slice(ky, ky + sh * (oh - 1) + 1, sh),
                    slice(kx, kx + sw * (ow - 1) + 1, sw), slice(None))

        if op in ("max_pool", "avg_pool"):
            if op == "max_pool":  # the first maximum of each window (raster order) gets dy
                xp = np.pad(x, pad, constant_values=-np.inf)
                y = self._layer_forward(l, x)
                taken = np.zeros(dy.shape, bool)
                hits = {}
                for ky, kx, p in self._taps(xp, kh, kw, sh, sw, oh, ow):
                    hits[ky, kx] = (p == y) & ~taken
                    taken |= hits[ky, kx]
                for ky, kx in taps:
                    dxp[at(ky, kx)] += np.where(hits[ky, kx], dy, F32(0))
            else:  # every input of the window gets dy / count
                ones = np.pad(np.ones((1, ih, iw, 1), F32), pad)
                n = np.zeros((1, oh, ow, 1), F32)
                for _, _, q in self._taps(ones, kh, kw, sh, sw, oh, ow):
                    n += q
                g = (dy / n).astype(F32)
                for ky, kx in taps:
                    dxp[at(ky, kx)] += np.where(ones[at(ky, kx)] > 0, g, F32(0))
            return None, None, dxp[:, pt:pt + ih, pl:pl + iw]
        w = l["weights"]
        xp = np.pad(x, pad)
        if grad is None:
            dw, db = np.zeros_like(w), np.zeros_like(l["bias"])
        else:
            dw, db = grad
        # db += dy per output pixel, sample after sample (np.add.accumulate adds in order)
        db = np.add.accumulate(np.concatenate([db[None], dy.reshape(-1, dy.shape[-1])]),
                               axis=0, dtype=F32)[-1]
        # dw = fmaf(dy, x, dw) per sample, per output pixel in raster order: one long chain per
        # weight, all weights at once. A sample's products (exact in float64) are formed in one
        # go; then each pixel's row is added and rounded to float32 in turn, as fmaf does.
        dy64, xp64 = dy.astype(np.float64), xp.astype(np.float64)
        win = np.lib.stride_tricks.sliding_window_view(xp64, (kh, kw), axis=(1, 2))
        win = win[:, ::sh, ::sw][:, :oh, :ow].transpose(0, 1, 2, 4, 5, 3)  # [b][oy][ox][ky][kx][c]
        acc32 = dw.astype(F32).ravel()
        acc = acc32.astype(np.float64)
        T = oh * ow
        for b in range(B):
            xs = win[b].reshape(T, kh * kw, -1)
            if op == "conv2d":  # [pixel][o][ky][kx][c]
                prod = (dy64[b].reshape(T, -1, 1) * xs.reshape(T, 1, -1)).reshape(T, -1)
            else:  # [pixel][ky][kx][c]
                prod = (xs * dy64[b].reshape(T, 1, -1)).reshape(T, -1)
            for t in range(T):
                np.add(acc, prod[t], out=acc)
                acc32[...] = acc  # rounds to float32, as fmaf
                acc[...] = acc32
        dw = acc32.reshape(w.shape)
        if need_dx:  # per pixel: output channels in order (conv2d), the tap (depthwise)
            chain, w64 = FmaChain(dxp), f64(w)
            for ky, kx in taps:
                if op == "conv2d":
                    for o in range(w.shape[0]):
                        chain.add(dy64[..., o:o + 1], w64[o, ky, kx], at(ky, kx))
                else:
                    chain.add(dy64, w64[ky, kx], at(ky, kx))
            dxp = chain.acc32
        dx = dxp[:, pt:pt + ih, pl:pl + iw] if need_dx else None
        return dw, db, dx

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[-1].reshape(len(x), -1)

    def loss_and_grads(self, x: np.ndarray, target: np.ndarray, single: bool = False, lo=None):
        """Mean softmax cross-entropy and its gradients: [(dW, db) or None per layer], plus the
        activations and every layer's output gradient (dy). `single`: a batch of one, where a
        dense layer's weight gradient is not formed (dW None, the update uses dy x^T). `lo` as
        for softmax_cross_entropy."""
        acts = self.forward(x)
        loss, dz = softmax_cross_entropy(acts[-1].reshape(len(x), -1), np.asarray(target), lo)
        dy = dz.reshape(acts[-1].shape)
        grads: list = [None] * len(self.layers)
        deltas: list = [None] * len(self.layers)
        first_trained = next(i for i, l in enumerate(self.layers) if l["weights"] is not None)
        for i in range(len(self.layers) - 1, first_trained - 1, -1):
            l = self.layers[i]
            if l["relu"]:  # tc_relu_f32_bwd
                dy = np.where(acts[i + 1] > 0, dy, F32(0)).astype(F32)
            deltas[i] = dy
            need_dx = i > first_trained
            if single and l["op"] == "dense":
                dx = (dense_input_grad(dy.reshape(1, -1), self._dense_w(l).T).reshape(acts[i].shape)
                      if need_dx else None)
                grads[i] = (None, dy.reshape(-1).astype(F32))
            else:
                dw, db, dx = self._layer_backward(l, acts[i], dy, need_dx, None)
                if dw is not None:
                    grads[i] = (dw, db)
            dy = dx
        return loss, grads, acts, deltas

    def train_step(self, x, target, *, lr: float, momentum: float, clip_norm: float,
                   lo=None) -> float:
        """tc_runtime.cpp's train_step: the batch's gradient, its global norm (fmaf sum of
        squares, layer by layer, weights then bias), the clipping factor folded into the fused
        momentum update; at a batch of one a dense layer's weight gradient is dy x^T, never
        stored (the norm adds |dy|^2 |x|^2 + |dy|^2, the update forms (dy * factor) * x).
        `lo`: each sample's lowest output unit in the softmax (None: 0)."""
        single = len(x) == 1
        loss, grads, acts, _ = self.loss_and_grads(x, target, single, lo)
        total = F32(0)
        for i, g in enumerate(grads):
            if g is None:
                continue
            if g[0] is None:  # dense at a batch of one
                d2 = F32(_sum_squares([g[1]]))
                x2 = F32(_sum_squares([acts[i][0]]))
                total = (fma(d2, x2, total) + d2).astype(F32)
            else:
                total = F32(_sum_squares([g[0], g[1]], float(total)))
        factor = clip_factor(F32(np.sqrt(total)), clip_norm)
        for i, (l, g) in enumerate(zip(self.layers, grads)):
            if g is None:
                continue
            gw, gb = g
            if gw is None:  # g[o][i] = (dy[o] * factor) * x[i]
                a = gb if factor is None else (gb * factor).astype(F32)
                gw, wf = (a[:, None] * acts[i][0].reshape(1, -1)).astype(F32), None
                gw = gw.reshape(l["weights"].shape)
            else:
                wf = factor
            l["weights"], vw = sgd_fma(l["weights"], self.vel[i][0], gw, lr, momentum, wf,
                                       self.momentum_bits)
            l["bias"], vb = sgd_fma(l["bias"], self.vel[i][1], gb, lr, momentum, factor,
                                    self.momentum_bits)
            self.vel[i] = (vw, vb)
        return loss

    # growth -----------------------------------------------------------------------------------
    def grow(self, hidden_widths: list[int], num_outputs: int, prng: Prng) -> None:
        """Grow every layer to the plan's channels (tc_growth.h's rule and PRNG draws): the
        widths go to the conv2d and dense layers in order (depthwise and pooling layers keep the
        channels they are given), `num_outputs` to the logits."""
        widths = iter(int(w) for w in hidden_widths)
        ch = int(self.layers[0]["in_c"])
        last = len(self.layers) - 1
        for i, l in enumerate(self.layers):
            in_old, out_old = int(l["in_c"]), int(l["out_c"])
            in_new = ch
            if l["op"] in ("conv2d", "dense"):
                out_new = int(num_outputs) if i == last else next(widths)
            else:
                out_new = in_new
            if out_new < out_old or in_new < in_old:
                raise ValueError(f"tail layer {l['name']} would shrink; growth plans must be "
                                 "non-decreasing")
            if l["op"] in ("conv2d", "dense"):
                w = l["weights"]  # [out][positions...][in]
                if in_new > in_old:
                    pad = [(0, 0)] * (w.ndim - 1) + [(0, in_new - in_old)]
                    w = np.pad(w, pad)
                if out_new > out_old:
                    fan_in = int(np.prod(w.shape[1:]))
                    n = (out_new - out_old) * fan_in
                    rows = (np.zeros(n, F32) if i == last else prng.he_normal(n, fan_in))
                    w = np.concatenate([w, rows.reshape(out_new - out_old, *w.shape[1:])])
                    l["bias"] = np.concatenate([l["bias"], np.zeros(out_new - out_old, F32)])
                l["weights"] = w.astype(F32)
            elif l["op"] == "depthwise" and out_new > out_old:
                w = l["weights"]  # [kh][kw][c]
                taps = w.shape[0] * w.shape[1]
                new = prng.he_normal((out_new - out_old) * taps, taps).reshape(out_new - out_old, taps)
                w = np.concatenate([w, new.T.reshape(w.shape[0], w.shape[1], -1)], axis=2)
                l["weights"] = w.astype(F32)
                l["bias"] = np.concatenate([l["bias"], np.zeros(out_new - out_old, F32)])
            l["in_c"], l["out_c"] = in_new, out_new
            ch = out_new
        self.reset_momentum()


# --------------------------------------------------------------------------------------------
# The replay buffer
# --------------------------------------------------------------------------------------------
class ReplayBuffer:
    """The device's buffer: int8 samples grouped by class, in the order they joined.

    `latents` caches each sample's backbone output (the backbone is frozen, so the device's
    per-step backbone pass over a replay sample always gives the same latent).
    """

    def __init__(self):
        self.classes: list[int] = []          # in the order they first joined
        self.members: dict[int, list[int]] = {}
        self.x_int8: list[np.ndarray] = []
        self.y: list[int] = []
        self.latents: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.y)

    def add(self, x_int8: np.ndarray, y: np.ndarray, latents: np.ndarray) -> None:
        for xi, yi, li in zip(x_int8, y, latents):
            c = int(yi)
            if c not in self.members:
                self.classes.append(c)
                self.members[c] = []
            self.members[c].append(len(self.y))
            self.x_int8.append(xi)
            self.y.append(c)
            self.latents.append(np.asarray(li, dtype=F32))

    def draw(self, prng: Prng, count: int) -> list[int]:
        """`count` sample indices, class-balanced: for each sample, first
        class = classes[prng.index(len(classes))], then member = members[class][prng.index(size)]."""
        out = []
        for _ in range(count):
            c = self.classes[prng.index(len(self.classes))]
            group = self.members[c]
            out.append(group[prng.index(len(group))])
        return out

    @property
    def nbytes(self) -> int:
        return int(sum(x.size for x in self.x_int8))


# --------------------------------------------------------------------------------------------
# One task on the device
# --------------------------------------------------------------------------------------------
def stream_order(n: int, seed: int, task: int, epoch: int) -> np.ndarray:
    """The order in which the host streams a task's n training samples in an epoch."""
    return np.random.default_rng(seed + 1000 * task + epoch).permutation(n)


def shift_latent(latent: np.ndarray, input_map, k: int, prng: Prng) -> np.ndarray:
    """replay_shift on one latent (tc_runtime.cpp shift_latent): an offset drawn in -k..k along
    each of height and width that is longer than 1 (height first), out[y][x] = in[y-dy][x-dx],
    zeros shifted in."""
    from tinycil.learn.train import shift_sample

    h, w, c = input_map
    dy = prng.index(2 * k + 1) - k if h > 1 else 0
    dx = prng.index(2 * k + 1) - k if w > 1 else 0
    if dy == 0 and dx == 0:
        return latent
    offsets = [d for d, n in ((dy, h), (dx, w)) if n > 1]
    return shift_sample(latent.reshape(h, w, c), offsets).reshape(latent.shape)


def replay_draw(buffer: ReplayBuffer, buffer_targets: dict[int, int], prng: Prng, n: int,
                shift: int = 0, input_map=(1, 1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """n class-balanced buffer draws (tc_buffer_draw): their latents and output units; with
    shift > 0 each latent moved by shift_latent right after its draw (the runtime's order)."""
    ridx, lats = [], []
    for _ in range(n):
        i = buffer.draw(prng, 1)[0]
        ridx.append(i)
        lats.append(shift_latent(buffer.latents[i], input_map, shift, prng) if shift > 0
                    else buffer.latents[i])
    xr = np.stack(lats)
    yr = np.array([buffer_targets[buffer.y[i]] for i in ridx], dtype=np.int64)
    return xr, yr


def train_task(tail: Tail, latents: np.ndarray, targets: np.ndarray, buffer: ReplayBuffer,
               buffer_targets: dict[int, int], prng: Prng, *, seed: int, task: int, epochs: int,
               batch_new: int, batch_replay: int, lr: float, momentum: float,
               clip_norm: float, task_lo: int = 0, replay_shift: int = 0) -> dict:
    """TRAIN of the device procedure for one task. Returns counters (steps, samples, last loss).

    latents/targets: the task's training samples (backbone outputs, output-unit indices) in the
    data set's order; buffer_targets maps a buffer sample's class id to its output unit.
    task_lo: the lowest output unit of a streamed sample's softmax (the asymmetric
    cross-entropy: the task's lowest unit; 0: every unit); replayed samples span every unit.
    replay_shift: replayed latents moved by up to that many cells (shift_latent).
    """
    n = len(latents)
    if n < batch_new:
        raise SimulationError(f"task {task} has {n} training samples, fewer than one mini-batch "
                              f"of {batch_new}: lower --batch-new")
    steps = samples = 0
    loss = float("nan")
    for epoch in range(epochs):
        order = stream_order(n, seed, task, epoch)
        for start in range(0, n - batch_new + 1, batch_new):
            idx = order[start:start + batch_new]
            xb, yb = latents[idx], targets[idx]
            lo = np.full(len(idx), task_lo, np.int64)
            if batch_replay > 0 and len(buffer):
                xr, yr = replay_draw(buffer, buffer_targets, prng, batch_replay, replay_shift,
                                     tail.input_map)
                xb, yb = np.concatenate([xb, xr]), np.concatenate([yb, yr])
                lo = np.concatenate([lo, np.zeros(len(yr), np.int64)])
            loss = tail.train_step(xb, yb, lr=lr, momentum=momentum, clip_norm=clip_norm,
                                   lo=lo if task_lo else None)
            steps += 1
            samples += len(yb)
    return {"steps": steps, "samples": samples, "last_loss": loss}


def end_task(tail: Tail, buffer: ReplayBuffer, buffer_targets: dict[int, int], prng: Prng, *,
             batch_replay: int, lr: float, momentum: float, clip_norm: float,
             balance_steps: int, balance_lr_scale: float, replay_shift: int = 0) -> dict:
    """END_OF_TASK of the device procedure (tc_rt_end_task): balance_steps steps of batch_replay
    class-balanced buffer draws at lr * balance_lr_scale (a float32 product), from zero momentum,
    drawing on from the task's PRNG; momentum is zero again after it. Returns counters."""
    if balance_steps <= 0 or batch_replay <= 0 or len(buffer) == 0:
        return {"steps": 0, "samples": 0}
    lr_b = float(F32(lr) * F32(balance_lr_scale))
    tail.reset_momentum()
    for _ in range(balance_steps):
        xr, yr = replay_draw(buffer, buffer_targets, prng, batch_replay, replay_shift,
                             tail.input_map)
        tail.train_step(xr, yr, lr=lr_b, momentum=momentum, clip_norm=clip_norm)
    tail.reset_momentum()
    return {"steps": balance_steps, "samples": balance_steps * batch_replay}


# --------------------------------------------------------------------------------------------
# The discriminant head (tc_runtime.cpp: head_begin, head_observe, head_fit, apply_head)
# --------------------------------------------------------------------------------------------
def head_features(tail, latents: np.ndarray, acts: list | None = None) -> np.ndarray:
    """The output layer's input (the head's features) of every sample, [n, features] float32:
    the last hidden layer's output map flattened (h, w, c), or the latent for a one-layer tail.
    `acts`: the tail's forward pass of `latents`, when already run."""
    acts = tail.forward(latents) if acts is None else acts
    return np.asarray(acts[-2], F32).reshape(len(latents), -1)


class DeviceHead:
    """A fitted head: weights [classes, features], one bias per class."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray):
        self.weights = np.asarray(weights, F32)
        self.bias = np.asarray(bias, F32)

    def apply(self, features: np.ndarray, logits: np.ndarray, weight: float) -> np.ndarray:
        """z[c] = fmaf(weight, b[c] + w[c] . f, z[c]) with the dot product's fmaf chain in
        feature order (the dense kernel's order: dense_forward)."""
        h = dense_forward(features, self.weights.T, self.bias)
        return fma(F32(weight), h, logits)


def _add_outer(S: np.ndarray, z: np.ndarray, scale=None) -> np.ndarray:
    """S[i][j] = fmaf(z[i] * scale, z[j], S[i][j]) (add_outer; the whole square, of which the
    device keeps the lower triangle: the same values there)."""
    zi = z if scale is None else (z * F32(scale)).astype(F32)
    return fma(zi[:, None], z[None, :], S)


def fit_head_device(tail, buffer: "ReplayBuffer", buffer_targets: dict[int, int],
                    observed: np.ndarray, observed_units: np.ndarray, shrinkage: float):
    """tc_rt_end_task's head_begin, tc_rt_observe_samples and tc_rt_fit_head in float32, step
    for step. `observed`: the latents of the samples observed (the task's own, in the order
    streamed). Returns (DeviceHead or None when there is no scatter to fit, counters for the
    FLOPs: buffer, observed and buffer-scatter samples forwarded)."""
    seen = tail.num_outputs
    bunits = np.array([buffer_targets[c] for c in buffer.y], np.int64)
    if len(buffer) == 0 and len(observed) == 0:
        return None, {"buffer": 0, "observed": 0, "buffer_scatter": 0, "features": 0,
                      "classes": int(seen)}
    fb = head_features(tail, np.stack(buffer.latents)) if len(buffer) else None
    fo = head_features(tail, observed) if len(observed) else None
    d = (fo if fo is not None else fb).shape[1]
    counts = np.bincount(bunits, minlength=seen) if len(bunits) else np.zeros(seen, np.int64)
    # head_begin: the buffer's class means (sums in buffer order, then / count)
    means = np.zeros((seen, d), F32)
    for k in range(len(bunits)):
        means[bunits[k]] = (means[bunits[k]] + fb[k]).astype(F32)
    for c in range(seen):
        if counts[c]:
            means[c] = (means[c] / F32(counts[c])).astype(F32)
    # head_observe, sample by sample
    S = np.zeros((d, d), F32)
    sums = np.zeros((seen, d), F32)
    n_obs = np.zeros(seen, np.int64)
    for k in range(len(observed_units)):
        c = int(observed_units[k])
        z = (fo[k] - means[c]).astype(F32)
        sums[c] = (sums[c] + z).astype(F32)
        S = _add_outer(S, z)
        n_obs[c] += 1
    info = {"buffer": int(len(bunits)), "observed": int(len(observed_units)), "buffer_scatter": 0,
            "features": int(d), "classes": int(seen)}
    # head_fit 1: the observed classes about their own means, pooled, times classes / samples
    k_obs = 0
    for c in range(seen):
        if n_obs[c] == 0:
            continue
        v = (sums[c] / F32(n_obs[c])).astype(F32)
        S = fma(-sums[c][:, None], v[None, :], S)
        k_obs += 1
    if n_obs.sum() > 0:
        S = (S * (F32(k_obs) / F32(n_obs.sum()))).astype(F32)
    # 2: every other class with at least two buffer samples: its buffer scatter / its count
    others = [c for c in range(seen) if n_obs[c] == 0 and counts[c] >= 2]
    for k in range(len(bunits)):
        c = int(bunits[k])
        if c in others:
            z = (fb[k] - means[c]).astype(F32)
            S = _add_outer(S, z, F32(1) / F32(counts[c]))
            info["buffer_scatter"] += 1
    classes = k_obs + len(others)
    if classes == 0:
        return None, info
    # 3: the mean over the classes counted, shrunk toward its mean variance
    S = (S / F32(classes)).astype(F32)
    trace = F32(0)
    for i in range(d):
        trace = F32(trace + S[i, i])
    a = F32(shrinkage)
    target = F32(a * F32(trace / F32(d)))
    keep = F32(F32(1) - a)
    if not (np.isfinite(trace) and trace > 0):
        return None, info
    diag = fma(keep, np.diag(S), target)
    S = (keep * S).astype(F32)
    S[np.arange(d), np.arange(d)] = diag
    # 4: Cholesky in the lower triangle, column by column (each entry's fmaf chain over k in
    # increasing order, as the device's row-by-row loop)
    L = np.zeros((d, d), F32)
    for j in range(d):
        v = S[j:, j].astype(F32)
        for k in range(j):
            v = fma(-L[j:, k], L[j, k], v)
        if not v[0] > 0:
            return None, info
        L[j, j] = np.sqrt(v[0], dtype=F32)
        L[j + 1:, j] = (v[1:] / L[j, j]).astype(F32)
    # 5: w = S^-1 mean for every class (forward, then back substitution), bias -w.mean / 2
    V = np.zeros((seen, d), F32)
    for i in range(d):
        acc = means[:, i].copy()
        for k in range(i):
            acc = fma(-L[i, k], V[:, k], acc)
        V[:, i] = (acc / L[i, i]).astype(F32)
    for i in range(d - 1, -1, -1):
        acc = V[:, i].copy()
        for k in range(i + 1, d):
            acc = fma(-L[k, i], V[:, k], acc)
        V[:, i] = (acc / L[i, i]).astype(F32)
    dot = np.zeros(seen, F32)
    for i in range(d):
        dot = fma(V[:, i], means[:, i], dot)
    bias = (F32(-0.5) * dot).astype(F32)
    V[counts == 0] = 0
    bias[counts == 0] = 0
    return DeviceHead(V, bias), info


def head_stats_flops(info: dict, forward_per_sample: float) -> float:
    """The statistics pass's FLOPs: its forward passes (the buffer for the means, the observed
    samples, the buffer-scatter samples again) and the statistics and the solve."""
    from tinycil.learn.discriminant import head_fit_flops

    passes = info["buffer"] + info["observed"] + info["buffer_scatter"]
    return passes * forward_per_sample + head_fit_flops(
        info["features"], info["observed"], info["buffer"], info["buffer_scatter"], info["classes"])


# --------------------------------------------------------------------------------------------
# A whole device run
# --------------------------------------------------------------------------------------------
class RunInputs:
    """What a device run starts from, read from a prepared run folder, with backbone latents.

    train[t], test[t]: (int8 inputs, latents, class ids) of task t, in the data set's order.
    buffers[t]: (int8 inputs, latents, class ids) of task t's distilled samples.
    """

    def __init__(self, run_dir, progress: bool = False):
        from tinycil.datasets import load_dataset
        from tinycil.learn.models import split_model
        from tinycil.learn.prepare import backbone_path
        from tinycil.learn.quantize import QuantizedModel, quantize_inputs
        from tinycil.runfolder import RunFolder
        from tinycil.learn.tasks import task_subset

        self.run = RunFolder(run_dir)
        cfg = self.config = self.run.read_config()
        self.plan = self.run.read_plan()
        for key in ("task_classes", "tail_layers", "input_quantization", "latent_quantization"):
            if key not in cfg:
                raise SimulationError(f"{self.run.config_path} has no {key!r}: it was not written by "
                                      "`tinycil prepare`; prepare the run first")
        self.tasks = [list(t) for t in cfg["task_classes"]]
        self.known = int(cfg["known_tasks"])
        self.seed = int(cfg["seed"])
        if len(self.plan) != len(self.tasks):
            raise SimulationError(f"plan.json has {len(self.plan)} tasks, config.json {len(self.tasks)}")

        bpath = backbone_path(self.run)
        if not bpath.is_file():
            raise SimulationError(f"{bpath} is missing; run `tinycil prepare` for this run folder")
        iq, lq = cfg["input_quantization"], cfg["latent_quantization"]
        self.backbone = QuantizedModel(
            tflite_bytes=bpath.read_bytes(), input_scale=float(iq["scale"]),
            input_zero_point=int(iq["zero_point"]), output_scale=float(lq["scale"]),
            output_zero_point=int(lq["zero_point"]), input_shape=tuple(cfg["input_shape"]),
            output_shape=tuple(cfg["latent_shape"]))

        model = self.run.load_model()
        _, tail_model = split_model(model, int(cfg["tail_layers"]))
        self.tail = tail_from_keras(tail_model)

        ds = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"),
                          resize=tuple(cfg["resize"]) if cfg.get("resize") else None,
                          seed=self.seed, max_train=cfg.get("max_train"), max_test=cfg.get("max_test"))
        if list(ds.input_shape) != list(cfg["input_shape"]):
            raise SimulationError(f"the data set now gives samples of shape {ds.input_shape}, the run "
                                  f"was prepared for {tuple(cfg['input_shape'])}")
        scale, zp = self.backbone.input_scale, self.backbone.input_zero_point
        self.train, self.test, self.buffers = [], [], []
        for t, classes in enumerate(self.tasks):
            for part, store in (("train", self.train), ("test", self.test)):
                x, y = task_subset(getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}"), classes)
                if part == "train" and t < self.known:
                    store.append(None)  # learned on the host: never streamed
                    continue
                x8 = quantize_inputs(x, scale, zp)
                store.append((x8, self.latents(x8), y))
            buf = self.run.load_buffer(t)
            if "x_int8" not in buf:
                raise SimulationError(f"buffer of task {t} holds no int8 samples; re-run `tinycil prepare`")
            self.buffers.append((buf["x_int8"], self.latents(buf["x_int8"]), buf["y"]))

    def latents(self, x_int8: np.ndarray) -> np.ndarray:
        """The device's latent: the int8 backbone's output dequantised, (float)(q - zp) * scale."""
        from tinycil.learn.quantize import dequantize

        if len(x_int8) == 0:
            return np.zeros((0, *self.backbone.output_shape), F32)
        q = self.backbone.run(np.asarray(x_int8, np.int8))
        lat = dequantize(q, self.backbone.output_scale, self.backbone.output_zero_point)
        return lat.reshape(len(lat), -1)


def tail_from_keras(tail_model) -> "Tail | NetTail":
    """The trainable tail of a Keras model split by models.split_model: a Tail when it holds
    dense layers over a vector only (bit-exact with the device's kernels), a NetTail otherwise."""
    from tinycil.learn.models import ModelError, tail_layer_specs

    try:
        specs = tail_layer_specs(tail_model)
    except ModelError as exc:
        raise SimulationError(str(exc)) from None
    if any(s["op"] != "dense" or tuple(s["in_hw"]) != (1, 1) for s in specs):
        return NetTail(specs)
    dense = [l for l in tail_model.layers if type(l).__name__ == "Dense"]
    for i, layer in enumerate(dense):
        act = layer.activation.__name__
        want = "linear" if i == len(dense) - 1 else "relu"
        if act != want:
            raise SimulationError(f"tail layer {layer.name} has activation {act}; the device "
                                  f"runs {want} there")
    return Tail([l.get_weights()[0] for l in dense], [l.get_weights()[1] for l in dense])


def simulate_run(run_dir, progress: bool = False, echo=print, inputs: RunInputs | None = None) -> dict:
    """Run the device procedure on a prepared run folder; returns the RESULT (metrics.make_result).

    Rows of the accuracy matrix for the known tasks are the deployed model (int8 backbone, float
    tail) evaluated with the output units of the classes seen by then; rows from the first field
    task on follow the device procedure.
    """
    import time

    from tinycil.learn.metrics import make_result
    from tinycil.learn.prng import Prng

    started = time.perf_counter()
    inp = inputs or RunInputs(run_dir, progress=progress)
    cfg, plan, tasks = inp.config, inp.plan, inp.tasks
    tr = cfg["training"]
    T = len(tasks)
    order = plan[-1]["seen_classes"]  # output unit k <-> class order[k]
    unit_of = {int(c): k for k, c in enumerate(order)}

    def units(y):
        return np.array([unit_of[int(c)] for c in y], dtype=np.int64)

    from tinycil.learn.train import device_ingredients

    ing = device_ingredients(tr)
    tail = inp.tail.copy()
    buffer = ReplayBuffer()
    for t in range(inp.known):
        x8, lat, y = inp.buffers[t]
        buffer.add(x8, y, lat)

    R = [[None] * T for _ in range(T)]
    for i in range(inp.known):
        n_active = plan[i]["classes_seen"]
        for j in range(i + 1):
            _, lat, y = inp.test[j]
            R[i][j] = evaluate_units(tail, lat, units(y), n_active)
    flops = float(cfg.get("host", {}).get("train_flops", 0.0))

    for t in range(inp.known, T):
        entry = plan[t]
        prng = Prng.for_task(inp.seed, t)
        tail.grow(entry["tail_widths"], entry["outputs"], prng)  # BEGIN_TASK
        task_units = [unit_of[int(c)] for c in tasks[t]]
        _, lat, y = inp.train[t]
        stats = train_task(tail, lat, units(y), buffer, unit_of, prng, seed=inp.seed, task=t,
                           epochs=int(tr["epochs"]), batch_new=int(tr["batch_new"]),
                           batch_replay=int(tr["batch_replay"]), lr=float(tr["lr"]),
                           momentum=float(tr["momentum"]), clip_norm=float(tr["clip_norm"]),
                           task_lo=min(task_units) if ing["asymmetric_ce"] else 0,
                           replay_shift=ing["replay_shift"])
        if not np.isfinite(stats["last_loss"]):
            raise SimulationError(f"training diverged on task {t}; lower the learning rate")
        per_sample = float(entry["device_flops_per_sample"]["total"])
        flops += stats["samples"] * per_sample
        x8, blat, by = inp.buffers[t]
        buffer.add(x8, by, blat)  # after the task
        ended = end_task(tail, buffer, unit_of, prng, batch_replay=int(tr["batch_replay"]),
                         lr=float(tr["lr"]), momentum=float(tr["momentum"]),
                         clip_norm=float(tr["clip_norm"]), balance_steps=ing["balance_steps"],
                         balance_lr_scale=ing["balance_lr_scale"],
                         replay_shift=ing["replay_shift"])
        flops += ended["samples"] * per_sample
        head = None
        if ing["discriminant_weight"] > 0:
            # the head's statistics: the task's samples once more, in the data set's order
            head, info = fit_head_device(tail, buffer, unit_of, lat, units(y),
                                         ing["discriminant_shrinkage"])
            fwd = entry["device_flops_per_sample"]
            flops += head_stats_flops(info, float(fwd["backbone_fwd"]) + float(fwd["tail_fwd"]))
        for j in range(t + 1):
            _, tlat, ty = inp.test[j]
            R[t][j] = evaluate_units(tail, tlat, units(ty), tail.num_outputs, head,
                                     ing["discriminant_weight"])
        if progress:
            row = " ".join(f"{a:.3f}" for a in R[t][:t + 1])
            echo(f"task {t}: {stats['steps']} steps, loss {stats['last_loss']:.4f}, accuracy {row}")

    buf = cfg["buffer"]
    result = make_result(R, train_flops=flops, buffer_samples=buf["samples"],
                         buffer_bytes=buf["bytes"], buffer_fraction=buf["fraction"])
    if progress:
        echo(f"simulated {T - inp.known} device task(s) in {time.perf_counter() - started:.1f} s")
    return result


def evaluate_units(tail: Tail, latents: np.ndarray, targets: np.ndarray, n_active: int,
                   head: DeviceHead | None = None, head_weight: float = 0.0) -> float:
    """Accuracy with the prediction restricted to the first n_active output units (the head's
    term added when there is one, as the device's apply_head)."""
    if len(targets) == 0:
        raise SimulationError("a task has no test samples")
    acts = tail.forward(latents)  # one pass: the logits and, for the head, its features
    z = np.asarray(acts[-1]).reshape(len(latents), -1)
    if head is not None and head_weight > 0:
        z = head.apply(head_features(tail, latents, acts), z, head_weight)
    pred = np.argmax(z[:, :n_active], axis=1)
    return float(np.mean(pred == targets))


def record_simulation(run_dir, progress: bool = False, echo=print) -> dict:
    """simulate_run, then store its RESULT as "method" in the run's results.json (the host
    reference of the device run), keeping whatever else results.json holds (e.g. "device")."""
    from tinycil.runfolder import RunFolder

    result = simulate_run(run_dir, progress=progress, echo=echo)
    run = RunFolder(run_dir)
    cfg = run.read_config()
    results = run.read_results() if run.results_path.is_file() else {}
    results.update({"dataset": cfg["dataset"], "board": cfg.get("board"), "seed": cfg["seed"],
                    "tasks": cfg["task_classes"], "known_tasks": cfg["known_tasks"],
                    "method": result})
    run.write_results(results)
    return result
