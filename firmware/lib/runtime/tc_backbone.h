// The frozen int8 backbone: runs the exported layer table with the int8 kernels (bit-exact with
// the LiteRT interpreter), alternating between two scratch buffers.
#pragma once

#include <stdint.h>

#include "tc_model.h"

// Runs every layer on one sample `x` (input_size int8). Returns the latent (latent_size int8, in
// one of the scratch buffers, or `x` itself for an empty table), or null for an operator this
// build cannot run. `kernel_scratch` holds m->kernel_scratch_bytes (4-byte aligned).
const int8_t* tc_backbone_run(const tc_model* m, const int8_t* x, int8_t* scratch_a,
                              int8_t* scratch_b, void* kernel_scratch);
