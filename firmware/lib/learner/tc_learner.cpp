// The learner's C API (tc_learner.h) on top of the runtime's (tc_runtime.h). The runtime takes
// samples in batches and leaves the end of a mini-batch to its caller; here one sample comes at
// a time and the batch size is the export's training default, so an application needs no
// knowledge of batches at all.
#include "tc_learner.h"

#include <math.h>
#include <string.h>

#include "tc_model_source.h"

namespace {

float g_last_loss = 0.0f;
// New samples per mini-batch: the export's default, or what tc_learner_set_training set.
uint16_t g_batch_new = 1;

tc_rt_desc describe() {
    tc_rt_desc d;
    tc_rt_describe(&d);
    return d;
}

}  // namespace

// The runtime's step timer (declared in tc_runtime.cpp with C++ linkage). Weak: an application
// with a board counter defines its own (see tc_learner_stats_t::last_step_ticks).
__attribute__((weak)) uint64_t tc_rt_ticks(void) { return 0; }

extern "C" {

int tc_learner_init(void) {
    g_last_loss = 0.0f;
    const int status = tc_rt_init();
    const tc_model* m = tc_model_get();
    g_batch_new = (status == TC_STATUS_OK && m && m->defaults.batch_new) ? m->defaults.batch_new : 1;
    return status;
}

int tc_learner_set_training(const tc_train_params* params) {
    const int status = tc_rt_set_training(params);
    if (status == TC_STATUS_OK) g_batch_new = params->batch_new;
    return status;
}

void tc_learner_describe(tc_rt_desc* out) { tc_rt_describe(out); }

uint32_t tc_learner_input_size(void) { return describe().input_size; }
float tc_learner_input_scale(void) { return describe().input_scale; }
int32_t tc_learner_input_zero_point(void) { return describe().input_zero_point; }

void tc_learner_quantize(const float* values, uint32_t n, int8_t* out) {
    const tc_rt_desc d = describe();
    const float inv = d.input_scale > 0.0f ? 1.0f / d.input_scale : 0.0f;
    for (uint32_t i = 0; i < n; ++i) {
        long q = lroundf(values[i] * inv) + d.input_zero_point;
        if (q < -128) q = -128;
        if (q > 127) q = 127;
        out[i] = (int8_t)q;
    }
}

int tc_learner_flush(tc_step_report* report) {
    tc_step_report local;
    if (report == nullptr) report = &local;
    // No new sample, end of batch: the runtime trains on what waits (nothing when none waits).
    const int status = tc_rt_train_samples(nullptr, nullptr, 0, 1, report);
    if (status == TC_STATUS_OK && report->stepped) g_last_loss = report->loss;
    return status;
}

int tc_learner_begin_task(const uint8_t* labels, uint16_t n) {
    const int status = tc_learner_flush(nullptr);
    if (status != TC_STATUS_OK) return status;
    return tc_rt_begin_task(labels, n);
}

int tc_learner_add_sample(const int8_t* x, uint8_t label, tc_step_report* report) {
    tc_step_report local;
    if (report == nullptr) report = &local;
    // Queue the sample; the report says how many wait, and the batch closes when they fill it.
    // The runtime runs the frozen prefix now and the step at the end of the batch: the same
    // computation as handing it the whole batch at once.
    int status = tc_rt_train_samples(x, &label, 1, 0, report);
    bool stepped = false;
    tc_step_report early;
    if (status == TC_STATUS_FULL) {
        // The batch is already full (a restored state may train with another batch size): train
        // it, adopt its size, and queue the sample into the next one.
        if (tc_rt_train_samples(nullptr, nullptr, 0, 0, &early) == TC_STATUS_OK && early.pending)
            g_batch_new = early.pending;
        status = tc_learner_flush(&early);
        if (status != TC_STATUS_OK) return status;
        stepped = true;
        status = tc_rt_train_samples(x, &label, 1, 0, report);
    }
    if (status != TC_STATUS_OK) return status;
    if (report->pending >= g_batch_new) {
        status = tc_learner_flush(report);
    } else if (stepped) {
        // The step of the full batch is this call's step; the sample waits for the next.
        const uint16_t pending = report->pending;
        *report = early;
        report->pending = pending;
    }
    return status;
}

int tc_learner_remember(const int8_t* x, const uint8_t* labels, uint16_t n) {
    return tc_rt_add_buffer_samples(x, labels, n);
}

int tc_learner_end_task(tc_step_report* report) {
    const int status = tc_learner_flush(nullptr);
    if (status != TC_STATUS_OK) return status;
    return tc_rt_end_task(report);
}

int tc_learner_observe(const int8_t* x, uint8_t label) { return tc_rt_observe_samples(x, &label, 1); }

int tc_learner_fit_head(void) { return tc_rt_fit_head(); }

int tc_learner_predict(const int8_t* x, uint8_t* label) { return tc_rt_predict(x, 1, label); }

uint32_t tc_learner_state_bytes(void) { return tc_rt_state_bytes(); }
int tc_learner_save(tc_state_writer* writer) { return tc_rt_save_state(writer); }
int tc_learner_restore(const uint8_t* data, uint32_t n) { return tc_rt_load_state(data, n); }

void tc_learner_stats(tc_learner_stats_t* out) {
    memset(out, 0, sizeof(*out));
    const tc_rt_desc d = describe();
    struct tc_rt_stats s;
    tc_rt_stats(&s);
    out->classes_seen = d.classes_seen;
    out->classes_max = d.classes_max;
    out->steps = s.steps;
    out->samples_trained = s.samples_trained;
    out->buffer_fill = d.buffer_fill;
    out->buffer_capacity = d.buffer_capacity;
    out->last_loss = g_last_loss;
    out->last_step_ticks = s.last_step_ticks;
    tc_rt_head_params(nullptr, nullptr, &out->head_classes, &out->head_features);
    out->head_observing = static_cast<uint8_t>(tc_rt_head_observing());
    tc_step_report rep;
    // Zero samples, no end of batch: only reports how many wait.
    if (tc_rt_train_samples(nullptr, nullptr, 0, 0, &rep) == TC_STATUS_OK) out->pending = rep.pending;
}

}  // extern "C"
