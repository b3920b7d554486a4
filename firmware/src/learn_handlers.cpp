// The learning requests: the serial front end of the learner library (firmware/lib/learner,
// tc_learner.h). It calls the same C API an application calls with its own sensor's data (begin
// task, add sample -> a step when the batch is full, flush, remember, predict, statistics); what
// is here is only the protocol's part: sequencing, ownership, checks of the host's fields, and
// the measurements the host reads back.
//
// Sequencing. A class-incremental run is only reproducible if every training sample reaches the
// learner once and in the order the host shuffled it, whatever the link does. So the learning
// requests run strictly in seq order: a frame the device already ran (the host retransmitted it,
// or the link duplicated it) is answered again from a cache of recent replies and not run twice;
// a frame after a gap (its predecessor was lost or damaged) is dropped and answered once with
// OUT_OF_SEQUENCE and the seq the device expects, so the host goes back to it (go-back-N).
// The cache belongs to the host session: a cached reply answers only a frame with the same seq
// and the same fingerprint (type, seq, payload), and a SYNC frame that is not such a repeat
// starts a new session and empties the cache, so a new host session whose seqs overlap the last
// one's gets its own requests run, never the old replies.
//
// Flow control. Every reply advertises the receive ring's free space at the moment it is sent
// (rx_free), and the host keeps its unanswered bytes below it. The main loop only leaves bytes in
// the ring while a request runs, so no byte can be lost at any baud rate, however long a training
// step takes.
//
// Persistence. The last BUFFER_SAMPLES frame of a task (END_OF_TASK) ends the task: a firmware
// built with TC_PERSIST saves the learned state there, before it answers. With the discriminant
// head on, the task's samples follow once more as OBSERVE frames, and the last (FIT_HEAD) fits
// the head and saves instead: a task is kept only once its head is fitted.
//
// Ownership. The device's learned state is its owner's: the requests that change it (KEYED in
// tinycil/protocol_spec.py) run only in a host session that presented the run's device key
// (UNLOCK), which export wrote into the model (TC_DEVICE_KEY) and into the run folder; every SYNC
// starts a locked session. Training parameters outside the protocol's sane ranges are refused.
#include "learn_handlers.h"

#include <string.h>

#include "bsp.h"
#include "learned_state.h"
#include "tc_conv2d_f32.h"
#include "tc_crc32.h"
#include "tc_dense_f32.h"
#include "tc_fully_connected_s8.h"
#include "tc_learner.h"
#include "tc_persist.h"

// The export's model, with the run's device key (TC_DEVICE_KEY) when its export made one.
#if __has_include("model_data.h")
#include "model_data.h"
#endif

#if defined(__arm__)
extern "C" uint32_t __stack_bottom[];
extern "C" uint32_t __stack_top[];
#endif

namespace app {
namespace {

constexpr size_t kAckSize = sizeof(tc_ack_t);
// The main loop reads the ring in chunks of 64 bytes; a chunk taken out but not yet decoded
// is not in the ring but not yet answered either, so it is kept out of the credit.
constexpr size_t kReadChunk = 64;

uint16_t credit() {
    const size_t pending = bsp::serial_rx_pending() + kReadChunk;
    return pending >= TC_DEVICE_RX_RING ? 0 : static_cast<uint16_t>(TC_DEVICE_RX_RING - pending);
}
static_assert(TC_REPLY_CACHE >= TC_SEND_WINDOW, "the cache must cover the host's window");

// A reply being built: the ACK head first, the request's own fields after it.
struct Reply {
    uint8_t type = TC_MSG_ACK;
    uint8_t code = TC_STATUS_OK;
    uint16_t detail = 0;
    size_t length = kAckSize;
    uint8_t payload[TC_MAX_PAYLOAD];

    void text(const char* t) {
        size_t n = strlen(t);
        if (n > TC_MAX_PAYLOAD - kAckSize) n = TC_MAX_PAYLOAD - kAckSize;
        memcpy(payload + kAckSize, t, n);
        length = kAckSize + n;
    }
    void fail(uint8_t c, const char* t, uint16_t d = 0) {
        type = TC_MSG_ACK;
        code = c;
        detail = d;
        text(t);
    }
    template <typename T>
    T* body() { return reinterpret_cast<T*>(payload + kAckSize); }
};

struct CachedReply {
    bool valid;
    uint16_t seq;
    uint32_t fingerprint;  // of the request: a new session's frame with the same seq differs
    uint8_t type;
    uint16_t length;
    uint8_t payload[TC_REPLY_CACHE_PAYLOAD];
};

#if defined(TC_DEVICE_KEY)
constexpr uint8_t kDeviceKey[TC_DEVICE_KEY_BYTES] = TC_DEVICE_KEY;
constexpr bool kHasDeviceKey = true;
#else
constexpr uint8_t kDeviceKey[TC_DEVICE_KEY_BYTES] = {};
constexpr bool kHasDeviceKey = false;  // a model exported without a key: nothing unlocks
#endif

bool keyed(uint8_t type) {
    return type == TC_MSG_BEGIN_TASK || type == TC_MSG_TRAIN_SAMPLES ||
           type == TC_MSG_TRAIN_CONTROL || type == TC_MSG_BUFFER_SAMPLES;
}

struct Sequencer {
    bool synced;
    bool unlocked;          // this host session presented the run's device key
    uint16_t expected;
    bool nacked;            // a NACK was sent for the current gap
    uint16_t nack_trigger;  // seq of the frame that caused it
    CachedReply cache[TC_REPLY_CACHE];
    uint8_t next_slot;
    uint32_t frames_run, frames_repeated, frames_out_of_sequence;
};

struct Learner {
    int runtime_status;
    bool have_params;
    uint16_t pending;
    uint32_t task_steps, task_samples;
    uint32_t new_samples;
    uint32_t observed_samples;
    uint64_t train_ticks, eval_ticks;
    uint32_t eval_samples;
    uint16_t eval_correct[256];
    uint16_t eval_total[256];
    bool stack_painted;
};

Sequencer seq_state;
Learner learner;
Reply reply;

constexpr uint32_t kStackPaint = 0xA5A5A5A5u;

// Marks the unused stack so that STATS can tell how deep it ever went.
void paint_stack() {
#if defined(__arm__)
    uint32_t sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t* p = __stack_bottom; reinterpret_cast<uint32_t>(p) + 256 < sp; ++p) *p = kStackPaint;
    learner.stack_painted = true;
#endif
}

uint32_t stack_used() {
#if defined(__arm__)
    if (!learner.stack_painted) return 0;
    const uint32_t* p = __stack_bottom;
    while (p < __stack_top && *p == kStackPaint) ++p;
    return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(__stack_top) -
                                 reinterpret_cast<uintptr_t>(p));
#else
    return 0;
#endif
}

