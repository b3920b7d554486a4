// The example's "sensor": on the emulated board there is none, so a generator stands in for it.
// It produces 8x8 single-channel frames in [0, 1] - the input shape of a model prepared on the
// digits data set - whose pattern depends on the class, with random phase, brightness and noise:
//   kHorizontal: bright rows every third row,  kVertical: bright columns every third column.
// On a real board, read your sensor here instead and keep the rest of the application.
#pragma once
#include <stdint.h>

namespace sensor {

constexpr int kSide = 8;
constexpr int kValues = kSide * kSide;

enum Pattern : uint8_t { kHorizontal = 0, kVertical = 1, kPatterns = 2 };

class Generator {
public:
    explicit Generator(uint32_t seed) : state_(seed ? seed : 1u) {}
    // One frame of `pattern` into out[kValues] (row major).
    void read(Pattern pattern, float* out);

private:
    float uniform();  // [0, 1)
    uint32_t state_;
};

}  // namespace sensor
