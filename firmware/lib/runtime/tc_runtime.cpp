// The on-device learning runtime (see tc_runtime.h). It follows "the device procedure" of the
// project's design operation for operation, in the same order as tinycil/learn/simulate.py: the same
// PRNG draws, the same batch composition (new samples first, then replay), the same growth rule.

#include "tc_runtime.h"

#include <math.h>
#include <string.h>

#include "tc_buffer.h"
#include "tc_growth.h"
#include "tc_model.h"
#include "tc_model_source.h"
#include "tc_prng.h"
#include "tc_protocol_spec.h"
#include "tc_backbone.h"
#include "tc_conv2d_f32.h"
#include "tc_dense_f32.h"
#include "tc_depthwise_conv2d_f32.h"
#include "tc_pool_f32.h"
#include "tc_quantize_s8.h"
#include "tc_relu_f32.h"
#include "tc_sgd_f32.h"
#include "tc_softmax_ce_f32.h"

uint64_t tc_rt_ticks(void);  // tc_runtime_ticks.cpp: the board's counter, 0 on the host

namespace {

struct TailLayer {
    float* w;    // parameters at the current size (packed), room for the final size
    float* b;
    float* gw;   // gradients accumulated over the samples of a mini-batch, same layout
    float* gb;
    float* vw;   // momentum
    float* vb;
    float* act;  // one sample's output map [out_h][out_w][out] (after ReLU when relu)
    uint16_t in, out;  // current channels
};

// The discriminant head (tc_rt_fit_head) and its statistics. The scatter matrix and the per-class
// sums are scratch, needed only between the end of a task and the fit, so they use the largest
// gradient block (free then: the next step's first sample overwrites it) when it is big enough.
struct Head {
    float* w;             // [classes_max][features_max]: the head's rows; while observing, the
                          // buffer's class means (the head is off meanwhile)
    float* b;             // [classes_max]
    uint16_t classes;     // classes the fitted head covers (0: no head)
    uint16_t features;    // features it was fitted on
    bool observing;       // tc_rt_end_task began the statistics
    float* scatter;       // [features_max][features_max], lower triangle used
    float* sums;          // [classes_max][features_max]: observed deviations from the mean
    float* vec;           // [features_max]: one sample's deviation; the solve's vector
    uint32_t* observed;   // [classes_max]: observed samples per class
};

struct Runtime {
    const tc_model* m;
    Head head;
    bool ready;
    TailLayer tail[TC_MAX_TAIL_LAYERS];
    float* latent;        // one sample's dequantised latent (the first tail layer's input)
    float* delta_a;       // one sample's gradients flowing back between layers
    float* delta_b;
    int8_t* scratch_a;    // backbone ping-pong
    int8_t* scratch_b;
    void* kernel_scratch;
    tc_buffer buffer;
    tc_prng prng;
    tc_train_params params;
    uint16_t plan_index;  // plan step of the current size
    uint16_t pending;     // new samples of the batch being formed (their gradients are summed)
    uint16_t pending_replay;  // replay draws that batch ends with (fixed at its first sample)
    float pending_loss;   // the pending samples' losses, summed in arrival order
    uint64_t pending_ticks;   // counter ticks the pending samples took as they arrived
    uint16_t task_lo;     // the current task's lowest output unit (asymmetric_ce)
    uint32_t arena_used;
    bool grads_stored;    // false after a step at batch 1: dense weight gradients were not formed
    struct tc_rt_stats stats;
};

Runtime g_rt;

// Where a training step's instructions go, stage by stage: compiled into benchmark images only
// (TC_RT_STAGE_TICKS; benchmarks/kernels.py), so the product pays nothing for it.
enum Stage { kStageForward, kStageLoss, kStageBackward, kStageNorm, kStageUpdate };
#if defined(TC_RT_STAGE_TICKS)
uint64_t g_stage_ticks[TC_RT_STAGES];
uint64_t g_stage_mark;
void stage_start() { g_stage_mark = tc_rt_ticks(); }
void stage_end(Stage s) {
    const uint64_t now = tc_rt_ticks();
    g_stage_ticks[s] += now - g_stage_mark;
    g_stage_mark = now;
}
#else
inline void stage_start() {}
inline void stage_end(Stage) {}
#endif

#if TC_HAS_MODEL
alignas(16) uint8_t g_arena[TC_ARENA_BYTES];
constexpr uint32_t kArenaBytes = TC_ARENA_BYTES;
#else
alignas(16) uint8_t g_arena[16];
constexpr uint32_t kArenaBytes = 0;
#endif

// Carves the arena front to back in 16-byte aligned blocks. tinycil/deploy/memplan.py computes the same
// layout (and so the TC_ARENA_BYTES the export writes); keep the two in step.
struct Carver {
    uint32_t used = 0;
    bool overflow = false;
    void* take(uint32_t bytes) {
        const uint32_t start = (used + 15u) & ~15u;
        if (start + bytes > kArenaBytes) {
            overflow = true;
            return nullptr;
        }
        used = start + bytes;
        return g_arena + start;
    }
    float* floats(uint32_t n) { return static_cast<float*>(take(4u * n)); }
};

bool has_params(const tc_tail_layer& L) {
    return L.op == TC_OP_CONV2D || L.op == TC_OP_DEPTHWISE_CONV2D || L.op == TC_OP_DENSE;
}

// Taps of one filter per input channel: conv k_h*k_w, dense the input map's positions.
uint32_t positions(const tc_tail_layer& L) {
    if (L.op == TC_OP_DENSE) return (uint32_t)L.in_h * L.in_w;
    return (uint32_t)L.k_h * L.k_w;
}

// Weights of layer L at `in` input and `out` output channels.
uint32_t weight_count(const tc_tail_layer& L, uint16_t in, uint16_t out) {
    switch (L.op) {
        case TC_OP_CONV2D:
        case TC_OP_DENSE: return (uint32_t)out * positions(L) * in;
        case TC_OP_DEPTHWISE_CONV2D: return positions(L) * out;
        default: return 0;
    }
}

uint32_t bias_count(const tc_tail_layer& L, uint16_t out) { return has_params(L) ? out : 0; }

uint32_t in_size(const tc_tail_layer& L, uint16_t in) { return (uint32_t)L.in_h * L.in_w * in; }
uint32_t out_size(const tc_tail_layer& L, uint16_t out) { return (uint32_t)L.out_h * L.out_w * out; }

// Features the output layer reads (the head's input) at the final size, 0 when the model allows
// no head (more than TC_HEAD_MAX_FEATURES).
uint32_t head_features_max(const tc_model* m) {
    const tc_tail_layer& L = m->tail[m->n_tail - 1];
    const uint32_t d = in_size(L, L.in_max);
    return d <= TC_HEAD_MAX_FEATURES ? d : 0u;
}

// The head's rows and biases get their own blocks; its scratch (scatter, per-class sums, one
// vector, per-class counts) goes into the largest gradient block when that holds it, otherwise
// into a block of its own. tinycil/deploy/memplan.py plans the same.
void carve_head(Runtime* rt, Carver* c) {
    const tc_model* m = rt->m;
    Head& h = rt->head;
    const uint32_t d = head_features_max(m);
    if (d == 0) return;
    const uint32_t cm = m->tail[m->n_tail - 1].out_max;  // the output units: one row per class
    h.w = c->floats(cm * d);
    h.b = c->floats(cm);
    const uint32_t scratch = d * d + cm * d + d + cm;  // floats (the counts are 32-bit too)
    float* block = nullptr;
    uint32_t largest = 0;
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& L = m->tail[l];
        const uint32_t nw = weight_count(L, L.in_max, L.out_max);
        if (nw > largest) {
            largest = nw;
            block = rt->tail[l].gw;
        }
    }
    if (largest < scratch || block == nullptr) block = c->floats(scratch);
    if (block == nullptr) return;
    h.scatter = block;
    h.sums = block + d * d;
    h.vec = h.sums + cm * d;
    h.observed = reinterpret_cast<uint32_t*>(h.vec + d);
}

