"""The reliable, windowed transport of the learning messages, on top of bridge.DeviceLink.

The device runs the sequenced requests (protocol_spec.SEQUENCED) strictly in seq order, once
each; this side keeps them flowing:

- a window of up to ``SEND_WINDOW`` unanswered frames, so the link never idles while the device
  works on a frame;
- credit-based flow control: every reply advertises the free space of the device's receive ring
  when it was sent (``rx_free``) and the unanswered bytes never exceed half of it. Bytes of
  unanswered frames already in the ring are then counted twice (in the ring and here), which
  errs on the safe side; half, because after a loss the frames of the window are sent again
  while their first copies may still be on their way, so the ring must hold both. A real UART
  therefore cannot overrun the device at any baud rate, however long a training step takes;
- retransmission: when the oldest unanswered frame stays unanswered for ``timeout`` seconds of
  silence (any frame from the device, PROGRESS too, shows it is busy rather than deaf), or when
  the device answers OUT_OF_SEQUENCE (a frame before it was lost or damaged), every unanswered
  frame from the one the device expects is sent again in order (go-back-N). Frames the device
  already ran are answered from its reply cache and not run twice;
- reset detection: every reply carries the device's session id; a different one than at HELLO
  means the device restarted and lost what it learned, which ends the session with DeviceReset.
"""

from __future__ import annotations

import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from tinycil.link import protocol
from tinycil import protocol_spec as spec
from tinycil.link.bridge import DeviceError, DeviceLink, DeviceStatusError, NoAnswer

MSG = spec.MESSAGES
STATUS_NAMES = {v: k for k, v in spec.STATUS.items()}
_REPLY_TYPES = {MSG["ACK"], MSG["EVAL_RESULT"], MSG["STATS_RESULT"], MSG["SELFTEST_RESULT"]}
_DAMAGE = {spec.STATUS["BAD_CRC"], spec.STATUS["MALFORMED"], spec.STATUS["TOO_LONG"],
           spec.STATUS["RX_OVERRUN"]}


class DeviceReset(DeviceError):
    """The device restarted during the session (its session id changed). Unless its firmware
    keeps the learned state in flash, what it learned since flashing is gone."""

    def __init__(self, message: str, old_session: int = 0, new_session: int = 0):
        super().__init__(message)
        self.old_session, self.new_session = old_session, new_session


class DeviceLocked(DeviceError):
    """The device refused to be taught: this session did not present its run's device key."""


class BadTrainingSettings(DeviceError):
    """A training hyper-parameter outside protocol_spec.TRAIN_LIMITS (the device refuses it)."""


# ---- payload layouts --------------------------------------------------------------------------

def layout_struct(fields) -> struct.Struct:
    return struct.Struct(spec.struct_format(fields))


def unpack_fields(fields, payload: bytes, offset: int = 0) -> tuple[dict, int]:
    """The fields of a layout as a dict (arrays as lists) and the offset after them."""
    st = layout_struct(fields)
    if len(payload) < offset + st.size:
        raise protocol.ProtocolError(f"payload of {len(payload)} bytes is too short for its "
                                     f"layout ({offset + st.size} bytes)")
    values = st.unpack_from(payload, offset)
    out, i = {}, 0
    for name, kind, count in fields:
        if kind == "char":
            out[name] = values[i].split(b"\0", 1)[0].decode("utf-8", "replace")
            i += 1
        elif count > 1:
            out[name] = list(values[i:i + count])
            i += count
        else:
            out[name] = values[i]
            i += 1
    return out, offset + st.size


def pack_fields(fields, values: dict) -> bytes:
    """Inverse of unpack_fields; missing fields are zero."""
    flat = []
    for name, kind, count in fields:
        v = values.get(name)
        if kind == "char":
            flat.append((v or "").encode())
        elif count > 1:
            items = list(v or [])[:count]
            flat.extend(items + [0] * (count - len(items)))
        else:
            flat.append(v or 0)
    return layout_struct(fields).pack(*flat)


ACK_SIZE = layout_struct(spec.ACK_FIELDS).size


@dataclass
class Reply:
    type: int
    seq: int
    code: int
    detail: int
    rx_free: int
    next_seq: int
    session_id: int
    body: bytes          # what follows the ACK head (text of an ACK, fields of the others)

    @property
    def code_name(self) -> str:
        return STATUS_NAMES.get(self.code, f"UNKNOWN_{self.code}")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace") if self.type == MSG["ACK"] else ""


def parse_reply(frame: protocol.Frame) -> Reply:
    head, offset = unpack_fields(spec.ACK_FIELDS, frame.payload)
    return Reply(frame.type, frame.seq, head["code"], head["detail"], head["rx_free"],
                 head["next_seq"], head["session_id"], bytes(frame.payload[offset:]))


