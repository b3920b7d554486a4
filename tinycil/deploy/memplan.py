"""Memory plan of an exported model against a board's budget, computed before anything is built.

RAM: the runtime's one static arena, sized for the FINAL grown tail, the backbone's ping-pong
activation buffers and the convolution's working memory, the RAM replay area for the samples of the
tasks learnt in the field; plus the protocol buffers, the rest of the firmware's static data and
the stack reserve of the board.

The arithmetic of training memory (gradients accumulate sample by sample, tc_runtime.cpp):
  tail parameters  3 x 4 x (weights + biases) at the final size: the weights, their gradient
                   accumulators and their momentum;
  activations      4 x (every tail layer's output map of ONE sample + the latent of one sample)
                   + 4 x the largest map of each of the backward pass's two ping-pong buffers
                   (gradients flowing back; one holds the logits' gradient and the input
                   gradients of every other layer below, the other the rest); every layer's
                   backward pass adds one sample's weight gradient straight into the
                   accumulators (the batch's first sample overwrites them), so no sample's
                   gradient is buffered; and a new sample runs forward and backward as it
                   arrives, so nothing of the mini-batch but the gradient sums waits: no part of
                   RAM grows with the batch.
The cut's reason (tinycil.deploy.cut) prints this sum for the first trainable part that does not
fit.
Flash: the code, the backbone's int8 parameters, the tail's initial weights, the growth plan and
the known tasks' int8 buffer.

`arena_layout` mirrors the runtime's carving (firmware/lib/runtime/tc_runtime.cpp, `carve`) block
for block: the arena size the export writes (TC_ARENA_BYTES) comes from here, and the runtime
refuses to start if its own carving needs more. The linker stays the final judge of the whole
image ("region `RAM' overflowed").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinycil import protocol_spec

ARENA_ALIGN = 16

# Code and constant data of the firmware without a model (start-up, board support, protocol,
# kernels, runtime, learner, persistence): about 96 KB measured with benchmarks/memory.py (the
# product build's linked flash minus the model's data, the same for all three demo models; the
# discriminant head's statistics, fit and protocol frames added 4 KB). About 36 KB of it is the
# one-channel 3x3 convolution's unrolled filter-by-filter paths, which halve the first layer's
# training cost. A margin of 4 KB keeps the plan above the linker's figure while the handlers
# grow; tests/test_export_digits.py holds the plan to that.
CODE_FLASH_ESTIMATE = 100 * 1024
# Static RAM of the firmware outside the arena and the protocol buffers (board state, serial
# handlers' frame and sample buffers, the reply cache, runtime bookkeeping, buffer class table):
# the linked RAM of the device runs' builds (fashion-mnist, mnist5k) exceeded the plan without it
# by about 13.5 KB; a plan that fits must never be a build that overflows.
FIRMWARE_STATIC_RAM = 14 * 1024
# The serial path's buffers: the interrupt-driven receive ring, one decoded and one encoded frame
# each way, and the samples of a PACKED frame unpacked.
PROTOCOL_RAM = (protocol_spec.DEVICE_RX_RING + 2 * protocol_spec.MAX_ENCODED_FRAME
                + 2 * protocol_spec.MAX_RAW_FRAME + protocol_spec.PACKED_SCRATCH)


# Persistence of the learned state (firmware built with -DTC_PERSIST=1, lib/persist): two slots,
# each one erasable flash sector, taken out of the code region by the board's linker script. A slot
# holds a 32-byte header and the runtime's serialised state (tc_runtime.h: 56 fixed bytes, then per
# tail layer 4 bytes + its float32 weights and biases at the current width, then the RAM replay
# area's samples and labels).
PERSIST_SLOT_HEADER = 32
PERSIST_STATE_FIXED = 64  # TC_RT_STATE_FIXED_BYTES
PERSIST_STATE_PER_LAYER = 4
PERSIST_STATE_HEAD = 4  # TC_RT_STATE_HEAD_BYTES


class MemoryPlanError(ValueError):
    """The model does not fit the board; the message says by how much and what to shrink."""


# tc_op_kind of tc_model.h for the trainable layers.
OP_CONV2D, OP_DEPTHWISE, OP_DENSE, OP_MAX_POOL, OP_AVG_POOL = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class TailSpec:
    """One trainable layer as the runtime holds it (tc_tail_layer): channels grow, maps do not."""

    op: int
    in_hw: tuple[int, int]           # input map (dense: the positions it flattens)
    out_hw: tuple[int, int]
    kernel: tuple[int, int]          # conv / pool window; (1, 1) for dense
    in_max: int                      # channels at the final size
    out_max: int
    in_init: int = 0                 # channels after the known tasks
    out_init: int = 0

    @property
    def has_params(self) -> bool:
        return self.op in (OP_CONV2D, OP_DEPTHWISE, OP_DENSE)

    def positions(self) -> int:
        if self.op == OP_DENSE:
            return self.in_hw[0] * self.in_hw[1]
        return self.kernel[0] * self.kernel[1]

    def weights(self, n_in: int | None = None, n_out: int | None = None) -> int:
        """tc_runtime.cpp's weight_count at (n_in, n_out) channels (default: the final size)."""
        n_in = self.in_max if n_in is None else n_in
        n_out = self.out_max if n_out is None else n_out
        if self.op in (OP_CONV2D, OP_DENSE):
            return n_out * self.positions() * n_in
        if self.op == OP_DEPTHWISE:
            return self.positions() * n_out
        return 0

    def biases(self, n_out: int | None = None) -> int:
        return (self.out_max if n_out is None else n_out) if self.has_params else 0

    def in_size(self) -> int:
        return self.in_hw[0] * self.in_hw[1] * self.in_max

    def out_size(self) -> int:
        return self.out_hw[0] * self.out_hw[1] * self.out_max


