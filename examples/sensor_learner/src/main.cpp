// Sensor application with on-device class-incremental learning (tinycil's learner library).
//
// The firmware ships with a model that knows the classes the host trained it on. In the field
// its sensor shows two patterns the model has never seen; the application learns them as two
// new classes from frames it reads itself - no host, no serial link - and reports how well it
// recognises them before and after. On the emulated board the run ends through semihosting with
// exit code 0 (learned), 1 (not learned well enough, or lost by save and restore), 2 (no model),
// 3 (the model cannot grow by two classes) or 4 (another learner error). Before it ends it saves
// the learned state, restarts the learner and restores the state, as a device does across a reset.
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

// Where the learned state is saved in this example (RAM; see the end of main).
uint8_t g_saved[32 * 1024];

struct StateWriter {
    tc_state_writer base{&StateWriter::write, nullptr};
    uint32_t used = 0;

    static int write(tc_state_writer* self, const void* data, uint32_t n) {
        StateWriter* w = reinterpret_cast<StateWriter*>(self);  // base is the first member
        if (w->used + n > sizeof(g_saved)) return 1;  // refuse: the area is full
        memcpy(g_saved + w->used, data, n);
        w->used += n;
        return 0;
    }
};

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
            tc_learner_remember(frame, &labels[pattern], 1) == TC_STATUS_OK)
            ++remembered[pattern];
    }
    if (tc_learner_end_task(nullptr) != TC_STATUS_OK) finish(4, "end of task failed");
    tc_learner_stats(&stats);
    if (stats.head_observing) {
        // The model uses the discriminant head: the task's frames once more, forward only (the
        // generator, seeded alike, gives the same frames), then the head's fit.
        sensor::Generator again(12345u);
        for (int i = 0; i < kTrainFrames * sensor::kPatterns; ++i) {
            const auto pattern = static_cast<sensor::Pattern>(i % sensor::kPatterns);
            read_frame(again, pattern, frame);
            if (tc_learner_observe(frame, labels[pattern]) != TC_STATUS_OK) finish(4, "observe failed");
        }
        if (tc_learner_fit_head() != TC_STATUS_OK) finish(4, "head fit failed");
    }

    tc_learner_stats(&stats);
    const int after = accuracy_percent(labels);
    snprintf(line, sizeof(line),
             "learned from %d frames: %lu SGD steps, last loss %d/1000, replay buffer %lu/%lu, "
             "head over %u classes\n",
             kTrainFrames * sensor::kPatterns, (unsigned long)stats.steps,
             (int)(stats.last_loss * 1000.0f), (unsigned long)stats.buffer_fill,
             (unsigned long)stats.buffer_capacity, stats.head_classes);
    say(line);
    snprintf(line, sizeof(line), "accuracy on the new classes after learning: %d%%\n", after);
    say(line);

    // What a device does before a reset: save the learned state (a real application writes it
    // to flash, e.g. with lib/persist's two slots), start again from the exported model, restore.
    const uint32_t state_bytes = tc_learner_state_bytes();
    if (state_bytes > sizeof(g_saved)) finish(4, "the learned state is larger than the save area");
    StateWriter writer;
    if (tc_learner_save(&writer.base) != TC_STATUS_OK) finish(4, "save failed");
    if (tc_learner_init() != TC_STATUS_OK) finish(4, "restart failed");
    const int restarted = accuracy_percent(labels);
    if (tc_learner_restore(g_saved, writer.used) != TC_STATUS_OK) finish(4, "restore failed");
    const int restored = accuracy_percent(labels);
    snprintf(line, sizeof(line),
             "learned state of %lu bytes saved; after a restart %d%%, restored %d%%\n",
             (unsigned long)writer.used, restarted, restored);
    say(line);
    if (restored != after) finish(1, "FAIL: the restored state predicts differently");

    if (after >= kPassPercent && after > before) finish(0, "PASS: the new classes were learned");
    finish(1, "FAIL: the new classes were not learned well enough");
}