# ---- the session ------------------------------------------------------------------------------

@dataclass
class _Pending:
    seq: int
    msg_type: int
    wire: bytes
    payload_len: int
    on_reply: object
    timeout: float | None = None  # seconds of silence before a resend (None: the session's)
    sent_at: float = 0.0
    sends: int = 0


@dataclass
class SessionStats:
    frames: int = 0              # sequenced frames completed
    sends: int = 0               # transmissions (first sends + retransmissions)
    retransmissions: int = 0
    go_backs: int = 0            # OUT_OF_SEQUENCE answers acted on
    timeouts: int = 0
    damage_reports: int = 0      # the device saw damaged bytes (BAD_CRC, MALFORMED, overrun)
    stale_replies: int = 0       # replies to frames already answered (duplicates)
    progress_frames: int = 0
    min_rx_free: int | None = None  # the lowest credit the device advertised (its ring's free space)
    payload_bytes: int = 0       # payload of completed frames (each counted once)
    wire_bytes: int = 0          # encoded bytes written, retransmissions included
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "started"}
        d["seconds"] = time.monotonic() - self.started
        return d


class Session:
    """Sequenced requests to one device over an open DeviceLink.

    ``send`` queues a request (waiting only for room in the window) and calls ``on_reply(reply)``
    when its answer arrives; ``call`` sends one and returns its answer; ``flush`` waits for all.
    A reply whose code is not OK raises DeviceStatusError (from whichever call is waiting).
    """

    def __init__(self, link: DeviceLink, info: dict | None = None, timeout: float = 2.0,
                 max_sends: int = 10, window: int = spec.SEND_WINDOW, on_progress=None,
                 reset_hint: str = ""):
        self.link = link
        self.info = info if info is not None else link.hello()
        self.session_id = int(self.info["session_id"])
        self.timeout = timeout
        self.max_sends = max_sends
        self.window = max(1, min(window, spec.SEND_WINDOW))
        self.on_progress = on_progress
        self.reset_hint = reset_hint
        self.stats = SessionStats()
        # Until the first reply: the ring size the protocol promises, less the main loop's chunk.
        self.credit = spec.DEVICE_RX_RING - 64
        self._seq = int.from_bytes(os.urandom(2), "little")
        self._synced = False
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._last_activity = time.monotonic()
        self._last_nack: tuple[int, int, int] | None = None

    # ---- public -------------------------------------------------------------------------------
    def send(self, msg_type: int | str, payload: bytes = b"", on_reply=None,
             timeout: float | None = None) -> int:
        """Queue a request; ``timeout`` overrides the session's silence before a resend (for a
        request the device is known to take long over, such as a save to flash)."""
        if isinstance(msg_type, str):
            msg_type = MSG[msg_type]
        payload = bytes(payload)
        self._seq = (self._seq + 1) & 0xFFFF
        flags = 0 if self._synced else spec.FLAG_SYNC
        self._synced = True
        wire = protocol.encode_frame(msg_type, self._seq, payload, flags=flags)
        item = _Pending(self._seq, msg_type, wire, len(payload), on_reply, timeout)
        while self._pending and (len(self._pending) >= self.window
                                 or self._in_flight() + len(wire) > self.credit // 2):
            self._pump()
        self._pending[item.seq] = item
        self._transmit(item)
        return item.seq

    def call(self, msg_type: int | str, payload: bytes = b"", timeout: float | None = None) -> Reply:
        box: list[Reply] = []
        seq = self.send(msg_type, payload, on_reply=box.append, timeout=timeout)
        while seq in self._pending:
            self._pump()
        return box[0]

    def flush(self) -> None:
        while self._pending:
            self._pump()

    def unlock(self, key: bytes | None, run_name: str = "RUN") -> None:
        """Present the run's device key (RUN/device_key), so this session may change what the
        device learned (protocol_spec.KEYED). Raises DeviceLocked, saying what to do, when the
        run has no key or the device belongs to another run."""
        if key is None:
            raise DeviceLocked(f"run {run_name} has no device key: it was never exported. Flash "
                               f"it (`tinycil flash --board B --run {run_name}`), then stream it.")
        try:
            self.call("UNLOCK", pack_fields(spec.UNLOCK_FIELDS, {"device_key": list(key)}))
        except DeviceStatusError as exc:
            if exc.code != spec.STATUS["LOCKED"]:
                raise
            if exc.detail == spec.LOCKED_REASONS["FIRMWARE_KEYLESS"]:
                raise DeviceLocked(
                    "the device's firmware was exported without a device key (an older tinycil): "
                    f"flash it again with this run (`tinycil flash --board B --run {run_name}`)."
                ) from None
            raise DeviceLocked(
                f"the device refused run {run_name}'s key: it was flashed with another export of "
                "a run (its model may even look the same). Stream the run it was flashed with, "
                f"or flash this one (`tinycil flash --board B --run {run_name}`).") from None

    # ---- internals ----------------------------------------------------------------------------
    def _in_flight(self) -> int:
        return sum(len(p.wire) for p in self._pending.values())

    def _transmit(self, item: _Pending) -> None:
        self.link.write(item.wire)
        if item.sends:
            self.stats.retransmissions += 1
        item.sends += 1
        item.sent_at = time.monotonic()
        self.stats.sends += 1
        self.stats.wire_bytes += len(item.wire)

    def _go_back(self, from_seq: int | None) -> None:
        """Send every unanswered frame again, in order, from `from_seq` (or the oldest)."""
        items = list(self._pending.values())
        if from_seq is not None and from_seq in self._pending:
            items = items[[p.seq for p in items].index(from_seq):]
        for item in items:
            if item.sends >= self.max_sends:
                raise self._no_answer(item)
            self._transmit(item)

    def _no_answer(self, item: _Pending) -> NoAnswer:
        name = protocol.MESSAGE_NAMES.get(item.msg_type, hex(item.msg_type))
        return NoAnswer(
            f"the device did not answer {name} (seq {item.seq}) after {item.sends} sends "
            f"({item.timeout or self.timeout:g} s of silence each) on {self.link.port}: the link "
            "loses too much or "
            "the device hangs. Check the cable and baud rate; for the emulated board restart it "
            "with `tinycil flash --board mps2_an500`.")

    def _pump(self) -> None:
        frames = self.link.read_frames()
        now = time.monotonic()
        if not frames:
            oldest = next(iter(self._pending.values()), None)
            limit = self.timeout if oldest is None or oldest.timeout is None else oldest.timeout
            if oldest is not None and now - max(oldest.sent_at, self._last_activity) > limit:
                self.stats.timeouts += 1
                self._go_back(None)
            return
        for item in frames:
            if isinstance(item, protocol.FrameError):
                self.link.stats.frame_errors += 1
                continue
            self._last_activity = now
            if item.type in (MSG["LOG"], MSG["PROGRESS"]):
                if item.type == MSG["PROGRESS"]:
                    self.stats.progress_frames += 1
                    if self.on_progress:
                        self.on_progress(unpack_fields(spec.PROGRESS_FIELDS, item.payload)[0])
                else:
                    self.link.handle_unsolicited(item)
                continue
            if item.type == MSG["STATUS"]:
                self._on_status(item)
                continue
            if item.type in _REPLY_TYPES:
                self._on_reply(parse_reply(item))

    def _on_status(self, frame: protocol.Frame) -> None:
        code, name, detail, text = protocol.parse_status(frame.payload)
        if code in _DAMAGE:
            # The frame that arrived damaged is found by OUT_OF_SEQUENCE or the timeout.
            self.stats.damage_reports += 1
            return
        pending = self._pending.get(frame.seq)
        if pending is None:
            return
        what = protocol.MESSAGE_NAMES.get(pending.msg_type, hex(pending.msg_type))
        if code == spec.STATUS["UNKNOWN_TYPE"]:
            raise DeviceError(f"the firmware does not know {what}: it was built by an older "
                              "tinycil. Build and flash it with this one (`tinycil flash`).")
        raise DeviceStatusError(code, name, detail, text, what)

    def _on_reply(self, reply: Reply) -> None:
        if reply.session_id != self.session_id:
            raise DeviceReset(
                f"the device restarted (session 0x{self.session_id:08x} is now "
                f"0x{reply.session_id:08x}). "
                + (self.reset_hint or "Unless its firmware keeps the learned state (built with "
                   "--persist), everything it learned since it was flashed is gone: flash it "
                   "again and stream the tasks again from the first one the host did not know."),
                self.session_id, reply.session_id)
        self.credit = max(reply.rx_free, 1)
        if self.stats.min_rx_free is None or reply.rx_free < self.stats.min_rx_free:
            self.stats.min_rx_free = reply.rx_free
        if reply.code == spec.STATUS["OUT_OF_SEQUENCE"]:
            key = (reply.seq, reply.next_seq, self._pending[reply.seq].sends
                   if reply.seq in self._pending else -1)
            if key == self._last_nack:  # the link duplicated the answer: already acted on
                return
            self._last_nack = key
            self.stats.go_backs += 1
            self._go_back(reply.next_seq if reply.next_seq in self._pending else None)
            return
        pending = self._pending.pop(reply.seq, None)
        if pending is None:
            self.stats.stale_replies += 1
            return
        self.stats.frames += 1
        self.stats.payload_bytes += pending.payload_len
        if reply.code != spec.STATUS["OK"]:
            what = protocol.MESSAGE_NAMES.get(pending.msg_type, hex(pending.msg_type))
            raise DeviceStatusError(reply.code, reply.code_name, reply.detail, reply.text, what)
        if pending.on_reply is not None:
            pending.on_reply(reply)


# ---- the learning messages --------------------------------------------------------------------

def begin_task_payload(units) -> bytes:
    units = [int(u) for u in units]
    return pack_fields(spec.BEGIN_TASK_FIELDS, {"count": len(units)}) + bytes(units)


def train_control_payload(*, lr: float, momentum: float, clip_norm: float, batch_new: int,
                          batch_replay: int, seed: int, epochs: int) -> bytes:
    """TRAIN_CONTROL's payload; BadTrainingSettings for a value the device would refuse."""
    problem = spec.train_limits_error({"lr": lr, "momentum": momentum, "clip_norm": clip_norm,
                                       "batch_new": batch_new, "batch_replay": batch_replay,
                                       "epochs": epochs})
    if problem:
        raise BadTrainingSettings(f"training settings refused: {problem}. Choose a value in "
                                  "that range (--lr, --momentum, --clip-norm, --batch-new, "
                                  "--batch-replay, --epochs).")
    return pack_fields(spec.TRAIN_CONTROL_FIELDS, {
        "lr": float(lr), "momentum": float(momentum), "clip_norm": float(clip_norm),
        "batch_new": int(batch_new), "batch_replay": int(batch_replay),
        "seed": int(seed) & 0xFFFFFFFF, "epochs": int(epochs)})


def samples_per_frame(input_size: int, limit: int | None = None) -> int:
    """How many samples (label + int8 input each) fit one frame after the samples head."""
    head = layout_struct(spec.SAMPLES_FIELDS).size
    n = (spec.MAX_PAYLOAD - head) // (input_size + 1)
    if n < 1:
        raise DeviceError(f"one sample of {input_size} bytes does not fit a frame of "
                          f"{spec.MAX_PAYLOAD} bytes")
    return min(n, limit) if limit else n


def samples_payload(x_int8, labels, flags: int = 0) -> bytes:
    import numpy as np

    x = np.ascontiguousarray(np.asarray(x_int8, dtype=np.int8))
    y = np.asarray(labels, dtype=np.uint8)
    return (pack_fields(spec.SAMPLES_FIELDS, {"count": len(y), "flags": flags})
            + y.tobytes() + x.tobytes())


def parse_eval_result(reply: Reply) -> tuple[list[int], list[tuple[int, int]]]:
    """(predictions, per-class (correct, total)) of an EVAL_RESULT."""
    head, off = unpack_fields(spec.EVAL_RESULT_FIELDS, reply.body)
    preds = list(reply.body[off:off + head["count"]])
    off += head["count"]
    summary = [struct.unpack_from("<HH", reply.body, off + 4 * k) for k in range(head["classes"])]
    return preds, summary


def parse_stats(reply: Reply) -> dict:
    s = unpack_fields(spec.STATS_FIELDS, reply.body)[0]
    s["model_signature"] = bytes(s["model_signature"]).hex()
    s["train_ticks"] = s["train_ticks"][0] | (s["train_ticks"][1] << 32)
    s["eval_ticks"] = s["eval_ticks"][0] | (s["eval_ticks"][1] << 32)
    s["counter_kind_name"] = protocol.COUNTER_KIND_NAMES.get(s["counter_kind"], "UNKNOWN")
    return s


def parse_selftest(reply: Reply) -> dict:
    s = unpack_fields(spec.SELFTEST_FIELDS, reply.body)[0]
    s["counter_kind_name"] = protocol.COUNTER_KIND_NAMES.get(s["counter_kind"], "UNKNOWN")
    s["results"] = [{"check": name, "passed": not (s["failed"] >> i) & 1,
                     "ticks_per_mac": s["ticks_per_mac"][i], "max_error": s["max_error"][i]}
                    for i, name in enumerate(spec.SELFTEST_CHECKS)]
    return s


def reset_device(link: DeviceLink) -> None:
    """Ask the device to restart (RESET is answered before the restart)."""
    reply = link.request(MSG["RESET"], b"")
    link.check_status(reply, "RESET")