def dense_specs(pairs, init=None) -> tuple[TailSpec, ...]:
    """A chain of dense layers over vectors from (inputs, outputs) pairs."""
    init = init or pairs
    return tuple(TailSpec(OP_DENSE, (1, 1), (1, 1), (1, 1), int(i), int(o), int(ii), int(oi))
                 for (i, o), (ii, oi) in zip(pairs, init))


@dataclass(frozen=True)
class Footprint:
    """What the memory plan needs to know about an exported model."""

    input_size: int                  # bytes of one int8 input sample
    latent_size: int                 # backbone output elements (tail input)
    tail: tuple[tuple[int, int], ...]  # (inputs, outputs) of every tail layer at its final size
    tail_init: tuple[tuple[int, int], ...]  # (inputs, outputs) after the known tasks (in flash)
    max_batch: int                   # batch_new + batch_replay
    scratch_bytes: int               # each backbone ping-pong buffer
    kernel_scratch_bytes: int
    buffer_flash_count: int
    buffer_ram_capacity: int
    backbone_bytes: int              # int8 weights, int32 biases, multipliers, shifts, layer table
    plan_steps: int
    buffer_sample_size: int | None = None  # bytes of one buffered sample; None: an input
    # The trainable layers in full; None: `tail` is a chain of dense layers over vectors.
    tail_specs: tuple[TailSpec, ...] | None = None

    @property
    def buffer_sample_bytes(self) -> int:
        return self.input_size if self.buffer_sample_size is None else self.buffer_sample_size

    @property
    def specs(self) -> tuple[TailSpec, ...]:
        return self.tail_specs if self.tail_specs is not None else dense_specs(self.tail, self.tail_init)


def _align(n: int) -> int:
    return (n + ARENA_ALIGN - 1) // ARENA_ALIGN * ARENA_ALIGN


