"""The serial protocol's constants: the one source of truth for host and firmware.

Everything both sides must agree on lives here: frame layout, limits, message types, status codes
and the layout of the fixed-size payloads. The firmware reads them from a generated header,
``firmware/lib/protocol/tc_protocol_spec.h``; regenerate it with

    python -m tinycil.protocol_spec > firmware/lib/protocol/tc_protocol_spec.h

A test regenerates it and fails if the committed header differs, so the two cannot drift.

Frame on the wire: COBS(header + payload + crc32) followed by one 0x00 delimiter.

    offset  size  field
    0       1     type      (MSG_*)
    1       1     flags     (FLAG_*)
    2       2     seq       little endian; a reply carries the seq of its request
    4       2     length    of the payload, little endian, <= MAX_PAYLOAD
    6       n     payload
    6+n     4     crc32     IEEE 802.3 (reflected 0xEDB88320, init and xorout 0xFFFFFFFF) of bytes 0..6+n
"""

from __future__ import annotations

import struct
import sys

# 2: TRAIN_CONTROL carries the end-of-task balanced pass and the asymmetric cross-entropy.
# 3: TRAIN_CONTROL carries replay_shift (a version-2 device would take it for a reserved byte
#    and ignore it, training otherwise than its twin).
# 5: TRAIN_CONTROL carries the discriminant head (head_weight, head_shrinkage); TRAIN_SAMPLES
#    frames may be OBSERVE / FIT_HEAD (the head's statistics pass after the end of a task).
PROTOCOL_VERSION = 5

# ---- limits -------------------------------------------------------------------------------------
HEADER_SIZE = 6
CRC_SIZE = 4
MAX_PAYLOAD = 1024
MAX_RAW_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
# COBS adds one byte per 254 bytes (rounded up) plus one; the delimiter is one more.
MAX_ENCODED_FRAME = MAX_RAW_FRAME + (MAX_RAW_FRAME + 253) // 254 + 1 + 1
# Bytes of the firmware's interrupt-driven receive ring (power of two). The host keeps at most
# half of it unanswered (session.py). A frame is answered once its new samples have run forward
# and backward; the frame that ends a mini-batch only after the batch's replay draws and the
# update as well: the ring is what the link carries meanwhile. 8 KB holds most of a
# Fashion-MNIST step's 32 new samples (about 4.5 KB packed), so the next batch's samples arrive
# while the device trains on the replay draws (with 4 KB, and whole batches trained at their
# end, the device waited on the link at every step; benchmarks/device_runs.py measures the run).
DEVICE_RX_RING = 8192

# ---- flags --------------------------------------------------------------------------------------
FLAG_NONE = 0x00
# On a sequenced request (SEQUENCED below): this frame starts the host's sequence, the device
# expects seq + 1 next. Every later frame of the session is accepted only in order.
FLAG_SYNC = 0x01
# Bits 4-7 of a sequenced request: how many times the host sent this frame before (mod 16). The
# device echoes the flags in ACK.req_flags, so an OUT_OF_SEQUENCE answer names the copy that caused
# it and the host acts on it only if that copy left after its last resend of the missing frame.
FLAG_SEND_SHIFT = 4
FLAG_SEND_MASK = 0xF0

# ---- the reliable transport of the learning messages --------------------------------------------
# The learning requests are sequenced: the device runs them strictly in seq order, once each. A
# repeat of one it already ran (a retransmission, a duplicated frame) is answered from its cache
# of recent replies and not run again; a frame past a gap is dropped and answered once with
# OUT_OF_SEQUENCE carrying the seq it expects (go-back-N). Every reply carries the free space of the
# device's receive ring, and the host never has more encoded bytes unanswered than that.
#
# The reply cache belongs to one host session: the host starts each session with a SYNC request
# (FLAG_SYNC, a random host_session) and the device, unless that very frame is a repeat, clears
# the cache there. A repeat is recognised by its seq and a fingerprint of its type, seq and payload,
# so a new session whose seqs overlap the previous one's never gets the previous one's replies.
# The host's window is bounded in sequence span (the oldest unanswered seq to the newest sent), not
# in frames, so every frame it may still resend has its reply in the cache.
# A damaged frame (BAD_CRC, MALFORMED, TOO_LONG) and a receive overrun are reported at once with
# STATUS.detail = the seq the device expects next: the host resends from there without waiting.
SEND_WINDOW = 8          # sequence span the host may have unanswered (<= REPLY_CACHE)
REPLY_CACHE = 8          # replies the device keeps for repeats (>= SEND_WINDOW)
REPLY_CACHE_PAYLOAD = 512  # bytes of reply payload a cache entry holds
EVAL_MAX_SAMPLES = 128   # samples per EVAL_SAMPLES frame (one prediction byte each in the reply)
PACKED_SCRATCH = MAX_PAYLOAD  # bytes the device unpacks a PACKED samples frame into