int runtime() { return learner.runtime_status; }

void send_reply(const tc::Frame& request, tc::Responder& out, uint8_t type, const uint8_t* payload,
                size_t length) {
    out.send(type, request.seq, payload, length);
}

void finish_head(Reply& r, const tc::Frame& request) {
    tc_ack_t head;
    head.code = r.code;
    head.req_flags = request.flags;  // names the copy of the request (the host's send count)
    head.detail = r.detail;
    head.rx_free = credit();
    head.next_seq = seq_state.expected;
    head.session_id = bsp::session_id();
    memcpy(r.payload, &head, sizeof(head));
}

using Body = void (*)(const tc::Frame& request, tc::Responder& out, Reply& r);

// CRC-32 of the request's type, seq and payload: the flags are left out, as they count the
// host's sends of the same frame.
uint32_t fingerprint(const tc::Frame& request) {
    const uint8_t head[3] = {request.type, static_cast<uint8_t>(request.seq),
                             static_cast<uint8_t>(request.seq >> 8)};
    return tc::crc32(request.payload, request.length, tc::crc32(head, sizeof(head)));
}

CachedReply* cached(uint16_t seq, uint32_t print) {
    for (CachedReply& c : seq_state.cache)
        if (c.valid && c.seq == seq && c.fingerprint == print) return &c;
    return nullptr;
}

// Before (negative) or after (positive) the expected seq, modulo 2^16.
int16_t distance(uint16_t seq, uint16_t expected) { return static_cast<int16_t>(seq - expected); }

void sequenced(const tc::Frame& request, tc::Responder& out, Body body) {
    Sequencer& s = seq_state;
    const uint32_t print = fingerprint(request);
    if (CachedReply* c = cached(request.seq, print)) {
        ++s.frames_repeated;
        send_reply(request, out, c->type, c->payload, c->length);
        return;
    }
    if (request.flags & TC_FLAG_SYNC) {
        // A new host session: the replies of the last one must never answer its frames.
        for (CachedReply& c : s.cache) c.valid = false;
        s.next_slot = 0;
        s.synced = true;
        s.expected = request.seq;
        s.nacked = false;
        s.unlocked = false;  // a new session presents the key again
    }
    if (!s.synced || request.seq != s.expected) {
        ++s.frames_out_of_sequence;
        // A repeat too old for the cache was answered long ago: nothing to say. A frame past a
        // gap gets one NACK per round of the host's go-back (a lower seq than the last NACK's
        // means the host went back and the gap is still there).
        if (s.synced && distance(request.seq, s.expected) < 0) return;
        if (s.nacked && distance(request.seq, s.nack_trigger) > 0) return;
        s.nacked = true;
        s.nack_trigger = request.seq;
        Reply& r = reply;
        r = Reply();
        r.fail(TC_STATUS_OUT_OF_SEQUENCE,
               s.synced ? "frame out of sequence: resend from next_seq"
                        : "no session: the device restarted or was never synced; start a new "
                          "session",
               request.seq);
        finish_head(r, request);
        send_reply(request, out, r.type, r.payload, r.length);
        return;
    }
    s.expected = static_cast<uint16_t>(request.seq + 1);
    s.nacked = false;
    ++s.frames_run;

    Reply& r = reply;
    r = Reply();
    const int status = runtime();
    if (status != TC_STATUS_OK && request.type != TC_MSG_STATS && request.type != TC_MSG_SELFTEST &&
        request.type != TC_MSG_SYNC) {
        r.fail(static_cast<uint8_t>(status), status == TC_STATUS_NO_MODEL
                   ? "firmware built without a model: export a run and flash again"
                   : "the runtime could not start (its arena does not fit)");
    } else if (keyed(request.type) && !s.unlocked) {
        r.fail(TC_STATUS_LOCKED,
               kHasDeviceKey ? "this device learns only in a session that presented its run's "
                               "key: stream the run it was flashed with (tinycil stream --run RUN)"
                             : "this firmware's model has no device key: export the run and flash "
                               "again (tinycil flash --run RUN)",
               kHasDeviceKey ? TC_LOCKED_NO_KEY : TC_LOCKED_FIRMWARE_KEYLESS);
    } else {
        body(request, out, r);
    }
    finish_head(r, request);
    send_reply(request, out, r.type, r.payload, r.length);

    CachedReply& slot = s.cache[s.next_slot];
    s.next_slot = static_cast<uint8_t>((s.next_slot + 1) % TC_REPLY_CACHE);
    if (r.length <= TC_REPLY_CACHE_PAYLOAD) {
        slot.valid = true;
        slot.seq = request.seq;
        slot.fingerprint = print;
        slot.type = r.type;
        slot.length = static_cast<uint16_t>(r.length);
        memcpy(slot.payload, r.payload, r.length);
    } else {
        slot.valid = false;  // too long to keep: a repeat would find nothing and be dropped
    }
}

