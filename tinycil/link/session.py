"""The reliable, windowed transport of the learning messages, on top of bridge.DeviceLink.

The device runs the sequenced requests (protocol_spec.SEQUENCED) strictly in seq order, once
each; this side keeps them flowing over a link that may lose, damage, duplicate or delay bytes:

- a host session: the first frame is a SYNC with a random host session; the device's reply cache
  belongs to that session, so an earlier session's replies never answer this one's frames;
- a window bounded in sequence span (oldest unanswered seq to newest sent, at most
  ``SEND_WINDOW`` <= the device's ``REPLY_CACHE``), so every frame that may still be resent has
  its reply in the device's cache;
- credit-based flow control: every reply advertises the free space of the device's receive ring
  when it was sent (``rx_free``) and the unanswered bytes never exceed half of it (half, because
  after a loss the frames of the window are sent again while their first copies may still be on
  their way). A real UART therefore cannot overrun the device at any baud rate;
- recovery without waiting, from what the device's answers prove (every reply echoes the flags of
  the copy that ran, and the host's send count is in those flags; the link keeps byte order):
  a reply to a later frame proves an earlier one ran and its reply was lost: that frame alone is
  resent (answered from the cache); a reply to frame E proves that every later frame whose latest
  copy left before the copy of E that ran arrived too early and was dropped: they are resent; a
  damage report (BAD_CRC, MALFORMED, TOO_LONG, RX_OVERRUN) names the seq E the device expects:
  E alone is resent at once; OUT_OF_SEQUENCE names the copy that caused it, so the host goes back
  to the expected frame only when that copy left after its last resend;
- a retransmission timeout that follows the measured round trip as TCP's does (RFC 6298):
  SRTT and RTTVAR from replies to frames sent once (Karn's rule), RTO = SRTT + 4 RTTVAR within a
  floor and a ceiling, doubled at every timeout. Any frame from the device (PROGRESS too) shows it
  is busy rather than deaf and restarts the timer;
- frame size that follows the measured loss: damage reports, lost replies, undecodable frames and
  timeouts give an estimate of the loss per byte, and ``payload_budget`` is the payload that
  carries the most data per byte sent at that loss. A frame once sent keeps its size, so the size
  also starts small and grows only while frames get through (halved at every loss, raised by half
  when a frame that used at least half of it is answered at its first send), as TCP's congestion window does;
- giving up only on a dead link: no request completed and no PROGRESS for ``dead_after`` seconds;
- reset detection: every reply carries the device's session id; a different one than at HELLO
  means the device restarted and lost what it learned, which ends the session with DeviceReset.
"""

from __future__ import annotations

import math
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
_COPIES = (spec.FLAG_SEND_MASK >> spec.FLAG_SEND_SHIFT) + 1

# Retransmission timeout (RFC 6298): the first RTO before any measurement, its floor and ceiling.
RTO_INITIAL = 1.0
RTO_MIN = 0.2
RTO_MAX = 4.0
DEAD_AFTER = 60.0       # seconds without a completed request or PROGRESS: the link is dead
# Bytes a frame costs beyond its payload: header, CRC, COBS and delimiter, plus the reply that
# must come back through the same lossy link.
FRAME_OVERHEAD = spec.HEADER_SIZE + spec.CRC_SIZE + 3 + 30
LOSS_MEMORY = 200_000   # bytes over which the loss estimate forgets (exponential)
LOSS_PRIOR = 20_000     # clean bytes assumed before the first measurement
FRAME_START = 256       # payload ceiling of the first frames, before the link proved clean
FRAME_FLOOR = 32        # the ceiling never goes below this (one sample always fits anyway)


def grown_ceiling(ceiling: float, answered_payload: int) -> float:
    """The payload ceiling after a frame of `answered_payload` bytes was answered at its first
    send: a frame that used at least half the ceiling lifts it by half (up to MAX_PAYLOAD).
    Growing to 1.5 times the frame itself would stall: frames hold whole samples, and 1.5 times
    one 197-byte sample (a 14x14 image) never makes room for a second one."""
    if answered_payload >= ceiling / 2.0:
        return min(float(spec.MAX_PAYLOAD), 1.5 * ceiling)
    return ceiling