bool carve(Runtime* rt) {
    const tc_model* m = rt->m;
    Carver c;
    // The backward pass ping-pongs: the logits' gradient and every input gradient of a layer an
    // odd number of layers below the logits go to delta_a, the others to delta_b (layer 0 needs
    // none), so each is sized for its own maps only.
    const uint16_t last = m->n_tail - 1;
    uint32_t size_a = out_size(m->tail[last], m->tail[last].out_max), size_b = 0;
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& L = m->tail[l];
        const uint32_t nw = weight_count(L, L.in_max, L.out_max);
        const uint32_t nb = bias_count(L, L.out_max);
        TailLayer& t = rt->tail[l];
        t.w = c.floats(nw);
        t.b = c.floats(nb);
        t.gw = c.floats(nw);
        t.gb = c.floats(nb);
        t.vw = c.floats(nw);
        t.vb = c.floats(nb);
        t.act = c.floats(out_size(L, L.out_max));
        uint32_t& side = (last - l) % 2 ? size_a : size_b;
        if (l > 0 && in_size(L, L.in_max) > side) side = in_size(L, L.in_max);
    }
    rt->latent = c.floats(m->latent_size);
    carve_head(rt, &c);
    rt->delta_a = c.floats(size_a);
    rt->delta_b = c.floats(size_b);
    rt->scratch_a = static_cast<int8_t*>(c.take(m->scratch_bytes));
    rt->scratch_b = static_cast<int8_t*>(c.take(m->scratch_bytes));
    rt->kernel_scratch = c.take(m->kernel_scratch_bytes);
    const uint32_t sample_size = tc_buffer_sample_size(m);
    int8_t* ram_x = static_cast<int8_t*>(c.take(m->buffer_ram_capacity * sample_size));
    uint8_t* ram_y = static_cast<uint8_t*>(c.take(m->buffer_ram_capacity));
    if (c.overflow) return false;
    tc_buffer_init(&rt->buffer, sample_size, m->buffer_x, m->buffer_y, m->buffer_flash_count,
                   ram_x, ram_y, m->buffer_ram_capacity);
    rt->arena_used = c.used;
    return true;
}

// Input channels of tail layer l at a plan step: the previous layer's output channels; the
// first layer's input is the frozen latent, whose channels never change.
uint16_t tail_in(const tc_model* m, const tc_plan_step& step, uint16_t l) {
    return l == 0 ? m->tail[0].in_max : step.out[l - 1];
}

// The layer table must describe one chain: shapes that follow, pools that keep channels, a
// latent of the first layer's input size and logits (a dense layer without ReLU) at the end.
bool valid_tail(const tc_model* m) {
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& L = m->tail[l];
        if (L.in_init > L.in_max || L.out_init > L.out_max || L.in_max == 0 || L.out_max == 0)
            return false;
        if (l > 0) {
            const tc_tail_layer& P = m->tail[l - 1];
            if (P.out_h != L.in_h || P.out_w != L.in_w || P.out_max != L.in_max) return false;
        }
        switch (L.op) {
            case TC_OP_CONV2D: break;
            case TC_OP_DENSE:
                if (L.out_h != 1 || L.out_w != 1) return false;
                break;
            case TC_OP_DEPTHWISE_CONV2D:
            case TC_OP_MAX_POOL:
            case TC_OP_AVG_POOL:
                if (L.in_max != L.out_max || L.in_init != L.out_init) return false;
                break;
            default: return false;
        }
        if (L.op != TC_OP_DENSE) {
            tc_window_dims d;
            if (!tc_window_dims_init(&d, 1, L.in_h, L.in_w, L.in_max, L.out_max, L.k_h, L.k_w,
                                     L.stride_h, L.stride_w, (tc_padding)L.padding, 1) ||
                d.out_h != L.out_h || d.out_w != L.out_w)
                return false;
        }
    }
    const tc_tail_layer& first = m->tail[0];
    const tc_tail_layer& last = m->tail[m->n_tail - 1];
    return in_size(first, first.in_max) == m->latent_size && first.in_init == first.in_max &&
           last.op == TC_OP_DENSE && !last.relu;
}

tc_window_dims window_of(const tc_tail_layer& L, uint16_t in, uint16_t out) {
    tc_window_dims d;
    tc_window_dims_init(&d, 1, L.in_h, L.in_w, in, out, L.k_h, L.k_w, L.stride_h, L.stride_w,
                        (tc_padding)L.padding, 1);
    return d;
}

// The dequantised latent of one int8 backbone output.
void dequantize_latent(Runtime* rt, const int8_t* q) {
    const tc_model* m = rt->m;
    tc_dequantize_s8(q, rt->latent, (int32_t)m->latent_size, m->latent_scale, m->latent_zero_point);
}

// replay_shift: the latent in rt->latent (the tail's input map, in_h x in_w x channels) moved by
// an offset drawn in -k..k along each axis longer than 1 (height first), zeros shifted in:
// out[y][x] = in[y - dy][x - dx]. Rows are moved in place, in the order that reads every source
// row before it is overwritten. As simulate.py's shift_latent.
void shift_latent(Runtime* rt) {
    const tc_model* m = rt->m;
    const int32_t k = rt->params.replay_shift;
    const tc_tail_layer& L = m->tail[0];
    const int32_t h = L.in_h, w = L.in_w;
    int32_t dy = 0, dx = 0;
    if (h > 1) dy = (int32_t)tc_prng_index(&rt->prng, (uint32_t)(2 * k + 1)) - k;
    if (w > 1) dx = (int32_t)tc_prng_index(&rt->prng, (uint32_t)(2 * k + 1)) - k;
    if (dy == 0 && dx == 0) return;
    const int32_t c = (int32_t)(m->latent_size / (uint32_t)(h * w));
    const int32_t row = w * c;
    float* v = rt->latent;
    const int32_t adx = dx < 0 ? -dx : dx;
    const int32_t keep = adx < w ? (w - adx) * c : 0;  // floats of a row that stay in the map
    for (int32_t i = 0; i < h; ++i) {
        const int32_t y = dy > 0 ? h - 1 - i : i;  // dy > 0 reads rows above: go bottom up
        const int32_t src = y - dy;
        float* out = v + (size_t)y * row;
        if (src < 0 || src >= h || keep == 0) {
            tc_f32_zero(out, row);
            continue;
        }
        const float* in = v + (size_t)src * row;
        if (dx >= 0) {
            memmove(out + dx * c, in, (size_t)keep * sizeof(float));
            tc_f32_zero(out, dx * c);
        } else {
            memmove(out, in + adx * c, (size_t)keep * sizeof(float));
            tc_f32_zero(out + keep, adx * c);
        }
    }
}

// Backbone of one sample; returns its int8 latent (in backbone scratch, or x itself when the
// backbone is empty).
const int8_t* backbone(Runtime* rt, const int8_t* x) {
    return tc_backbone_run(rt->m, x, rt->scratch_a, rt->scratch_b, rt->kernel_scratch);
}

// Tail forward of the one sample in rt->latent; every layer's output stays for the backward pass.
void tail_forward(Runtime* rt) {
    const tc_model* m = rt->m;
    const float* x = rt->latent;
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& L = m->tail[l];
        TailLayer& t = rt->tail[l];
        float* y = t.act;
        switch (L.op) {
            case TC_OP_DENSE: {
                const tc_dense_dims d = {1, (int32_t)in_size(L, t.in), t.out};
                tc_dense_f32_fwd(&d, x, t.w, t.b, y);
                break;
            }
            case TC_OP_CONV2D: {
                const tc_window_dims d = window_of(L, t.in, t.out);
                tc_conv2d_f32_fwd(&d, x, t.w, t.b, y);
                break;
            }
            case TC_OP_DEPTHWISE_CONV2D: {
                const tc_window_dims d = window_of(L, t.in, t.out);
                tc_depthwise_conv2d_f32_fwd(&d, x, t.w, t.b, y);
                break;
            }
            case TC_OP_MAX_POOL: {
                const tc_window_dims d = window_of(L, t.in, t.out);
                tc_max_pool_f32_fwd(&d, x, y);
                break;
            }
            default: {  // TC_OP_AVG_POOL (valid_tail admits nothing else)
                const tc_window_dims d = window_of(L, t.in, t.out);
                tc_avg_pool_f32_fwd(&d, x, y);
                break;
            }
        }
        if (L.relu) tc_relu_f32_fwd(y, y, (int32_t)out_size(L, t.out));
        x = y;
    }
}

