// Instruction counts of the kernels on the emulated Cortex-M7. Run under QEMU with
// -icount shift=0,align=off,sleep=off: the board's counter (bsp::counter_read) then counts
// executed instructions. Prints one line per kernel:
// "BENCH <name> <instructions> <multiply-accumulates>".
#include <initializer_list>

#include "bsp.h"
#include "console.h"
#include "tc_conv2d_f32.h"
#include "tc_conv2d_s8.h"
#include "tc_dense_f32.h"
#include "tc_fully_connected_s8.h"
#include "tc_protocol_spec.h"
#include "tc_relu_f32.h"
#include "tc_sgd_f32.h"
#include "tc_softmax_ce_f32.h"

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

// Times a float convolution's forward and backward passes on one shape: input, weights and bias
// filled in that order, the forward output reused as the backward's output gradient. MACs count
// every output's taps, those on SAME padding too (the kernels run them); the backward counts
// two per tap with an input gradient (dx), one without (a first layer).
void bench_conv_f32(const char* fwd_name, const char* bwd_name, const tc_window_dims& d, float* x,
                    float* w, float* b, float* y, float* dx, float* dw, float* db) {
    fill(x, d.in_h * d.in_w * d.in_c);
    fill(w, d.out_c * d.k_h * d.k_w * d.in_c);
    fill(b, d.out_c);
    const uint64_t macs = (uint64_t)d.out_h * d.out_w * d.out_c * d.k_h * d.k_w * d.in_c;
    counter_start();
    tc_conv2d_f32_fwd(&d, x, w, b, y);
    report(fwd_name, counter_instructions(), macs);
    counter_start();
    tc_conv2d_f32_bwd(&d, x, w, y, dx, dw, db);
    report(bwd_name, counter_instructions(), dx ? 2 * macs : macs);
}

// Shapes: a dense layer of a trainable tail and a 3x3 convolution (VALID, so every tap is a
// real multiply-accumulate and the MAC count is unambiguous).
constexpr int32_t D_IN = 256, D_OUT = 64;
constexpr int32_t C_H = 18, C_W = 18, C_IN = 16, C_OUT = 16, C_K = 3;
constexpr int32_t C_OH = C_H - C_K + 1, C_OW = C_W - C_K + 1;
constexpr int32_t S_IN = 32, S_OUT = 32;
// The first layer of the Fashion-MNIST 14x14 demo model: 1 channel in, 5 out, 3x3, SAME.
constexpr int32_t T_H = 14, T_W = 14, T_OUT = 5;
// A first layer trained on the device (the whole model trains): 14x14 images, 1 channel in, 16
// out (the cnn2d family's full width), 3x3, SAME; its backward pass has no input gradient.
constexpr int32_t F_H = 14, F_W = 14, F_OUT = 16;
// A narrow second layer (the Fashion-MNIST model's while it has seen its first classes): 7x7
// maps, 5 channels in, 9 out, 3x3, SAME.
constexpr int32_t G_H = 7, G_W = 7, G_IN = 5, G_OUT = 9;

// The kernel benchmarks and the training steps run one after the other: they share RAM.
struct KernelData {
    float dense_x[D_IN], dense_w[D_OUT * D_IN], dense_b[D_OUT], dense_y[D_OUT];
    float dense_dx[D_IN], dense_dw[D_OUT * D_IN], dense_db[D_OUT];
    float conv_x[C_H * C_W * C_IN], conv_w[C_OUT * C_K * C_K * C_IN], conv_b[C_OUT];
    float conv_y[C_OH * C_OW * C_OUT], conv_dx[C_H * C_W * C_IN], conv_dw[C_OUT * C_K * C_K * C_IN];
    float conv_db[C_OUT];
    int8_t s8_x[C_H * C_W * S_IN], s8_w[S_OUT * C_K * C_K * S_IN], s8_y[C_OH * C_OW * S_OUT];
    int32_t s8_b[S_OUT], s8_mult[S_OUT], s8_shift[S_OUT];
    int8_t fc_x[D_IN], fc_w[D_OUT * D_IN], fc_y[D_OUT];
    int32_t fc_b[D_OUT], fc_mult[D_OUT], fc_shift[D_OUT];
    int8_t t_x[T_H * T_W], t_w[T_OUT * 9], t_y[T_H * T_W * T_OUT];
    int32_t t_b[T_OUT], t_mult[T_OUT], t_shift[T_OUT];
    float f_x[F_H * F_W], f_w[F_OUT * 9], f_b[F_OUT], f_y[F_H * F_W * F_OUT], f_dw[F_OUT * 9];
    float f_db[F_OUT];
    float g_x[G_H * G_W * G_IN], g_w[G_OUT * 9 * G_IN], g_b[G_OUT], g_y[G_H * G_W * G_OUT];
    float g_dx[G_H * G_W * G_IN], g_dw[G_OUT * 9 * G_IN], g_db[G_OUT];
    int32_t s8_scratch[(3 + S_OUT) * C_K * C_K * S_IN / 2 + C_K * C_K * S_IN / 4 + 4];
};

