// Int8 2-D convolution with per-channel quantisation, bit-exact with TFLite's CONV_2D.
// x [batch][in_h][in_w][in_c] int8, w [out_c][k_h][k_w][in_c] int8 (zero point 0),
// bias [out_c] int32 (scale input_scale * w_scale[c]), y [batch][out_h][out_w][out_c] int8.
#pragma once
#include "tc_kernels_common.h"

// Bytes of scratch memory for the fast layout: a staging area of one patch, three output pixels
// per block and `out_block` output channels (an even number >= 2) widened per pass; out_c
// rounded up to even = one pass over the input. The kernel itself never allocates.
int32_t tc_conv2d_s8_scratch_bytes(const tc_window_dims* d, int32_t out_block);

// The least scratch the kernel runs with (two pixels and two channels per block: slower).
int32_t tc_conv2d_s8_min_scratch_bytes(const tc_window_dims* d);

// `scratch` must be 4-byte aligned and hold tc_conv2d_s8_min_scratch_bytes(d) bytes at least;
// the kernel uses the fastest layout and the largest even channel block that fit
// `scratch_bytes`. Returns false when the scratch is too small, or when a multiplier is
// INT32_MIN (TFLite's QuantizeMultiplier never produces one).
bool tc_conv2d_s8(const tc_window_dims* d, const tc_s8_quant* q, const int8_t* x,
                  const int8_t* w, const int32_t* bias, int8_t* y, void* scratch,
                  int32_t scratch_bytes);