# ---- message types ------------------------------------------------------------------------------
# Requests from the host are 0x01-0x3F. A request's specific reply is request | 0x80; any request
# may instead be answered by MSG_STATUS (errors, or plain acknowledgement). 0x40-0x7F are frames
# the device sends on its own (progress, log).
MESSAGES = {
    "HELLO": 0x01,          # -> INFO
    "RESET": 0x02,          # -> STATUS, then the device restarts
    "BEGIN_TASK": 0x03,     # new class ids -> the device grows the model; -> STATUS
    "TRAIN_SAMPLES": 0x04,  # labelled int8 samples of the current task; -> STATUS
    "TRAIN_CONTROL": 0x05,  # epochs, learning rate, momentum, batch mix; -> STATUS
    "BUFFER_SAMPLES": 0x06, # host-distilled samples that join the replay buffer; -> STATUS
    "EVAL_SAMPLES": 0x07,   # int8 samples -> EVAL_RESULT (one prediction per sample)
    "STATS": 0x08,          # -> STATS_RESULT
    "TRAIN_RUN": 0x09,      # train on what was streamed; PROGRESS frames, then STATUS
    "SELFTEST": 0x0A,       # fixed kernel checks on the device -> SELFTEST_RESULT
    "SYNC": 0x0B,           # starts a host session (SYNC_FIELDS): clears the reply cache; -> ACK
    "UNLOCK": 0x0C,         # the run's device key (UNLOCK_FIELDS): this host session may change
                            # what the device learned (KEYED requests); -> ACK or LOCKED
    "INFO": 0x81,
    "EVAL_RESULT": 0x87,
    "STATS_RESULT": 0x88,
    "SELFTEST_RESULT": 0x8A,
    "ACK": 0x7E,            # reply to a sequenced request: ACK_FIELDS, then UTF-8 text
    "PROGRESS": 0x40,       # device -> host while training
    "LOG": 0x41,            # device -> host, UTF-8 text
    "STATUS": 0x7F,         # reply: u8 code, u8 reserved, u16 detail, then UTF-8 text
}
REPLY_BIT = 0x80

# ---- status codes -------------------------------------------------------------------------------
STATUS = {
    "OK": 0,
    "BAD_CRC": 1,        # frame decoded but its CRC did not match
    "MALFORMED": 2,      # bad COBS, too short, or length field disagrees with the frame
    "UNKNOWN_TYPE": 3,   # type is not a request this firmware knows
    "TOO_LONG": 4,       # more than MAX_ENCODED_FRAME bytes before a delimiter
    "BAD_STATE": 5,      # request not valid now (for example TRAIN_RUN before BEGIN_TASK)
    "NO_MODEL": 6,       # firmware built without a model
    "FULL": 7,           # no room left (buffer, task samples)
    "BAD_ARGUMENT": 8,   # payload fields out of range
    "RX_OVERRUN": 9,     # bytes were lost in the receive path (ring full or UART overrun)
    "OUT_OF_SEQUENCE": 10,  # sequenced frame past a gap (or before any SYNC): ACK.next_seq says
                            # which seq the device expects
    "LOCKED": 11,        # a KEYED request in a host session without the run's key (detail:
                         # LOCKED_REASONS), or UNLOCK with a wrong key
}

# Requests that go through the sequenced transport (a frame of any other type is answered at once).
SEQUENCED = ("SYNC", "BEGIN_TASK", "TRAIN_SAMPLES", "TRAIN_CONTROL", "BUFFER_SAMPLES", "EVAL_SAMPLES",
             "STATS", "SELFTEST", "UNLOCK")

