// Host harness of the persistence library (firmware/lib/persist) and of the runtime's state
// serialisation, driven by tests/test_persist_host.py. The library and the runtime are the real
// sources; only the flash medium is simulated (nor_sim.h). Each command prints "FAIL ..." lines
// for what went wrong and "ok ..." facts, and exits 0 only when nothing failed.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <string>
#include <vector>

#include "nor_sim.h"
#include "tc_model.h"
#include "tc_crc32.h"
#include "tc_persist.h"
#include "tc_persist_runtime.h"
#include "tc_protocol_spec.h"
#include "tc_runtime.h"

namespace {

int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            ++failures;                                    \
            printf("FAIL %s:%d %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

const uint8_t kSigA[8] = {1, 2, 3, 4, 5, 6, 7, 8};
const uint8_t kSigB[8] = {1, 2, 3, 4, 5, 6, 7, 9};

std::vector<uint8_t> random_bytes(std::mt19937& rng, size_t n) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = (uint8_t)rng();
    return v;
}

// What the newest valid slot holds, or an empty optional-like result.
bool loaded(NorSim& sim, const uint8_t* sig, std::vector<uint8_t>* out, uint32_t* seq = nullptr) {
    tc_persist_medium m = sim.medium();
    tc_persist_slot_info info;
    if (tc_persist_find(&m, sig, &info) != TC_PERSIST_OK) return false;
    out->assign(info.payload, info.payload + info.payload_bytes);
    if (seq) *seq = info.sequence;
    return true;
}

int save(NorSim& sim, const uint8_t* sig, const std::vector<uint8_t>& payload,
         tc_persist_slot_info* info = nullptr) {
    tc_persist_medium m = sim.medium();
    return tc_persist_save_bytes(&m, sig, payload.data(), (uint32_t)payload.size(), info);
}

uint32_t save_steps(uint32_t payload) {  // erase + padded payload + header, in byte steps
    return 1 + (payload + 3) / 4 * 4 + TC_PERSIST_HEADER_BYTES;
}

// ---- library ----------------------------------------------------------------------------------

void cmd_roundtrip() {
    std::mt19937 rng(11);
    NorSim sim(4096);
    const uint32_t room = sim.slot_size - TC_PERSIST_HEADER_BYTES;
    std::vector<uint8_t> got;
    CHECK(!loaded(sim, kSigA, &got), "noise must not load");
    uint32_t last_seq = 0;
    int last_slot = -1;
    for (uint32_t n : {0u, 1u, 3u, 4u, 5u, 255u, 256u, 257u, 1000u, room}) {
        const auto payload = random_bytes(rng, n);
        tc_persist_slot_info info;
        const int st = save(sim, kSigA, payload, &info);
        CHECK(st == TC_PERSIST_OK, "save of %u bytes: %s", n, tc_persist_status_name(st));
        uint32_t seq = 0;
        CHECK(loaded(sim, kSigA, &got, &seq) && got == payload, "round trip of %u bytes", n);
        CHECK(info.slot != last_slot, "saves alternate slots (%d after %d)", info.slot, last_slot);
        CHECK(last_slot < 0 || seq == last_seq + 1, "sequence %u after %u", seq, last_seq);
        last_seq = seq;
        last_slot = info.slot;
    }
    CHECK(sim.overprograms == 0, "%u programs onto non-erased words", sim.overprograms);
    // Too large: refused, and the last save still loads.
    const auto before = got;
    const auto big = random_bytes(rng, room + 1);
    const int st = save(sim, kSigA, big);
    CHECK(st == TC_PERSIST_TOO_LARGE, "oversized save: %s", tc_persist_status_name(st));
    CHECK(loaded(sim, kSigA, &got) && got == before, "oversized save lost the previous state");
    printf("ok roundtrip\n");
}

// A power cut at every byte step of a save: the previous state must load, unless the very last
// byte (the last of the header CRC) completed.
void torn_scenario(const char* name, NorSim& base, const std::vector<uint8_t>& previous,
                   const std::vector<uint8_t>& next, uint32_t seed) {
    const uint32_t total = save_steps((uint32_t)next.size());
    uint32_t cuts = 0, previous_loads = 0, next_loads = 0;
    for (uint32_t k = 0; k <= total; ++k) {
        NorSim sim = base;
        sim.rng.seed(seed * 100003u + k);
        sim.revive();
        sim.budget = k;
        const int st = save(sim, kSigA, next);
        sim.revive();  // the reboot
        std::vector<uint8_t> got;
        const bool any = loaded(sim, kSigA, &got);
        ++cuts;
        if (k < total - 1) {
            CHECK(st != TC_PERSIST_OK, "%s: save reported ok with the power cut at step %u", name, k);
            CHECK(any && got == previous, "%s: cut at step %u of %u lost the previous state", name,
                  k, total);
        } else if (k == total - 1) {  // cut inside the last byte: either state, never garbage
            CHECK(any && (got == previous || got == next), "%s: cut at the last byte", name);
        } else {
            CHECK(st == TC_PERSIST_OK, "%s: uncut save failed: %s", name, tc_persist_status_name(st));
            CHECK(any && got == next, "%s: completed save does not load", name);
        }
        if (any && got == previous) ++previous_loads;
        if (any && got == next) ++next_loads;
        CHECK(sim.overprograms == 0, "%s: programs onto non-erased words", name);
    }
    printf("ok torn %s cuts=%u steps=%u previous=%u next=%u\n", name, cuts, total, previous_loads,
           next_loads);
}

void cmd_torn(uint32_t payload_bytes, uint32_t seeds) {
    for (uint32_t seed = 1; seed <= seeds; ++seed) {
        std::mt19937 rng(seed);
        const auto a = random_bytes(rng, payload_bytes);
        const auto b = random_bytes(rng, payload_bytes + 13);
        const auto c = random_bytes(rng, payload_bytes / 2 + 1);
        NorSim one(8192, seed);  // A only
        CHECK(save(one, kSigA, a) == TC_PERSIST_OK, "setup A");
        torn_scenario("second-save", one, a, b, seed);
        NorSim two = one;  // A (older) and B (newer): the next save overwrites A's slot
        CHECK(save(two, kSigA, b) == TC_PERSIST_OK, "setup B");
        torn_scenario("overwrite-older", two, b, c, seed);
    }
}

void cmd_signature() {
    std::mt19937 rng(5);
    NorSim sim(2048);
    const auto a = random_bytes(rng, 300);
    CHECK(save(sim, kSigA, a) == TC_PERSIST_OK, "save");
    std::vector<uint8_t> got;
    CHECK(!loaded(sim, kSigB, &got), "a state of another model loaded");
    CHECK(loaded(sim, kSigA, &got) && got == a, "own state");
    // The other model saves: its slot choice ignores states that are not its own.
    const auto b = random_bytes(rng, 200);
    CHECK(save(sim, kSigB, b) == TC_PERSIST_OK, "save B");
    CHECK(loaded(sim, kSigB, &got) && got == b, "B loads B");
    printf("ok signature\n");
}

void cmd_corrupt() {
    std::mt19937 rng(9);
    NorSim sim(2048);
    const auto a = random_bytes(rng, 500), b = random_bytes(rng, 400);
    tc_persist_slot_info ia, ib;
    CHECK(save(sim, kSigA, a, &ia) == TC_PERSIST_OK && save(sim, kSigA, b, &ib) == TC_PERSIST_OK,
          "setup");
    std::vector<uint8_t> got;
    // Every single bit of B's header and payload, flipped in turn: A must load then.
    const uint32_t span = TC_PERSIST_HEADER_BYTES + (uint32_t)b.size();
    uint32_t flips = 0;
    for (uint32_t byte = 0; byte < span; ++byte) {
        for (int bit = 0; bit < 8; ++bit) {
            sim.mem[ib.slot][byte] ^= (uint8_t)(1u << bit);
            const bool any = loaded(sim, kSigA, &got);
            CHECK(any && got == a, "flip of bit %d of byte %u in the newest slot", bit, byte);
            sim.mem[ib.slot][byte] ^= (uint8_t)(1u << bit);
            ++flips;
        }
    }
    CHECK(loaded(sim, kSigA, &got) && got == b, "restored");
    // Both corrupted: nothing loads.
    sim.mem[ia.slot][TC_PERSIST_HEADER_BYTES + 7] ^= 0x10;
    sim.mem[ib.slot][TC_PERSIST_HEADER_BYTES + 7] ^= 0x10;
    CHECK(!loaded(sim, kSigA, &got), "two corrupt slots loaded something");
    printf("ok corrupt flips=%u\n", flips);
}

// Rewrites a slot's sequence number and re-signs its header, as if that many saves had happened.
void set_sequence(NorSim& sim, int slot, uint32_t seq) {
    uint8_t* h = sim.mem[slot].data();
    memcpy(h + 16, &seq, 4);
    const uint32_t crc = tc::crc32(h, 28);
    memcpy(h + 28, &crc, 4);
}

void cmd_wrap() {
    std::mt19937 rng(3);
    NorSim sim(1024);
    std::vector<uint8_t> got;
    auto p = random_bytes(rng, 100);
    tc_persist_slot_info info;
    CHECK(save(sim, kSigA, p, &info) == TC_PERSIST_OK, "setup");
    set_sequence(sim, info.slot, 0xFFFFFFFDu);
    uint32_t seq = 0;
    std::vector<uint32_t> seqs;
    for (int i = 0; i < 5; ++i) {
        p = random_bytes(rng, 60 + i);
        CHECK(save(sim, kSigA, p, &info) == TC_PERSIST_OK, "save %d", i);
        CHECK(loaded(sim, kSigA, &got, &seq) && got == p, "newest after save %d (seq %u)", i, seq);
        seqs.push_back(seq);
    }
    for (size_t i = 1; i < seqs.size(); ++i)
        CHECK(seqs[i] - seqs[i - 1] == 1u || seqs[i] - seqs[i - 1] == 2u, "sequence step");
    CHECK(seqs.front() == 0xFFFFFFFEu && seqs.back() < 8u, "wrapped: %u .. %u", seqs.front(),
          seqs.back());
    // Across the wrap, 0x00000001 is newer than 0xFFFFFFFF.
    NorSim two(1024);
    const auto x = random_bytes(rng, 50), y = random_bytes(rng, 51);
    tc_persist_slot_info ix, iy;
    CHECK(save(two, kSigA, x, &ix) == TC_PERSIST_OK && save(two, kSigA, y, &iy) == TC_PERSIST_OK,
          "setup two");
    set_sequence(two, ix.slot, 0xFFFFFFFFu);
    set_sequence(two, iy.slot, 0x00000001u);
    CHECK(loaded(two, kSigA, &got) && got == y, "1 is newer than 0xFFFFFFFF");
    set_sequence(two, ix.slot, 0x00000002u);
    CHECK(loaded(two, kSigA, &got) && got == x, "2 is newer than 1");
    printf("ok wrap first=%u last=%u\n", seqs.front(), seqs.back());
}

// ---- runtime state ----------------------------------------------------------------------------

struct MemWriter {
    tc_state_writer w;
    std::vector<uint8_t> bytes;
    MemWriter() {
        w.ctx = this;
        w.write = [](tc_state_writer* self, const void* d, uint32_t n) {
            auto* m = static_cast<MemWriter*>(self->ctx);
            const uint8_t* p = static_cast<const uint8_t*>(d);
            m->bytes.insert(m->bytes.end(), p, p + n);
            return 0;
        };
    }
};

std::vector<uint8_t> state_now() {
    MemWriter mw;
    const int st = tc_rt_save_state(&mw.w);
    CHECK(st == TC_STATUS_OK, "tc_rt_save_state: %d", st);
    CHECK(mw.bytes.size() == tc_rt_state_bytes(), "state size %zu vs tc_rt_state_bytes %u",
          mw.bytes.size(), tc_rt_state_bytes());
    return mw.bytes;
}

std::vector<float> params_now() {
    std::vector<float> all;
    for (uint16_t l = 0; l < TC_MAX_TAIL_LAYERS; ++l) {
        float w[4096], b[256];
        uint16_t o = 0, i = 0;
        if (tc_rt_tail_params(l, w, b, &o, &i) < 0) break;
        all.insert(all.end(), w, w + (size_t)o * i);
        all.insert(all.end(), b, b + o);
    }
    float hw[4096], hb[256];  // the discriminant head's, when one is fitted
    uint16_t hc = 0, hd = 0;
    tc_rt_head_params(hw, hb, &hc, &hd);
    all.insert(all.end(), hw, hw + (size_t)hc * hd);
    all.insert(all.end(), hb, hb + hc);
    return all;
}


bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}

