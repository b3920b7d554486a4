#include "tc_model_source.h"

// The exported arrays are compiled here rather than from the generated folder itself, so the
// firmware picks up an export with no change to its build configuration.
#if TC_HAS_MODEL && __has_include("model_data.cpp")
#include "model_data.cpp"
#endif

const tc_model* tc_model_get(void) {
#if TC_HAS_MODEL
    return &tc_model_data;
#else
    return nullptr;
#endif
}