// ---------------------------------------------------------------------------------------------
// A whole training step of a float32 MLP 196-64-10 (ReLU), softmax cross-entropy, global-norm
// clipping and SGD with momentum 0.9, at batch 1 and batch 16. Prints
// "STEP <name> <batch> <stage> <instructions>" per stage and "STEP <name> <batch> total <n>".
constexpr int32_t M_IN = 196, M_HID = 64, M_OUT = 10, M_BATCH = 16;
struct MlpData {
    float m_x[M_BATCH * M_IN], m_w1[M_HID * M_IN], m_b1[M_HID], m_w2[M_OUT * M_HID], m_b2[M_OUT];
    float m_v1[M_HID * M_IN], m_vb1[M_HID], m_v2[M_OUT * M_HID], m_vb2[M_OUT];
    float m_g1[M_HID * M_IN], m_gb1[M_HID], m_g2[M_OUT * M_HID], m_gb2[M_OUT];
    float m_a1[M_BATCH * M_HID], m_z[M_BATCH * M_OUT], m_dz[M_BATCH * M_OUT];
    float m_d1[M_BATCH * M_HID];
};
union Memory {
    KernelData k;
    MlpData m;
};
Memory g_mem;
KernelData& K = g_mem.k;
MlpData& M = g_mem.m;
int32_t m_y[M_BATCH];
constexpr float M_LR = 0.01f, M_MOMENTUM = 0.9f;

struct Stages {
    const char* names[8];
    uint64_t counts[8];
    int32_t n;
    void add(const char* name) {
        const uint64_t c = counter_instructions();
        int32_t i = 0;
        while (i < n && strcmp(names[i], name) != 0) ++i;
        if (i == n) {
            names[n] = name;
            counts[n++] = 0;
        }
        counts[i] += c;
        counter_start();
    }
    void print(const char* step, int32_t batch) const {
        uint64_t total = 0;
        for (int32_t i = 0; i < n; ++i) {
            tc_print("STEP ");
            tc_print(step);
            tc_print(" ");
            tc_print_int(batch);
            tc_print(" ");
            tc_print(names[i]);
            tc_print(" ");
            tc_print_int((int64_t)counts[i]);
            tc_print("\n");
            total += counts[i];
        }
        tc_print("STEP ");
        tc_print(step);
        tc_print(" ");
        tc_print_int(batch);
        tc_print(" total ");
        tc_print_int((int64_t)total);
        tc_print("\n");
    }
};

void mlp_init() {
    g_seed = 777;
    fill(M.m_x, M_BATCH * M_IN);
    for (int32_t i = 0; i < M_BATCH * M_IN; ++i) M.m_x[i] = M.m_x[i] > 0.0f ? M.m_x[i] : 0.0f;
    fill(M.m_w1, M_HID * M_IN);
    for (int32_t i = 0; i < M_HID * M_IN; ++i) M.m_w1[i] *= 0.1f;
    fill(M.m_b1, M_HID);
    fill(M.m_w2, M_OUT * M_HID);
    fill(M.m_b2, M_OUT);
    fill(M.m_v1, M_HID * M_IN);
    fill(M.m_vb1, M_HID);
    fill(M.m_v2, M_OUT * M_HID);
    fill(M.m_vb2, M_OUT);
    for (int32_t b = 0; b < M_BATCH; ++b) m_y[b] = (int32_t)(next_random() >> 16) % M_OUT;
}