// A PACKED frame's samples, unpacked (protocol_spec.SAMPLES_FIELDS); what the handlers read.
int8_t unpacked[TC_PACKED_SCRATCH];

// Unpacks `count` packed samples of n bytes from src[0, len) into dst; false unless the payload
// holds exactly that: every map whole and every byte a map names present, nothing left over.
bool unpack_samples(const uint8_t* src, size_t len, uint32_t count, uint32_t n, int8_t fill,
                    int8_t* dst) {
    const uint8_t* const end = src + len;
    const uint32_t map_bytes = (n + 7) / 8;
    for (uint32_t s = 0; s < count; ++s) {
        if (static_cast<size_t>(end - src) < map_bytes) return false;
        const uint8_t* map = src;
        src += map_bytes;
        for (uint32_t i = 0; i < n; ++i) {
            if ((map[i >> 3] >> (i & 7)) & 1u) {
                if (src == end) return false;
                *dst++ = static_cast<int8_t>(*src++);
            } else {
                *dst++ = fill;
            }
        }
    }
    return src == end;
}

// Parses the samples head (and unpacks PACKED samples); false (and the reply says why) when the
// payload is inconsistent. Nothing is trained on until the whole frame proved consistent.
bool parse_samples(const tc::Frame& f, Reply& r, tc_samples_t& head, const uint8_t*& labels,
                   const int8_t*& x, uint16_t max_count) {
    if (f.length < sizeof(tc_samples_t)) {
        r.fail(TC_STATUS_MALFORMED, "samples payload shorter than its head");
        return false;
    }
    memcpy(&head, f.payload, sizeof(head));
    const uint32_t input_size = tc_learner_input_size();
    const size_t head_and_labels = sizeof(head) + head.count;
    labels = f.payload + sizeof(head);
    const bool packed = head.flags & TC_SAMPLES_PACKED;
    if (!packed && f.length != head_and_labels + static_cast<size_t>(head.count) * input_size) {
        r.fail(TC_STATUS_BAD_ARGUMENT, "payload length does not match count samples of the "
               "model's input size", static_cast<uint16_t>(input_size));
        return false;
    }
    if (head.count > max_count) {
        r.fail(TC_STATUS_BAD_ARGUMENT, "too many samples in one frame", max_count);
        return false;
    }
    if (packed) {
        if (static_cast<size_t>(head.count) * input_size > sizeof(unpacked)) {
            r.fail(TC_STATUS_BAD_ARGUMENT, "more packed samples than one frame unpacks to",
                   static_cast<uint16_t>(sizeof(unpacked) / (input_size ? input_size : 1)));
            return false;
        }
        if (f.length < head_and_labels ||
            !unpack_samples(f.payload + head_and_labels, f.length - head_and_labels, head.count,
                            input_size, head.fill, unpacked)) {
            r.fail(TC_STATUS_BAD_ARGUMENT, "packed samples do not match count samples of the "
                   "model's input size", static_cast<uint16_t>(input_size));
            return false;
        }
        x = unpacked;
        return true;
    }
    x = reinterpret_cast<const int8_t*>(labels + head.count);
    return true;
}

void fail_status(Reply& r, int status, const char* what) {
    if (status != TC_STATUS_OK) r.fail(static_cast<uint8_t>(status), what);
}

// ---- bodies -------------------------------------------------------------------------------------

// SYNC: the sequencer did the work (a new session, an empty cache); the payload is the host's
// session, which makes this frame's fingerprint its own.
void sync(const tc::Frame& f, tc::Responder&, Reply& r) {
    if (f.length != sizeof(tc_sync_t)) return r.fail(TC_STATUS_MALFORMED, "SYNC has a wrong size");
    r.text("session started");
}

