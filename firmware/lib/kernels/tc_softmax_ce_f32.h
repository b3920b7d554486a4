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