// The sequence the runtime runs today, through the kernels' batched calls: forward over the
// batch, softmax cross-entropy, backward (gradients overwritten), norm and clipping pass,
// update with separately rounded products.
void step_batched(int32_t batch, float clip) {
    Stages s = {};
    const tc_dense_dims d1 = {batch, M_IN, M_HID}, d2 = {batch, M_HID, M_OUT};
    counter_start();
    tc_dense_f32_fwd(&d1, M.m_x, M.m_w1, M.m_b1, M.m_a1);
    tc_relu_f32_fwd(M.m_a1, M.m_a1, batch * M_HID);
    tc_dense_f32_fwd(&d2, M.m_a1, M.m_w2, M.m_b2, M.m_z);
    s.add("forward");
    tc_softmax_ce_f32(M.m_z, m_y, batch, M_OUT, nullptr, M_OUT, M.m_dz);
    s.add("softmax_ce");
    tc_dense_f32_bwd(&d2, M.m_a1, M.m_w2, M.m_dz, M.m_d1, M.m_g2, M.m_gb2);
    tc_relu_f32_bwd(M.m_a1, M.m_d1, M.m_d1, batch * M_HID);
    tc_dense_f32_bwd(&d1, M.m_x, M.m_w1, M.m_d1, nullptr, M.m_g1, M.m_gb1);
    s.add("backward");
    float* grads[4] = {M.m_g1, M.m_gb1, M.m_g2, M.m_gb2};
    const int32_t sizes[4] = {M_HID * M_IN, M_HID, M_OUT * M_HID, M_OUT};
    tc_clip_grad_global_norm_f32(grads, sizes, 4, clip);
    s.add("norm_and_clip");
    tc_sgd_momentum_f32(M.m_w1, M.m_v1, M.m_g1, M_HID * M_IN, M_LR, M_MOMENTUM);
    tc_sgd_momentum_f32(M.m_b1, M.m_vb1, M.m_gb1, M_HID, M_LR, M_MOMENTUM);
    tc_sgd_momentum_f32(M.m_w2, M.m_v2, M.m_g2, M_OUT * M_HID, M_LR, M_MOMENTUM);
    tc_sgd_momentum_f32(M.m_b2, M.m_vb2, M.m_gb2, M_OUT, M_LR, M_MOMENTUM);
    s.add("update");
    s.print(clip < 1.0f ? "batched_clipping" : "batched", batch);
}

#if !defined(TC_BENCH_OLD_API)
// Batch 1: the weight gradient of a dense layer is the outer product dy x^T. Its squared norm
// is |dy|^2 |x|^2 (two short sums), and the update forms each gradient entry in registers as
// it applies it: the gradient is never stored, cleared or read back.
void step_single(float clip) {
    Stages s = {};
    const tc_dense_dims d1 = {1, M_IN, M_HID}, d2 = {1, M_HID, M_OUT};
    counter_start();
    tc_dense_f32_fwd(&d1, M.m_x, M.m_w1, M.m_b1, M.m_a1);
    tc_relu_f32_fwd(M.m_a1, M.m_a1, M_HID);
    tc_dense_f32_fwd(&d2, M.m_a1, M.m_w2, M.m_b2, M.m_z);
    s.add("forward");
    tc_softmax_ce_row_f32(M.m_z, m_y[0], M_OUT, nullptr, M_OUT, 1.0f, M.m_dz);
    s.add("softmax_ce");
    tc_dense_f32_bwd_input(&d2, M.m_w2, M.m_dz, M.m_d1);
    tc_relu_f32_bwd(M.m_a1, M.m_d1, M.m_d1, M_HID);
    s.add("backward");
    const float sd1 = tc_f32_sum_squares(M.m_d1, M_HID, 0.0f);
    const float sd2 = tc_f32_sum_squares(M.m_dz, M_OUT, 0.0f);
    float total = fmaf(sd1, tc_f32_sum_squares(M.m_x, M_IN, 0.0f), 0.0f) + sd1;
    total = fmaf(sd2, tc_f32_sum_squares(M.m_a1, M_HID, 0.0f), total) + sd2;
    const float scale = tc_clip_factor_f32(sqrtf(total), clip);
    s.add("norm");
    tc_sgd_momentum_outer_f32(M.m_w1, M.m_v1, M_HID, M_IN, M.m_d1, M.m_x, M_LR, M_MOMENTUM, scale);
    tc_sgd_momentum_fma_f32(M.m_b1, M.m_vb1, M.m_d1, M_HID, M_LR, M_MOMENTUM, scale);
    tc_sgd_momentum_outer_f32(M.m_w2, M.m_v2, M_OUT, M_HID, M.m_dz, M.m_a1, M_LR, M_MOMENTUM, scale);
    tc_sgd_momentum_fma_f32(M.m_b2, M.m_vb2, M.m_dz, M_OUT, M_LR, M_MOMENTUM, scale);
    s.add("gradient_and_update");
    s.print(clip < 1.0f ? "single_clipping" : "single", 1);
}

