"""Model size adaption: how wide the model is for the classes seen so far, and how it grows.

The model starts narrow and widens when a task brings new classes. Growth is function-preserving
(see ``grow_model``), so the predictions on the classes already learned do not change at the instant
of growth; the new units start learning from the next step on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tinycil.learn.models import DEPTHWISE_TYPES, WEIGHT_LAYER_TYPES, build_model, model_family

SCHEDULES = ("power", "linear", "fixed")


@dataclass(frozen=True)
class WidthPolicy:
    """Hidden widths as a function of the fraction of classes seen so far.

    With r = classes_seen / num_classes in (0, 1], every hidden width is
        ceil(full * (min_fraction + (1 - min_fraction) * r ** power))      (schedule "power")
    "linear" is power 1; "fixed" is always the full width (the fixed-size baseline).

    Why a power > 1 by default: the cost of a layer between two hidden layers grows with the
    square of the width, and a width that reaches full size only when the last classes arrive
    spends the FLOPs where they are needed. With 5 equal tasks, power 3 and min_fraction 0.25 the
    adaptive model's training FLOPs (``flops_ratio``) are 38% of the full-size model's for cnn2d,
    41% for cnn1d and dscnn (the paper's yardstick: 43%); the mlp, whose cost is dominated by its
    input layer (linear in the width), reaches 46-52%. Linear growth (power 1) gives 57-65%.
    """

    full_widths: tuple[int, ...]
    min_fraction: float = 0.25
    schedule: str = "power"
    power: float = 3.0

    def __post_init__(self):
        object.__setattr__(self, "full_widths", tuple(int(w) for w in self.full_widths))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown width schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0.0 < self.min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in (0, 1], got {self.min_fraction}")
        if self.power <= 0:
            raise ValueError(f"power must be positive, got {self.power}")

    def fraction(self, classes_seen: int, num_classes: int) -> float:
        if not 1 <= classes_seen <= num_classes:
            raise ValueError(f"classes_seen must be in 1..{num_classes}, got {classes_seen}")
        if self.schedule == "fixed":
            return 1.0
        r = classes_seen / num_classes
        p = 1.0 if self.schedule == "linear" else self.power
        return self.min_fraction + (1.0 - self.min_fraction) * r ** p

    def widths(self, classes_seen: int, num_classes: int) -> list[int]:
        f = self.fraction(classes_seen, num_classes)
        # A small epsilon keeps e.g. 0.5 * 32 from rounding up to 17 through float error.
        return [max(1, min(w, math.ceil(w * f - 1e-9))) for w in self.full_widths]

    def scaled(self, factor: float) -> WidthPolicy:
        """The same schedule with every full width times `factor` (at least 1 unit each): below 1
        a smaller model for a board with less RAM; above 1 a wider one (the host study asks what
        spare capacity changes)."""
        if not factor > 0.0:
            raise ValueError(f"a width factor must be above 0, got {factor}")
        full = tuple(max(1, int(round(w * factor))) for w in self.full_widths)
        return WidthPolicy(full, self.min_fraction, self.schedule, self.power)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["full_widths"] = list(self.full_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WidthPolicy:
        return cls(full_widths=tuple(d["full_widths"]), min_fraction=d.get("min_fraction", 0.25),
                   schedule=d.get("schedule", "power"), power=d.get("power", 3.0))


def growth_plan(policy: WidthPolicy, tasks: Sequence[Sequence[int]], num_classes: int) -> list[dict]:
    """Per task: the classes seen after it and the widths the model has while learning it."""
    plan, seen = [], 0
    for i, task in enumerate(tasks):
        seen += len(task)
        plan.append({"task": i, "classes": [int(c) for c in task], "classes_seen": seen,
                     "widths": policy.widths(seen, num_classes)})
    return plan


def grow_model(model, new_widths: Sequence[int], new_num_classes: int, seed: int = 0):
    """A wider copy of ``model`` that computes the same logits for the classes it already had.

    Weights of the old units are copied. Every new hidden unit (dense unit or conv output channel)
    gets random incoming weights (He-normal: std = sqrt(2 / fan_in), fan_in counted in the grown
    layer) and a zero bias; the weights from new units into OLD units of the next layer are zero,
    so old units see exactly what they saw before. New output rows (new classes) get zero weights
    and a zero bias. A depthwise convolution's new channels get a random kernel: their output only
    feeds new channels and zero weights of the following pointwise layer. Widths may not shrink.
    """
    import keras  # noqa: F401  (ensures the backend is loaded before weights are set)

    family = model_family(model)
    input_shape = tuple(int(s) for s in model.input_shape[1:])
    new = build_model(family, input_shape, new_num_classes, new_widths)
    rng = np.random.default_rng(seed)
    old_layers = [l for l in model.layers if type(l).__name__ in WEIGHT_LAYER_TYPES]
    new_layers = [l for l in new.layers if type(l).__name__ in WEIGHT_LAYER_TYPES]
    prev_old_ch = prev_new_ch = None
    for old, grown in zip(old_layers, new_layers):
        kind = type(old).__name__
        k_old, b_old = (w.numpy() for w in old.weights)
        k_shape = tuple(int(s) for s in grown.weights[0].shape)
        is_logits = grown is new_layers[-1]
        if kind in DEPTHWISE_TYPES:
            # kernel (kh, kw, C, 1) or (k, C, 1): channel c keeps its kernel; new channels get a
            # random one.
            c_old, c_new = k_old.shape[-2], k_shape[-2]
            _check_not_shrinking(old.name, c_old, c_new)
            fan_in = int(np.prod(k_shape[:-2]))
            k = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=k_shape).astype(np.float32)
            k[..., :c_old, :] = k_old
            b = np.zeros(k_shape[-2], np.float32)
            b[:c_old] = b_old
            grown.set_weights([k, b])
            continue
        out_old, out_new = k_old.shape[-1], k_shape[-1]
        _check_not_shrinking(old.name, out_old, out_new)
        if kind == "Dense" and prev_old_ch is not None:
            # Dense after a conv map (Flatten or global pooling): inputs are (position, channel)
            # pairs, channels fastest; view the kernel as (positions, channels, units) so that the
            # channel axis is padded (1 position after global pooling).
            positions = k_old.shape[0] // prev_old_ch
            k_old = k_old.reshape(positions, prev_old_ch, out_old)
            k_shape3 = (positions, prev_new_ch, out_new)
            prev_old_ch = prev_new_ch = None
        else:
            k_shape3 = None
        shape = k_shape3 if k_shape3 is not None else k_shape
        fan_in = int(np.prod(k_shape[:-1]))
        if is_logits:
            k = np.zeros(shape, np.float32)
        else:
            k = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        in_old = k_old.shape[-2]
        # Outgoing weights of new input units into old units: zero.
        k[..., in_old:, :out_old] = 0.0
        k[..., :in_old, :out_old] = k_old
        b = np.zeros(out_new, np.float32)
        b[:out_old] = b_old
        grown.set_weights([k.reshape(k_shape), b])
        if kind != "Dense":
            prev_old_ch, prev_new_ch = out_old, out_new
    return new


def _check_not_shrinking(name: str, old: int, new: int) -> None:
    if new < old:
        raise ValueError(f"layer {name} would shrink from {old} to {new} units; growth only widens")


def flops_ratio(family: str, input_shape, num_classes: int, n_tasks: int, policy: WidthPolicy) -> float:
    """Training FLOPs of the adaptive model over ``n_tasks`` equal tasks / those of the full model.

    Equal tasks process equal sample counts, so the ratio is the mean per-sample training cost
    over the tasks' widths divided by the full-width cost (classes grow with the tasks in both).
    """
    from tinycil.learn.models import train_flops_per_sample

    per = num_classes // n_tasks
    adaptive = fixed = 0
    for i in range(n_tasks):
        seen = per * (i + 1)
        adaptive += train_flops_per_sample(build_model(family, input_shape, seen, policy.widths(seen, num_classes)))
        fixed += train_flops_per_sample(build_model(family, input_shape, seen, list(policy.full_widths)))
    return adaptive / fixed