// Deterministic samples of the tiny model (see test_persist_host.py): input_size bytes each,
// labels from `classes`.
struct Data {
    std::vector<int8_t> x;
    std::vector<uint8_t> y;
};
Data make_data(uint32_t input_size, uint32_t n, const std::vector<uint8_t>& classes, uint32_t seed) {
    std::mt19937 rng(seed);
    Data d;
    for (uint32_t i = 0; i < n; ++i) {
        const uint8_t c = classes[i % classes.size()];
        d.y.push_back(c);
        for (uint32_t k = 0; k < input_size; ++k)
            d.x.push_back((int8_t)((int)(rng() % 41) - 20 + (k == c ? 60 : 0)));
    }
    return d;
}

uint32_t input_size() {
    tc_rt_desc d;
    tc_rt_describe(&d);
    return d.input_size;
}

void train(const Data& d, uint16_t batch) {
    const uint32_t in = input_size();
    for (size_t i = 0; i + batch <= d.y.size(); i += batch) {
        tc_step_report rep;
        const int st = tc_rt_train_samples(d.x.data() + i * in, d.y.data() + i, batch, 1, &rep);
        CHECK(st == TC_STATUS_OK && rep.stepped, "train step: %d", st);
    }
}

// The end of a task with the discriminant head: its statistics over `observed`, then the fit.
void fit_head(const Data& observed, uint16_t n) {
    CHECK(tc_rt_end_task(nullptr) == TC_STATUS_OK && tc_rt_head_observing() == 1, "head begins");
    CHECK(tc_rt_observe_samples(observed.x.data(), observed.y.data(), n) == TC_STATUS_OK, "observe");
    CHECK(tc_rt_fit_head() == TC_STATUS_OK && tc_rt_head_observing() == 0, "fit");
    uint16_t classes = 0;
    CHECK(tc_rt_head_params(nullptr, nullptr, &classes, nullptr) > 0, "no head fitted");
}