// Batch > 1 with gradients summed sample by sample (RAM for one sample's activations): per
// sample forward, loss with factor 1 / batch and backward into the gradient buffers, the first
// sample overwriting them (no clearing); then the blocked norm and the fused clip-and-update.
void step_accumulated(int32_t batch, float clip) {
    Stages s = {};
    const tc_dense_dims d1 = {1, M_IN, M_HID}, d2 = {1, M_HID, M_OUT};
    const float inv_batch = 1.0f / (float)batch;
    counter_start();
    for (int32_t b = 0; b < batch; ++b) {
        const float* x = M.m_x + b * M_IN;
        tc_dense_f32_fwd(&d1, x, M.m_w1, M.m_b1, M.m_a1);
        tc_relu_f32_fwd(M.m_a1, M.m_a1, M_HID);
        tc_dense_f32_fwd(&d2, M.m_a1, M.m_w2, M.m_b2, M.m_z);
        s.add("forward");
        tc_softmax_ce_row_f32(M.m_z, m_y[b], M_OUT, nullptr, M_OUT, inv_batch, M.m_dz);
        s.add("softmax_ce");
        tc_dense_f32_bwd_acc(&d2, M.m_a1, M.m_w2, M.m_dz, M.m_d1, M.m_g2, M.m_gb2, b > 0);
        tc_relu_f32_bwd(M.m_a1, M.m_d1, M.m_d1, M_HID);
        tc_dense_f32_bwd_acc(&d1, x, M.m_w1, M.m_d1, nullptr, M.m_g1, M.m_gb1, b > 0);
        s.add("backward");
    }
    float* grads[4] = {M.m_g1, M.m_gb1, M.m_g2, M.m_gb2};
    const int32_t sizes[4] = {M_HID * M_IN, M_HID, M_OUT * M_HID, M_OUT};
    const float scale = tc_clip_factor_f32(tc_grad_global_norm_f32(grads, sizes, 4), clip);
    s.add("norm");
    for (int32_t t = 0; t < 4; ++t) {
        float* w = t == 0 ? M.m_w1 : t == 1 ? M.m_b1 : t == 2 ? M.m_w2 : M.m_b2;
        float* v = t == 0 ? M.m_v1 : t == 1 ? M.m_vb1 : t == 2 ? M.m_v2 : M.m_vb2;
        tc_sgd_momentum_fma_f32(w, v, grads[t], sizes[t], M_LR, M_MOMENTUM, scale);
    }
    s.add("update");
    s.print(clip < 1.0f ? "accumulated_clipping" : "accumulated", batch);
}
#endif

}  // namespace

