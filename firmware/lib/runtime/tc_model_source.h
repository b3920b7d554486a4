// Where the model comes from: the export's generated files (firmware/generated/model_data.h and
// model_data.cpp, on the include path) when they exist, otherwise no model at all. The firmware
// then builds and answers INFO with an all-zero signature, and every runtime call reports
// TC_STATUS_NO_MODEL.
#pragma once

#include "tc_model.h"

#if __has_include("model_data.h")
#include "model_data.h"  // defines TC_HAS_MODEL 1, TC_ARENA_BYTES, declares tc_model_data
#endif
#ifndef TC_HAS_MODEL
#define TC_HAS_MODEL 0
#endif

// The exported model, or null when the firmware was built without one.
const tc_model* tc_model_get(void);