// The input of tail layer l for the sample in the activations: the latent or the previous
// layer's output.
const float* layer_input(const Runtime* rt, uint16_t l) {
    return l == 0 ? rt->latent : rt->tail[l - 1].act;
}

// A dense layer's weight gradient at a batch of one is the outer product dy x^T: the step never
// stores it (gb holds dy, the norm is |dy|^2 |x|^2, the update forms each entry in registers).
bool outer_product_step(const tc_tail_layer& L, uint16_t batch) {
    return batch == 1 && L.op == TC_OP_DENSE;
}

// Forward and backward of the sample in rt->latent with label y; adds its gradient (of the
// batch-mean loss: the logits' gradient is scaled by inv_batch) to the accumulators. The first
// sample of a batch overwrites them instead (equal to adding to zeros: nothing is cleared).
// The softmax spans output units lo.. (units below lo get no gradient). Returns the sample's loss.
float accumulate_sample(Runtime* rt, int32_t y, uint16_t lo, float inv_batch, bool first,
                        uint16_t batch) {
    const tc_model* m = rt->m;
    tail_forward(rt);
    const uint16_t last = m->n_tail - 1;
    TailLayer& out = rt->tail[last];
    float* dy = rt->delta_a;
    float* dx = rt->delta_b;
    // dy = (p - onehot) * (1 / batch) over units lo.., 0 below.
    stage_end(kStageForward);
    const int32_t n_soft = (int32_t)out.out - lo;
    const float loss = tc_softmax_ce_row_f32(out.act + lo, y - lo, n_soft, nullptr, n_soft,
                                             inv_batch, dy + lo);
    if (lo > 0) tc_f32_zero(dy, lo);
    stage_end(kStageLoss);
    for (int32_t l = last; l >= 0; --l) {
        const tc_tail_layer& L = m->tail[l];
        TailLayer& t = rt->tail[l];
        // Nothing below the first layer trains; a first layer without parameters needs no pass.
        if (l == 0 && !has_params(L)) break;
        if (L.relu) tc_relu_f32_bwd(t.act, dy, dy, (int32_t)out_size(L, t.out));
        const float* x = layer_input(rt, (uint16_t)l);
        float* dxl = l > 0 ? dx : nullptr;
        switch (L.op) {
            case TC_OP_DENSE: {
                const tc_dense_dims d = {1, (int32_t)in_size(L, t.in), t.out};
                if (outer_product_step(L, batch)) {
                    if (dxl) tc_dense_f32_bwd_input(&d, t.w, dy, dxl);
                    memcpy(t.gb, dy, 4u * t.out);
                } else {
                    tc_dense_f32_bwd_acc(&d, x, t.w, dy, dxl, t.gw, t.gb, first ? 0 : 1);
                }
                break;
            }
            case TC_OP_CONV2D:
            case TC_OP_DEPTHWISE_CONV2D: {
                // Straight into the accumulators (cleared by the first sample): no buffer for
                // one sample's gradient.
                const tc_window_dims d = window_of(L, t.in, t.out);
                if (L.op == TC_OP_CONV2D)
                    tc_conv2d_f32_bwd_acc(&d, x, t.w, dy, dxl, t.gw, t.gb, first ? 0 : 1);
                else
                    tc_depthwise_conv2d_f32_bwd_acc(&d, x, t.w, dy, dxl, t.gw, t.gb,
                                                    first ? 0 : 1);
                break;
            }
            case TC_OP_MAX_POOL: {
                const tc_window_dims d = window_of(L, t.in, t.out);
                tc_max_pool_f32_bwd(&d, x, dy, dxl);
                break;
            }
            default: {
                const tc_window_dims d = window_of(L, t.in, t.out);
                tc_avg_pool_f32_bwd(&d, dy, dxl);
                break;
            }
        }
        float* tmp = dy;
        dy = dx;
        dx = tmp;
    }
    stage_end(kStageBackward);
    return loss;
}

void zero_momentum(Runtime* rt) {
    const tc_model* m = rt->m;
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& L = m->tail[l];
        tc_f32_zero(rt->tail[l].vw, (int32_t)weight_count(L, L.in_max, L.out_max));
        tc_f32_zero(rt->tail[l].vb, (int32_t)bias_count(L, L.out_max));
    }
}

bool valid_params(const tc_model* m, const tc_train_params* p) {
    if (!(p->lr > 0.0f) || !isfinite(p->lr)) return false;
    if (!(p->momentum >= 0.0f) || !(p->momentum < 1.0f)) return false;
    if (!isfinite(p->clip_norm)) return false;
    if (p->batch_new < 1) return false;
    if (p->asymmetric_ce > 1) return false;
    if (p->replay_shift > TC_TRAIN_REPLAY_SHIFT_MAX) return false;
    if (p->balance_steps > 0 && (!(p->balance_lr_scale > 0.0f) || !isfinite(p->balance_lr_scale) ||
                                 !(p->lr * p->balance_lr_scale > 0.0f)))
        return false;
    if (!(p->head_weight >= 0.0f) || !(p->head_weight <= TC_TRAIN_HEAD_WEIGHT_MAX)) return false;
    if (!(p->head_shrinkage >= 0.0f) || !(p->head_shrinkage <= 1.0f)) return false;
    if (p->head_weight > 0.0f && head_features_max(m) == 0) return false;
    return (uint32_t)p->batch_new + p->batch_replay <= m->max_batch;
}

// The global L2 norm of the batch's gradient: squares summed with fmaf over the parameter
// layers in order, each layer's weights ([out][in] order) then its bias. A dense layer at a
// batch of one adds |dy|^2 |x|^2 + |dy|^2 instead (its weight gradient is never stored).
float gradient_norm(const Runtime* rt, uint16_t batch) {
    const tc_model* m = rt->m;
    float sum = 0.0f;
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& L = m->tail[l];
        if (!has_params(L)) continue;
        const TailLayer& t = rt->tail[l];
        if (outer_product_step(L, batch)) {
            const float dy2 = tc_f32_sum_squares(t.gb, t.out, 0.0f);
            const float x2 = tc_f32_sum_squares(layer_input(rt, l), (int32_t)in_size(L, t.in), 0.0f);
            sum = fmaf(dy2, x2, sum) + dy2;
        } else {
            sum = tc_f32_sum_squares(t.gw, (int32_t)weight_count(L, t.in, t.out), sum);
            sum = tc_f32_sum_squares(t.gb, t.out, sum);
        }
    }
    return sqrtf(sum);
}

// SGD with momentum, the clipping factor folded in, one fused pass per tensor:
// g' = g * scale (nothing when scale is 1); v = fmaf(momentum, v, g'); w = fmaf(-lr, v, w).
void apply_update(Runtime* rt, uint16_t batch, float scale, float lr) {
    const tc_model* m = rt->m;
    const float momentum = rt->params.momentum;
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& L = m->tail[l];
        if (!has_params(L)) continue;
        TailLayer& t = rt->tail[l];
        if (outer_product_step(L, batch))  // g[o][i] = (dy[o] * scale) * x[i], in registers
            tc_sgd_momentum_outer_f32(t.w, t.vw, t.out, (int32_t)in_size(L, t.in), t.gb,
                                      layer_input(rt, l), lr, momentum, scale);
        else
            tc_sgd_momentum_fma_f32(t.w, t.vw, t.gw, (int32_t)weight_count(L, t.in, t.out), lr,
                                    momentum, scale);
        tc_sgd_momentum_fma_f32(t.b, t.vb, t.gb, t.out, lr, momentum, scale);
    }
}