def arena_layout(fp: Footprint) -> list[tuple[str, int, int]]:
    """(block name, offset, bytes) in the runtime's carving order."""
    # The backward pass's ping-pong (tc_runtime.cpp carve): delta_a holds the logits' gradient
    # and the input gradients of the layers an odd number below the logits, delta_b the others
    # (the first layer passes none down).
    last = len(fp.specs) - 1
    delta = [fp.specs[last].out_size(), 0]
    blocks: list[tuple[str, int]] = []
    for i, t in enumerate(fp.specs):
        nw, nb = 4 * t.weights(), 4 * t.biases()
        blocks += [(f"tail{i}.weights", nw), (f"tail{i}.bias", nb),
                   (f"tail{i}.grad_weights", nw), (f"tail{i}.grad_bias", nb),
                   (f"tail{i}.momentum_weights", nw), (f"tail{i}.momentum_bias", nb),
                   (f"tail{i}.activations", 4 * t.out_size())]
        if i > 0:
            side = (last - i) % 2 == 0
            delta[side] = max(delta[side], t.in_size())
    blocks += [("latent", 4 * fp.latent_size)]
    blocks += head_blocks(fp)
    blocks += [("delta_a", 4 * delta[0]), ("delta_b", 4 * delta[1]),
               ("backbone_scratch_a", fp.scratch_bytes), ("backbone_scratch_b", fp.scratch_bytes),
               ("kernel_scratch", fp.kernel_scratch_bytes),
               ("replay_ram_x", fp.buffer_ram_capacity * fp.buffer_sample_bytes),
               ("replay_ram_y", fp.buffer_ram_capacity)]
    out, used = [], 0
    for name, size in blocks:
        start = _align(used)
        out.append((name, start, size))
        used = start + size
    return out


def head_blocks(fp: Footprint) -> list[tuple[str, int]]:
    """The discriminant head's blocks (tc_runtime.cpp carve_head): its rows and biases, one per
    output unit; its scratch (a features x features scatter, per-class sums, one vector, per-class
    counts) only when the largest gradient block cannot hold it. None for a model whose output
    layer reads more than HEAD_MAX_FEATURES features (it gets no head)."""
    last = fp.specs[-1]
    d, classes = last.in_size(), last.out_max
    if d > protocol_spec.HEAD_MAX_FEATURES:
        return []
    out = [("head.weights", 4 * classes * d), ("head.bias", 4 * classes)]
    scratch = d * d + classes * d + d + classes
    if max(t.weights() for t in fp.specs) < scratch:
        out.append(("head.scratch", 4 * scratch))
    return out


def head_state_bytes(fp: Footprint) -> int:
    """The head's part of the learned state at the final size (TC_RT_STATE_HEAD_BYTES first)."""
    last = fp.specs[-1]
    d, classes = last.in_size(), last.out_max
    fitted = d <= protocol_spec.HEAD_MAX_FEATURES
    return PERSIST_STATE_HEAD + (4 * (classes * d + classes) if fitted else 0)


def arena_bytes(fp: Footprint) -> int:
    name, start, size = arena_layout(fp)[-1]
    return _align(start + size)


def persist_state_bytes(fp: Footprint) -> int:
    """Slot bytes of the largest learned state: the tail at its final size, the RAM replay area
    full (what tc_rt_state_bytes reports then), plus the slot header."""
    tail = sum(PERSIST_STATE_PER_LAYER + 4 * (t.weights() + t.biases()) for t in fp.specs)
    replay = fp.buffer_ram_capacity * (fp.buffer_sample_bytes + 1)
    return PERSIST_SLOT_HEADER + PERSIST_STATE_FIXED + tail + head_state_bytes(fp) + replay


def persist_layout(board) -> dict:
    """The board's persistence slots, from the "persist" object of its manifest (boards/)."""
    import json

    data = json.loads(board.manifest.read_text(encoding="utf-8"))
    spec = data.get("tinycil", {}).get("persist")
    if not spec:
        raise MemoryPlanError(f"{board.id} has no persistence slots (no \"persist\" object in "
                              f"{board.manifest.name}): flash without --persist")
    return {"slot_bytes": int(spec["slot_bytes"]),
            "flash_reserved_bytes": int(spec["flash_reserved_bytes"]),
            "slot_addresses": [int(a, 16) for a in spec["slot_addresses"]]}


