// Function-preserving growth of the tail's float32 layers, rows packed at the current size (the
// same rule as tinycil/learn/simulate.py's Tail.grow and, for the host model, tinycil/learn/sizing.py):
//  - inputs added (the previous layer's new channels or units) get zero weights in every
//    existing filter, so the new channels' outgoing weights are zero;
//  - new filters (new output channels or units) get He-normal incoming weights over their grown
//    fan-in, drawn filter by filter in memory order, or zero weights for the logits layer (new
//    classes); zero bias.
#pragma once

#include <stdint.h>

#include "tc_prng.h"

// Weights [out][positions][in]: a conv2d's [out][k_h][k_w][in] (positions = k_h * k_w) or a dense
// layer's [out][in_h][in_w][in] over an input map (positions = in_h * in_w; 1 for a vector).
void tc_grow_filters(float* w, float* b, uint16_t out_old, uint16_t in_old, uint16_t out_new,
                     uint16_t in_new, uint32_t positions, bool random_rows, tc_prng* prng);

// Depthwise weights [positions][channels] (depth multiplier 1): new channels get a He-normal
// kernel over their `positions` taps, drawn channel by channel in tap order; zero bias.
void tc_grow_depthwise(float* w, float* b, uint16_t c_old, uint16_t c_new, uint32_t positions,
                       tc_prng* prng);

// A dense layer over a vector: tc_grow_filters with one position.
void tc_grow_dense(float* w, float* b, uint16_t out_old, uint16_t in_old, uint16_t out_new,
                   uint16_t in_new, bool random_rows, tc_prng* prng);
