"""Does a model fit the board named at prepare? Asked before the model is trained.

`tinycil prepare --board B` and `tinycil run --board B` pass `board_fit_check(B)` to prepare_run,
which calls it with the freshly built (untrained) model. The memory plan is the export's own
(tinycil.deploy.memplan, fed with the export's layer table of the int8 backbone), so what is
refused here would be refused at export, only minutes of training and distillation earlier. The
check lives in the command line because learn/ may not import deploy/ (tests/test_layout.py).
"""

from __future__ import annotations


def model_footprint(model, plan: list[dict], sizing: dict):
    """The memory plan's Footprint of the run prepare is about to train, from its untrained
    model, growth plan and buffer sizes (see prepare_run's `check_model`): the trainable part
    may hold convolutions, so the cut's own planner (tinycil.deploy.cut) computes it."""
    from tinycil.deploy.cut import model_footprint as footprint_at_cut

    return footprint_at_cut(model, plan, sizing, int(sizing["tail_layers"]))


def board_fit_check(board):
    """prepare_run's `check_model` for `board` (a Board): raises MemoryPlanError, with what to
    change, when the run's model at its final grown size cannot fit the board."""
    from tinycil.deploy import memplan

    def check(model, plan, sizing):
        own = sizing.get("own_model")  # "keras" or "tflite" for prepare --model
        memplan.check_fits(model_footprint(model, plan, sizing), board,
                           what=("your model as this run would train it" if own else
                                 f"the {model.name} model this run would train"), own_model=own)
    return check