void cmd_runtime(uint32_t cut_stride) {
    CHECK(tc_rt_init() == TC_STATUS_OK, "init");
    const uint32_t in = input_size();
    tc_train_params p = {0.05f, 0.0f, 5.0f, 4, 2, 7, 0.1f, 0, 0, 0, 0.0f, 0.1f};
    CHECK(tc_rt_set_training(&p) == TC_STATUS_OK, "set_training");
    NorSim sim(64 * 1024, 2);
    tc_persist_medium m = sim.medium();
    tc_persist_slot_info info;
    CHECK(tc_persist_load_runtime(&m, &info) == TC_PERSIST_NOTHING, "nothing saved yet");

    // Task 1 (classes 2, 3): grow, train, add its buffer samples, save at the task boundary.
    const uint8_t t1[2] = {2, 3};
    CHECK(tc_rt_begin_task(t1, 2) == TC_STATUS_OK, "begin task 1");
    train(make_data(in, 16, {0, 1, 2, 3}, 21), 4);
    const Data buf1 = make_data(in, 3, {2, 3}, 22);
    CHECK(tc_rt_add_buffer_samples(buf1.x.data(), buf1.y.data(), 3) == TC_STATUS_OK, "buffer 1");
    int st = tc_persist_save_runtime(&m, -1, &info);
    CHECK(st == TC_PERSIST_OK, "save 1: %s", tc_persist_status_name(st));
    const auto state1 = state_now();

    // Task 2 (classes 4, 5), saved again: the two slots now hold task 1 (older) and task 2.
    const uint8_t t2[2] = {4, 5};
    CHECK(tc_rt_begin_task(t2, 2) == TC_STATUS_OK, "begin task 2");
    train(make_data(in, 12, {0, 2, 4, 5}, 23), 4);
    const Data buf2 = make_data(in, 4, {4, 5}, 24);
    CHECK(tc_rt_add_buffer_samples(buf2.x.data(), buf2.y.data(), 4) == TC_STATUS_OK, "buffer 2");
    // Task 2 ends with the discriminant head: it is part of the state, and of the predictions.
    p.head_weight = 0.5f;
    CHECK(tc_rt_set_training(&p) == TC_STATUS_OK, "head weight");
    fit_head(make_data(in, 10, {4, 5}, 30), 10);
    st = tc_persist_save_runtime(&m, info.slot, &info);
    CHECK(st == TC_PERSIST_OK, "save 2: %s", tc_persist_status_name(st));
    const auto state2 = state_now();
    const auto params2 = params_now();
    const Data probe = make_data(in, 12, {0, 1, 2, 3, 4, 5}, 25);
    std::vector<uint8_t> pred2(12), pred_loaded(12);
    CHECK(tc_rt_predict(probe.x.data(), 12, pred2.data()) == TC_STATUS_OK, "predict");

    // The reference future: more steps in the same task (uses the PRNG state and the replay
    // buffer), then one more save attempt that a power cut interrupts.
    const Data more = make_data(in, 12, {1, 4, 5, 3}, 26);
    train(more, 4);
    const auto params_future = params_now();
    const auto state_future = state_now();

    // Reboot: a fresh runtime is back at the exported state until the saved one is loaded.
    CHECK(tc_rt_init() == TC_STATUS_OK, "re-init");
    CHECK(state_now() != state2, "re-init kept the learned state?");
    st = tc_persist_load_runtime(&m, &info);
    CHECK(st == TC_PERSIST_OK, "load: %s", tc_persist_status_name(st));
    CHECK(state_now() == state2, "loaded state differs from the saved one");
    CHECK(same_bits(params_now(), params2), "tail parameters differ after load");
    CHECK(tc_rt_predict(probe.x.data(), 12, pred_loaded.data()) == TC_STATUS_OK &&
              pred_loaded == pred2, "predictions differ after load");
    tc_rt_desc d;
    tc_rt_describe(&d);
    CHECK(d.classes_seen == 6 && d.task == 2, "classes %u task %u", d.classes_seen, d.task);
    train(more, 4);
    CHECK(same_bits(params_now(), params_future), "training after the reload diverged");
    CHECK(state_now() == state_future, "state after the same training differs");

    // A torn save of the future state, at every cut_stride-th byte step: the reboot finds task 2.
    const NorSim saved = sim;
    const uint32_t total = save_steps(tc_rt_state_bytes());
    uint32_t cuts = 0;
    for (uint32_t k = 0; k + 1 < total; k += cut_stride) {
        NorSim s2 = saved;
        s2.rng.seed(k);
        s2.budget = k;
        tc_persist_medium m2 = s2.medium();
        CHECK(tc_persist_save_runtime(&m2, info.slot, nullptr) != TC_PERSIST_OK,
              "cut %u reported ok", k);
        s2.revive();
        CHECK(tc_rt_init() == TC_STATUS_OK, "init after cut");
        CHECK(tc_persist_load_runtime(&m2, nullptr) == TC_PERSIST_OK && state_now() == state2,
              "cut at step %u of %u lost task 2's state", k, total);
        // Put the future state back for the next round.
        CHECK(tc_rt_load_state(state_future.data(), (uint32_t)state_future.size()) == TC_STATUS_OK,
              "reload future");
        ++cuts;
    }

    // The runtime refuses a state it cannot hold, and stays as it was.
    CHECK(tc_rt_load_state(state2.data(), (uint32_t)state2.size()) == TC_STATUS_OK, "back to 2");
    auto bad = state2;
    bad[4] ^= 1;  // signature
    CHECK(tc_rt_load_state(bad.data(), (uint32_t)bad.size()) == TC_STATUS_BAD_ARGUMENT, "sig");
    CHECK(tc_rt_load_state(state2.data(), (uint32_t)state2.size() - 1) == TC_STATUS_BAD_ARGUMENT,
          "truncated");
    bad = state2;
    bad[12] = 200;  // task index beyond the plan
    CHECK(tc_rt_load_state(bad.data(), (uint32_t)bad.size()) == TC_STATUS_BAD_ARGUMENT, "task");
    bad = state2;
    bad.back() = 9;  // a buffer label the model has not seen
    CHECK(tc_rt_load_state(bad.data(), (uint32_t)bad.size()) == TC_STATUS_BAD_ARGUMENT, "label");
    CHECK(state_now() == state2, "a refused load changed the runtime");
    // Task 1's state still loads into the runtime (an older save of the same model).
    CHECK(tc_rt_load_state(state1.data(), (uint32_t)state1.size()) == TC_STATUS_OK, "state 1");
    tc_rt_describe(&d);
    CHECK(d.classes_seen == 4 && d.task == 1, "task 1 state: classes %u", d.classes_seen);

    // A save while a mini-batch is half formed is refused; the slots keep task 2.
    CHECK(tc_rt_load_state(state2.data(), (uint32_t)state2.size()) == TC_STATUS_OK, "back to 2");
    CHECK(tc_rt_train_samples(more.x.data(), more.y.data(), 1, 0, nullptr) == TC_STATUS_OK, "half");
    const NorSim before_half = sim;
    CHECK(tc_persist_save_runtime(&m, info.slot, nullptr) == TC_PERSIST_PRODUCER_FAILED,
          "half batch saved");
    CHECK(sim.mem[0] == before_half.mem[0] && sim.mem[1] == before_half.mem[1],
          "a refused save touched the flash");
    CHECK(tc_rt_init() == TC_STATUS_OK && tc_persist_load_runtime(&m, nullptr) == TC_PERSIST_OK &&
              state_now() == state2, "task 2 lost after a refused save");

    // The largest state: final size, RAM replay area full (compared with tinycil.deploy.memplan).
    const uint8_t t3[2] = {4, 5};
    CHECK(tc_rt_begin_task(t3, 2) == TC_STATUS_OK, "task 3");
    tc_rt_describe(&d);
    const uint32_t room = d.buffer_capacity - d.buffer_fill;
    const Data fill = make_data(in, room, {0, 5}, 27);
    CHECK(tc_rt_add_buffer_samples(fill.x.data(), fill.y.data(), (uint16_t)room) == TC_STATUS_OK,
          "fill");
    fit_head(make_data(in, 10, {4, 5}, 31), 10);  // the head at the final size
    printf("ok runtime state_bytes=%zu cuts=%u steps=%u max_state_bytes=%u\n", state2.size(), cuts,
           total, tc_rt_state_bytes());
}