# ---- the device is its owner's: the run's device key --------------------------------------------
# Export gives every run a random key (RUN/device_key, kept across exports of the run) and writes
# it into the firmware's model (TC_DEVICE_KEY). The requests that change what the device learned
# (KEYED; END_OF_TASK, which saves the learned state, is a BUFFER_SAMPLES frame) run only in a host
# session that presented that key with UNLOCK; each SYNC starts a locked session. HELLO/INFO,
# EVAL_SAMPLES, STATS and SELFTEST stay open to anyone on the port.
DEVICE_KEY_BYTES = 16
KEYED = ("BEGIN_TASK", "TRAIN_SAMPLES", "TRAIN_CONTROL", "BUFFER_SAMPLES")
LOCKED_REASONS = {
    "NO_KEY": 0,         # the session presented no key (UNLOCK) before a KEYED request
    "WRONG_KEY": 1,      # UNLOCK with another run's key
    "FIRMWARE_KEYLESS": 2,  # the firmware's model has no key (exported by an older tinycil)
}

# Sane ranges (inclusive) of the training hyper-parameters of TRAIN_CONTROL. The device refuses a
# value outside them, or not a number, with BAD_ARGUMENT (detail: the field's index in
# TRAIN_CONTROL_FIELDS); the host checks them before it sends. batch_new + batch_replay must also
# fit the model's max batch (STATS.max_batch).
TRAIN_LIMITS = {
    "lr": (1e-6, 1.0),
    "momentum": (0.0, 0.99),
    "clip_norm": (0.0, 1000.0),   # 0: no clipping
    "batch_new": (1, 1024),
    "batch_replay": (0, 1024),
    "epochs": (0, 10000),
    "balance_steps": (0, 10000),
    "balance_lr_scale": (0.0, 10.0),  # above 0 when balance_steps > 0 (the runtime checks)
    "asymmetric_ce": (0, 1),
    "replay_shift": (0, 4),
    "head_weight": (0.0, 10.0),      # 0: no discriminant head
    "head_shrinkage": (0.0, 1.0),
}
# The discriminant head (tinycil.learn.discriminant) needs a features x features scatter matrix:
# a model whose output layer reads more features than this gets no head (the export and the
# runtime both refuse a head weight above 0 for it; memplan plans its memory only up to this).
HEAD_MAX_FEATURES = 128


def train_limits_error(values: dict) -> str | None:
    """What is out of range in TRAIN_CONTROL values (by field name), or None."""
    for name, (low, high) in TRAIN_LIMITS.items():
        if name not in values:
            continue
        v = values[name]
        try:
            ok = low <= float(v) <= high  # False for NaN
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return f"{name} = {v} is outside its sane range [{low:g}, {high:g}]"
    return None

# ---- counter kinds (INFO.counter_kind) ----------------------------------------------------------
COUNTER_KINDS = {"NONE": 0, "CYCLES": 1, "INSTRUCTIONS": 2}

# ---- input element types (INFO.input_type) ------------------------------------------------------
INPUT_TYPES = {"NONE": 0, "INT8": 1, "FLOAT32": 2}

# ---- what a replay-buffer sample holds (INFO.buffer_store; tc_model.buffer_store) ---------------
# INPUTS: the int8 input, as the paper keeps it; LATENTS: the frozen backbone's int8 output of it.
BUFFER_STORES = {"INPUTS": 0, "LATENTS": 1}
# Their names on the command line and in run folders, in code order.
BUFFER_STORE_NAMES = tuple(name.lower() for name, _ in sorted(BUFFER_STORES.items(),
                                                              key=lambda item: item[1]))

# ---- fixed payload layouts ----------------------------------------------------------------------
# (name, C type, count). Little endian, packed, in this order.
_CTYPES = {"u8": ("uint8_t", "B"), "i8": ("int8_t", "b"), "u16": ("uint16_t", "H"), "u32": ("uint32_t", "I"),
           "i32": ("int32_t", "i"), "f32": ("float", "f"), "char": ("char", "s")}

