// Instruction counts of the runtime's own calls for one exported model (firmware/generated), on
// the emulated Cortex-M7 under QEMU -icount shift=0 (the board's counter then counts executed
// instructions). Built by benchmarks/train_sample_cost.py with the product's runtime, kernels and
// board support; prints lines "COST <name> <value>" and exits through semihosting with 0.
//
// The tail is grown to the size of the first task the device learns, as BEGIN_TASK does, and the
// inputs are the replay buffer's real samples, so every call runs what a device run runs.
#include "bsp.h"
#include "console.h"
#include "tc_backbone.h"
#include "tc_model.h"
#include "tc_model_source.h"
#include "tc_protocol_spec.h"
#include "tc_runtime.h"

namespace {

constexpr int kBatches = 3;   // mini-batches timed; the last is reported (no first-call effects)
constexpr int kRepeats = 4;   // single-sample calls timed and averaged

void report(const char* name, uint64_t value) {
    tc_print("COST ");
    tc_print(name);
    tc_print(" ");
    tc_print_int((int64_t)value);
    tc_print("\n");
}

// Sized by the build for this export (benchmarks/train_sample_cost.py): beside a runtime arena
// that fills most of the board's RAM (a whole model training), fixed buffers would not fit.
#ifndef TC_COST_LATENT_BYTES
#define TC_COST_LATENT_BYTES 16384
#endif
#ifndef TC_COST_SCRATCH_BYTES
#define TC_COST_SCRATCH_BYTES 16384
#endif
#ifndef TC_COST_KERNEL_SCRATCH_WORDS
#define TC_COST_KERNEL_SCRATCH_WORDS 8192
#endif
int8_t g_latent[TC_COST_LATENT_BYTES];
// Working memory for running prefixes of the backbone's layer table (sizes checked against the
// export's own).
int8_t g_scratch_a[TC_COST_SCRATCH_BYTES], g_scratch_b[TC_COST_SCRATCH_BYTES];
int32_t g_kernel_scratch[TC_COST_KERNEL_SCRATCH_WORDS];

uint64_t layer_macs(const tc_layer& l) {
    const uint64_t outputs = (uint64_t)l.out_h * l.out_w * l.out_c;
    switch (l.op) {
        case TC_OP_CONV2D: return outputs * l.k_h * l.k_w * l.in_c;
        case TC_OP_DEPTHWISE_CONV2D: return outputs * l.k_h * l.k_w;
        case TC_OP_DENSE: return (uint64_t)l.in_c * l.out_c;
        default: return 0;
    }
}

// Instructions of each backbone layer: the difference between running the first k and the
// first k - 1 layers of the table (a copy of the model with a shorter table).
bool report_layers(const tc_model* m, const int8_t* x) {
    if (m->scratch_bytes > sizeof(g_scratch_a) || m->kernel_scratch_bytes > sizeof(g_kernel_scratch))
        return false;
    tc_model prefix = *m;
    uint64_t before = 0;
    for (uint16_t k = 1; k <= m->n_layers; ++k) {
        prefix.n_layers = k;
        bsp::counter_reset();
        if (tc_backbone_run(&prefix, x, g_scratch_a, g_scratch_b, g_kernel_scratch) == nullptr)
            return false;
        const uint64_t now = bsp::counter_read();
        const tc_layer& l = m->layers[k - 1];
        tc_print("LAYER ");
        tc_print_int(k - 1);
        tc_print(" ");
        tc_print_int(l.op);
        tc_print(" ");
        tc_print_int((int64_t)layer_macs(l));
        tc_print(" ");
        tc_print_int((int64_t)(now > before ? now - before : 0));
        tc_print(" ");
        tc_print_int(l.out_h);
        tc_print(" ");
        tc_print_int(l.out_w);
        tc_print(" ");
        tc_print_int(l.out_c);
        tc_print("\n");
        before = now;
    }
    return true;
}

}  // namespace

int main() {
    bsp::init();
    if (bsp::counter_kind() != TC_COUNTER_INSTRUCTIONS) return 4;
    if (tc_rt_init() != TC_STATUS_OK) return 2;
    const tc_model* m = tc_model_get();
    if (m->buffer_flash_count == 0 || m->known_tasks >= m->n_plan) return 3;
    if (m->latent_size > sizeof(g_latent)) return 5;

    tc_rt_desc d;
    tc_rt_describe(&d);
    const uint16_t next = m->plan[m->known_tasks].classes_seen;
    uint8_t labels[256];
    for (uint16_t c = d.classes_seen; c < next; ++c) labels[c - d.classes_seen] = (uint8_t)c;
    if (tc_rt_begin_task(labels, (uint16_t)(next - d.classes_seen)) != TC_STATUS_OK) return 6;

    auto sample = [m](uint32_t i) { return m->buffer_x + (size_t)(i % m->buffer_flash_count) * m->input_size; };
    auto label = [m](uint32_t i) { return m->buffer_y[i % m->buffer_flash_count]; };

    // Backbone forward alone (int8 kernels, plus copying out the latent).
    uint64_t backbone = 0;
    for (int r = 0; r < kRepeats; ++r) {
        bsp::counter_reset();
        if (tc_rt_backbone(sample(r), g_latent) < 0) return 7;
        backbone += bsp::counter_read();
    }
    // Inference of one sample: backbone, dequantised latent, tail forward, argmax.
    uint64_t predict = 0;
    for (int r = 0; r < kRepeats; ++r) {
        uint8_t pred;
        bsp::counter_reset();
        if (tc_rt_predict(sample(r), 1, &pred) != TC_STATUS_OK) return 8;
        predict += bsp::counter_read();
    }
    report("backbone_fwd", backbone / kRepeats);
    if (!report_layers(m, sample(0))) tc_print("LAYERS skipped: scratch larger than this image's\n");
    report("predict", predict / kRepeats);

    // Training: one call per new sample, as the serial handler makes them. Every call embeds its
    // sample (backbone forward, dequantised into the batch); the last of a mini-batch also draws
    // batch_replay buffer samples, embeds them and runs the tail's forward, backward and SGD
    // update over the whole batch (timed inside the runtime as last_step_ticks).
    const uint16_t bn = m->defaults.batch_new;
    uint64_t batch = 0, step = 0;
    uint32_t k = 0;
    for (int b = 0; b < kBatches; ++b) {
        batch = 0;
        for (uint16_t i = 0; i < bn; ++i, ++k) {
            const int8_t* x = sample(k);
            const uint8_t y = label(k);
            tc_step_report rep;
            bsp::counter_reset();
            const int status = tc_rt_train_samples(x, &y, 1, i + 1 == bn ? 1 : 0, &rep);
            batch += bsp::counter_read();
            if (status != TC_STATUS_OK) return 9;
            if ((i + 1 == bn) != (rep.stepped == 1)) return 10;
        }
        struct tc_rt_stats st;
        tc_rt_stats(&st);
        step = st.last_step_ticks;
    }
    report("batch_new", bn);
    report("batch_replay", m->defaults.batch_replay);
    report("batch", batch);
    report("step", step);
    return 0;
}
