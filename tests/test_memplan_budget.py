"""The memory plan refuses a model that does not fit a board, saying by how much and what to shrink."""

from __future__ import annotations

import pytest

from tinycil.deploy.boards import load_board
from tinycil.deploy.memplan import Footprint, MemoryPlanError, arena_bytes, arena_layout, check_fits


def footprint(width: int, ram_capacity: int = 50) -> Footprint:
    return Footprint(input_size=196, latent_size=64, tail=((64, width), (width, 10)),
                     tail_init=((64, 16), (16, 2)), max_batch=64, scratch_bytes=3200,
                     kernel_scratch_bytes=1024, buffer_flash_count=24,
                     buffer_ram_capacity=ram_capacity, backbone_bytes=30_000, plan_steps=5)


def test_small_model_fits_both_boards():
    for board in ("nucleo_f746zg", "mps2_an500"):
        plan = check_fits(footprint(64), load_board(board))
        assert plan.fits and plan.ram_used < plan.ram_total
        assert plan.ram["stack"] == load_board(board).stack_bytes


def test_every_board_plans_the_stack_the_linker_reserves():
    """The linker script's stack reserve is the plan's: a plan that fits must link."""
    import re
    from pathlib import Path

    from tinycil.deploy.boards import board_ids

    root = Path(__file__).resolve().parents[1]
    script = (root / "firmware/platform/ldscripts/tinycil_sections.ld").read_text()
    kb = int(re.search(r"__stack_size\s*=.*:\s*(\d+)K;", script).group(1))
    for board in board_ids():
        assert load_board(board).stack_bytes == kb * 1024, board


def test_huge_tail_is_refused_with_the_overshoot_and_what_to_shrink():
    board = load_board("mps2_an500")
    fp = footprint(4000)
    with pytest.raises(MemoryPlanError) as err:
        check_fits(fp, board, "run big")
    msg = str(err.value)
    from tinycil.deploy.memplan import plan_memory
    over = plan_memory(fp, board).ram_used - board.ram_bytes
    assert f"{over} bytes too many" in msg and "run big does not fit mps2_an500" in msg
    for hint in ("tail width", "buffer fraction", "input size", "trainable layers"):
        assert hint in msg


def test_large_replay_area_is_refused():
    with pytest.raises(MemoryPlanError, match="replay ram area"):
        check_fits(footprint(32, ram_capacity=2000), load_board("nucleo_f746zg"))


def test_layout_is_aligned_and_ordered():
    layout = arena_layout(footprint(33))
    ends = 0
    for name, start, size in layout:
        assert start % 16 == 0 and start >= ends
        ends = start + size
    assert arena_bytes(footprint(33)) >= ends
    # the tail is planned at its final size: weights, gradients and momentum
    sizes = {name: size for name, _, size in layout}
    assert sizes["tail0.weights"] == sizes["tail0.grad_weights"] == sizes["tail0.momentum_weights"] == 4 * 64 * 33


def test_persisted_state_sizes_are_the_runtimes():
    """The plan sizes the flash slots of the learned state with the runtime's own layout."""
    import re
    from pathlib import Path

    from tinycil.deploy import memplan

    header = (Path(__file__).resolve().parents[1] / "firmware/lib/runtime/tc_runtime.h").read_text()
    defines = dict(re.findall(r"#define (TC_RT_STATE_\w+) (\d+)", header))
    assert int(defines["TC_RT_STATE_FIXED_BYTES"]) == memplan.PERSIST_STATE_FIXED
    assert int(defines["TC_RT_STATE_LAYER_BYTES"]) == memplan.PERSIST_STATE_PER_LAYER
    assert int(defines["TC_RT_STATE_HEAD_BYTES"]) == memplan.PERSIST_STATE_HEAD