// The batch the pending new samples belong to, which its gradient is the mean over: batch_new
// new samples and the replay draws fixed at its first sample. Each sample's gradient is scaled
// by 1 / this as it arrives, so nothing of the batch but the gradient sums waits in RAM.
uint16_t planned_batch(const Runtime* rt) {
    return (uint16_t)(rt->params.batch_new + rt->pending_replay);
}

// The new sample in rt->latent with label y joins the batch being formed: its gradient is added
// to the sums now (the first sample of a batch overwrites them), in arrival order.
void accumulate_new_sample(Runtime* rt, uint8_t y) {
    if (rt->pending == 0) {
        rt->pending_replay =
            tc_buffer_fill(&rt->buffer) > 0 ? rt->params.batch_replay : (uint16_t)0;
        rt->pending_loss = 0.0f;
    }
    const uint16_t planned = planned_batch(rt);
    const uint16_t lo = rt->params.asymmetric_ce ? rt->task_lo : (uint16_t)0;
    stage_start();
    rt->pending_loss += accumulate_sample(rt, y, lo, 1.0f / (float)planned, rt->pending == 0,
                                          planned);
    rt->pending += 1;
}

// Ends the mini-batch: the `replay` buffer draws join the pending new samples' gradient sums,
// then the global norm, the clipping factor and the update at learning rate lr. A batch ended
// early (fewer than batch_new new samples: a flush) is still the mean over its own samples: its
// sums, scaled by 1 / planned, are taken planned / batch times in the norm and the update.
// Returns the mean loss.
float train_step(Runtime* rt, uint16_t replay, float lr, uint16_t* batch_out, float* grad_norm) {
    // Without pending samples (the end-of-task pass) the batch is the replay draws alone.
    const uint16_t planned = rt->pending ? planned_batch(rt) : replay;
    const uint16_t batch = rt->pending + replay;
    const float inv_planned = 1.0f / (float)planned;
    float loss = rt->pending ? rt->pending_loss : 0.0f;
    stage_start();
    for (uint16_t r = 0; r < replay; ++r) {
        const uint32_t k = tc_buffer_draw(&rt->buffer, &rt->prng);
        const int8_t* q = tc_buffer_x(&rt->buffer, k);
        if (rt->m->buffer_store != TC_BUFFER_STORES_LATENTS) q = backbone(rt, q);
        dequantize_latent(rt, q);
        if (rt->params.replay_shift) shift_latent(rt);
        loss += accumulate_sample(rt, tc_buffer_y(&rt->buffer, k), 0, inv_planned,
                                  rt->pending == 0 && r == 0, planned);
    }
    rt->grads_stored = planned > 1;
    const float up = batch == planned ? 1.0f : (float)planned / (float)batch;
    const float norm = gradient_norm(rt, planned) * up;
    *grad_norm = norm;
    stage_end(kStageNorm);
    apply_update(rt, planned, tc_clip_factor_f32(norm, rt->params.clip_norm) * up, lr);
    stage_end(kStageUpdate);
    *batch_out = batch;
    return loss * (1.0f / (float)batch);
}

// Grows layer l to the plan step's channels (function-preserving, tc_growth.h).
void grow_layer(Runtime* rt, uint16_t l, uint16_t in_new, uint16_t out_new) {
    const tc_model* m = rt->m;
    const tc_tail_layer& L = m->tail[l];
    TailLayer& t = rt->tail[l];
    switch (L.op) {
        case TC_OP_CONV2D:
        case TC_OP_DENSE:
            tc_grow_filters(t.w, t.b, t.out, t.in, out_new, in_new, positions(L),
                            l + 1 < m->n_tail, &rt->prng);
            break;
        case TC_OP_DEPTHWISE_CONV2D:
            tc_grow_depthwise(t.w, t.b, t.out, out_new, positions(L), &rt->prng);
            break;
        default: break;
    }
    t.in = in_new;
    t.out = out_new;
}


// ---- The discriminant head ----------------------------------------------------------------
// Every sum runs in a fixed order with fmaf, as simulate.py's fit_head_device does, so the twin
// and the simulation fit the same floats.

// Features the output layer reads now, and where they are after tail_forward.
uint32_t head_features_now(const Runtime* rt) {
    const tc_tail_layer& L = rt->m->tail[rt->m->n_tail - 1];
    return in_size(L, rt->tail[rt->m->n_tail - 1].in);
}
const float* features(const Runtime* rt) { return layer_input(rt, rt->m->n_tail - 1); }

uint16_t classes_seen(const Runtime* rt) { return rt->m->plan[rt->plan_index].classes_seen; }

void forward_buffer_sample(Runtime* rt, uint32_t k) {
    const int8_t* q = tc_buffer_x(&rt->buffer, k);
    if (rt->m->buffer_store != TC_BUFFER_STORES_LATENTS) q = backbone(rt, q);
    dequantize_latent(rt, q);
    tail_forward(rt);
}

// Begins the statistics: the head goes off, every class's mean feature over the buffer (sums in
// buffer order, then divided by the class's count; a class without buffer samples keeps zeros).
void head_begin(Runtime* rt) {
    Head& h = rt->head;
    const uint32_t d = head_features_now(rt);
    const uint16_t seen = classes_seen(rt);
    h.classes = 0;
    h.features = 0;
    tc_f32_zero(h.w, (int32_t)(seen * d));
    tc_f32_zero(h.sums, (int32_t)(seen * d));
    tc_f32_zero(h.scatter, (int32_t)(d * d));
    for (uint16_t c = 0; c < seen; ++c) h.observed[c] = 0;
    const uint32_t fill = tc_buffer_fill(&rt->buffer);
    for (uint32_t k = 0; k < fill; ++k) {
        forward_buffer_sample(rt, k);
        const float* f = features(rt);
        float* mean = h.w + (size_t)tc_buffer_y(&rt->buffer, k) * d;
        for (uint32_t i = 0; i < d; ++i) mean[i] += f[i];
    }
    for (uint16_t c = 0; c < seen; ++c) {
        const uint32_t n = rt->buffer.counts[c];
        if (n == 0) continue;
        float* mean = h.w + (size_t)c * d;
        for (uint32_t i = 0; i < d; ++i) mean[i] = mean[i] / (float)n;
    }
    h.observing = true;
}

// Adds z z^T (times `scale` on the left factor) to the scatter's lower triangle:
// S[i][j] = fmaf(z[i] * scale, z[j], S[i][j]) for j <= i.
void add_outer(float* scatter, uint32_t d, const float* z, float scale) {
    for (uint32_t i = 0; i < d; ++i) {
        const float zi = z[i] * scale;
        float* row = scatter + (size_t)i * d;
        for (uint32_t j = 0; j <= i; ++j) row[j] = fmaf(zi, z[j], row[j]);
    }
}

// One observed sample (its features after tail_forward) of class c.
void head_observe(Runtime* rt, uint8_t c) {
    Head& h = rt->head;
    const uint32_t d = head_features_now(rt);
    const float* f = features(rt);
    const float* mean = h.w + (size_t)c * d;
    float* sum = h.sums + (size_t)c * d;
    for (uint32_t i = 0; i < d; ++i) {
        h.vec[i] = f[i] - mean[i];
        sum[i] += h.vec[i];
    }
    add_outer(h.scatter, d, h.vec, 1.0f);
    h.observed[c] += 1;
}