// UNLOCK: the run's device key, compared in constant time (no early exit on the first
// difference, so the time taken says nothing about how much of a guess was right).
void unlock(const tc::Frame& f, tc::Responder&, Reply& r) {
    if (f.length != sizeof(tc_unlock_t)) return r.fail(TC_STATUS_MALFORMED, "UNLOCK has a wrong size");
    if (!kHasDeviceKey)
        return r.fail(TC_STATUS_LOCKED, "this firmware's model has no device key: export the run "
                      "and flash again (tinycil flash --run RUN)", TC_LOCKED_FIRMWARE_KEYLESS);
    uint8_t difference = 0;
    for (size_t i = 0; i < TC_DEVICE_KEY_BYTES; ++i) difference |= f.payload[i] ^ kDeviceKey[i];
    if (difference != 0) {
        seq_state.unlocked = false;
        return r.fail(TC_STATUS_LOCKED, "wrong device key: this device was flashed with another "
                      "run; stream that run, or flash this one (tinycil flash --run RUN)",
                      TC_LOCKED_WRONG_KEY);
    }
    seq_state.unlocked = true;
    r.text("unlocked: this session may teach the device");
}

static_assert(TC_TRAIN_BATCH_REPLAY_MIN == 0 && TC_TRAIN_EPOCHS_MIN == 0,
              "train_control checks these two fields against their maximum only");

// A field of TRAIN_CONTROL within its sane range (tinycil/protocol_spec.py TRAIN_LIMITS); false
// for NaN too, as every comparison with NaN is false.
bool within(float v, float low, float high) { return v >= low && v <= high; }

void begin_task(const tc::Frame& f, tc::Responder&, Reply& r) {
    tc_begin_task_t head;
    if (f.length < sizeof(head)) return r.fail(TC_STATUS_MALFORMED, "BEGIN_TASK too short");
    memcpy(&head, f.payload, sizeof(head));
    if (f.length != sizeof(head) + head.count)
        return r.fail(TC_STATUS_MALFORMED, "BEGIN_TASK length does not match its count");
    const int status = tc_learner_begin_task(f.payload + sizeof(head), head.count);
    fail_status(r, status, "labels must continue the classes seen in order, and the model's "
                "plan must know the size they lead to");
    if (status == TC_STATUS_OK) {
        learner.pending = 0;
        learner.task_steps = 0;
        learner.task_samples = 0;
    }
}

void train_control(const tc::Frame& f, tc::Responder&, Reply& r) {
    tc_train_control_t c;
    if (f.length != sizeof(c)) return r.fail(TC_STATUS_MALFORMED, "TRAIN_CONTROL has a wrong size");
    memcpy(&c, f.payload, sizeof(c));
    // Refused outside the protocol's sane ranges: lr = 1e30 once drove the loss to NaN, and the
    // next END_OF_TASK saved that state. detail = the field's index in TRAIN_CONTROL_FIELDS.
    if (!within(c.lr, TC_TRAIN_LR_MIN, TC_TRAIN_LR_MAX))
        return r.fail(TC_STATUS_BAD_ARGUMENT, "lr outside its sane range", 0);
    if (!within(c.momentum, TC_TRAIN_MOMENTUM_MIN, TC_TRAIN_MOMENTUM_MAX))
        return r.fail(TC_STATUS_BAD_ARGUMENT, "momentum outside its sane range", 1);
    if (!within(c.clip_norm, TC_TRAIN_CLIP_NORM_MIN, TC_TRAIN_CLIP_NORM_MAX))
        return r.fail(TC_STATUS_BAD_ARGUMENT, "clip_norm outside its sane range", 2);
    if (c.batch_new < TC_TRAIN_BATCH_NEW_MIN || c.batch_new > TC_TRAIN_BATCH_NEW_MAX)
        return r.fail(TC_STATUS_BAD_ARGUMENT, "batch_new outside its sane range", 3);
    if (c.batch_replay > TC_TRAIN_BATCH_REPLAY_MAX)  // its minimum is 0
        return r.fail(TC_STATUS_BAD_ARGUMENT, "batch_replay outside its sane range", 4);
    if (c.epochs > TC_TRAIN_EPOCHS_MAX)  // its minimum is 0
        return r.fail(TC_STATUS_BAD_ARGUMENT, "epochs outside its sane range", 6);
    if (c.balance_steps > TC_TRAIN_BALANCE_STEPS_MAX)  // its minimum is 0
        return r.fail(TC_STATUS_BAD_ARGUMENT, "balance_steps outside its sane range", 7);
    if (!within(c.balance_lr_scale, TC_TRAIN_BALANCE_LR_SCALE_MIN, TC_TRAIN_BALANCE_LR_SCALE_MAX))
        return r.fail(TC_STATUS_BAD_ARGUMENT, "balance_lr_scale outside its sane range", 8);
    if (c.asymmetric_ce > TC_TRAIN_ASYMMETRIC_CE_MAX)
        return r.fail(TC_STATUS_BAD_ARGUMENT, "asymmetric_ce must be 0 or 1", 9);
    if (c.replay_shift > TC_TRAIN_REPLAY_SHIFT_MAX)
        return r.fail(TC_STATUS_BAD_ARGUMENT, "replay_shift outside its sane range", 10);
    if (!within(c.head_weight, TC_TRAIN_HEAD_WEIGHT_MIN, TC_TRAIN_HEAD_WEIGHT_MAX))
        return r.fail(TC_STATUS_BAD_ARGUMENT, "head_weight outside its sane range", 12);
    if (!within(c.head_shrinkage, TC_TRAIN_HEAD_SHRINKAGE_MIN, TC_TRAIN_HEAD_SHRINKAGE_MAX))
        return r.fail(TC_STATUS_BAD_ARGUMENT, "head_shrinkage outside its sane range", 13);
    tc_train_params p;
    p.lr = c.lr;
    p.momentum = c.momentum;
    p.clip_norm = c.clip_norm;
    p.batch_new = c.batch_new;
    p.batch_replay = c.batch_replay;
    p.seed = c.seed;
    p.balance_lr_scale = c.balance_lr_scale;
    p.balance_steps = c.balance_steps;
    p.asymmetric_ce = c.asymmetric_ce;
    p.replay_shift = c.replay_shift;
    p.head_weight = c.head_weight;
    p.head_shrinkage = c.head_shrinkage;
    const int status = tc_learner_set_training(&p);
    fail_status(r, status, "training parameters out of range (lr > 0, 0 <= momentum < 1, "
                "batch_new >= 1, batch_new + batch_replay <= the model's max batch, a head "
                "weight of 0 for a model without a head), or a mini-batch is half sent");
    if (status == TC_STATUS_OK) learner.have_params = true;
}