INFO_FIELDS = [
    ("protocol_version", "u16", 1),
    ("max_payload", "u16", 1),
    ("board", "char", 16),             # board id, NUL padded (for example "mps2_an500")
    ("build_id", "char", 24),          # firmware build id, NUL padded
    ("clock_hz", "u32", 1),            # core clock
    ("counter_kind", "u8", 1),         # COUNTER_KINDS
    ("input_type", "u8", 1),           # INPUT_TYPES
    ("input_rank", "u8", 1),
    ("buffer_store", "u8", 1),         # BUFFER_STORES
    ("input_shape", "u16", 4),         # first input_rank entries are used (no batch dimension)
    ("model_signature", "u8", 8),      # hash of the exported model; all zero: no model
    ("classes_max", "u16", 1),         # classes the final grown model can hold
    ("classes_seen", "u16", 1),
    ("buffer_capacity", "u32", 1),     # replay buffer slots
    ("buffer_fill", "u32", 1),
    ("ram_used", "u32", 1),            # bytes of static RAM (data + bss + stack reserve)
    ("ram_total", "u32", 1),
    ("flash_used", "u32", 1),
    ("flash_total", "u32", 1),
    ("session_id", "u32", 1),          # new value at every boot: a reset is detected by a change
    ("rx_overruns", "u32", 1),         # bytes lost in the receive path since boot
    # The learned state kept in flash (firmware built with -DTC_PERSIST=1): what the device
    # restored at boot or saved since, so the host knows which task it holds after a reset.
    ("persist", "u8", 1),              # PERSIST_STATES
    ("persist_error", "u8", 1),        # tc_persist_status of the last failed load or save; 0: none
    ("persist_task", "u16", 1),        # plan index (task) of the state restored or last saved
    ("persist_sequence", "u32", 1),    # slot sequence number of that state
]

# ---- the persisted learned state (INFO.persist) -------------------------------------------------
PERSIST_STATES = {
    "OFF": 0,        # built without persistence (or without a model)
    "EMPTY": 1,      # nothing saved for this model: the exported initial state runs
    "RESTORED": 2,   # the state saved after task persist_task was restored at boot
    "SAVED": 3,      # the state after task persist_task was saved during this boot
    "FAILED": 4,     # the last load or save failed (persist_error says why)
}


# Every reply to a sequenced request starts with these fields (ACK frames hold only them, then
# UTF-8 text; EVAL_RESULT, STATS_RESULT and SELFTEST_RESULT continue with their own fields).
ACK_FIELDS = [
    ("code", "u8", 1),                 # STATUS code of the request
    ("req_flags", "u8", 1),            # the flags of the request answered (FLAG_SEND_MASK: its copy)
    ("detail", "u16", 1),
    ("rx_free", "u16", 1),             # free bytes of the device's receive ring now: the credit
    ("next_seq", "u16", 1),            # the seq the device expects next
    ("session_id", "u32", 1),          # as INFO.session_id: a change means the device restarted
]

# SYNC: the host session it starts (random): the fingerprint that keeps its frames apart from an
# earlier session's with the same seqs.
SYNC_FIELDS = [("host_session", "u32", 1)]

# UNLOCK: the run's device key.
UNLOCK_FIELDS = [("device_key", "u8", DEVICE_KEY_BYTES)]

# BEGIN_TASK: count, then count u8 labels (output units, in order of first appearance).
BEGIN_TASK_FIELDS = [("count", "u16", 1)]

# TRAIN_CONTROL: the training hyper-parameters of the tasks that follow.
TRAIN_CONTROL_FIELDS = [
    ("lr", "f32", 1),
    ("momentum", "f32", 1),
    ("clip_norm", "f32", 1),           # <= 0: no clipping
    ("batch_new", "u16", 1),
    ("batch_replay", "u16", 1),
    ("seed", "u32", 1),
    ("epochs", "u16", 1),              # what the host will stream (for PROGRESS only)
    # The end-of-task pass (tinycil.learn.train.TrainConfig.balance_steps): at END_OF_TASK, after
    # the task's buffer samples joined, balance_steps SGD steps of batch_replay class-balanced
    # buffer draws at lr * balance_lr_scale, from zero momentum (0 steps: none).
    ("balance_steps", "u16", 1),
    ("balance_lr_scale", "f32", 1),
    # 1: a streamed sample's softmax spans only its task's own output units (from the lowest
    # label of BEGIN_TASK up), a replayed sample's every unit seen (TrainConfig.asymmetric_ce).
    ("asymmetric_ce", "u8", 1),
    # A replayed sample's trainable input is moved by an offset drawn uniformly in
    # -replay_shift..replay_shift along each spatial axis longer than 1, zeros shifted in
    # (TrainConfig.replay_shift; 0: not moved).
    ("replay_shift", "u8", 1),
    ("reserved0", "u8", 2),
    # The discriminant head (TrainConfig.discriminant_weight / discriminant_shrinkage): a
    # prediction adds head_weight times the head's logits to the output layer's; 0: no head.
    # With a weight above 0, END_OF_TASK begins the head's statistics (the buffer's class means)
    # and the host then streams the task's samples once more as OBSERVE frames, the last one
    # FIT_HEAD; the state is saved there instead of at END_OF_TASK.
    ("head_weight", "f32", 1),
    ("head_shrinkage", "f32", 1),
]

