// What the firmware knows about its model, read by INFO. This is the "no model" default: the
// model export replaces this file (and adds the model's data) when a run is exported.
#pragma once
#include <stdint.h>

#include "tc_protocol_spec.h"

namespace tc_model_info {

constexpr bool kPresent = false;
constexpr uint8_t kSignature[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // all zero: no model
constexpr uint8_t kInputType = TC_INPUT_NONE;
constexpr uint8_t kInputRank = 0;
constexpr uint16_t kInputShape[4] = {0, 0, 0, 0};
constexpr uint16_t kClassesMax = 0;
constexpr uint32_t kBufferCapacity = 0;

}  // namespace tc_model_info