// The fit. Returns false when there is no scatter to fit (the head stays off).
bool head_fit(Runtime* rt) {
    Head& h = rt->head;
    const uint32_t d = head_features_now(rt);
    const uint16_t seen = classes_seen(rt);
    float* S = h.scatter;
    // 1. The observed classes' scatter about their own means: the deviations were taken from
    //    the buffer's mean m, so subtract n (mean - m)(mean - m)^T = u u^T / n per class
    //    (u: the summed deviations). Pooled, then weighted as as many classes as they are.
    uint32_t n_observed = 0, k_observed = 0;
    for (uint16_t c = 0; c < seen; ++c) {
        const uint32_t n = h.observed[c];
        if (n == 0) continue;
        const float* u = h.sums + (size_t)c * d;
        for (uint32_t i = 0; i < d; ++i) h.vec[i] = u[i] / (float)n;
        for (uint32_t i = 0; i < d; ++i) {
            float* row = S + (size_t)i * d;
            for (uint32_t j = 0; j <= i; ++j) row[j] = fmaf(-u[i], h.vec[j], row[j]);
        }
        n_observed += n;
        k_observed += 1;
    }
    if (n_observed > 0) {
        const float share = (float)k_observed / (float)n_observed;
        for (uint32_t i = 0; i < d; ++i)
            for (uint32_t j = 0; j <= i; ++j) S[(size_t)i * d + j] *= share;
    }
    // 2. Every other class with at least two buffer samples: its buffer scatter / its count.
    uint32_t k_buffer = 0;
    for (uint16_t c = 0; c < seen; ++c)
        if (h.observed[c] == 0 && rt->buffer.counts[c] >= 2) ++k_buffer;
    if (k_buffer > 0) {
        const uint32_t fill = tc_buffer_fill(&rt->buffer);
        for (uint32_t k = 0; k < fill; ++k) {
            const uint8_t c = tc_buffer_y(&rt->buffer, k);
            if (h.observed[c] != 0 || rt->buffer.counts[c] < 2) continue;
            forward_buffer_sample(rt, k);
            const float* f = features(rt);
            const float* mean = h.w + (size_t)c * d;
            for (uint32_t i = 0; i < d; ++i) h.vec[i] = f[i] - mean[i];
            add_outer(S, d, h.vec, 1.0f / (float)rt->buffer.counts[c]);
        }
    }
    const uint32_t classes = k_observed + k_buffer;
    if (classes == 0) return false;
    // 3. The mean over those classes, shrunk toward its mean variance.
    float trace = 0.0f;
    for (uint32_t i = 0; i < d; ++i) {
        float* row = S + (size_t)i * d;
        for (uint32_t j = 0; j <= i; ++j) row[j] = row[j] / (float)classes;
        trace += row[i];
    }
    const float a = rt->params.head_shrinkage;
    const float target = a * (trace / (float)d);
    const float keep = 1.0f - a;
    if (!(trace > 0.0f) || !isfinite(trace)) return false;
    for (uint32_t i = 0; i < d; ++i) {
        float* row = S + (size_t)i * d;
        for (uint32_t j = 0; j < i; ++j) row[j] = keep * row[j];
        row[i] = fmaf(keep, row[i], target);
    }
    // 4. Cholesky, in place in the lower triangle: S = L L^T.
    for (uint32_t i = 0; i < d; ++i) {
        float* ri = S + (size_t)i * d;
        for (uint32_t j = 0; j <= i; ++j) {
            const float* rj = S + (size_t)j * d;
            float v = ri[j];
            for (uint32_t k = 0; k < j; ++k) v = fmaf(-ri[k], rj[k], v);
            if (i == j) {
                if (!(v > 0.0f)) return false;
                ri[i] = sqrtf(v);
            } else {
                ri[j] = v / rj[j];
            }
        }
    }
    // 5. Every class's row w = S^-1 mean (L y = mean, then L^T w = y) and bias -w.mean / 2.
    for (uint16_t c = 0; c < seen; ++c) {
        float* row = h.w + (size_t)c * d;
        if (rt->buffer.counts[c] == 0) {  // no mean: the class gets no head term
            tc_f32_zero(row, (int32_t)d);
            h.b[c] = 0.0f;
            continue;
        }
        float* v = h.vec;
        for (uint32_t i = 0; i < d; ++i) {
            const float* ri = S + (size_t)i * d;
            float acc = row[i];
            for (uint32_t k = 0; k < i; ++k) acc = fmaf(-ri[k], v[k], acc);
            v[i] = acc / ri[i];
        }
        for (uint32_t i = d; i-- > 0;) {
            float acc = v[i];
            for (uint32_t k = i + 1; k < d; ++k) acc = fmaf(-S[(size_t)k * d + i], v[k], acc);
            v[i] = acc / S[(size_t)i * d + i];
        }
        float dot = 0.0f;
        for (uint32_t i = 0; i < d; ++i) dot = fmaf(v[i], row[i], dot);
        h.b[c] = -0.5f * dot;
        memcpy(row, v, 4u * d);
    }
    h.classes = seen;
    h.features = (uint16_t)d;
    return true;
}

// Statistics begun but not fitted are dropped (a task begins, or training goes on): the head
// stays off until the next fit.
void end_observing(Runtime* rt) {
    if (!rt->head.observing) return;
    rt->head.observing = false;
    rt->head.classes = 0;
    rt->head.features = 0;
}

// The head's term joins the logits z (after tail_forward) when the head covers every class
// seen: z[c] = fmaf(head_weight, b[c] + w[c] . f, z[c]).
void apply_head(const Runtime* rt, float* z) {
    const Head& h = rt->head;
    const uint16_t seen = classes_seen(rt);
    if (!(rt->params.head_weight > 0.0f) || h.observing || h.classes != seen ||
        h.features != head_features_now(rt))
        return;
    const float* f = features(rt);
    for (uint16_t c = 0; c < seen; ++c) {
        const float* row = h.w + (size_t)c * h.features;
        float acc = h.b[c];
        for (uint32_t i = 0; i < h.features; ++i) acc = fmaf(row[i], f[i], acc);
        z[c] = fmaf(rt->params.head_weight, acc, z[c]);
    }
}

}  // namespace

extern "C" {

int tc_rt_init(void) {
    memset(&g_rt, 0, sizeof(g_rt));
    const tc_model* m = tc_model_get();
    if (m == nullptr) return TC_STATUS_NO_MODEL;
    if (m->format_version != TC_MODEL_FORMAT_VERSION || m->n_tail < 1 ||
        m->n_tail > TC_MAX_TAIL_LAYERS || m->known_tasks < 1 || m->known_tasks > m->n_plan ||
        m->buffer_store > TC_BUFFER_STORES_LATENTS || !valid_tail(m))
        return TC_STATUS_NO_MODEL;
    g_rt.m = m;
    if (!carve(&g_rt)) return TC_STATUS_FULL;
    const tc_plan_step& start = m->plan[m->known_tasks - 1];
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const tc_tail_layer& src = m->tail[l];
        TailLayer& t = g_rt.tail[l];
        if (src.in_init != tail_in(m, start, l) || src.out_init != start.out[l])
            return TC_STATUS_NO_MODEL;
        t.in = src.in_init;
        t.out = src.out_init;
        if (has_params(src)) {
            memcpy(t.w, src.weights_init, 4u * weight_count(src, t.in, t.out));
            memcpy(t.b, src.bias_init, 4u * t.out);
        }
    }
    zero_momentum(&g_rt);
    g_rt.plan_index = m->known_tasks - 1;
    g_rt.params.lr = m->defaults.lr;
    g_rt.params.momentum = m->defaults.momentum;
    g_rt.params.clip_norm = m->defaults.clip_norm;
    g_rt.params.batch_new = m->defaults.batch_new;
    g_rt.params.batch_replay = m->defaults.batch_replay;
    g_rt.params.seed = m->defaults.seed;
    g_rt.params.balance_lr_scale = m->defaults.balance_lr_scale;
    g_rt.params.balance_steps = m->defaults.balance_steps;
    g_rt.params.asymmetric_ce = m->defaults.asymmetric_ce;
    g_rt.params.replay_shift = m->defaults.replay_shift;
    g_rt.params.head_weight = m->defaults.head_weight;
    g_rt.params.head_shrinkage = m->defaults.head_shrinkage;
    if (!valid_params(m, &g_rt.params)) return TC_STATUS_NO_MODEL;
    g_rt.task_lo = 0;
    tc_prng_seed(&g_rt.prng, tc_prng_task_seed(g_rt.params.seed, g_rt.plan_index));
    g_rt.ready = true;
    return TC_STATUS_OK;
}