# TRAIN_SAMPLES, BUFFER_SAMPLES and EVAL_SAMPLES: this head, then count u8 labels, then
# count * input_size int8 samples. EVAL_SAMPLES labels are the true units (for the per-class
# summary), TRAIN_SAMPLES ones the targets.
# With the flag PACKED the samples are packed, each on its own: a map of ceil(input_size / 8)
# bytes (bit i, least significant first, set when input byte i is not `fill`), then the bytes
# whose bit is set, in order. The background of an image is one value, so the link carries about
# 70% of a Fashion-MNIST 14x14 sample and 32% of an MNIST 28x28 one; the device unpacks a frame
# into PACKED_SCRATCH bytes, so count * input_size may not exceed it.
SAMPLES_FIELDS = [
    ("count", "u16", 1),
    ("flags", "u8", 1),                # SAMPLES_FLAGS
    ("fill", "i8", 1),                 # PACKED: the value of the bytes the maps leave out
]
SAMPLES_FLAGS = {
    "END_OF_BATCH": 0x01,   # TRAIN_SAMPLES: the mini-batch is complete: take the SGD step
    "EVAL_START": 0x01,     # EVAL_SAMPLES: clear the per-class counters first
    "EVAL_SUMMARY": 0x02,   # EVAL_SAMPLES: the reply carries the per-class counters
    # BUFFER_SAMPLES: the task's last buffer samples: the task is complete. The device runs the
    # end-of-task pass (TRAIN_CONTROL.balance_steps) over its buffer, then a firmware built with
    # persistence saves its learned state before it answers (seconds on a real flash: the host
    # waits for that answer with PERSIST_SAVE_TIMEOUT); ACK.detail is the save's tc_persist_status
    # (2, UNAVAILABLE, without persistence).
    "END_OF_TASK": 0x04,
    "PACKED": 0x08,         # any of the three: the samples are packed (see SAMPLES_FIELDS)
    # TRAIN_SAMPLES after END_OF_TASK, with a head weight above 0: the finished task's samples,
    # forward only, for the discriminant head's statistics (no training step, no PRNG draw).
    "OBSERVE": 0x10,
    # With OBSERVE: the last of them: the device fits the head, then a firmware built with
    # persistence saves its learned state before it answers (ACK.detail as for END_OF_TASK).
    "FIT_HEAD": 0x20,
}
# ACK.detail of an END_OF_TASK frame when the head's statistics follow: nothing was saved yet, the
# FIT_HEAD frame saves (its detail is the save's tc_persist_status).
SAVE_DEFERRED = 0xFFFF
PERSIST_SAVE_TIMEOUT = 10.0  # seconds the host waits for the answer of an END_OF_TASK frame

# EVAL_RESULT: ACK_FIELDS, these, then count u8 predictions, then classes x (correct u16, total u16).
EVAL_RESULT_FIELDS = [
    ("count", "u16", 1),
    ("classes", "u16", 1),             # entries of the per-class summary (0 unless asked for)
]

# PROGRESS (device -> host, seq of the TRAIN_SAMPLES frame that completed the step).
PROGRESS_FIELDS = [
    ("task_steps", "u32", 1),          # SGD steps since BEGIN_TASK
    ("task_samples", "u32", 1),        # new samples trained on since BEGIN_TASK
    ("loss", "f32", 1),
    ("grad_norm", "f32", 1),
    ("step_ticks", "u32", 1),          # counter units of the step (INFO.counter_kind)
]

