// Sensor application with on-device class-incremental learning (tinycil's learner library).
//
// The firmware ships with a model that knows the classes the host trained it on. In the field
// its sensor shows two patterns the model has never seen; the application learns them as two
// new classes from frames it reads itself - no host, no serial link - and reports how well it
// recognises them before and after. On the emulated board the run ends through semihosting with
// exit code 0 (learned), 1 (not learned well enough), 2 (no model), 3 (the model cannot grow by
// two classes) or 4 (another learner error).
#include <stdio.h>
#include <string.h>

#include "bsp.h"
#include "sensor.h"
#include "tc_learner.h"

// Training steps are timed with the board's counter (cycles, or instructions under QEMU).
// (C++ linkage, as the runtime declares it; it replaces the library's weak default of 0.)
uint64_t tc_rt_ticks(void) { return bsp::counter_read(); }

namespace {

constexpr int kTrainFrames = 2000;    // frames of each new class seen while learning
constexpr int kTestFrames = 50;       // frames of each new class for the accuracy check
constexpr int kRememberPerClass = 4;  // frames per new class kept for replay in later tasks
constexpr int kPassPercent = 80;      // accuracy on the new classes that counts as learned

void say(const char* text) {
    bsp::serial_write(reinterpret_cast<const uint8_t*>(text), strlen(text));
}

[[noreturn]] void finish(int code, const char* why) {
    char line[96];
    snprintf(line, sizeof(line), "%s (exit %d)\n", why, code);
    say(line);
    bsp::exit(code);
}

// One quantised frame of `pattern` from the sensor.
void read_frame(sensor::Generator& gen, sensor::Pattern pattern, int8_t* frame) {
    float values[sensor::kValues];
    gen.read(pattern, values);
    tc_learner_quantize(values, sensor::kValues, frame);
}

// Percent of test frames of the new classes predicted as their class. The test frames come from
// their own generator seed, never from the frames learned from.
int accuracy_percent(const uint8_t* labels) {
    sensor::Generator gen(0xC0FFEEu);
    int8_t frame[sensor::kValues];
    int right = 0;
    for (int i = 0; i < kTestFrames * sensor::kPatterns; ++i) {
        const auto pattern = static_cast<sensor::Pattern>(i % sensor::kPatterns);
        read_frame(gen, pattern, frame);
        uint8_t predicted = 0xFF;
        if (tc_learner_predict(frame, &predicted) != TC_STATUS_OK) finish(4, "predict failed");
        right += predicted == labels[pattern];
    }
    return (100 * right) / (kTestFrames * sensor::kPatterns);
}

}  // namespace

int main() {
    bsp::init();
    say("sensor_learner: learning two new classes on the device\n");
    if (tc_learner_init() != TC_STATUS_OK) finish(2, "no model: export one into generated/");
    if (tc_learner_input_size() != sensor::kValues)
        finish(2, "the model's input is not an 8x8 frame: export a model prepared on digits");

    tc_learner_stats_t stats;
    tc_learner_stats(&stats);
    // The new classes take the next class numbers.
    const uint8_t labels[sensor::kPatterns] = {(uint8_t)stats.classes_seen,
                                               (uint8_t)(stats.classes_seen + 1)};
    char line[128];
    snprintf(line, sizeof(line), "model knows %u classes (room for %u); new classes %u and %u\n",
             stats.classes_seen, stats.classes_max, labels[0], labels[1]);
    say(line);

    const int before = accuracy_percent(labels);
    snprintf(line, sizeof(line), "accuracy on the new classes before learning: %d%%\n", before);
    say(line);

    if (tc_learner_begin_task(labels, sensor::kPatterns) != TC_STATUS_OK)
        finish(3, "the model's growth plan has no step with two more classes");

    sensor::Generator gen(12345u);
    int8_t frame[sensor::kValues];
    int remembered[sensor::kPatterns] = {0, 0};
    for (int i = 0; i < kTrainFrames * sensor::kPatterns; ++i) {
        const auto pattern = static_cast<sensor::Pattern>(i % sensor::kPatterns);
        read_frame(gen, pattern, frame);
        if (tc_learner_add_sample(frame, labels[pattern], nullptr) != TC_STATUS_OK)
            finish(4, "add_sample failed");
        if (remembered[pattern] < kRememberPerClass &&
            tc_learner_remember(frame, labels[pattern]) == TC_STATUS_OK)
            ++remembered[pattern];
    }
    if (tc_learner_flush() != TC_STATUS_OK) finish(4, "flush failed");

    tc_learner_stats(&stats);
    const int after = accuracy_percent(labels);
    snprintf(line, sizeof(line),
             "learned from %d frames: %lu SGD steps, last loss %d/1000, replay buffer %lu/%lu\n",
             kTrainFrames * sensor::kPatterns, (unsigned long)stats.steps,
             (int)(stats.last_loss * 1000.0f), (unsigned long)stats.buffer_fill,
             (unsigned long)stats.buffer_capacity);
    say(line);
    snprintf(line, sizeof(line), "accuracy on the new classes after learning: %d%%\n", after);
    say(line);
    if (after >= kPassPercent && after > before) finish(0, "PASS: the new classes were learned");
    finish(1, "FAIL: the new classes were not learned well enough");
}
