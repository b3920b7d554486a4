// The replay buffer: the known tasks' int8 samples (in flash, from the export) followed by the
// field tasks' host-distilled samples (in a RAM area planned at export). Samples are drawn
// class-balanced, exactly as tinycil/learn/simulate.py's ReplayBuffer.draw: a class uniformly among the
// buffer's classes (in the order they first joined), then a sample uniformly among that class's
// samples (in the order they joined).
#pragma once

#include <stdint.h>

#include "tc_prng.h"

#define TC_BUFFER_MAX_CLASSES 256  // labels are uint8 class indices

struct tc_buffer {
    uint32_t sample_size;
    const int8_t* flash_x;
    const uint8_t* flash_y;
    uint32_t flash_count;
    int8_t* ram_x;           // [ram_capacity][sample_size], in the arena
    uint8_t* ram_y;
    uint32_t ram_capacity;
    uint32_t ram_count;
    uint16_t n_classes;
    uint8_t classes[TC_BUFFER_MAX_CLASSES];   // in the order they first joined
    uint32_t counts[TC_BUFFER_MAX_CLASSES];   // samples per class index
};

void tc_buffer_init(tc_buffer* b, uint32_t sample_size, const int8_t* flash_x,
                    const uint8_t* flash_y, uint32_t flash_count, int8_t* ram_x, uint8_t* ram_y,
                    uint32_t ram_capacity);
// Appends n samples to the RAM area; false (nothing added) when they do not all fit.
bool tc_buffer_add(tc_buffer* b, const int8_t* x, const uint8_t* y, uint32_t n);
static inline uint32_t tc_buffer_fill(const tc_buffer* b) { return b->flash_count + b->ram_count; }
const int8_t* tc_buffer_x(const tc_buffer* b, uint32_t index);
uint8_t tc_buffer_y(const tc_buffer* b, uint32_t index);
// One class-balanced draw (two PRNG draws: class, then member). The buffer must not be empty.
uint32_t tc_buffer_draw(const tc_buffer* b, tc_prng* prng);