// ---- saves that fail, and the slot a save may overwrite -----------------------------------------

// Producers that fail in the ways a real one can: part-way through its output, with a state too
// large for a slot, with a state that is not finite, or by writing something else the second
// time it runs (the real write after the dry run).
struct FailingProducer {
    const std::vector<uint8_t>* payload;
    int mode;  // 0: fails half-way, 1: writes one byte too many, 2: NOT_FINITE, 3: unstable
    uint32_t room;
    uint32_t calls;
    static int produce(tc_state_writer* w, void* arg) {
        FailingProducer* f = static_cast<FailingProducer*>(arg);
        const std::vector<uint8_t>& p = *f->payload;
        ++f->calls;
        switch (f->mode) {
            case 0:
                if (w->write(w, p.data(), (uint32_t)p.size() / 2)) return 1;
                return 1;
            case 1: {
                std::vector<uint8_t> big(f->room + 1, 0x5A);
                return w->write(w, big.data(), (uint32_t)big.size());
            }
            case 2:
                if (w->write(w, p.data(), (uint32_t)p.size())) return 1;
                return TC_PERSIST_NOT_FINITE;
            default: {
                if (w->write(w, p.data(), (uint32_t)p.size())) return 1;
                const uint8_t tail = (uint8_t)f->calls;  // differs between the two runs
                return w->write(w, &tail, 1);
            }
        }
    }
};

