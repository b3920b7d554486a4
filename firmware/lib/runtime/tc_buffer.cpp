#include "tc_buffer.h"

#include <string.h>

static void note_label(tc_buffer* b, uint8_t y) {
    if (b->counts[y] == 0) b->classes[b->n_classes++] = y;
    b->counts[y] += 1;
}

void tc_buffer_init(tc_buffer* b, uint32_t sample_size, const int8_t* flash_x,
                    const uint8_t* flash_y, uint32_t flash_count, int8_t* ram_x, uint8_t* ram_y,
                    uint32_t ram_capacity) {
    memset(b, 0, sizeof(*b));
    b->sample_size = sample_size;
    b->flash_x = flash_x;
    b->flash_y = flash_y;
    b->flash_count = flash_count;
    b->ram_x = ram_x;
    b->ram_y = ram_y;
    b->ram_capacity = ram_capacity;
    for (uint32_t i = 0; i < flash_count; ++i) note_label(b, flash_y[i]);
}

bool tc_buffer_add(tc_buffer* b, const int8_t* x, const uint8_t* y, uint32_t n) {
    if (n > b->ram_capacity - b->ram_count) return false;
    memcpy(b->ram_x + (size_t)b->ram_count * b->sample_size, x, (size_t)n * b->sample_size);
    for (uint32_t i = 0; i < n; ++i) {
        b->ram_y[b->ram_count + i] = y[i];
        note_label(b, y[i]);
    }
    b->ram_count += n;
    return true;
}

const int8_t* tc_buffer_x(const tc_buffer* b, uint32_t index) {
    if (index < b->flash_count) return b->flash_x + (size_t)index * b->sample_size;
    return b->ram_x + (size_t)(index - b->flash_count) * b->sample_size;
}

uint8_t tc_buffer_y(const tc_buffer* b, uint32_t index) {
    return index < b->flash_count ? b->flash_y[index] : b->ram_y[index - b->flash_count];
}

uint32_t tc_buffer_draw(const tc_buffer* b, tc_prng* prng) {
    const uint8_t cls = b->classes[tc_prng_index(prng, b->n_classes)];
    uint32_t k = tc_prng_index(prng, b->counts[cls]);
    // The buffer is small (about 1% of a data set): a scan costs far less than the SGD step.
    const uint32_t fill = tc_buffer_fill(b);
    for (uint32_t i = 0; i < fill; ++i) {
        if (tc_buffer_y(b, i) != cls) continue;
        if (k == 0) return i;
        --k;
    }
    return 0;  // not reached: counts[cls] members exist
}
