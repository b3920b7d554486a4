// Conversions between float32 and int8 with TFLite's QUANTIZE / DEQUANTIZE rules.
#pragma once
#include "tc_kernels_common.h"

// q = clamp(round_half_away(x / scale) + zero_point, -128, 127)
void tc_quantize_s8(const float* x, int8_t* q, int32_t n, float scale, int32_t zero_point);
// x = scale * (q - zero_point)
void tc_dequantize_s8(const int8_t* q, float* x, int32_t n, float scale, int32_t zero_point);

// TFLite's QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31).
// For export-time use (double precision); kernels take the results in tc_s8_quant.
void tc_quantize_multiplier(double real, int32_t* multiplier, int32_t* shift);