// The answer of the frame that completes a task (END_OF_TASK, or FIT_HEAD with the head on): the
// learned state saved (TC_PERSIST builds); detail = the save's tc_persist_status.
void save_and_answer(Reply& r) {
    const int saved = save_learned_state();
    r.detail = static_cast<uint16_t>(saved);
    if (saved == TC_PERSIST_OK) {
        r.text("task complete: learned state saved");
    } else if (saved == TC_PERSIST_UNAVAILABLE) {
        r.text("task complete (firmware built without persistence: not saved)");
    } else {
        r.text(tc_persist_status_name(saved));
    }
}

// OBSERVE frames: the finished task's samples once more, forward only, for the discriminant
// head's statistics; the last one (FIT_HEAD) fits the head and saves.
void observe_samples(const tc_samples_t& head, const uint8_t* labels, const int8_t* x, Reply& r) {
    const uint32_t input_size = tc_learner_input_size();
    const uint64_t t0 = bsp::counter_read();
    for (uint16_t i = 0; i < head.count; ++i) {
        const int status = tc_learner_observe(x + static_cast<size_t>(i) * input_size, labels[i]);
        if (status != TC_STATUS_OK) {
            learner.train_ticks += bsp::counter_read() - t0;
            return r.fail(static_cast<uint8_t>(status),
                          status == TC_STATUS_BAD_STATE
                              ? "no head statistics under way: OBSERVE follows END_OF_TASK with "
                                "a head weight above 0"
                              : "observed sample refused (label beyond the classes seen?)",
                          i);
        }
        ++learner.observed_samples;
    }
    if (!(head.flags & TC_SAMPLES_FIT_HEAD)) {
        learner.train_ticks += bsp::counter_read() - t0;
        return;
    }
    const int fitted = tc_learner_fit_head();
    learner.train_ticks += bsp::counter_read() - t0;
    if (fitted != TC_STATUS_OK)
        return r.fail(static_cast<uint8_t>(fitted), "the head could not be fitted: no statistics "
                      "under way");
    save_and_answer(r);
}

void train_samples(const tc::Frame& f, tc::Responder& out, Reply& r) {
    if (!learner.have_params)
        return r.fail(TC_STATUS_BAD_STATE, "send TRAIN_CONTROL before TRAIN_SAMPLES");
    tc_samples_t head;
    const uint8_t* labels;
    const int8_t* x;
    if (!parse_samples(f, r, head, labels, x, 0xFFFF)) return;
    if (head.flags & TC_SAMPLES_OBSERVE) return observe_samples(head, labels, x, r);
    if (head.flags & TC_SAMPLES_FIT_HEAD)
        return r.fail(TC_STATUS_BAD_ARGUMENT, "FIT_HEAD goes with OBSERVE");
    const uint32_t input_size = tc_learner_input_size();
    // train_ticks counts the training alone: the PROGRESS frame of a step is sent after the step
    // was measured. Its transmission is a busy wait on a real UART (about 2.7 ms per step at
    // 115200 baud on the NUCLEO: 10 bits per byte of a ~30-byte frame) that the emulated board
    // does not have, so counting it would make the two boards' figures incomparable.
    for (uint16_t i = 0; i < head.count; ++i) {
        // The learner forms mini-batches of batch_new from the stream, so frames need not follow
        // batch boundaries; END_OF_BATCH steps on a short batch (the end of the data).
        const bool end_of_data = i + 1 == head.count && (head.flags & TC_SAMPLES_END_OF_BATCH);
        tc_step_report rep;
        const uint64_t t0 = bsp::counter_read();
        int status = tc_learner_add_sample(x + static_cast<size_t>(i) * input_size, labels[i], &rep);
        if (status == TC_STATUS_OK && end_of_data && !rep.stepped) status = tc_learner_flush(&rep);
        learner.train_ticks += bsp::counter_read() - t0;
        if (status != TC_STATUS_OK) {
            return r.fail(static_cast<uint8_t>(status),
                          "training sample refused (label beyond the classes seen?)", i);
        }
        learner.pending = rep.pending;
        ++learner.new_samples;
        ++learner.task_samples;
        if (rep.stepped) {
            ++learner.task_steps;
            tc_learner_stats_t st;
            tc_learner_stats(&st);
            tc_progress_t p;
            p.task_steps = learner.task_steps;
            p.task_samples = learner.task_samples;
            p.loss = rep.loss;
            p.grad_norm = rep.grad_norm;
            p.step_ticks = static_cast<uint32_t>(st.last_step_ticks);
            out.send(TC_MSG_PROGRESS, f.seq, &p, sizeof(p));  // after the measurement
        }
    }
    r.detail = learner.pending;
}

