// exp and log for the float kernels. The C libraries' expf/logf differ between newlib (firmware)
// and glibc (host tests) in the last bits; these use only +, *, fmaf and bit operations, so the
// host build and the firmware produce the same bits.
#pragma once
#include "tc_kernels_common.h"

// e^x with a relative error below 2e-7. Returns 0 for x < -87.3 (no subnormal results) and
// e^88 for x > 88 (softmax only ever asks for x <= 0).
float tc_expf(float x);
// Natural logarithm with an absolute error below 1e-7 on [0.5, 2]. Returns -inf for 0 and NaN
// for negative input.
float tc_logf(float x);
