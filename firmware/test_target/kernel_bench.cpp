// Instruction counts of the kernels on the emulated Cortex-M7. Run under QEMU with
// -icount shift=0,align=off,sleep=off: the board's counter (bsp::counter_read) then counts
// executed instructions. Prints one line per kernel:
// "BENCH <name> <instructions> <multiply-accumulates>".
#include "bsp.h"
#include "console.h"
#include "tc_conv2d_f32.h"
#include "tc_conv2d_s8.h"
#include "tc_dense_f32.h"
#include "tc_protocol_spec.h"

namespace {

void counter_start() { bsp::counter_reset(); }
uint64_t counter_instructions() { return bsp::counter_read(); }

void report(const char* name, uint64_t instructions, uint64_t macs) {
    tc_print("BENCH ");
    tc_print(name);
    tc_print(" ");
    tc_print_int((int64_t)instructions);
    tc_print(" ");
    tc_print_int((int64_t)macs);
    tc_print("\n");
}

uint32_t g_seed = 12345;
uint32_t next_random() {
    g_seed = g_seed * 1664525u + 1013904223u;
    return g_seed;
}
void fill(float* p, int32_t n) {
    for (int32_t i = 0; i < n; ++i) p[i] = (float)((int32_t)(next_random() >> 16) - 32768) / 32768.0f;
}
void fill(int8_t* p, int32_t n) {
    for (int32_t i = 0; i < n; ++i) p[i] = (int8_t)(next_random() >> 24);
}

// Shapes: a dense layer of a trainable tail and a 3x3 convolution (VALID, so every tap is a
// real multiply-accumulate and the MAC count is unambiguous).
constexpr int32_t D_IN = 256, D_OUT = 64;
constexpr int32_t C_H = 18, C_W = 18, C_IN = 16, C_OUT = 16, C_K = 3;
constexpr int32_t C_OH = C_H - C_K + 1, C_OW = C_W - C_K + 1;
constexpr int32_t S_IN = 32, S_OUT = 32;

float dense_x[D_IN], dense_w[D_OUT * D_IN], dense_b[D_OUT], dense_y[D_OUT];
float dense_dx[D_IN], dense_dw[D_OUT * D_IN], dense_db[D_OUT];
float conv_x[C_H * C_W * C_IN], conv_w[C_OUT * C_K * C_K * C_IN], conv_b[C_OUT];
float conv_y[C_OH * C_OW * C_OUT], conv_dx[C_H * C_W * C_IN], conv_dw[C_OUT * C_K * C_K * C_IN];
float conv_db[C_OUT];
int8_t s8_x[C_H * C_W * S_IN], s8_w[S_OUT * C_K * C_K * S_IN], s8_y[C_OH * C_OW * S_OUT];
int32_t s8_b[S_OUT], s8_mult[S_OUT], s8_shift[S_OUT];
// Words: three patches and S_OUT filters as int16, one int8 staging patch, slack.
int32_t s8_scratch[(3 + S_OUT) * C_K * C_K * S_IN / 2 + C_K * C_K * S_IN / 4 + 4];

}  // namespace

int main() {
    bsp::init();
    if (bsp::counter_kind() != TC_COUNTER_INSTRUCTIONS) return 4;
    fill(dense_x, D_IN);
    fill(dense_w, D_OUT * D_IN);
    fill(dense_b, D_OUT);
    const tc_dense_dims dd = {1, D_IN, D_OUT};
    counter_start();
    tc_dense_f32_fwd(&dd, dense_x, dense_w, dense_b, dense_y);
    report("dense_f32_fwd", counter_instructions(), (uint64_t)D_IN * D_OUT);
    counter_start();
    tc_dense_f32_bwd(&dd, dense_x, dense_w, dense_y, dense_dx, dense_dw, dense_db);
    report("dense_f32_bwd", counter_instructions(), 2ull * D_IN * D_OUT);

    tc_window_dims cd;
    tc_window_dims_init(&cd, 1, C_H, C_W, C_IN, C_OUT, C_K, C_K, 1, 1, TC_PADDING_VALID, 1);
    fill(conv_x, C_H * C_W * C_IN);
    fill(conv_w, C_OUT * C_K * C_K * C_IN);
    fill(conv_b, C_OUT);
    const uint64_t conv_macs = (uint64_t)C_OH * C_OW * C_OUT * C_K * C_K * C_IN;
    counter_start();
    tc_conv2d_f32_fwd(&cd, conv_x, conv_w, conv_b, conv_y);
    report("conv2d_f32_fwd", counter_instructions(), conv_macs);
    counter_start();
    tc_conv2d_f32_bwd(&cd, conv_x, conv_w, conv_y, conv_dx, conv_dw, conv_db);
    report("conv2d_f32_bwd", counter_instructions(), 2 * conv_macs);

    tc_window_dims sd;
    tc_window_dims_init(&sd, 1, C_H, C_W, S_IN, S_OUT, C_K, C_K, 1, 1, TC_PADDING_VALID, 1);
    fill(s8_x, C_H * C_W * S_IN);
    fill(s8_w, S_OUT * C_K * C_K * S_IN);
    for (int32_t c = 0; c < S_OUT; ++c) {
        s8_b[c] = (int32_t)(next_random() >> 20) - 2048;
        s8_mult[c] = 1300000000 + (int32_t)(next_random() >> 4);
        s8_shift[c] = -9;
    }
    const tc_s8_quant q = {5, -3, -128, 127, s8_mult, s8_shift, 1};
    const int32_t bytes = tc_conv2d_s8_scratch_bytes(&sd, S_OUT);
    if (bytes > (int32_t)sizeof s8_scratch) return 3;
    counter_start();
    const bool ok = tc_conv2d_s8(&sd, &q, s8_x, s8_w, s8_b, s8_y, s8_scratch, bytes);
    report("conv2d_s8_fwd", counter_instructions(), (uint64_t)C_OH * C_OW * S_OUT * C_K * C_K * S_IN);
    return ok ? 0 : 2;
}
