// Instruction counts of the PRODUCT runtime's training step (tc_rt_train_samples, the call the
// serial handler makes) on the float32 MLP 196-64-10 of benchmarks/kernels.py, exported with an
// empty int8 prefix so the whole model trains. Built by benchmarks/kernels.py with the product's
// runtime, kernels and board support; run under QEMU -icount shift=0 (the board's counter then
// counts executed instructions). Prints
//   "RSTEP <variant> <batch> step <instructions of the step (tc_rt_stats' last_step_ticks)>"
//   "RSTEP <variant> <batch> call <instructions of the whole tc_rt_train_samples call>"
// and, when built with TC_RT_STAGE_TICKS, "RSTEP <variant> <batch> <stage> <instructions>" per
// stage of the step. The variant ends in "_clipping" when the clipping limit always scales.
#include <initializer_list>

#include "bsp.h"
#include "console.h"
#include "tc_model.h"
#include "tc_model_source.h"
#include "tc_protocol_spec.h"
#include "tc_runtime.h"

namespace {

constexpr uint16_t kMaxBatch = 16;
constexpr int kWarmSteps = 2;  // steps before the measured one (momentum no longer zero)

uint32_t g_seed = 777;
uint32_t next_random() {
    g_seed = g_seed * 1664525u + 1013904223u;
    return g_seed;
}

void line(const char* variant, uint16_t batch, const char* what, uint64_t n) {
    tc_print("RSTEP ");
    tc_print(variant);
    tc_print(" ");
    tc_print_int(batch);
    tc_print(" ");
    tc_print(what);
    tc_print(" ");
    tc_print_int((int64_t)n);
    tc_print("\n");
}

int8_t g_x[kMaxBatch * 196];
uint8_t g_y[kMaxBatch];

}  // namespace

int main() {
    bsp::init();
    if (bsp::counter_kind() != TC_COUNTER_INSTRUCTIONS) return 4;
    if (tc_rt_init() != TC_STATUS_OK) return 2;
    const tc_model* m = tc_model_get();
    if (m->input_size != 196 || m->max_batch < kMaxBatch) return 3;
    // Inputs as a ReLU layer's outputs look once dequantised: zero or positive.
    for (uint32_t i = 0; i < sizeof g_x; ++i) {
        const int32_t v = (int32_t)(next_random() >> 25) - 40;
        g_x[i] = (int8_t)(v > 0 ? v : 0);
    }
    for (uint16_t i = 0; i < kMaxBatch; ++i) g_y[i] = (uint8_t)((next_random() >> 16) % 10);

    for (const float clip : {1e6f, 1e-3f}) {  // 1e6 never scales, 1e-3 always does
        const char* variant = clip < 1.0f ? "runtime_clipping" : "runtime";
        for (const uint16_t batch : {(uint16_t)1, kMaxBatch}) {
            const tc_train_params p = {0.01f, 0.9f, clip, batch, 0, 1, 0.1f, 0, 0, 0};
            if (tc_rt_set_training(&p) != TC_STATUS_OK) return 5;
            uint64_t call = 0;
#if defined(TC_RT_STAGE_TICKS)
            uint64_t stages[TC_RT_STAGES];
#endif
            for (int s = 0; s <= kWarmSteps; ++s) {
#if defined(TC_RT_STAGE_TICKS)
                tc_rt_stage_ticks(stages, 1);  // the measured step's stages only
#endif
                tc_step_report rep;
                bsp::counter_reset();
                const int status = tc_rt_train_samples(g_x, g_y, batch, 1, &rep);
                call = bsp::counter_read();
                if (status != TC_STATUS_OK || rep.stepped != 1 || rep.batch != batch) return 6;
            }
            struct tc_rt_stats st;
            tc_rt_stats(&st);
            line(variant, batch, "step", st.last_step_ticks);
            line(variant, batch, "call", call);
#if defined(TC_RT_STAGE_TICKS)
            tc_rt_stage_ticks(stages, 0);
            const char* names[TC_RT_STAGES] = {"forward", "softmax_ce", "backward", "norm",
                                               "update"};
            for (int s = 0; s < TC_RT_STAGES; ++s) line(variant, batch, names[s], stages[s]);
#endif
        }
    }
    return 0;
}
