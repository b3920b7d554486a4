// Int8 fully connected layer, bit-exact with TFLite's FULLY_CONNECTED (per-tensor or
// per-channel weights). x [batch][in] int8, w [out][in] int8 (zero point 0), bias [out] int32
// (nullable), y [batch][out] int8.
#pragma once
#include "tc_kernels_common.h"

void tc_fully_connected_s8(const tc_dense_dims* d, const tc_s8_quant* q, const int8_t* x,
                           const int8_t* w, const int32_t* bias, int8_t* y);