@dataclass
class MemoryPlan:
    board: str
    ram_total: int
    flash_total: int
    ram: dict[str, int] = field(default_factory=dict)
    flash: dict[str, int] = field(default_factory=dict)
    persist: dict | None = None  # with TC_PERSIST: slot size, state bytes, reserved flash

    @property
    def persist_fits(self) -> bool:
        return self.persist is None or self.persist["state_bytes"] <= self.persist["slot_bytes"]

    @property
    def ram_used(self) -> int:
        return sum(self.ram.values())

    @property
    def flash_used(self) -> int:
        return sum(self.flash.values())

    @property
    def fits(self) -> bool:
        return (self.ram_used <= self.ram_total and self.flash_used <= self.flash_total
                and self.persist_fits)

    def to_dict(self) -> dict:
        return {"board": self.board, "ram_used": self.ram_used, "ram_total": self.ram_total,
                "flash_used": self.flash_used, "flash_total": self.flash_total,
                "ram": dict(self.ram), "flash": dict(self.flash), "persist": self.persist,
                "fits": self.fits}


def plan_memory(fp: Footprint, board, persist: bool = False) -> MemoryPlan:
    """RAM and flash of the model on `board` (a tinycil.deploy.boards.Board). With `persist` (a firmware
    built with -DTC_PERSIST=1) the two state slots leave the code region: the flash budget shrinks
    by what they reserve, and the largest learned state must fit one slot."""
    layout = arena_layout(fp)

    def blocks(prefix_or_names) -> int:
        return sum(size for name, _, size in layout if name.startswith(prefix_or_names))

    tail_params = sum(size for name, _, size in layout
                      if name.startswith("tail") and not name.endswith("activations"))
    activations = (blocks(("latent", "delta_"))
                   + sum(size for name, _, size in layout if name.endswith("activations")))
    scratch = blocks(("backbone_scratch", "kernel_scratch"))
    replay = blocks("replay_ram")
    head = blocks("head.")
    padding = arena_bytes(fp) - tail_params - activations - scratch - replay - head
    plan = MemoryPlan(board=board.id, ram_total=board.ram_bytes, flash_total=board.flash_bytes)
    if persist:
        layout = persist_layout(board)
        plan.flash_total -= layout["flash_reserved_bytes"]
        plan.persist = {"slot_bytes": layout["slot_bytes"], "state_bytes": persist_state_bytes(fp),
                        "flash_reserved_bytes": layout["flash_reserved_bytes"]}
    plan.ram = {
        "tail_parameters": tail_params,      # weights, gradients, momentum at the final size
        "activations": activations,          # of one sample, forward and backward
        "backbone_scratch": scratch,
        "replay_ram_area": replay,
        "discriminant_head": head,           # its rows; its scratch unless a gradient block holds it
        "arena_alignment": padding,
        "protocol_buffers": PROTOCOL_RAM,
        "firmware_static": FIRMWARE_STATIC_RAM,
        "stack": board.stack_bytes,
    }
    tail_init = sum(4 * (t.weights(t.in_init, t.out_init) + t.biases(t.out_init)) for t in fp.specs)
    plan.flash = {
        "code": CODE_FLASH_ESTIMATE,
        "backbone": fp.backbone_bytes,
        "tail_initial_weights": tail_init,
        "growth_plan": fp.plan_steps * 12,
        "known_buffer": fp.buffer_flash_count * (fp.buffer_sample_bytes + 1),
    }
    return plan


# What shrinks a model that does not fit, by what the model is: one of tinycil's families, or
# the user's own (prepare --model), where only options that act on that model may be named:
# --family and --resize do nothing to a user's model (its input must stay the data set's
# shape), and a .tflite frozen part has no --trainable cut (tinycil trains its dense head).
_OWN_MODEL_SMALLER = ("a smaller model of your own (fewer channels or units, pooling before the "
                      "dense layers)")
_OWN_TFLITE_SMALLER = ("a smaller output of your .tflite (pooling before its output layer, fewer "
                       "channels: the dense head tinycil trains on it reads every value)")
_FEWER_LAYERS = ("fewer trainable layers (--trainable N or auto: the tail's parameters, gradients, "
                 "momentum and one sample's activations at its final tail width)")
_BUFFER_RAM = "a smaller buffer fraction (--buffer: the RAM replay area holds the field tasks' samples)"
_BATCH = "a smaller mini-batch (--batch-new/--batch-replay)"