void buffer_samples(const tc::Frame& f, tc::Responder&, Reply& r) {
    tc_samples_t head;
    const uint8_t* labels;
    const int8_t* x;
    if (!parse_samples(f, r, head, labels, x, 0xFFFF)) return;
    const int status = tc_learner_remember(x, labels, head.count);
    fail_status(r, status,
                "buffer samples refused: label beyond the classes seen, or the buffer is full");
    if (status != TC_STATUS_OK || !(head.flags & TC_SAMPLES_END_OF_TASK)) return;
    // The task is complete: its end-of-task pass, then keep what it taught across a reset
    // (TC_PERSIST builds).
    const uint64_t t0 = bsp::counter_read();
    const int ended = tc_learner_end_task(nullptr);
    learner.train_ticks += bsp::counter_read() - t0;
    if (ended != TC_STATUS_OK)
        return r.fail(static_cast<uint8_t>(ended), "the end-of-task pass could not run");
    tc_learner_stats_t st;
    tc_learner_stats(&st);
    if (st.head_observing) {  // the head's statistics follow; FIT_HEAD saves
        r.detail = TC_SAVE_DEFERRED;
        r.text("task trained: stream its samples as OBSERVE frames, the last FIT_HEAD");
        return;
    }
    save_and_answer(r);
}

void eval_samples(const tc::Frame& f, tc::Responder&, Reply& r) {
    tc_samples_t head;
    const uint8_t* labels;
    const int8_t* x;
    if (!parse_samples(f, r, head, labels, x, TC_EVAL_MAX_SAMPLES)) return;
    if (head.flags & TC_SAMPLES_EVAL_START) {
        memset(learner.eval_correct, 0, sizeof(learner.eval_correct));
        memset(learner.eval_total, 0, sizeof(learner.eval_total));
    }
    r.type = TC_MSG_EVAL_RESULT;
    tc_eval_result_t* res = r.body<tc_eval_result_t>();
    uint8_t* pred = r.payload + kAckSize + sizeof(tc_eval_result_t);
    const uint32_t input_size = tc_learner_input_size();
    int status = TC_STATUS_OK;
    const uint64_t t0 = bsp::counter_read();
    for (uint16_t i = 0; i < head.count && status == TC_STATUS_OK; ++i)
        status = tc_learner_predict(x + static_cast<size_t>(i) * input_size, pred + i);
    learner.eval_ticks += bsp::counter_read() - t0;
    if (status != TC_STATUS_OK) return r.fail(static_cast<uint8_t>(status), "prediction failed");
    learner.eval_samples += head.count;
    for (uint16_t i = 0; i < head.count; ++i) {
        const uint8_t y = labels[i];
        if (learner.eval_total[y] < 0xFFFF) ++learner.eval_total[y];
        if (pred[i] == y && learner.eval_correct[y] < 0xFFFF) ++learner.eval_correct[y];
    }
    res->count = head.count;
    res->classes = 0;
    r.length = kAckSize + sizeof(tc_eval_result_t) + head.count;
    if (head.flags & TC_SAMPLES_EVAL_SUMMARY) {
        tc_rt_desc desc;
        tc_learner_describe(&desc);
        uint16_t classes = desc.classes_seen;
        const size_t room = (TC_REPLY_CACHE_PAYLOAD - r.length) / 4;
        if (classes > room) classes = static_cast<uint16_t>(room);
        uint8_t* o = r.payload + r.length;
        for (uint16_t k = 0; k < classes; ++k) {
            memcpy(o + 4 * k, &learner.eval_correct[k], 2);
            memcpy(o + 4 * k + 2, &learner.eval_total[k], 2);
        }
        res->classes = classes;
        r.length += 4u * classes;
    }
}

void stats(const tc::Frame&, tc::Responder&, Reply& r) {
    r.type = TC_MSG_STATS_RESULT;
    tc_stats_t* s = r.body<tc_stats_t>();
    memset(s, 0, sizeof(*s));
    tc_rt_desc desc;
    tc_learner_describe(&desc);
    tc_learner_stats_t st;
    tc_learner_stats(&st);
    memcpy(s->model_signature, desc.signature, 8);
    s->has_model = desc.has_model;
    s->counter_kind = bsp::counter_kind();
    s->max_batch = desc.max_batch;
    s->input_size = desc.input_size;
    s->classes_max = desc.classes_max;
    s->classes_seen = desc.classes_seen;
    s->buffer_capacity = desc.buffer_capacity;
    s->steps = st.steps;
    s->samples_stepped = st.samples_trained;
    s->new_samples = learner.new_samples;
    s->train_ticks[0] = static_cast<uint32_t>(learner.train_ticks);
    s->train_ticks[1] = static_cast<uint32_t>(learner.train_ticks >> 32);
    s->last_step_ticks = static_cast<uint32_t>(st.last_step_ticks);
    s->eval_samples = learner.eval_samples;
    s->eval_ticks[0] = static_cast<uint32_t>(learner.eval_ticks);
    s->eval_ticks[1] = static_cast<uint32_t>(learner.eval_ticks >> 32);
    s->arena_bytes = desc.arena_bytes;
    s->arena_used = desc.arena_used;
    s->ram_used = bsp::memory_usage().ram_used;
    s->stack_used = stack_used();
    s->buffer_fill = desc.buffer_fill;
    s->rx_overruns = bsp::rx_overruns();
    s->tx_drops = bsp::tx_drops();
    s->frames_run = seq_state.frames_run;
    s->frames_repeated = seq_state.frames_repeated;
    s->frames_out_of_sequence = seq_state.frames_out_of_sequence;
    s->observed_samples = learner.observed_samples;
    s->head_classes = st.head_classes;
    s->head_features = st.head_features;
    s->head_observing = st.head_observing;
    r.length = kAckSize + sizeof(tc_stats_t);
    if (learner.runtime_status != TC_STATUS_OK) r.code = static_cast<uint8_t>(learner.runtime_status);
}

