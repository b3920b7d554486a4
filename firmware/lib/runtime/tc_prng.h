// The pseudo-random generator shared with the host (tinycil/learn/prng.py holds the specification).
// Every random decision of the device (weights of grown units, replay draws) comes from here, so
// the host can reproduce a device run draw for draw. Integer arithmetic only, plus one exact
// float scaling, so host and device agree bit for bit.
#pragma once

#include <math.h>
#include <stdint.h>

struct tc_prng {
    uint32_t state;
};

static inline uint32_t tc_prng_seed_state(uint32_t seed) {
    const uint32_t s = seed * 2654435761u + 1u;
    return s != 0u ? s : 0x9E3779B9u;
}

// The seed a task re-seeds the generator with: the same number the host shuffles the task with.
static inline uint32_t tc_prng_task_seed(uint32_t seed, uint32_t task) {
    return seed + 1000u * task;
}

static inline void tc_prng_seed(tc_prng* p, uint32_t seed) {
    p->state = tc_prng_seed_state(seed);
}

static inline uint32_t tc_prng_next(tc_prng* p) {
    uint32_t s = p->state;
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    p->state = s;
    return s;
}

// Uniform in [0, n) for n >= 1.
static inline uint32_t tc_prng_index(tc_prng* p, uint32_t n) {
    return (uint32_t)(((uint64_t)tc_prng_next(p) * (uint64_t)n) >> 32);
}

static inline float tc_prng_uniform(tc_prng* p) {
    return (float)(tc_prng_next(p) >> 8) * 0x1p-24f;
}

// Irwin-Hall: the sum of 12 uniform 20-bit draws, centred and scaled; exact in float32.
static inline float tc_prng_normal(tc_prng* p) {
    uint32_t s = 0;
    for (int k = 0; k < 12; ++k) s += tc_prng_next(p) >> 12;
    const int32_t d = (int32_t)s + 6 - 6 * 1048576;
    return (float)d * 0x1p-20f;
}

// sqrtf(2 / fan_in): IEEE division and square root are correctly rounded, so numpy agrees.
static inline float tc_prng_he_scale(uint32_t fan_in) {
    return sqrtf(2.0f / (float)fan_in);
}