class MalformedReply(protocol.ProtocolError):
    """A reply with a valid CRC whose payload does not follow the protocol."""


def _malformed(what: str, exc: Exception) -> MalformedReply:
    return MalformedReply(f"the device sent a malformed {what} ({exc}): the firmware and this "
                          "tinycil disagree on the protocol. Build and flash the firmware with "
                          "this tinycil (`tinycil flash --board B`).")


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
    req_flags: int = 0   # the request's flags as the device saw them (its copy number)

    @property
    def code_name(self) -> str:
        return STATUS_NAMES.get(self.code, f"UNKNOWN_{self.code}")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace") if self.type == MSG["ACK"] else ""


def parse_reply(frame: protocol.Frame) -> Reply:
    try:
        head, offset = unpack_fields(spec.ACK_FIELDS, frame.payload)
    except protocol.ProtocolError as exc:
        raise _malformed(f"{frame.type_name} reply", exc) from None
    return Reply(frame.type, frame.seq, head["code"], head["detail"], head["rx_free"],
                 head["next_seq"], head["session_id"], bytes(frame.payload[offset:]),
                 head["req_flags"])


# ---- the session ------------------------------------------------------------------------------

@dataclass
class _Pending:
    seq: int
    msg_type: int
    payload: bytes
    flags: int
    on_reply: object
    timeout: float | None = None  # the least silence before a resend (None: the RTO alone)
    sent_at: float = 0.0          # the latest copy
    sends: int = 0
    copies: dict = field(default_factory=dict)  # copy number (mod 16) -> when it left
    wire_len: int = 0

    def encode(self) -> bytes:
        copy = (self.sends % _COPIES) << spec.FLAG_SEND_SHIFT
        return protocol.encode_frame(self.msg_type, self.seq, self.payload, flags=self.flags | copy)


@dataclass
class SessionStats:
    frames: int = 0              # sequenced frames completed
    sends: int = 0               # transmissions (first sends + retransmissions)
    retransmissions: int = 0
    go_backs: int = 0            # go-back-N rounds (after OUT_OF_SEQUENCE or a damage report)
    fast_resends: int = 0        # single frames resent because a later reply showed theirs lost
    timeouts: int = 0
    damage_reports: int = 0      # the device saw damaged bytes (BAD_CRC, MALFORMED, overrun)
    stale_replies: int = 0       # replies to frames already answered (duplicates)
    progress_frames: int = 0
    min_rx_free: int | None = None  # the lowest credit the device advertised (its ring's free space)
    payload_bytes: int = 0       # payload of completed frames (each counted once)
    wire_bytes: int = 0          # encoded bytes written, retransmissions included
    srtt: float | None = None    # smoothed round trip (s)
    rto: float = RTO_INITIAL     # retransmission timeout now (s)
    loss_per_byte: float = 0.0   # the estimate the frame size follows
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "started"}
        d["seconds"] = time.monotonic() - self.started
        return d


def _before(a: int, b: int) -> bool:
    """seq a comes before seq b (modulo 2^16)."""
    return a != b and ((b - a) & 0xFFFF) < 0x8000