void tc_rt_describe(tc_rt_desc* out) {
    memset(out, 0, sizeof(*out));
    if (!g_rt.ready) return;
    const tc_model* m = g_rt.m;
    memcpy(out->signature, m->signature, 8);
    out->has_model = 1;
    out->input_type = TC_INPUT_INT8;
    out->input_rank = m->input_rank;
    out->buffer_store = m->buffer_store;
    for (int i = 0; i < 4; ++i) out->input_shape[i] = m->input_shape[i];
    out->input_scale = m->input_scale;
    out->input_zero_point = m->input_zero_point;
    out->input_size = m->input_size;
    out->classes_max = m->classes_max;
    out->classes_seen = m->plan[g_rt.plan_index].classes_seen;
    out->buffer_capacity = m->buffer_flash_count + m->buffer_ram_capacity;
    out->buffer_fill = tc_buffer_fill(&g_rt.buffer);
    out->arena_bytes = m->arena_bytes;
    out->arena_used = g_rt.arena_used;
    out->task = g_rt.plan_index;
    out->max_batch = m->max_batch;
}

int tc_rt_set_training(const tc_train_params* p) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    if (!valid_params(g_rt.m, p)) return TC_STATUS_BAD_ARGUMENT;
    if (g_rt.pending) return TC_STATUS_BAD_STATE;  // a mini-batch is half formed
    const bool reseed = p->seed != g_rt.params.seed;
    g_rt.params = *p;
    if (reseed) tc_prng_seed(&g_rt.prng, tc_prng_task_seed(p->seed, g_rt.plan_index));
    return TC_STATUS_OK;
}

int tc_rt_begin_task(const uint8_t* new_labels, uint16_t n) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    const tc_model* m = g_rt.m;
    const uint16_t seen = m->plan[g_rt.plan_index].classes_seen;
    // Labels are class indices in order of first appearance: already seen ones are allowed,
    // new ones must continue the numbering.
    uint16_t grown = seen;
    for (uint16_t i = 0; i < n; ++i) {
        if (new_labels[i] < grown) continue;
        if (new_labels[i] != grown) return TC_STATUS_BAD_ARGUMENT;
        ++grown;
    }
    uint16_t step = g_rt.plan_index;
    if (grown != seen) {
        step = 0xFFFF;
        for (uint16_t s = g_rt.plan_index + 1; s < m->n_plan; ++s) {
            if (m->plan[s].classes_seen == grown) { step = s; break; }
        }
        if (step == 0xFFFF) return TC_STATUS_BAD_ARGUMENT;  // not a size the plan knows
    }
    tc_prng_seed(&g_rt.prng, tc_prng_task_seed(g_rt.params.seed, step));
    const tc_plan_step& to = m->plan[step];
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        TailLayer& t = g_rt.tail[l];
        const uint16_t in_new = tail_in(m, to, l);
        const uint16_t out_new = to.out[l];
        if (in_new < t.in || out_new < t.out) return TC_STATUS_BAD_STATE;
    }
    for (uint16_t l = 0; l < m->n_tail; ++l) grow_layer(&g_rt, l, tail_in(m, to, l), to.out[l]);
    zero_momentum(&g_rt);
    end_observing(&g_rt);
    g_rt.plan_index = step;
    g_rt.pending = 0;
    // The task's own units start at its lowest label (the host trainer's n_old = min label).
    uint16_t lo = to.classes_seen;
    for (uint16_t i = 0; i < n; ++i)
        if (new_labels[i] < lo) lo = new_labels[i];
    g_rt.task_lo = n ? lo : 0;
    return TC_STATUS_OK;
}

int tc_rt_train_samples(const int8_t* x, const uint8_t* y, uint16_t n, uint8_t end_of_batch,
                        tc_step_report* rep) {
    tc_step_report local;
    if (rep == nullptr) rep = &local;
    memset(rep, 0, sizeof(*rep));
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    const tc_model* m = g_rt.m;
    const uint16_t seen = m->plan[g_rt.plan_index].classes_seen;
    if ((uint32_t)g_rt.pending + n > g_rt.params.batch_new) return TC_STATUS_FULL;
    for (uint16_t i = 0; i < n; ++i)
        if (y[i] >= seen) return TC_STATUS_BAD_ARGUMENT;
    if (n > 0) end_observing(&g_rt);  // training reuses the statistics' scratch
    if (g_rt.pending == 0) g_rt.pending_ticks = 0;
    const uint64_t t_samples = tc_rt_ticks();
    for (uint16_t i = 0; i < n; ++i) {
        // The backbone and the trainable part run as the sample arrives: its gradient joins
        // the batch's sums, and nothing of the sample is kept.
        const int8_t* q = backbone(&g_rt, x + (size_t)i * m->input_size);
        if (q == nullptr) return TC_STATUS_NO_MODEL;
        dequantize_latent(&g_rt, q);
        accumulate_new_sample(&g_rt, y[i]);
    }
    g_rt.pending_ticks += tc_rt_ticks() - t_samples;
    rep->pending = g_rt.pending;
    if (!end_of_batch || g_rt.pending == 0) return TC_STATUS_OK;

    const uint64_t t0 = tc_rt_ticks() - g_rt.pending_ticks;  // the step spans its samples' training
    float norm = 0.0f;
    uint16_t batch = 0;
    rep->loss = train_step(&g_rt, g_rt.pending_replay, g_rt.params.lr, &batch, &norm);
    rep->grad_norm = norm;
    rep->batch = batch;
    rep->stepped = 1;
    rep->pending = 0;
    g_rt.pending = 0;
    g_rt.stats.steps += 1;
    g_rt.stats.samples_trained += batch;
    g_rt.stats.last_step_ticks = tc_rt_ticks() - t0;
    return TC_STATUS_OK;
}

int tc_rt_add_buffer_samples(const int8_t* x, const uint8_t* y, uint16_t n) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    const uint16_t seen = g_rt.m->plan[g_rt.plan_index].classes_seen;
    for (uint16_t i = 0; i < n; ++i)
        if (y[i] >= seen) return TC_STATUS_BAD_ARGUMENT;
    if (n > 0) end_observing(&g_rt);  // the statistics' means are the buffer's as it was
    const tc_model* m = g_rt.m;
    if (m->buffer_store != TC_BUFFER_STORES_LATENTS)
        return tc_buffer_add(&g_rt.buffer, x, y, n) ? TC_STATUS_OK : TC_STATUS_FULL;
    // Latents: the samples arrive as inputs (the host need not know the store) and are kept as
    // what this backbone makes of them. All or nothing, as tc_buffer_add.
    if (g_rt.buffer.ram_count + n > g_rt.buffer.ram_capacity) return TC_STATUS_FULL;
    for (uint16_t i = 0; i < n; ++i) {
        const int8_t* q = tc_backbone_run(m, x + (size_t)i * m->input_size, g_rt.scratch_a,
                                          g_rt.scratch_b, g_rt.kernel_scratch);
        if (q == nullptr || !tc_buffer_add(&g_rt.buffer, q, y + i, 1)) return TC_STATUS_NO_MODEL;
    }
    return TC_STATUS_OK;
}

}  // extern "C"

namespace {

// The class-balanced pass of tc_rt_end_task.
void end_task_pass(tc_step_report* rep) {
    const tc_train_params& p = g_rt.params;
    if (p.balance_steps == 0 || p.batch_replay == 0 || tc_buffer_fill(&g_rt.buffer) == 0)
        return;
    const float lr = p.lr * p.balance_lr_scale;
    const uint64_t t0 = tc_rt_ticks();
    zero_momentum(&g_rt);
    for (uint16_t s = 0; s < p.balance_steps; ++s) {
        float norm = 0.0f;
        uint16_t batch = 0;
        rep->loss = train_step(&g_rt, p.batch_replay, lr, &batch, &norm);
        rep->grad_norm = norm;
        rep->batch = batch;
        g_rt.stats.steps += 1;
        g_rt.stats.samples_trained += batch;
    }
    rep->stepped = 1;
    zero_momentum(&g_rt);  // the next task starts from zero momentum, as every task does
    g_rt.stats.last_step_ticks = (tc_rt_ticks() - t0) / p.balance_steps;
}

// Forward of one input. A pending batch keeps only its gradient sums, which prediction never
// touches; but a batch of one keeps its gradient in the activations (the outer-product update),
// so no prediction may run before that batch's step.
bool outer_product_pending() {
    return g_rt.pending && planned_batch(&g_rt) == 1;
}

bool forward_input(const int8_t* x) {
    if (outer_product_pending()) return false;
    const int8_t* q = backbone(&g_rt, x);
    if (q == nullptr) return false;
    dequantize_latent(&g_rt, q);
    tail_forward(&g_rt);
    return true;
}

}  // namespace

