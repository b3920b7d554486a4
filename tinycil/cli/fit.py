"""Does a model fit the board named at prepare? Asked before the model is trained.

`tinycil prepare --board B` and `tinycil run --board B` pass `board_fit_check(B)` to prepare_run,
which calls it with the freshly built (untrained) model. The memory plan is the export's own
(tinycil.deploy.memplan, fed with the export's layer table of the int8 backbone), so what is
refused here would be refused at export, only minutes of training and distillation earlier. The
check lives in the command line because learn/ may not import deploy/ (tests/test_layout.py).
"""

from __future__ import annotations

import numpy as np

# Samples that calibrate the throw-away int8 conversion: its layer shapes and parameter counts
# are what the plan needs, not its quantisation ranges.
_CALIBRATION = 4


def model_footprint(model, plan: list[dict], sizing: dict):
    """The memory plan's Footprint of the run prepare is about to train, from its untrained
    model, growth plan and buffer sizes (see prepare_run's `check_model`)."""
    from tinycil.deploy import memplan
    from tinycil.deploy.export import backbone_table, kernel_scratch_bytes, scratch_bytes
    from tinycil.learn.models import split_model
    from tinycil.learn.quantize import quantize_backbone, read_layers

    tail_layers, known = int(sizing["tail_layers"]), int(sizing["known"])
    backbone, _ = split_model(model, tail_layers)
    rng = np.random.default_rng(0)
    shape = tuple(int(d) for d in backbone.input_shape[1:])
    table = backbone_table(read_layers(quantize_backbone(
        backbone, rng.standard_normal((_CALIBRATION, *shape)).astype(np.float32)).tflite_bytes))
    # As ExportModel.footprint counts them: int8 weights, int32 biases, multipliers and shifts,
    # and a table entry per layer.
    backbone_bytes = 0
    for e in table:
        for key, size in (("weights", 1), ("bias", 4), ("multiplier", 4), ("shift", 4)):
            if e[key] is not None:
                backbone_bytes += size * int(np.asarray(e[key]).size)
        backbone_bytes += 64
    latent = int(np.prod(backbone.output_shape[1:]))

    def tail_pairs(step: dict) -> tuple[tuple[int, int], ...]:
        hidden = [int(w) for w in step.get("tail_widths") or []][-(tail_layers - 1):] \
            if tail_layers > 1 else []
        sizes = [latent] + hidden + [int(step["outputs"])]
        return tuple(zip(sizes[:-1], sizes[1:]))

    per_task = [int(n) for n in sizing["buffer_samples_per_task"]]
    input_size = int(np.prod(sizing["input_shape"]))
    return memplan.Footprint(
        input_size=input_size, latent_size=latent, tail=tail_pairs(plan[-1]),
        tail_init=tail_pairs(plan[known - 1]),
        max_batch=int(sizing["batch_new"]) + int(sizing["batch_replay"]),
        scratch_bytes=scratch_bytes(table), kernel_scratch_bytes=kernel_scratch_bytes(table),
        buffer_flash_count=sum(per_task[:known]), buffer_ram_capacity=sum(per_task[known:]),
        backbone_bytes=backbone_bytes, plan_steps=len(plan),
        buffer_sample_size=latent if sizing.get("replay_store") == "latents" else None)


def board_fit_check(board):
    """prepare_run's `check_model` for `board` (a Board): raises MemoryPlanError, with what to
    change, when the run's model at its final grown size cannot fit the board."""
    from tinycil.deploy import memplan

    def check(model, plan, sizing):
        memplan.check_fits(model_footprint(model, plan, sizing), board,
                           what=f"the {model.name} model this run would train")
    return check
