"""Where to cut a model into the frozen int8 prefix and the float32 part the device trains.

`--trainable N` trains the last N weight layers (with the pooling between them); `--trainable
auto` asks the memory plan (tinycil.deploy.memplan) for the most trainable layers whose arena, at
the final grown size, fits the board's RAM together with the replay buffer, the protocol buffers,
the rest of the firmware's static data and the stack. Training more layers costs RAM three times
per parameter (weights, gradient accumulators, momentum) plus one sample's activation maps, so a
board with less RAM gets a smaller trainable part.

The frozen prefix never grows on the device, so it is built at the width the model reaches at
the end (`choose_sized_cut`): at the policy's full widths when that fits, else with the whole
model scaled down step by step (WIDTH_SCALES); when no step fits, the prefix keeps the known
tasks' narrow widths.
"""

from __future__ import annotations

import numpy as np

# Samples that calibrate the throw-away int8 conversion of a candidate prefix: its layer shapes
# and parameter counts are what the plan needs, not its quantisation ranges.
_CALIBRATION = 4


def model_footprint(model, plan: list[dict], sizing: dict, tail_layers: int):
    """The export's Footprint of a run from its untrained model (built at the known tasks'
    widths), growth plan and buffer sizes: the frozen prefix read back from an int8 conversion,
    the trainable layers at the plan's channels."""
    from tinycil.deploy import memplan
    from tinycil.deploy.export import (TAIL_OPS, backbone_table, kernel_scratch_bytes,
                                       scratch_bytes, tail_channels)
    from tinycil.learn.models import (layer_channels, split_model, tail_layer_specs, weight_kinds,
                                      weight_layers)
    from tinycil.learn.quantize import quantize_backbone

    known = int(sizing["known"])
    backbone, tail = split_model(model, tail_layers)
    rng = np.random.default_rng(0)
    shape = tuple(int(d) for d in backbone.input_shape[1:])
    table = backbone_table(quantize_backbone(
        backbone, rng.standard_normal((_CALIBRATION, *shape)).astype(np.float32)).layers())
    # As ExportModel.footprint counts them: int8 weights, int32 biases, multipliers and shifts,
    # and a table entry per layer.
    backbone_bytes = 0
    for e in table:
        for key, size in (("weights", 1), ("bias", 4), ("multiplier", 4), ("shift", 4)):
            if e[key] is not None:
                backbone_bytes += size * int(np.asarray(e[key]).size)
        backbone_bytes += 64
    latent = int(np.prod(tail.input_shape[1:]))
    specs = tail_layer_specs(tail)
    kinds = weight_kinds(model)  # a family's, or a user's own model's
    n_weight = len(weight_layers(model))

    def channels(step: dict) -> list[int]:
        per_layer = layer_channels(kinds, step["widths"], int(step["outputs"]))
        return tail_channels(specs, per_layer[n_weight - tail_layers:])

    final, init = channels(plan[-1]), channels(plan[known - 1])
    first_in = int(specs[0]["in_c"])
    pairs = [(first_in if l == 0 else final[l - 1], final[l]) for l in range(len(specs))]
    pairs_init = [(first_in if l == 0 else init[l - 1], init[l]) for l in range(len(specs))]
    tail_specs = tuple(memplan.TailSpec(
        TAIL_OPS[s["op"]], tuple(s["in_hw"]), tuple(s["out_hw"]), tuple(s["kernel"]),
        i, o, ii, oi) for s, (i, o), (ii, oi) in zip(specs, pairs, pairs_init))
    per_task = [int(n) for n in sizing["buffer_samples_per_task"]]
    return memplan.Footprint(
        input_size=int(np.prod(sizing["input_shape"])), latent_size=latent, tail=tuple(pairs),
        tail_init=tuple(pairs_init),
        max_batch=int(sizing["batch_new"]) + int(sizing["batch_replay"]),
        scratch_bytes=scratch_bytes(table), kernel_scratch_bytes=kernel_scratch_bytes(table),
        buffer_flash_count=sum(per_task[:known]), buffer_ram_capacity=sum(per_task[known:]),
        backbone_bytes=backbone_bytes, plan_steps=len(plan),
        buffer_sample_size=latent if sizing.get("replay_store") == "latents" else None,
        tail_specs=tail_specs)


