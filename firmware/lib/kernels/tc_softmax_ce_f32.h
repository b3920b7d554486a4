// Softmax cross-entropy over the valid classes only (class-incremental learning: the logits of
// classes not seen yet take no part in the softmax and get a zero gradient).
#pragma once
#include "tc_kernels_common.h"

// logits [batch][classes], labels [batch]. Valid classes: mask[c] != 0 when mask is not null,
// otherwise c < num_valid. Writes dlogits [batch][classes] = (softmax - onehot) / batch on the
// valid classes and 0 elsewhere (nullable), and returns the mean loss over the batch.
// Returns NaN when a label is not a valid class or no class is valid.
float tc_softmax_ce_f32(const float* logits, const int32_t* labels, int32_t batch,
                        int32_t classes, const uint8_t* mask, int32_t num_valid, float* dlogits);

// One row (one sample) of the above with the gradient's factor given: dz[c] = (softmax -
// onehot) * scale, so a mini-batch summed sample by sample passes scale = 1 / batch and gets
// the batched kernel's values exactly. Returns the row's loss (not divided), NaN as above.
// expf runs once per valid class: the gradient reuses the exponentials of the sum.
float tc_softmax_ce_row_f32(const float* z, int32_t label, int32_t classes, const uint8_t* mask,
                            int32_t num_valid, float scale, float* dz);
