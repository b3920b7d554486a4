// Function-preserving growth of one float32 dense layer stored [out][in], rows packed at the
// current size (the same rule as tinycil/learn/simulate.py's Tail.grow):
//  - inputs added (the previous layer's new units) get zero weights in every existing row, so
//    the new units' outgoing weights are zero;
//  - new rows (new units) get He-normal incoming weights over the grown input width, drawn
//    unit by unit in input order, or zero weights for the logits layer (new classes); zero bias.
#pragma once

#include <stdint.h>

#include "tc_prng.h"

void tc_grow_dense(float* w, float* b, uint16_t out_old, uint16_t in_old, uint16_t out_new,
                   uint16_t in_new, bool random_rows, tc_prng* prng);