def ram_arithmetic(fp, mp) -> str:
    """The plan's RAM in words: 12 bytes per trainable parameter (weight, gradient sum,
    momentum), one sample's activations, the replay area, the fixed parts."""
    params = sum(t.weights() + t.biases() for t in fp.specs)
    r = mp.ram
    fixed = r["protocol_buffers"] + r["firmware_static"] + r["stack"]
    return (f"{params:,} trainable parameters x 12 B (weight, gradient sum, momentum) "
            f"{r['tail_parameters'] / 1024:.1f} KB + one sample's activations "
            f"{r['activations'] / 1024:.1f} KB + replay area {r['replay_ram_area'] / 1024:.1f} "
            f"KB + backbone scratch {r['backbone_scratch'] / 1024:.1f} KB + protocol, firmware "
            f"and stack {fixed / 1024:.1f} KB")


def choose_trainable(board, family: str, input_shape, num_classes: int, plan_of, sizing: dict,
                     user_model=None) -> tuple[int, str]:
    """The most trainable weight layers that fit `board`, and a one-line reason.

    `plan_of(n)` gives the growth plan when the last n weight layers train. Every candidate,
    from the whole model down to the logits alone, is planned as the export would plan it; the
    first that fits wins. `user_model` (a tinycil.learn.usermodel.UserModel, family "user") is
    a user's own Keras model: its layers, at the known tasks' widths, are the candidates' model.
    """
    from tinycil.deploy import memplan
    from tinycil.learn.models import build_model, weight_layer_count

    known = int(sizing["known"])
    total = user_model.n_weight if user_model is not None else weight_layer_count(family)
    tried = []
    for n in range(total, 0, -1):
        plan = plan_of(n)
        if user_model is not None:
            model = user_model.model(int(plan[known - 1]["outputs"]))
        else:
            model = build_model(family, input_shape, int(plan[known - 1]["outputs"]),
                                plan[known - 1]["widths"])
        fp = model_footprint(model, plan, sizing, n)
        mp = memplan.plan_memory(fp, board)
        if mp.fits:
            reason = (f"trainable layers: {n} of {total} (auto: the most "
                      f"whose arena at the final size fits {board.id}: RAM {mp.ram_used / 1024:.1f} "
                      f"of {mp.ram_total / 1024:.0f} KB, arena {memplan.arena_bytes(fp) / 1024:.1f} "
                      f"KB")
            if tried:
                m, used, parts = tried[-1]
                reason += f"; {m} would need {used / 1024:.1f} KB: {parts}"
            return n, reason + ")"
        tried.append((n, mp.ram_used, ram_arithmetic(fp, mp)))
    # The logits alone (the last candidate) do not fit: say which resource, RAM or flash (a big
    # frozen prefix fills the flash whatever the cut), and only advice that applies to the model.
    raise memplan.MemoryPlanError(
        f"not even the logits alone fit {board.id}: " + " ".join(memplan.shortfalls(
            mp, board, user_model.kind if user_model is not None else None, fewer_layers=False)))


# Width factors tried, widest first, for a model whose frozen prefix is built at its final
# width: sixteenths, so the model takes nearly all the RAM there is (Fashion-MNIST 14x14 on a
# 320 KB board: x 11/16 fits, x 3/4 does not). Below one half the model loses more than a
# narrow prefix costs.
WIDTH_SCALES = tuple(k / 16 for k in range(16, 7, -1))