# STATS_RESULT: ACK_FIELDS, then these.
STATS_FIELDS = [
    ("model_signature", "u8", 8),      # the runtime's model (all zero: none)
    ("has_model", "u8", 1),
    ("counter_kind", "u8", 1),         # COUNTER_KINDS
    ("max_batch", "u16", 1),           # batch_new + batch_replay may not exceed it
    ("input_size", "u32", 1),          # bytes of one int8 sample
    ("classes_max", "u16", 1),
    ("classes_seen", "u16", 1),
    ("buffer_capacity", "u32", 1),
    ("steps", "u32", 1),               # SGD steps since boot
    ("samples_stepped", "u32", 1),     # samples in those steps (new + replay)
    ("new_samples", "u32", 1),         # TRAIN_SAMPLES samples received since boot
    ("train_ticks", "u32", 2),         # counter units in TRAIN_SAMPLES handling (lo, hi)
    ("last_step_ticks", "u32", 1),
    ("eval_samples", "u32", 1),
    ("eval_ticks", "u32", 2),          # counter units in EVAL_SAMPLES handling (lo, hi)
    ("arena_bytes", "u32", 1),         # the runtime's static arena (planned at export)
    ("arena_used", "u32", 1),          # of it, in use (carved once at start-up)
    ("ram_used", "u32", 1),            # static RAM of the image (includes the arena)
    ("stack_used", "u32", 1),          # stack high-water mark (bytes ever touched), 0 if unknown
    ("buffer_fill", "u32", 1),
    ("rx_overruns", "u32", 1),
    ("tx_drops", "u32", 1),
    ("frames_run", "u32", 1),          # sequenced frames run
    ("frames_repeated", "u32", 1),     # repeats answered from the reply cache
    ("frames_out_of_sequence", "u32", 1),
    ("observed_samples", "u32", 1),    # OBSERVE samples received since boot (the head's pass)
    ("head_classes", "u16", 1),        # classes the discriminant head covers (0: none fitted)
    ("head_features", "u16", 1),       # features it reads (the output layer's input)
    ("head_observing", "u8", 1),       # 1: the head's statistics wait for FIT_HEAD
    ("reserved1", "u8", 1),
]

# SELFTEST_RESULT: ACK_FIELDS, then these. Each check compares a kernel with a plain loop on
# the device itself and times the kernel with the board's counter.
SELFTEST_CHECKS = ("dense_f32_fwd", "dense_f32_bwd", "fully_connected_s8", "conv2d_f32_1ch")
SELFTEST_FIELDS = [
    ("counter_kind", "u8", 1),
    ("checks", "u8", 1),               # entries below in use (len(SELFTEST_CHECKS))
    ("failed", "u16", 1),              # bit i set: check i failed
    ("ticks_per_mac", "f32", 4),       # per check, in SELFTEST_CHECKS order
    ("max_error", "f32", 4),           # per check: largest difference from the plain loop
    ("ticks_per_train_sample", "f32", 1),  # one training step of the model, per sample; 0: no model
    ("ticks_per_eval_sample", "f32", 1),
]


def struct_format(fields) -> str:
    """The ``struct`` format string (little endian, packed) of a payload layout."""
    parts = ["<"]
    for _name, kind, count in fields:
        code = _CTYPES[kind][1]
        parts.append(f"{count}{code}" if count > 1 or kind == "char" else code)
    return "".join(parts)


# The layouts the header declares as packed structs (tc_<name>_t).
LAYOUTS = {
    "ack": ACK_FIELDS, "sync": SYNC_FIELDS, "unlock": UNLOCK_FIELDS,
    "begin_task": BEGIN_TASK_FIELDS, "train_control": TRAIN_CONTROL_FIELDS,
    "samples": SAMPLES_FIELDS, "eval_result": EVAL_RESULT_FIELDS, "progress": PROGRESS_FIELDS,
    "stats": STATS_FIELDS, "selftest": SELFTEST_FIELDS,
}

INFO_FORMAT = struct_format(INFO_FIELDS)
INFO_SIZE = struct.calcsize(INFO_FORMAT)


