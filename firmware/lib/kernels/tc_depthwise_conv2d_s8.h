// Int8 depthwise 2-D convolution with per-channel quantisation, bit-exact with TFLite's
// DEPTHWISE_CONV_2D. x [batch][in_h][in_w][in_c], w [k_h][k_w][in_c * mult] (TFLite's
// [1][k_h][k_w][out_c]), bias [out_c] int32, y [batch][out_h][out_w][out_c], oc = ic * mult + m.
#pragma once
#include "tc_kernels_common.h"

// acc_scratch: out_c int32 values (per-pixel accumulators; keeps the channel loop innermost).
void tc_depthwise_conv2d_s8(const tc_window_dims* d, const tc_s8_quant* q, const int8_t* x,
                            const int8_t* w, const int32_t* bias, int8_t* y, int32_t* acc_scratch);