// Two valid saves (older A, newer B); a save that fails, with the power cut at every byte step it
// takes (and uncut). A failure before the flash is touched must leave both slots exactly as they
// were (the backup A too); a failure after (the unstable producer) must leave B loadable and its
// slot untouched.
void cmd_failing() {
    std::mt19937 rng(17);
    NorSim base(4096, 3);
    const auto a = random_bytes(rng, 700), b = random_bytes(rng, 650), c = random_bytes(rng, 600);
    tc_persist_slot_info ia, ib;
    CHECK(save(base, kSigA, a, &ia) == TC_PERSIST_OK && save(base, kSigA, b, &ib) == TC_PERSIST_OK,
          "setup");
    const char* names[4] = {"half-way", "too-large", "not-finite", "unstable"};
    const int expect[4] = {TC_PERSIST_PRODUCER_FAILED, TC_PERSIST_TOO_LARGE, TC_PERSIST_NOT_FINITE,
                           TC_PERSIST_PRODUCER_FAILED};
    for (int mode = 0; mode < 4; ++mode) {
        // The uncut failing save: how many byte steps it takes on the flash.
        NorSim probe = base;
        tc_persist_medium pm = probe.medium();
        FailingProducer fp = {&c, mode, probe.slot_size - TC_PERSIST_HEADER_BYTES, 0};
        const uint64_t steps_before = probe.steps;
        const int st = tc_persist_save(&pm, kSigA, &FailingProducer::produce, &fp, nullptr);
        CHECK(st == expect[mode], "%s: save gave %s", names[mode], tc_persist_status_name(st));
        const uint32_t total = (uint32_t)(probe.steps - steps_before);
        if (mode < 3) {
            CHECK(total == 0, "%s: the failing save took %u flash steps before failing",
                  names[mode], total);
            CHECK(probe.mem[0] == base.mem[0] && probe.mem[1] == base.mem[1],
                  "%s: a save that failed changed the slots", names[mode]);
        }
        uint32_t cuts = 0;
        for (uint32_t k = 0; k <= total; ++k) {
            NorSim sim = base;
            sim.rng.seed(1000u * mode + k);
            sim.budget = k;
            tc_persist_medium m = sim.medium();
            FailingProducer f = {&c, mode, sim.slot_size - TC_PERSIST_HEADER_BYTES, 0};
            CHECK(tc_persist_save(&m, kSigA, &FailingProducer::produce, &f, nullptr) !=
                      TC_PERSIST_OK, "%s: reported ok (cut at %u)", names[mode], k);
            sim.revive();
            std::vector<uint8_t> got;
            CHECK(loaded(sim, kSigA, &got) && got == b, "%s: cut at step %u lost the newest state",
                  names[mode], k);
            CHECK(sim.mem[ib.slot] == base.mem[ib.slot], "%s: the newest slot was touched",
                  names[mode]);
            if (mode < 3)
                CHECK(sim.mem[ia.slot] == base.mem[ia.slot], "%s: the backup slot was touched "
                      "(cut at %u)", names[mode], k);
            ++cuts;
        }
        printf("ok failing %s cuts=%u steps=%u\n", names[mode], cuts, total);
    }
}