int main() {
    bsp::init();
    if (bsp::counter_kind() != TC_COUNTER_INSTRUCTIONS) return 4;
    fill(K.dense_x, D_IN);
    fill(K.dense_w, D_OUT * D_IN);
    fill(K.dense_b, D_OUT);
    const tc_dense_dims dd = {1, D_IN, D_OUT};
    counter_start();
    tc_dense_f32_fwd(&dd, K.dense_x, K.dense_w, K.dense_b, K.dense_y);
    report("dense_f32_fwd", counter_instructions(), (uint64_t)D_IN * D_OUT);
    counter_start();
    tc_dense_f32_bwd(&dd, K.dense_x, K.dense_w, K.dense_y, K.dense_dx, K.dense_dw, K.dense_db);
    report("dense_f32_bwd", counter_instructions(), 2ull * D_IN * D_OUT);

    tc_window_dims cd;
    tc_window_dims_init(&cd, 1, C_H, C_W, C_IN, C_OUT, C_K, C_K, 1, 1, TC_PADDING_VALID, 1);
    bench_conv_f32("conv2d_f32_fwd", "conv2d_f32_bwd", cd, K.conv_x, K.conv_w, K.conv_b, K.conv_y,
                   K.conv_dx, K.conv_dw, K.conv_db);

    tc_window_dims fd;
    tc_window_dims_init(&fd, 1, F_H, F_W, 1, F_OUT, 3, 3, 1, 1, TC_PADDING_SAME, 1);
    bench_conv_f32("conv2d_f32_1ch_fwd", "conv2d_f32_1ch_bwd", fd, K.f_x, K.f_w, K.f_b, K.f_y,
                   nullptr, K.f_dw, K.f_db);

    tc_window_dims gd;
    tc_window_dims_init(&gd, 1, G_H, G_W, G_IN, G_OUT, 3, 3, 1, 1, TC_PADDING_SAME, 1);
    bench_conv_f32("conv2d_f32_5ch_fwd", "conv2d_f32_5ch_bwd", gd, K.g_x, K.g_w, K.g_b, K.g_y,
                   K.g_dx, K.g_dw, K.g_db);

    tc_window_dims sd;
    tc_window_dims_init(&sd, 1, C_H, C_W, S_IN, S_OUT, C_K, C_K, 1, 1, TC_PADDING_VALID, 1);
    fill(K.s8_x, C_H * C_W * S_IN);
    fill(K.s8_w, S_OUT * C_K * C_K * S_IN);
    for (int32_t c = 0; c < S_OUT; ++c) {
        K.s8_b[c] = (int32_t)(next_random() >> 20) - 2048;
        K.s8_mult[c] = 1300000000 + (int32_t)(next_random() >> 4);
        K.s8_shift[c] = -9;
    }
    const tc_s8_quant q = {5, -3, -128, 127, K.s8_mult, K.s8_shift, 1};
    const int32_t bytes = tc_conv2d_s8_scratch_bytes(&sd, S_OUT);
    if (bytes > (int32_t)sizeof K.s8_scratch) return 3;
    counter_start();
    const bool ok = tc_conv2d_s8(&sd, &q, K.s8_x, K.s8_w, K.s8_b, K.s8_y, K.s8_scratch, bytes);
    report("conv2d_s8_fwd", counter_instructions(), (uint64_t)C_OH * C_OW * S_OUT * C_K * C_K * S_IN);

    tc_window_dims td;
    tc_window_dims_init(&td, 1, T_H, T_W, 1, T_OUT, 3, 3, 1, 1, TC_PADDING_SAME, 1);
    fill(K.t_x, T_H * T_W);
    fill(K.t_w, T_OUT * 9);
    for (int32_t c = 0; c < T_OUT; ++c) {
        K.t_b[c] = (int32_t)(next_random() >> 22) - 512;
        K.t_mult[c] = 1300000000 + (int32_t)(next_random() >> 4);
        K.t_shift[c] = -9;
    }
    // Quantisation as TFLite gives this ReLU layer: input zero point -128 (images in [0, 1]),
    // output zero point -128 (outputs in [0, max]), so the ReLU bound is the int8 minimum.
    const tc_s8_quant tq = {128, -128, -128, 127, K.t_mult, K.t_shift, 1};
    // The scratch the exporter plans for this layer (all channels in one pass).
    const int32_t t_bytes = tc_conv2d_s8_scratch_bytes(&td, T_OUT);
    if (t_bytes > (int32_t)sizeof K.s8_scratch) return 3;
    counter_start();
    const bool t_ok = tc_conv2d_s8(&td, &tq, K.t_x, K.t_w, K.t_b, K.t_y, K.s8_scratch, t_bytes);
    report("conv2d_s8_1ch_fwd", counter_instructions(), (uint64_t)T_H * T_W * T_OUT * 9);
    if (!t_ok) return 2;

    fill(K.fc_x, D_IN);
    fill(K.fc_w, D_OUT * D_IN);
    for (int32_t c = 0; c < D_OUT; ++c) {
        K.fc_b[c] = (int32_t)(next_random() >> 20) - 2048;
        K.fc_mult[c] = 1300000000 + (int32_t)(next_random() >> 4);
        K.fc_shift[c] = -10;
    }
    const tc_s8_quant fq = {7, -2, -128, 127, K.fc_mult, K.fc_shift, 1};
    counter_start();
    tc_fully_connected_s8(&dd, &fq, K.fc_x, K.fc_w, K.fc_b, K.fc_y);
    report("fully_connected_s8", counter_instructions(), (uint64_t)D_IN * D_OUT);

    // Training steps; clipping at 1e6 never scales, at 1e-3 always does (the dearer case).
    for (const float clip : {1e6f, 1e-3f}) {
        for (const int32_t batch : {(int32_t)1, M_BATCH}) {
            mlp_init();
            step_batched(batch, clip);
        }
#if !defined(TC_BENCH_OLD_API)
        mlp_init();
        step_single(clip);
        mlp_init();
        step_accumulated(M_BATCH, clip);
#endif
    }
    return ok ? 0 : 2;
}