extern "C" {

// The end-of-task pass: a short class-balanced pass over the whole buffer (the task's own
// samples included) at a lower learning rate, from zero momentum, so the output layer's bias
// toward the newest classes, learned from a stream of only them, is corrected on equal terms.
int tc_rt_end_task(tc_step_report* rep) {
    tc_step_report local;
    if (rep == nullptr) rep = &local;
    memset(rep, 0, sizeof(*rep));
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    if (g_rt.pending) return TC_STATUS_BAD_STATE;
    const tc_train_params& p = g_rt.params;
    end_task_pass(rep);
    if (p.head_weight > 0.0f) head_begin(&g_rt);
    return TC_STATUS_OK;
}

int tc_rt_observe_samples(const int8_t* x, const uint8_t* y, uint16_t n) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    if (!g_rt.head.observing) return TC_STATUS_BAD_STATE;
    const uint16_t seen = classes_seen(&g_rt);
    for (uint16_t i = 0; i < n; ++i)
        if (y[i] >= seen) return TC_STATUS_BAD_ARGUMENT;
    for (uint16_t i = 0; i < n; ++i) {
        if (!forward_input(x + (size_t)i * g_rt.m->input_size)) return TC_STATUS_NO_MODEL;
        head_observe(&g_rt, y[i]);
    }
    return TC_STATUS_OK;
}

int tc_rt_fit_head(void) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    if (!g_rt.head.observing) return TC_STATUS_BAD_STATE;
    g_rt.head.observing = false;
    g_rt.grads_stored = false;  // the scatter may have overwritten a gradient block
    if (!head_fit(&g_rt)) {
        g_rt.head.classes = 0;
        g_rt.head.features = 0;
    }
    return TC_STATUS_OK;
}

int tc_rt_head_observing(void) { return g_rt.ready && g_rt.head.observing ? 1 : 0; }

int32_t tc_rt_head_params(float* weights, float* bias, uint16_t* classes, uint16_t* features) {
    if (!g_rt.ready) return -1;
    const Head& h = g_rt.head;
    const uint16_t c = h.observing ? 0 : h.classes;
    const uint16_t d = c ? h.features : 0;
    if (weights) memcpy(weights, h.w, 4u * c * d);
    if (bias) memcpy(bias, h.b, 4u * c);
    if (classes) *classes = c;
    if (features) *features = d;
    return (int32_t)c * d;
}

int32_t tc_rt_logits(const int8_t* x, float* logits) {
    if (!g_rt.ready) return -1;
    if (!forward_input(x)) return -1;
    const TailLayer& t = g_rt.tail[g_rt.m->n_tail - 1];
    memcpy(logits, t.act, 4u * t.out);
    apply_head(&g_rt, logits);
    return t.out;
}

int tc_rt_predict(const int8_t* x, uint16_t n, uint8_t* pred) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    if (outer_product_pending()) return TC_STATUS_BAD_STATE;  // step that batch of one first
    const tc_model* m = g_rt.m;
    for (uint16_t i = 0; i < n; ++i) {
        if (!forward_input(x + (size_t)i * m->input_size)) return TC_STATUS_NO_MODEL;
        TailLayer& t = g_rt.tail[m->n_tail - 1];
        apply_head(&g_rt, t.act);  // the activations are scratch once the forward pass is done
        const float* z = t.act;
        uint16_t best = 0;  // first maximum, as numpy's argmax
        for (uint16_t k = 1; k < t.out; ++k)
            if (z[k] > z[best]) best = k;
        pred[i] = (uint8_t)best;
    }
    return TC_STATUS_OK;
}

void tc_rt_stats(struct tc_rt_stats* out) {
    *out = g_rt.stats;
    out->arena_high_water = g_rt.arena_used;
    out->buffer_fill = g_rt.ready ? tc_buffer_fill(&g_rt.buffer) : 0;
}

int32_t tc_rt_tail_params(uint16_t layer, float* weights, float* bias, uint16_t* out_n,
                          uint16_t* in_n) {
    if (!g_rt.ready || layer >= g_rt.m->n_tail) return -1;
    const tc_tail_layer& L = g_rt.m->tail[layer];
    const TailLayer& t = g_rt.tail[layer];
    const uint32_t nw = weight_count(L, t.in, t.out);
    if (weights) memcpy(weights, t.w, 4u * nw);
    if (bias) memcpy(bias, t.b, 4u * bias_count(L, t.out));
    if (out_n) *out_n = t.out;
    if (in_n) *in_n = t.in;
    return (int32_t)nw;
}

int32_t tc_rt_tail_grads(uint16_t layer, float* grad_weights, float* grad_bias) {
    if (!g_rt.ready || layer >= g_rt.m->n_tail) return -1;
    const tc_tail_layer& L = g_rt.m->tail[layer];
    if (L.op == TC_OP_DENSE && !g_rt.grads_stored) return -1;  // batch 1: never formed
    const TailLayer& t = g_rt.tail[layer];
    const uint32_t nw = weight_count(L, t.in, t.out);
    if (grad_weights) memcpy(grad_weights, t.gw, 4u * nw);
    if (grad_bias) memcpy(grad_bias, t.gb, 4u * bias_count(L, t.out));
    return (int32_t)nw;
}

#if defined(TC_RT_STAGE_TICKS)
void tc_rt_stage_ticks(uint64_t* out, uint8_t reset) {
    for (int s = 0; s < TC_RT_STAGES; ++s) {
        out[s] = g_stage_ticks[s];
        if (reset) g_stage_ticks[s] = 0;
    }
}
#endif

int32_t tc_rt_backbone(const int8_t* x, int8_t* latent) {
    if (!g_rt.ready) return -1;
    const int8_t* q = tc_backbone_run(g_rt.m, x, g_rt.scratch_a, g_rt.scratch_b, g_rt.kernel_scratch);
    if (q == nullptr) return -1;
    memcpy(latent, q, g_rt.m->latent_size);
    return (int32_t)g_rt.m->latent_size;
}

}  // extern "C"

// ---- Persistence of the learned state (see tc_runtime.h for the format) ----------------------

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the state format is little-endian and written in the machine's byte order");

namespace {

// Writes through a tc_state_writer, remembering the first refusal.
struct StateOut {
    tc_state_writer* w;
    bool ok;
    void put(const void* p, uint32_t n) {
        if (ok && n > 0 && w->write(w, p, n) != 0) ok = false;
    }
    void u8(uint8_t v) { put(&v, 1); }
    void u16(uint16_t v) { put(&v, 2); }
    void u32(uint32_t v) { put(&v, 4); }
    void f32(float v) { put(&v, 4); }
};

// Reads a serialised state with bounds checks; `ok` turns false at the first overrun.
struct StateIn {
    const uint8_t* p;
    uint32_t n, at;
    bool ok;
    const uint8_t* take(uint32_t k) {
        if (!ok || k > n - at) {
            ok = false;
            return nullptr;
        }
        const uint8_t* q = p + at;
        at += k;
        return q;
    }
    uint8_t u8() {
        const uint8_t* q = take(1);
        return q ? *q : 0;
    }
    uint16_t u16() {
        uint16_t v = 0;
        if (const uint8_t* q = take(2)) memcpy(&v, q, 2);
        return v;
    }
    uint32_t u32() {
        uint32_t v = 0;
        if (const uint8_t* q = take(4)) memcpy(&v, q, 4);
        return v;
    }
    float f32() {
        float v = 0.0f;
        if (const uint8_t* q = take(4)) memcpy(&v, q, 4);
        return v;
    }
};

}  // namespace