// The slot a save overwrites is chosen from what the runtime runs. The newest slot holds a state
// the runtime refuses (valid CRC, but not a state of this model's shape); at boot it runs the
// older slot. The next save must overwrite the refused slot, never the running one, with the
// power cut at every byte step: every reboot finds the running state or the new one.
void cmd_running(uint32_t cut_stride) {
    CHECK(tc_rt_init() == TC_STATUS_OK, "init");
    const uint32_t in = input_size();
    tc_train_params p = {0.05f, 0.0f, 5.0f, 4, 2, 7, 0.1f, 0, 0, 0, 0.0f, 0.1f};
    CHECK(tc_rt_set_training(&p) == TC_STATUS_OK, "set_training");
    NorSim sim(64 * 1024, 4);
    tc_persist_medium m = sim.medium();
    const uint8_t t1[2] = {2, 3};
    CHECK(tc_rt_begin_task(t1, 2) == TC_STATUS_OK, "begin task 1");
    train(make_data(in, 16, {0, 1, 2, 3}, 31), 4);
    tc_persist_slot_info good;
    CHECK(tc_persist_save_runtime(&m, -1, &good) == TC_PERSIST_OK, "save task 1");
    const auto state1 = state_now();
    // A newer slot with the model's signature and a valid CRC whose payload the runtime refuses.
    tc_rt_desc d;
    tc_rt_describe(&d);
    std::vector<uint8_t> refused = state1;
    refused[12] = 200;  // task index beyond the plan
    tc_persist_slot_info bad;
    CHECK(tc_persist_save_bytes(&m, d.signature, refused.data(), (uint32_t)refused.size(), &bad) ==
              TC_PERSIST_OK && bad.slot != good.slot && bad.sequence == good.sequence + 1,
          "setup of the refused slot");

    // Boot: the runtime refuses the newest slot and runs the older.
    CHECK(tc_rt_init() == TC_STATUS_OK, "reboot");
    tc_persist_slot_info running;
    CHECK(tc_persist_load_runtime(&m, &running) == TC_PERSIST_OK && running.slot == good.slot &&
              state_now() == state1, "boot did not fall back to the older slot");
    // Learn more, then save: slot `bad` is overwritten, the running slot is kept.
    const uint8_t t2[2] = {4, 5};
    CHECK(tc_rt_begin_task(t2, 2) == TC_STATUS_OK, "begin task 2");
    train(make_data(in, 12, {0, 2, 4, 5}, 32), 4);
    const auto state2 = state_now();
    const NorSim before = sim;
    const uint32_t total = save_steps(tc_rt_state_bytes());
    uint32_t cuts = 0, old_loads = 0, new_loads = 0;
    std::vector<uint32_t> cut_at;  // every cut_stride-th step, the last byte, and no cut
    for (uint32_t k = 0; k + 1 < total; k += cut_stride) cut_at.push_back(k);
    cut_at.push_back(total - 1);
    cut_at.push_back(total);
    for (uint32_t k : cut_at) {
        NorSim s2 = before;
        s2.rng.seed(77u + k);
        s2.budget = k;
        tc_persist_medium m2 = s2.medium();
        CHECK(tc_rt_load_state(state2.data(), (uint32_t)state2.size()) == TC_STATUS_OK, "state 2");
        tc_persist_slot_info info;
        const int st = tc_persist_save_runtime(&m2, running.slot, &info);
        CHECK(s2.mem[running.slot] == before.mem[running.slot],
              "cut at %u: the save touched the slot the runtime runs", k);
        if (k == total) {
            CHECK(st == TC_PERSIST_OK && info.slot == bad.slot && info.sequence > bad.sequence,
                  "uncut save: %s slot %d seq %u", tc_persist_status_name(st), info.slot,
                  info.sequence);
        }
        s2.revive();
        CHECK(tc_rt_init() == TC_STATUS_OK, "reboot after cut");
        tc_persist_slot_info after;
        const int lst = tc_persist_load_runtime(&m2, &after);
        const auto now = state_now();
        CHECK(lst == TC_PERSIST_OK && (now == state1 || now == state2),
              "cut at step %u of %u: boot found neither state (%s)", k, total,
              tc_persist_status_name(lst));
        if (k + 1 < total) CHECK(now == state1, "cut at step %u loaded an unfinished save", k);
        if (k == total) CHECK(now == state2 && after.slot == bad.slot, "the new save did not load");
        if (now == state1) ++old_loads;
        if (now == state2) ++new_loads;
        ++cuts;
    }
    // The old choice (the slot after the newest valid one) would have erased the running state.
    CHECK(1 - bad.slot == running.slot, "the scenario must have the newest slot refused");
    printf("ok running cuts=%u steps=%u old=%u new=%u\n", cuts, total, old_loads, new_loads);
}

