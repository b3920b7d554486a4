#include "sensor.h"

namespace sensor {

float Generator::uniform() {
    // xorshift32 (Marsaglia 2003): a small, deterministic source of noise
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    return (float)(state_ >> 8) * (1.0f / 16777216.0f);
}

void Generator::read(Pattern pattern, float* out) {
    const int phase = (int)(uniform() * 3.0f) % 3;
    const float bright = 0.6f + 0.4f * uniform();
    for (int r = 0; r < kSide; ++r) {
        for (int c = 0; c < kSide; ++c) {
            const int along = pattern == kHorizontal ? r : c;
            float v = ((along + phase) % 3 == 0) ? bright : 0.0f;
            v += 0.25f * (uniform() - 0.5f);
            out[r * kSide + c] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        }
    }
}

}  // namespace sensor
