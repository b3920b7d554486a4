// An in-memory NOR flash with two slots, for the host tests of lib/persist: erase sets a slot
// to 0xFF, programming can only clear bits, and a power cut can be scheduled after any number
// of byte steps. The cut leaves what real flash leaves: the byte being programmed partly
// programmed (some of its bits cleared, others not), an interrupted erase partly erased (bits
// set at random), and nothing done afterwards until the "reboot" (revive()).
#pragma once

#include <stdint.h>
#include <string.h>

#include <random>
#include <vector>

#include "tc_persist.h"

struct NorSim {
    uint32_t slot_size;
    std::vector<uint8_t> mem[2];
    long budget = -1;          // byte steps left before the power cut; -1: no cut scheduled
    bool dead = false;         // the power is off: every operation fails
    uint64_t steps = 0;        // byte steps done (an erase counts one step)
    uint32_t overprograms = 0; // programs onto words that were not erased: a library bug
    std::mt19937 rng;

    explicit NorSim(uint32_t size, uint32_t seed = 1) : slot_size(size), rng(seed) {
        // Fresh parts are not blank in general: start from noise, not from 0xFF.
        for (auto& m : mem) {
            m.resize(size);
            for (auto& b : m) b = (uint8_t)rng();
        }
    }

    void revive() {
        dead = false;
        budget = -1;
    }

    bool step() {  // false: the power goes now
        if (dead) return false;
        if (budget == 0) {
            dead = true;
            return false;
        }
        if (budget > 0) --budget;
        ++steps;
        return true;
    }

    bool erase(int slot) {
        if (dead) return false;
        if (!step()) {
            for (auto& b : mem[slot]) b |= (uint8_t)rng();  // interrupted: partly erased
            return false;
        }
        memset(mem[slot].data(), 0xFF, slot_size);
        return true;
    }

    bool program(int slot, uint32_t offset, const uint8_t* data, uint32_t n) {
        if (dead || offset % 4 || n % 4 || offset > slot_size || n > slot_size - offset)
            return false;
        uint8_t* p = mem[slot].data() + offset;
        for (uint32_t i = 0; i < n; i += 4) {
            uint32_t word;
            memcpy(&word, p + i, 4);
            if (word != 0xFFFFFFFFu) ++overprograms;
        }
        for (uint32_t i = 0; i < n; ++i) {
            if (!step()) {
                p[i] &= (uint8_t)(data[i] | (uint8_t)rng());  // interrupted: partly programmed
                return false;
            }
            p[i] &= data[i];
        }
        return true;
    }

    tc_persist_medium medium() {
        tc_persist_medium m;
        m.ctx = this;
        m.slot_size = slot_size;
        m.program_unit = 4;
        m.erase = [](void* c, int s) { return static_cast<NorSim*>(c)->erase(s); };
        m.program = [](void* c, int s, uint32_t o, const uint8_t* d, uint32_t n) {
            return static_cast<NorSim*>(c)->program(s, o, d, n);
        };
        m.view = [](void* c, int s) -> const uint8_t* {
            return static_cast<NorSim*>(c)->mem[s].data();
        };
        return m;
    }
};