extern "C" {

uint32_t tc_rt_state_bytes(void) {
    if (!g_rt.ready) return 0;
    const tc_model* m = g_rt.m;
    uint32_t bytes = TC_RT_STATE_FIXED_BYTES;
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const TailLayer& t = g_rt.tail[l];
        bytes += TC_RT_STATE_LAYER_BYTES +
                 4u * (weight_count(m->tail[l], t.in, t.out) + bias_count(m->tail[l], t.out));
    }
    uint16_t hc = 0, hd = 0;
    tc_rt_head_params(nullptr, nullptr, &hc, &hd);
    bytes += TC_RT_STATE_HEAD_BYTES + 4u * ((uint32_t)hc * hd + hc);
    return bytes + g_rt.buffer.ram_count * (g_rt.buffer.sample_size + 1u);
}

int tc_rt_save_state(tc_state_writer* w) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    if (g_rt.pending) return TC_STATUS_BAD_STATE;
    const tc_model* m = g_rt.m;
    StateOut out = {w, true};
    out.u16(TC_RT_STATE_VERSION);
    out.u16(m->n_tail);
    out.put(m->signature, 8);
    out.u16(g_rt.plan_index);
    out.u16(m->plan[g_rt.plan_index].classes_seen);
    out.f32(g_rt.params.lr);
    out.f32(g_rt.params.momentum);
    out.f32(g_rt.params.clip_norm);
    out.u16(g_rt.params.batch_new);
    out.u16(g_rt.params.batch_replay);
    out.u32(g_rt.params.seed);
    out.f32(g_rt.params.balance_lr_scale);
    out.u16(g_rt.params.balance_steps);
    out.u8(g_rt.params.asymmetric_ce);
    out.u8(g_rt.params.replay_shift);
    out.f32(g_rt.params.head_weight);
    out.f32(g_rt.params.head_shrinkage);
    out.u32(g_rt.prng.state);
    out.u32(g_rt.buffer.ram_count);
    out.u32(g_rt.buffer.sample_size);
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const TailLayer& t = g_rt.tail[l];
        out.u16(t.in);
        out.u16(t.out);
        out.put(t.w, 4u * weight_count(m->tail[l], t.in, t.out));
        out.put(t.b, 4u * bias_count(m->tail[l], t.out));
    }
    uint16_t hc = 0, hd = 0;  // statistics begun but not fitted: saved without a head
    tc_rt_head_params(nullptr, nullptr, &hc, &hd);
    out.u16(hc);
    out.u16(hd);
    out.put(g_rt.head.w, 4u * hc * hd);
    out.put(g_rt.head.b, 4u * hc);
    const tc_buffer& b = g_rt.buffer;
    out.put(b.ram_x, b.ram_count * b.sample_size);
    out.put(b.ram_y, b.ram_count);
    return out.ok ? TC_STATUS_OK : TC_STATUS_FULL;
}

int tc_rt_load_state(const uint8_t* data, uint32_t n) {
    if (!g_rt.ready) return TC_STATUS_NO_MODEL;
    const tc_model* m = g_rt.m;
    // Pass 1: parse and check everything; nothing of the runtime changes yet.
    StateIn in = {data, n, 0, data != nullptr};
    if (in.u16() != TC_RT_STATE_VERSION || in.u16() != m->n_tail) return TC_STATUS_BAD_ARGUMENT;
    const uint8_t* signature = in.take(8);
    if (signature == nullptr || memcmp(signature, m->signature, 8) != 0)
        return TC_STATUS_BAD_ARGUMENT;
    const uint16_t step = in.u16();
    const uint16_t seen = in.u16();
    if (step < m->known_tasks - 1 || step >= m->n_plan || seen != m->plan[step].classes_seen)
        return TC_STATUS_BAD_ARGUMENT;
    tc_train_params params;
    params.lr = in.f32();
    params.momentum = in.f32();
    params.clip_norm = in.f32();
    params.batch_new = in.u16();
    params.batch_replay = in.u16();
    params.seed = in.u32();
    params.balance_lr_scale = in.f32();
    params.balance_steps = in.u16();
    params.asymmetric_ce = in.u8();
    params.replay_shift = in.u8();
    params.head_weight = in.f32();
    params.head_shrinkage = in.f32();
    const uint32_t prng_state = in.u32();
    const uint32_t ram_count = in.u32();
    const uint32_t sample_size = in.u32();
    if (!in.ok || !valid_params(m, &params) || prng_state == 0 ||
        ram_count > m->buffer_ram_capacity || sample_size != tc_buffer_sample_size(m))
        return TC_STATUS_BAD_ARGUMENT;
    const tc_plan_step& to = m->plan[step];
    const uint8_t* weights[TC_MAX_TAIL_LAYERS];
    const uint8_t* biases[TC_MAX_TAIL_LAYERS];
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        const uint16_t t_in = in.u16();
        const uint16_t t_out = in.u16();
        if (t_in != tail_in(m, to, l) || t_out != to.out[l] || t_in > m->tail[l].in_max ||
            t_out > m->tail[l].out_max)
            return TC_STATUS_BAD_ARGUMENT;
        weights[l] = in.take(4u * weight_count(m->tail[l], t_in, t_out));
        biases[l] = in.take(4u * bias_count(m->tail[l], t_out));
    }
    // The head covers every class seen at the output layer's features, or is absent.
    const uint16_t head_classes = in.u16();
    const uint16_t head_dim = in.u16();
    const uint32_t d_now = in_size(m->tail[m->n_tail - 1], tail_in(m, to, m->n_tail - 1));
    if (head_classes != 0 &&
        (head_classes != seen || head_dim != d_now || head_features_max(m) == 0))
        return TC_STATUS_BAD_ARGUMENT;
    if (head_classes == 0 && head_dim != 0) return TC_STATUS_BAD_ARGUMENT;
    const uint8_t* head_w = in.take(4u * head_classes * head_dim);
    const uint8_t* head_b = in.take(4u * head_classes);
    const uint8_t* ram_x = in.take(ram_count * sample_size);
    const uint8_t* ram_y = in.take(ram_count);
    if (!in.ok || in.at != n) return TC_STATUS_BAD_ARGUMENT;
    for (uint32_t i = 0; i < ram_count; ++i)
        if (ram_y[i] >= seen) return TC_STATUS_BAD_ARGUMENT;

    // Pass 2: apply.
    for (uint16_t l = 0; l < m->n_tail; ++l) {
        TailLayer& t = g_rt.tail[l];
        t.in = tail_in(m, to, l);
        t.out = to.out[l];
        memcpy(t.w, weights[l], 4u * weight_count(m->tail[l], t.in, t.out));
        memcpy(t.b, biases[l], 4u * bias_count(m->tail[l], t.out));
    }
    zero_momentum(&g_rt);
    g_rt.head.observing = false;
    g_rt.head.classes = head_classes;
    g_rt.head.features = head_dim;
    if (head_classes) {
        memcpy(g_rt.head.w, head_w, 4u * head_classes * head_dim);
        memcpy(g_rt.head.b, head_b, 4u * head_classes);
    }
    g_rt.plan_index = step;
    g_rt.params = params;
    g_rt.prng.state = prng_state;
    g_rt.pending = 0;
    g_rt.task_lo = 0;  // saved at a task's end: the next task's BEGIN_TASK sets it
    tc_buffer& b = g_rt.buffer;
    tc_buffer_init(&b, b.sample_size, m->buffer_x, m->buffer_y, m->buffer_flash_count, b.ram_x,
                   b.ram_y, b.ram_capacity);
    tc_buffer_add(&b, reinterpret_cast<const int8_t*>(ram_x), ram_y, ram_count);
    return TC_STATUS_OK;
}

}  // extern "C"