def render_header() -> str:
    """The C header the firmware includes; generated from the tables above."""
    out = [
        "// Generated by `python -m tinycil.protocol_spec`: do not edit.",
        "// The protocol's constants, shared with the host (tinycil/protocol_spec.py).",
        "#pragma once",
        "#include <stdint.h>",
        "",
        f"#define TC_PROTOCOL_VERSION {PROTOCOL_VERSION}",
        f"#define TC_HEADER_SIZE {HEADER_SIZE}",
        f"#define TC_CRC_SIZE {CRC_SIZE}",
        f"#define TC_MAX_PAYLOAD {MAX_PAYLOAD}",
        f"#define TC_MAX_RAW_FRAME {MAX_RAW_FRAME}",
        f"#define TC_MAX_ENCODED_FRAME {MAX_ENCODED_FRAME}",
        f"#define TC_DEVICE_RX_RING {DEVICE_RX_RING}",
        f"#define TC_REPLY_BIT 0x{REPLY_BIT:02X}",
        f"#define TC_FLAG_NONE 0x{FLAG_NONE:02X}",
        f"#define TC_FLAG_SYNC 0x{FLAG_SYNC:02X}",
        f"#define TC_FLAG_SEND_SHIFT {FLAG_SEND_SHIFT}",
        f"#define TC_FLAG_SEND_MASK 0x{FLAG_SEND_MASK:02X}",
        f"#define TC_SEND_WINDOW {SEND_WINDOW}",
        f"#define TC_REPLY_CACHE {REPLY_CACHE}",
        f"#define TC_REPLY_CACHE_PAYLOAD {REPLY_CACHE_PAYLOAD}",
        f"#define TC_EVAL_MAX_SAMPLES {EVAL_MAX_SAMPLES}",
        f"#define TC_PACKED_SCRATCH {PACKED_SCRATCH}",
        f"#define TC_HEAD_MAX_FEATURES {HEAD_MAX_FEATURES}",
        f"#define TC_SAVE_DEFERRED 0x{SAVE_DEFERRED:04X}",
        "",
    ]
    out += [f"#define TC_MSG_{name} 0x{value:02X}" for name, value in MESSAGES.items()]
    out.append("")
    out += [f"#define TC_STATUS_{name} {value}" for name, value in STATUS.items()]
    out.append("")
    out += [f"#define TC_COUNTER_{name} {value}" for name, value in COUNTER_KINDS.items()]
    out.append("")
    out += [f"#define TC_INPUT_{name} {value}" for name, value in INPUT_TYPES.items()]
    out.append("")
    out += [f"#define TC_BUFFER_STORES_{name} {value}" for name, value in BUFFER_STORES.items()]
    out.append("")
    out += [f"#define TC_PERSIST_STATE_{name} {value}" for name, value in PERSIST_STATES.items()]
    out += ["", f"#define TC_DEVICE_KEY_BYTES {DEVICE_KEY_BYTES}"]
    out += [f"#define TC_LOCKED_{name} {value}" for name, value in LOCKED_REASONS.items()]
    out.append("")
    for name, (low, high) in TRAIN_LIMITS.items():
        kind = next(k for n, k, _ in TRAIN_CONTROL_FIELDS if n == name)
        fmt = (lambda v: f"{float(v)!r}f") if kind == "f32" else (lambda v: str(int(v)))
        out += [f"#define TC_TRAIN_{name.upper()}_MIN {fmt(low)}",
                f"#define TC_TRAIN_{name.upper()}_MAX {fmt(high)}"]
    out += ["", "typedef struct __attribute__((packed)) {"]
    for name, kind, count in INFO_FIELDS:
        ctype = _CTYPES[kind][0]
        out.append(f"    {ctype} {name}[{count}];" if count > 1 else f"    {ctype} {name};")
    out += ["} tc_info_t;", "",
            f"#define TC_INFO_SIZE {INFO_SIZE}",
            "#ifdef __cplusplus",
            "static_assert(sizeof(tc_info_t) == TC_INFO_SIZE, \"INFO layout differs from the host\");",
            "#endif", ""]
    out += [f"#define TC_SAMPLES_{name} 0x{value:02X}" for name, value in SAMPLES_FLAGS.items()]
    out += [f"#define TC_SELFTEST_CHECKS {len(SELFTEST_CHECKS)}", ""]
    for struct_name, fields in LAYOUTS.items():
        out.append("typedef struct __attribute__((packed)) {")
        for name, kind, count in fields:
            ctype = _CTYPES[kind][0]
            out.append(f"    {ctype} {name}[{count}];" if count > 1 else f"    {ctype} {name};")
        size = struct.calcsize(struct_format(fields))
        out += [f"}} tc_{struct_name}_t;",
                "#ifdef __cplusplus",
                f"static_assert(sizeof(tc_{struct_name}_t) == {size}, "
                f"\"{struct_name} layout differs from the host\");",
                "#endif", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render_header())