def choose_sized_cut(board, family: str, input_shape, tail_layers: int | None, plan_of,
                     sizing: dict) -> tuple[int, float | None, str]:
    """(trainable layers, width scale, one-line reason) of a family's model on `board`.

    The frozen prefix never grows on the device, so it is built at the width the model reaches
    at the end; the whole model is scaled down (WIDTH_SCALES) until it fits. Candidates: the
    most trainable layers first (or only `tail_layers` when given), each at its widest scale
    that fits. When no candidate fits at any scale, the prefix keeps the known tasks' narrow
    widths (scale None) with the most trainable layers that fit so. `plan_of(n, s)` gives the
    growth plan (prepare.plan_for_device's prefix_scale s, None for the known widths).
    """
    from tinycil.deploy import memplan
    from tinycil.learn.models import build_model, weight_layer_count

    known = int(sizing["known"])
    total = weight_layer_count(family)
    candidates = [tail_layers] if tail_layers is not None else list(range(total, 0, -1))

    def planned(n, s):
        plan = plan_of(n, s)
        model = build_model(family, input_shape, int(plan[known - 1]["outputs"]),
                            plan[known - 1]["widths"])
        fp = model_footprint(model, plan, sizing, n)
        return plan, fp, memplan.plan_memory(fp, board)

    def ram(mp) -> str:
        return f"RAM {mp.ram_used / 1024:.1f} of {mp.ram_total / 1024:.0f} KB"

    missed = []  # (n, scale, RAM used, arithmetic) of what did not fit
    for n in candidates:
        for s in WIDTH_SCALES:
            plan, fp, mp = planned(n, s)
            if not mp.fits:
                missed.append((n, s, mp.ram_used, ram_arithmetic(fp, mp)))
                continue
            why = [f"{ram(mp)}, arena {memplan.arena_bytes(fp) / 1024:.1f} KB"]
            wider = [m for m in missed if m[0] == n]
            if wider:
                why.append(f"x {wider[-1][1]:g} would need {wider[-1][2] / 1024:.1f} KB")
            more = [m for m in missed if m[0] == n + 1 and m[1] == WIDTH_SCALES[-1]]
            if more:
                why.append(f"{n + 1} trainable layers would need {more[0][2] / 1024:.1f} KB even "
                           f"at x {WIDTH_SCALES[-1]:g}: {more[0][3]}")
            rule = ("the widest model that fits" if tail_layers is not None else
                    "the most trainable layers that fit, at the widest model that fits")
            prefix = ("every layer trains" if n == total
                      else "the frozen prefix at its final width")
            return n, s, (f"trainable layers: {n} of {total}, model widths x {s:g} "
                          f"{plan[-1]['widths']}, {prefix} (auto: "
                          f"{rule} {board.id}, x 1 down to x {WIDTH_SCALES[-1]:g}: "
                          + "; ".join(why) + ")")
    for n in candidates:
        plan, fp, mp = planned(n, None)
        if mp.fits or tail_layers is not None:
            return n, None, (f"trainable layers: {n} of {total}, the frozen prefix at the known "
                             f"tasks' widths {plan[-1]['widths']} (at its final width the model "
                             f"does not fit {board.id} even at x {WIDTH_SCALES[-1]:g}: "
                             f"{missed[-1][2] / 1024:.1f} KB; so: {ram(mp)})")
    raise memplan.MemoryPlanError(
        f"not even the logits alone fit {board.id}: "
        + " ".join(memplan.shortfalls(mp, board, fewer_layers=False)))


def cut_chooser(board):
    """prepare_run's `choose_cut` for `board` (a Board)."""
    def choose(family, input_shape, num_classes, plan_of, sizing, user_model=None):
        return choose_trainable(board, family, input_shape, num_classes, plan_of, sizing,
                                user_model=user_model)
    return choose


def sized_cut_chooser(board):
    """prepare_run's `choose_sized_cut` for `board` (a Board)."""
    def choose(family, input_shape, tail_layers, plan_of, sizing):
        return choose_sized_cut(board, family, input_shape, tail_layers, plan_of, sizing)
    return choose