class Session:
    """Sequenced requests to one device over an open DeviceLink.

    ``send`` queues a request (waiting only for room in the window) and calls ``on_reply(reply)``
    when its answer arrives; ``call`` sends one and returns its answer; ``flush`` waits for all.
    A reply whose code is not OK raises DeviceStatusError (from whichever call is waiting).
    ``timeout`` is the first retransmission timeout, before any round trip is measured;
    ``dead_after`` the seconds without progress after which the link counts as dead.
    ``max_sends`` is accepted for compatibility and not a limit: a lossy link is never given up.
    """

    def __init__(self, link: DeviceLink, info: dict | None = None, timeout: float = RTO_INITIAL,
                 max_sends: int | None = None, window: int = spec.SEND_WINDOW, on_progress=None,
                 reset_hint: str = "", dead_after: float = DEAD_AFTER, rto_min: float = RTO_MIN,
                 rto_max: float = RTO_MAX):
        self.link = link
        self.info = info if info is not None else link.hello()
        self.session_id = int(self.info["session_id"])
        self.rto_min, self.rto_max = rto_min, max(rto_min, rto_max)
        self.dead_after = dead_after
        self.window = max(1, min(window, spec.SEND_WINDOW, spec.REPLY_CACHE))
        self.on_progress = on_progress
        self.reset_hint = reset_hint
        self.stats = SessionStats(rto=min(max(timeout, rto_min), self.rto_max))
        self._rttvar = 0.0
        self._min_rtt: float | None = None  # the fastest round trip seen: the path without queues
        self._went_back: tuple[int, float] = (-1, 0.0)  # (seq, when) of the last go-back
        # Until the first reply: the ring size the protocol promises, less the main loop's chunk.
        self.credit = spec.DEVICE_RX_RING - 64
        self._seq = int.from_bytes(os.urandom(2), "little")
        self.host_session = int.from_bytes(os.urandom(4), "little")
        self._synced = False
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._last_activity = time.monotonic()
        self._last_progress = time.monotonic()
        self._loss_events = 0.0
        self._loss_bytes = float(LOSS_PRIOR)
        self._ceiling = float(FRAME_START)

    # ---- public -------------------------------------------------------------------------------
    def send(self, msg_type: int | str, payload: bytes = b"", on_reply=None,
             timeout: float | None = None) -> int:
        """Queue a request; ``timeout`` is the least silence before a resend of this one (for a
        request the device is known to take long over, such as a save to flash)."""
        if isinstance(msg_type, str):
            msg_type = MSG[msg_type]
        if not self._synced:
            self._synced = True
            self._queue(MSG["SYNC"], pack_fields(spec.SYNC_FIELDS,
                                                 {"host_session": self.host_session}),
                        spec.FLAG_SYNC, None, None)
        return self._queue(msg_type, bytes(payload), 0, on_reply, timeout)

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

    def payload_budget(self) -> int:
        """The payload (bytes) that carries the most data per byte sent at the measured loss:
        maximises L / (L + O) * (1 - r)^(L + O), O the frame's and its reply's overhead."""
        r = self.loss_per_byte
        best = float(spec.MAX_PAYLOAD)
        if r > 0.0:
            o = FRAME_OVERHEAD
            k = -math.log1p(-min(r, 0.5))
            best = (-o + math.sqrt(o * o + 4.0 * o / k)) / 2.0
        return int(max(1, min(spec.MAX_PAYLOAD, best, self._ceiling)))

    def samples_per_frame(self, input_size: int, limit: int | None = None) -> int:
        """Samples for the next frame: as many as fit the payload budget (at least one)."""
        head = layout_struct(spec.SAMPLES_FIELDS).size
        n = max(1, (self.payload_budget() - head) // (input_size + 1))
        return min(n, samples_per_frame(input_size, limit))

    def samples_in_frame(self, plan, idx, limit: int | None = None) -> int:
        """How many of the samples idx (the next ones, in order; plan: packing.FramePlan of
        their stream) the next frame carries: as many as their bytes, packed as the plan packs
        them, fit the payload budget; at least one, at most what one frame unpacks to."""
        head = layout_struct(spec.SAMPLES_FIELDS).size
        return plan.count(idx, self.payload_budget() - head,
                          samples_per_frame(plan.input_size, limit))

    @property
    def loss_per_byte(self) -> float:
        return self._loss_events / self._loss_bytes

    @property
    def rto(self) -> float:
        return self.stats.rto

    # ---- internals ----------------------------------------------------------------------------
    def _queue(self, msg_type: int, payload: bytes, flags: int, on_reply, timeout) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        item = _Pending(self._seq, msg_type, payload, flags, on_reply, timeout)
        size = len(item.encode())
        while self._pending and (self._span(item.seq) >= self.window
                                 or self._in_flight() + size > self.credit // 2):
            self._pump()
        if not self._pending:
            self._last_progress = time.monotonic()  # the dead-link clock runs while waiting
        self._pending[item.seq] = item
        self._transmit(item)
        return item.seq

    def _span(self, seq: int) -> int:
        oldest = next(iter(self._pending))
        return (seq - oldest) & 0xFFFF

    def _in_flight(self) -> int:
        return sum(p.wire_len for p in self._pending.values())

    def _transmit(self, item: _Pending) -> None:
        wire = item.encode()
        self.link.write(wire)
        if item.sends:
            self.stats.retransmissions += 1
        now = time.monotonic()
        item.copies[item.sends % _COPIES] = now
        item.sends += 1
        item.sent_at = now
        item.wire_len = len(wire)
        self.stats.sends += 1
        self.stats.wire_bytes += len(wire)
        self._count_bytes(len(wire))

    def _count_bytes(self, n: int) -> None:
        keep = math.exp(-n / LOSS_MEMORY)
        self._loss_events *= keep
        self._loss_bytes = self._loss_bytes * keep + n
        self.stats.loss_per_byte = self.loss_per_byte

    def _loss(self) -> None:
        self._loss_events += 1.0
        self.stats.loss_per_byte = self.loss_per_byte
        self._ceiling = max(FRAME_FLOOR, self._ceiling / 2.0)

    def _go_back(self, from_seq: int) -> None:
        """Send every unanswered frame again, in order, from `from_seq`."""
        self.stats.go_backs += 1
        self._went_back = (from_seq, time.monotonic())
        started = False
        for item in list(self._pending.values()):
            started = started or item.seq == from_seq
            if started:
                self._transmit(item)

    def _measure(self, sample: float) -> None:
        """RFC 6298, section 2: SRTT and RTTVAR from one round trip, then the RTO."""
        self._min_rtt = sample if self._min_rtt is None else min(self._min_rtt, sample)
        if self.stats.srtt is None:
            self.stats.srtt, self._rttvar = sample, sample / 2.0
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self.stats.srtt - sample)
            self.stats.srtt = 0.875 * self.stats.srtt + 0.125 * sample
        self._set_rto()

    def _set_rto(self) -> None:
        if self.stats.srtt is None:
            return
        rto = self.stats.srtt + max(0.01, 4.0 * self._rttvar)
        self.stats.rto = min(max(rto, self.rto_min), self.rto_max)

    def _about_older_copy(self, item: _Pending, now: float) -> bool:
        """Whether a report that does not name its copy (a damage report) must be about an older
        copy of `item` than the latest: it came sooner after that copy left than any round trip
        ever took."""
        return item.sends > 1 and now - item.sent_at < 0.8 * (self._min_rtt or 0.0)

    def _dead(self, now: float) -> NoAnswer:
        oldest = next(iter(self._pending.values()))
        name = protocol.MESSAGE_NAMES.get(oldest.msg_type, hex(oldest.msg_type))
        heard = now - self._last_activity
        what = (f"nothing valid came back for {heard:.0f} s" if heard >= self.dead_after else
                "it answered, but no request got through")
        return NoAnswer(
            f"the link to {self.link.port} is dead: no request completed for "
            f"{self.dead_after:g} s ({name}, seq {oldest.seq}, sent {oldest.sends} times; {what}). "
            "Check the cable, the port and the baud rate; for the emulated board restart it with "
            "`tinycil flash --board mps2_an500`.")

    def _pump(self) -> None:
        frames = self.link.read_frames()
        now = time.monotonic()
        if not frames:
            oldest = next(iter(self._pending.values()), None)
            if oldest is None:
                return
            # A request that may take long by nature (its own timeout) extends the silence
            # allowed, so the end-of-task pass of a slow device is not taken for a dead link.
            if now - self._last_progress > max(self.dead_after, oldest.timeout or 0.0):
                raise self._dead(now)
            limit = max(self.stats.rto, oldest.timeout or 0.0)
            if now - max(oldest.sent_at, self._last_activity) > limit:
                self.stats.timeouts += 1
                self._loss()  # a frame or its reply vanished (or the device was slow)
                # RFC 6298 (5.5): back the timer off; the next measurement sets it again.
                self.stats.rto = min(self.stats.rto * 2.0, self.rto_max)
                self._go_back(oldest.seq)
            return
        for item in frames:
            if isinstance(item, protocol.FrameError):
                self.link.stats.frame_errors += 1
                self._loss()  # a reply damaged on its way back
                continue
            self._last_activity = now
            self._count_bytes(len(item.payload) + FRAME_OVERHEAD - 30)
            if item.type in (MSG["LOG"], MSG["PROGRESS"]):
                if item.type == MSG["PROGRESS"]:
                    self.stats.progress_frames += 1
                    self._last_progress = now
                    if self.on_progress:
                        try:
                            fields = unpack_fields(spec.PROGRESS_FIELDS, item.payload)[0]
                        except protocol.ProtocolError as exc:
                            raise _malformed("PROGRESS frame", exc) from None
                        self.on_progress(fields)
                else:
                    self.link.handle_unsolicited(item)
                continue
            if item.type == MSG["STATUS"]:
                self._on_status(item, now)
                continue
            if item.type in _REPLY_TYPES:
                self._on_reply(parse_reply(item), now)

    def _on_status(self, frame: protocol.Frame, now: float) -> None:
        try:
            code, name, detail, text = protocol.parse_status(frame.payload)
        except protocol.ProtocolError as exc:
            raise _malformed("STATUS", exc) from None
        if code in _DAMAGE:
            # The device names the seq it waits for: most likely the damaged frame's. A report
            # that reaches us within a round trip of resending it may be about an older copy:
            # then the frames that follow the resend show (OUT_OF_SEQUENCE) whether it arrived.
            self.stats.damage_reports += 1
            self._loss()
            item = self._pending.get(detail)
            if item is not None and not self._about_older_copy(item, now):
                # That frame alone: the frames after it follow once its reply shows which of
                # their copies came too early (see _on_reply), so a stale report costs one frame.
                self._transmit(item)
            return
        pending = self._pending.get(frame.seq)
        if pending is None:
            return
        what = protocol.MESSAGE_NAMES.get(pending.msg_type, hex(pending.msg_type))
        if code == spec.STATUS["UNKNOWN_TYPE"]:
            raise DeviceError(f"the firmware does not know {what}: it was built by an older "
                              "tinycil. Build and flash it with this one (`tinycil flash`).")
        raise DeviceStatusError(code, name, detail, text, what)

    def _on_reply(self, reply: Reply, now: float) -> None:
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
        copy = (reply.req_flags & spec.FLAG_SEND_MASK) >> spec.FLAG_SEND_SHIFT
        if reply.code == spec.STATUS["OUT_OF_SEQUENCE"]:
            self._on_nack(reply, copy, now)
            return
        pending = self._pending.pop(reply.seq, None)
        if pending is None:
            self.stats.stale_replies += 1
            return
        self._last_progress = now
        if pending.sends == 1:  # Karn's rule: only a frame sent once gives a true round trip
            self._measure(now - pending.sent_at)
            self._ceiling = grown_ceiling(self._ceiling, len(pending.payload))
        else:
            self._set_rto()  # the link delivers again: undo the timeouts' backoff
        # The copy that ran (a reply from the cache names it too): every later frame whose
        # latest copy left before it reached the device before it ran, and was dropped.
        ran_at = pending.copies.get(copy, pending.sent_at)
        dropped = next((p for p in self._pending.values()
                        if _before(reply.seq, p.seq) and p.sent_at < ran_at), None)
        # The device runs frames in order: every older unanswered frame ran, its reply was lost.
        # Resend each once per such evidence (its latest copy left before the answered one).
        answered_at = pending.copies.get(copy, pending.sent_at)
        for older in list(self._pending.values()):
            if not _before(older.seq, reply.seq):
                break
            if older.sent_at <= answered_at:
                self.stats.fast_resends += 1
                self._loss()
                self._transmit(older)
        if dropped is not None:
            self._go_back(dropped.seq)
        self.stats.frames += 1
        self.stats.payload_bytes += len(pending.payload)
        if reply.code != spec.STATUS["OK"]:
            what = protocol.MESSAGE_NAMES.get(pending.msg_type, hex(pending.msg_type))
            if reply.code == spec.STATUS["UNKNOWN_TYPE"]:
                raise DeviceError(f"the firmware does not know {what}: it was built by an older "
                                  "tinycil. Build and flash it with this one (`tinycil flash`).")
            raise DeviceStatusError(reply.code, reply.code_name, reply.detail, reply.text, what)
        if pending.on_reply is not None:
            pending.on_reply(reply)

    def _on_nack(self, reply: Reply, copy: int, now: float) -> None:
        """OUT_OF_SEQUENCE: the frame the device expects (next_seq) was lost, unless the copy
        that caused the answer left before our last resend of it (then the resend is on its
        way)."""
        missing = self._pending.get(reply.next_seq)
        if missing is None:
            if reply.next_seq == 0 or not any(_before(reply.next_seq, s) for s in self._pending):
                return
            raise DeviceError(
                f"the device expects seq {reply.next_seq}, which this session already completed "
                f"or never sent ({reply.text}): another program may be talking to it. Close it "
                "and stream again.")
        trigger = self._pending.get(reply.seq)
        left = trigger.copies.get(copy) if trigger is not None else None
        if left is None:
            if self._about_older_copy(missing, now):
                return
        elif left < missing.sent_at or now - missing.sent_at < 0.8 * (self._min_rtt or 0.0):
            return  # caused by a copy that left before our last resend of the missing frame
        self._loss()
        self._go_back(missing.seq)


# ---- the learning messages --------------------------------------------------------------------

def begin_task_payload(units) -> bytes:
    units = [int(u) for u in units]
    return pack_fields(spec.BEGIN_TASK_FIELDS, {"count": len(units)}) + bytes(units)


def train_control_payload(*, lr: float, momentum: float, clip_norm: float, batch_new: int,
                          batch_replay: int, seed: int, epochs: int, asymmetric_ce: bool = False,
                          balance_steps: int = 0, balance_lr_scale: float = 0.1,
                          replay_shift: int = 0, head_weight: float = 0.0,
                          head_shrinkage: float = 0.1) -> bytes:
    """TRAIN_CONTROL's payload; BadTrainingSettings for a value the device would refuse.
    head_weight, head_shrinkage: TrainConfig's discriminant_weight and discriminant_shrinkage
    (device_training_control maps a run's settings)."""
    problem = spec.train_limits_error({"lr": lr, "momentum": momentum, "clip_norm": clip_norm,
                                       "batch_new": batch_new, "batch_replay": batch_replay,
                                       "epochs": epochs, "balance_steps": balance_steps,
                                       "balance_lr_scale": balance_lr_scale,
                                       "asymmetric_ce": asymmetric_ce, "replay_shift": replay_shift,
                                       "head_weight": head_weight,
                                       "head_shrinkage": head_shrinkage})
    if problem:
        raise BadTrainingSettings(f"training settings refused: {problem}. Choose a value in "
                                  "that range (--lr, --momentum, --clip-norm, --batch-new, "
                                  "--batch-replay, --epochs, --balance-steps, --replay-shift, "
                                  "--head-weight).")
    return pack_fields(spec.TRAIN_CONTROL_FIELDS, {
        "lr": float(lr), "momentum": float(momentum), "clip_norm": float(clip_norm),
        "batch_new": int(batch_new), "batch_replay": int(batch_replay),
        "seed": int(seed) & 0xFFFFFFFF, "epochs": int(epochs),
        "balance_steps": int(balance_steps), "balance_lr_scale": float(balance_lr_scale),
        "asymmetric_ce": int(bool(asymmetric_ce)), "replay_shift": int(replay_shift),
        "head_weight": float(head_weight), "head_shrinkage": float(head_shrinkage)})


def device_training_control(training: dict) -> dict:
    """TRAIN_CONTROL's device ingredients from a run's "training" settings
    (tinycil.learn.train.device_ingredients), under the protocol's names."""
    from tinycil.learn.train import device_ingredients

    ing = device_ingredients(training)
    ing["head_weight"] = ing.pop("discriminant_weight")
    ing["head_shrinkage"] = ing.pop("discriminant_shrinkage")
    return ing


def samples_per_frame(input_size: int, limit: int | None = None) -> int:
    """How many samples (label + int8 input each) fit one frame after the samples head."""
    head = layout_struct(spec.SAMPLES_FIELDS).size
    n = (spec.MAX_PAYLOAD - head) // (input_size + 1)
    if n < 1:
        raise DeviceError(f"one sample of {input_size} bytes does not fit a frame of "
                          f"{spec.MAX_PAYLOAD} bytes")
    return min(n, limit) if limit else n


def samples_payload(x_int8, labels, flags: int = 0, fill: int | None = None) -> bytes:
    """A TRAIN_SAMPLES, BUFFER_SAMPLES or EVAL_SAMPLES payload; with `fill` (an int8 value) the
    samples are packed against it (flag PACKED) when that makes the payload shorter."""
    import numpy as np

    from tinycil.link import packing

    x = np.ascontiguousarray(np.asarray(x_int8, dtype=np.int8))
    y = np.asarray(labels, dtype=np.uint8)
    body = x.tobytes()
    if fill is not None:
        packed = packing.pack(x, fill)
        if len(packed) < len(body):
            body, flags = packed, flags | spec.SAMPLES_FLAGS["PACKED"]
    return (pack_fields(spec.SAMPLES_FIELDS, {"count": len(y), "flags": flags,
                                              "fill": fill if fill is not None else 0})
            + y.tobytes() + body)


def parse_eval_result(reply: Reply) -> tuple[list[int], list[tuple[int, int]]]:
    """(predictions, per-class (correct, total)) of an EVAL_RESULT."""
    try:
        head, off = unpack_fields(spec.EVAL_RESULT_FIELDS, reply.body)
    except protocol.ProtocolError as exc:
        raise _malformed("EVAL_RESULT", exc) from None
    need = off + head["count"] + 4 * head["classes"]
    if len(reply.body) < need:
        raise _malformed("EVAL_RESULT", ValueError(
            f"{head['count']} predictions and {head['classes']} class counts need {need} bytes, "
            f"the reply has {len(reply.body)}"))
    preds = list(reply.body[off:off + head["count"]])
    off += head["count"]
    summary = [struct.unpack_from("<HH", reply.body, off + 4 * k) for k in range(head["classes"])]
    return preds, summary


def parse_stats(reply: Reply) -> dict:
    try:
        s = unpack_fields(spec.STATS_FIELDS, reply.body)[0]
    except protocol.ProtocolError as exc:
        raise _malformed("STATS_RESULT", exc) from None
    s["model_signature"] = bytes(s["model_signature"]).hex()
    s["train_ticks"] = s["train_ticks"][0] | (s["train_ticks"][1] << 32)
    s["eval_ticks"] = s["eval_ticks"][0] | (s["eval_ticks"][1] << 32)
    s["counter_kind_name"] = protocol.COUNTER_KIND_NAMES.get(s["counter_kind"], "UNKNOWN")
    return s


def parse_selftest(reply: Reply) -> dict:
    try:
        s = unpack_fields(spec.SELFTEST_FIELDS, reply.body)[0]
    except protocol.ProtocolError as exc:
        raise _malformed("SELFTEST_RESULT", exc) from None
    s["counter_kind_name"] = protocol.COUNTER_KIND_NAMES.get(s["counter_kind"], "UNKNOWN")
    # Firmware built before a check was added reports fewer (`checks`): only those are results.
    s["results"] = [{"check": name, "passed": not (s["failed"] >> i) & 1,
                     "ticks_per_mac": s["ticks_per_mac"][i], "max_error": s["max_error"][i]}
                    for i, name in enumerate(spec.SELFTEST_CHECKS[:s["checks"]])]
    return s


def reset_device(link: DeviceLink) -> None:
    """Ask the device to restart (RESET is answered before the restart)."""
    reply = link.request(MSG["RESET"], b"")
    link.check_status(reply, "RESET")