// A diverged state (the lr = 1e30) is never saved: both slots stay as they were.
void cmd_not_finite() {
    CHECK(tc_rt_init() == TC_STATUS_OK, "init");
    const uint32_t in = input_size();
    tc_train_params p = {0.05f, 0.0f, 5.0f, 4, 2, 7, 0.1f, 0, 0, 0, 0.0f, 0.1f};
    CHECK(tc_rt_set_training(&p) == TC_STATUS_OK, "set_training");
    NorSim sim(64 * 1024, 5);
    tc_persist_medium m = sim.medium();
    const uint8_t t1[2] = {2, 3};
    CHECK(tc_rt_begin_task(t1, 2) == TC_STATUS_OK, "begin task 1");
    train(make_data(in, 16, {0, 1, 2, 3}, 41), 4);
    tc_persist_slot_info info;
    CHECK(tc_persist_save_runtime(&m, -1, &info) == TC_PERSIST_OK, "save");
    const auto good = state_now();
    tc_train_params wild = {1e30f, 0.0f, 0.0f, 4, 2, 7, 0.1f, 0, 0, 0, 0.0f, 0.1f};
    CHECK(tc_rt_set_training(&wild) == TC_STATUS_OK, "the runtime takes any finite lr");
    const Data d = make_data(in, 40, {0, 1, 2, 3}, 42);
    const uint32_t in_size = input_size();
    bool diverged = false;
    for (size_t i = 0; i + 4 <= d.y.size() && !diverged; i += 4) {
        tc_step_report rep;
        tc_rt_train_samples(d.x.data() + i * in_size, d.y.data() + i, 4, 1, &rep);
        for (float v : params_now())
            if (!(v == v) || v > 3.4e38f || v < -3.4e38f) diverged = true;
    }
    CHECK(diverged, "lr = 1e30 did not make the weights non-finite");
    const NorSim before = sim;
    const int st = tc_persist_save_runtime(&m, info.slot, nullptr);
    CHECK(st == TC_PERSIST_NOT_FINITE, "diverged state: %s", tc_persist_status_name(st));
    CHECK(sim.mem[0] == before.mem[0] && sim.mem[1] == before.mem[1], "the flash was touched");
    CHECK(tc_rt_init() == TC_STATUS_OK && tc_persist_load_runtime(&m, nullptr) == TC_PERSIST_OK &&
              state_now() == good, "the good state was lost");
    printf("ok not_finite\n");
}

}  // namespace

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IONBF, 0);  // FAIL lines stay visible if a sanitizer aborts
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "roundtrip") cmd_roundtrip();
    else if (cmd == "torn") cmd_torn(argc > 2 ? atoi(argv[2]) : 600, argc > 3 ? atoi(argv[3]) : 2);
    else if (cmd == "signature") cmd_signature();
    else if (cmd == "corrupt") cmd_corrupt();
    else if (cmd == "wrap") cmd_wrap();
    else if (cmd == "runtime") cmd_runtime(argc > 2 ? atoi(argv[2]) : 1);
    else if (cmd == "failing") cmd_failing();
    else if (cmd == "running") cmd_running(argc > 2 ? atoi(argv[2]) : 1);
    else if (cmd == "not_finite") cmd_not_finite();
    else {
        printf("usage: persist_harness roundtrip|torn [bytes seeds]|signature|corrupt|wrap|runtime "
               "[stride]|failing|running [stride]|not_finite\n");
        return 2;
    }
    printf(failures ? "FAILED %d\n" : "PASSED\n", failures);
    return failures ? 1 : 0;
}