def shrink_advice(resource: str, own_model: str | None = None, fewer_layers: bool = True) -> str:
    """What to change when `resource` ("RAM" or "flash") does not fit: options that apply to
    the run's model (`own_model`: None for a family, "keras" or "tflite" for --model).
    `fewer_layers` False: the logits alone train already."""
    if resource == "RAM":
        cut = [_FEWER_LAYERS] if fewer_layers and own_model != "tflite" else []
        if own_model == "keras":
            options = [_OWN_MODEL_SMALLER] + cut + [_BUFFER_RAM, _BATCH]
        elif own_model == "tflite":
            options = [_OWN_TFLITE_SMALLER, _BUFFER_RAM, _BATCH]
        else:
            options = cut + [_BUFFER_RAM, "a smaller input size (--resize: backbone scratch and "
                             "every buffered sample)", _BATCH, "another model family (--family)"]
    elif own_model == "keras":
        options = ["a smaller model of your own (its frozen int8 prefix is in flash: fewer "
                   "channels or units, pooling before the dense layers)",
                   "a smaller buffer fraction (--buffer)"]
    elif own_model == "tflite":
        options = ["a smaller .tflite (fewer channels or units; pooling before its output layer "
                   "also shrinks the dense head tinycil trains on it, whose initial weights are "
                   "in flash)", "a smaller buffer fraction (--buffer)"]
    else:
        options = ["another model family (--family)", "a smaller buffer fraction (--buffer)",
                   "smaller inputs (--resize)"]
    return ", ".join(options[:-1]) + " or " + options[-1]


def shortfalls(plan: MemoryPlan, board, own_model: str | None = None,
               fewer_layers: bool = True) -> list[str]:
    """One sentence per resource that does not fit (RAM, flash): by how many bytes, its largest
    parts and what to change."""
    problems = []
    if plan.ram_used > plan.ram_total:
        over = plan.ram_used - plan.ram_total
        parts = sorted(((v, k) for k, v in plan.ram.items()), reverse=True)[:4]
        biggest = ", ".join(f"{k.replace('_', ' ')} {v} B" for v, k in parts)
        problems.append(
            f"RAM: needs {plan.ram_used} bytes, {board.id} has {plan.ram_total}: "
            f"{over} bytes too many (largest parts: {biggest}). Prepare the run again "
            f"(`tinycil prepare`) with {shrink_advice('RAM', own_model, fewer_layers)}.")
    if plan.flash_used > plan.flash_total:
        over = plan.flash_used - plan.flash_total
        parts = sorted(((v, k) for k, v in plan.flash.items()), reverse=True)[:3]
        biggest = ", ".join(f"{k.replace('_', ' ')} {v} B" for v, k in parts)
        problems.append(
            f"flash: needs {plan.flash_used} bytes, {board.id} has {plan.flash_total}: "
            f"{over} bytes too many (largest parts: {biggest}). Prepare the run again "
            f"(`tinycil prepare`) with {shrink_advice('flash', own_model, fewer_layers)}.")
    return problems


def check_fits(fp: Footprint, board, what: str = "the model", persist: bool = False,
               own_model: str | None = None) -> MemoryPlan:
    """The plan, or MemoryPlanError saying by how many bytes it misses and what to shrink.
    `own_model`: "keras" or "tflite" for a user's own model (prepare --model), whose advice
    names only what acts on it."""
    plan = plan_memory(fp, board, persist=persist)
    problems = shortfalls(plan, board, own_model)
    if plan.flash_used > plan.flash_total and plan.persist is not None:
        problems[-1] = problems[-1][:-1] + (
            f" ({plan.persist['flash_reserved_bytes']} bytes of the flash hold the "
            f"persistence slots of this TC_PERSIST build).")
    if not plan.persist_fits:
        over = plan.persist["state_bytes"] - plan.persist["slot_bytes"]
        problems.append(
            f"persistence: the learned state needs {plan.persist['state_bytes']} bytes, a slot "
            f"holds {plan.persist['slot_bytes']}: {over} bytes too many. Prepare the run again "
            f"with fewer trainable layers (--tail-layers) or a smaller buffer fraction (--buffer: "
            f"the RAM replay area is saved with the weights), or flash without --persist")
    if problems:
        raise MemoryPlanError(f"{what} does not fit {board.id}. " + " ".join(problems))
    return plan