// ---- self-test ----------------------------------------------------------------------------------
// Fixed inputs from a tiny integer generator, so the device needs no test data.
constexpr int32_t kB = 4, kIn = 32, kOut = 16;
float st_x[kB * kIn], st_w[kOut * kIn], st_b[kOut], st_y[kB * kOut], st_dy[kB * kOut];
float st_dx[kB * kIn], st_dw[kOut * kIn], st_db[kOut];
int8_t st_x8[kB * kIn], st_w8[kOut * kIn], st_y8[kB * kOut];
int32_t st_b32[kOut];

int32_t pattern(int32_t i, int32_t a, int32_t m) { return ((i * a + 3) % m) - m / 2; }

float absf(float v) { return v < 0 ? -v : v; }

void selftest(const tc::Frame&, tc::Responder&, Reply& r) {
    r.type = TC_MSG_SELFTEST_RESULT;
    tc_selftest_t* s = r.body<tc_selftest_t>();
    memset(s, 0, sizeof(*s));
    s->counter_kind = bsp::counter_kind();
    s->checks = TC_SELFTEST_CHECKS;
    for (int32_t i = 0; i < kB * kIn; ++i) st_x[i] = pattern(i, 7, 13) * 0.125f;
    for (int32_t i = 0; i < kOut * kIn; ++i) st_w[i] = pattern(i, 5, 11) * 0.0625f;
    for (int32_t i = 0; i < kOut; ++i) st_b[i] = pattern(i, 3, 7) * 0.25f;
    for (int32_t i = 0; i < kB * kOut; ++i) st_dy[i] = pattern(i, 11, 9) * 0.5f;
    const tc_dense_dims d = {kB, kIn, kOut};
    const float macs = static_cast<float>(kB * kIn * kOut);

    // 0: dense forward against the plain loop. The test values are multiples of 1/128 with few
    // terms, so every sum is exact in float32 and any difference is a kernel error.
    uint64_t t0 = bsp::counter_read();
    tc_dense_f32_fwd(&d, st_x, st_w, st_b, st_y);
    s->ticks_per_mac[0] = static_cast<float>(bsp::counter_read() - t0) / macs;
    float err = 0.0f;
    for (int32_t b = 0; b < kB; ++b)
        for (int32_t o = 0; o < kOut; ++o) {
            float acc = st_b[o];
            for (int32_t i = 0; i < kIn; ++i) acc += st_x[b * kIn + i] * st_w[o * kIn + i];
            const float e = absf(acc - st_y[b * kOut + o]);
            if (e > err) err = e;
        }
    s->max_error[0] = err;
    if (err != 0.0f) s->failed |= 1u << 0;

    // 1: dense backward (dx, dw, db).
    t0 = bsp::counter_read();
    tc_dense_f32_bwd(&d, st_x, st_w, st_dy, st_dx, st_dw, st_db);
    s->ticks_per_mac[1] = static_cast<float>(bsp::counter_read() - t0) / (2.0f * macs);
    err = 0.0f;
    for (int32_t b = 0; b < kB; ++b)
        for (int32_t i = 0; i < kIn; ++i) {
            float acc = 0.0f;
            for (int32_t o = 0; o < kOut; ++o) acc += st_dy[b * kOut + o] * st_w[o * kIn + i];
            const float e = absf(acc - st_dx[b * kIn + i]);
            if (e > err) err = e;
        }
    for (int32_t o = 0; o < kOut; ++o) {
        float gb = 0.0f;
        for (int32_t b = 0; b < kB; ++b) gb += st_dy[b * kOut + o];
        if (absf(gb - st_db[o]) > err) err = absf(gb - st_db[o]);
        for (int32_t i = 0; i < kIn; ++i) {
            float acc = 0.0f;
            for (int32_t b = 0; b < kB; ++b) acc += st_dy[b * kOut + o] * st_x[b * kIn + i];
            const float e = absf(acc - st_dw[o * kIn + i]);
            if (e > err) err = e;
        }
    }
    s->max_error[1] = err;
    if (err != 0.0f) s->failed |= 1u << 1;

    // 2: int8 fully connected with a multiplier of exactly 1 (2^30 * 2^(1-31)): the output is
    // the clamped integer sum, which the plain loop gives exactly.
    for (int32_t i = 0; i < kB * kIn; ++i) st_x8[i] = static_cast<int8_t>(pattern(i, 7, 5));
    for (int32_t i = 0; i < kOut * kIn; ++i) st_w8[i] = static_cast<int8_t>(pattern(i, 5, 3));
    for (int32_t i = 0; i < kOut; ++i) st_b32[i] = pattern(i, 3, 9);
    const int32_t multiplier = 1 << 30, shift = 1;
    const tc_s8_quant q = {1, -2, -128, 127, &multiplier, &shift, 0};  // input zp -1, output zp -2
    t0 = bsp::counter_read();
    tc_fully_connected_s8(&d, &q, st_x8, st_w8, st_b32, st_y8);
    s->ticks_per_mac[2] = static_cast<float>(bsp::counter_read() - t0) / macs;
    err = 0.0f;
    for (int32_t b = 0; b < kB; ++b)
        for (int32_t o = 0; o < kOut; ++o) {
            int32_t acc = st_b32[o];
            for (int32_t i = 0; i < kIn; ++i) acc += (st_x8[b * kIn + i] + 1) * st_w8[o * kIn + i];
            acc += -2;
            if (acc < -128) acc = -128;
            if (acc > 127) acc = 127;
            const float e = absf(static_cast<float>(acc - st_y8[b * kOut + o]));
            if (e > err) err = e;
        }
    s->max_error[2] = err;
    if (err != 0.0f) s->failed |= 1u << 2;

    // 3: an image model's first layer, trained on the device: a one-channel 3x3 convolution
    // (SAME, five filters: both of its filter blocks), forward and weight gradient without an
    // input gradient, against the plain loops. Exact values again (sums of at most 64 multiples
    // of 1/128); the buffers of the checks above are reused.
    {
        constexpr int32_t H = 8, W = 8, F = 5;
        const float* cx = st_x;       // H x W
        const float* cw = st_w;       // F x 3 x 3
        const float* cb = st_b;       // F
        float* cdy = st_w + 64;       // H x W x F
        float* cy = st_dw;            // H x W x F
        float* cdw = st_dx;           // F x 3 x 3
        float* cdb = st_db;           // F
        for (int32_t i = 0; i < H * W * F; ++i) cdy[i] = pattern(i, 11, 9) * 0.5f;
        tc_window_dims cd;
        tc_window_dims_init(&cd, 1, H, W, 1, F, 3, 3, 1, 1, TC_PADDING_SAME, 1);
        t0 = bsp::counter_read();
        tc_conv2d_f32_fwd(&cd, cx, cw, cb, cy);
        tc_conv2d_f32_bwd(&cd, cx, cw, cdy, nullptr, cdw, cdb);
        s->ticks_per_mac[3] = static_cast<float>(bsp::counter_read() - t0) / (2.0f * H * W * F * 9);
        err = 0.0f;
        for (int32_t f = 0; f < F; ++f) {
            float gb = 0.0f;
            float gw[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
            for (int32_t y = 0; y < H; ++y)
                for (int32_t x = 0; x < W; ++x) {
                    const float dy = cdy[(y * W + x) * F + f];
                    float acc = cb[f];
                    for (int32_t k = 0; k < 9; ++k) {
                        const int32_t iy = y + k / 3 - 1, ix = x + k % 3 - 1;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                        acc += cx[iy * W + ix] * cw[f * 9 + k];
                        gw[k] += dy * cx[iy * W + ix];
                    }
                    gb += dy;
                    const float e = absf(acc - cy[(y * W + x) * F + f]);
                    if (e > err) err = e;
                }
            if (absf(gb - cdb[f]) > err) err = absf(gb - cdb[f]);
            for (int32_t k = 0; k < 9; ++k)
                if (absf(gw[k] - cdw[f * 9 + k]) > err) err = absf(gw[k] - cdw[f * 9 + k]);
        }
        s->max_error[3] = err;
        if (err != 0.0f) s->failed |= 1u << 3;
    }

    // What training and evaluation cost so far, per sample (0 before any).
    if (learner.new_samples)
        s->ticks_per_train_sample = static_cast<float>(learner.train_ticks) / learner.new_samples;
    if (learner.eval_samples)
        s->ticks_per_eval_sample = static_cast<float>(learner.eval_ticks) / learner.eval_samples;
    r.length = kAckSize + sizeof(tc_selftest_t);  // failures are in `failed`, with the numbers
}

}  // namespace

void handle_sync(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, sync); }
void handle_unlock(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, unlock); }
void handle_begin_task(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, begin_task); }
void handle_train_control(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, train_control); }
void handle_train_samples(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, train_samples); }
void handle_buffer_samples(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, buffer_samples); }
void handle_eval_samples(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, eval_samples); }
void handle_stats(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, stats); }
void handle_selftest(const tc::Frame& f, tc::Responder& out) { sequenced(f, out, selftest); }

uint16_t expected_seq() { return seq_state.expected; }

void set_runtime_status(int status) {
    learner.runtime_status = status;
    paint_stack();
}

void handle_reset(const tc::Frame& f, tc::Responder& out) {
    out.status(f.seq, TC_STATUS_OK, 0, "restarting");
    // Let the last byte leave the UART before the reset cuts it off.
    for (volatile uint32_t i = 0; i < 200000; ++i) {
    }
    bsp::reset();
}

}  // namespace app
