#include "tc_backbone.h"

#include "tc_conv2d_s8.h"
#include "tc_depthwise_conv2d_s8.h"
#include "tc_fully_connected_s8.h"
#include "tc_mean_s8.h"
#include "tc_pool_s8.h"
#include "tc_kernels_common.h"

namespace {

tc_s8_quant quant_of(const tc_layer* L) {
    tc_s8_quant q;
    q.input_offset = -L->in_zero_point;
    q.output_offset = L->out_zero_point;
    q.act_min = L->act_min;
    q.act_max = L->act_max;
    q.multiplier = L->multiplier;
    q.shift = L->shift;
    q.per_channel = 1;
    return q;
}

bool window_of(const tc_layer* L, int32_t out_c, tc_window_dims* d) {
    if (!tc_window_dims_init(d, 1, L->in_h, L->in_w, L->in_c, out_c, L->k_h, L->k_w, L->stride_h,
                             L->stride_w, (tc_padding)L->padding,
                             L->depth_multiplier ? L->depth_multiplier : 1))
        return false;
    // The export wrote TensorFlow's output size; a disagreement means a corrupt table.
    return d->out_h == L->out_h && d->out_w == L->out_w;
}

bool run_layer(const tc_model* m, const tc_layer* L, const int8_t* in, int8_t* out,
               void* kernel_scratch) {
    tc_window_dims d;
    const tc_s8_quant q = quant_of(L);
    switch (L->op) {
        case TC_OP_CONV2D:
            if (!window_of(L, L->out_c, &d)) return false;
            return tc_conv2d_s8(&d, &q, in, L->weights, L->bias, out, kernel_scratch,
                                (int32_t)m->kernel_scratch_bytes);
        case TC_OP_DEPTHWISE_CONV2D:
            if (!window_of(L, (int32_t)L->in_c * L->depth_multiplier, &d)) return false;
            if (m->kernel_scratch_bytes < 4u * L->out_c) return false;
            tc_depthwise_conv2d_s8(&d, &q, in, L->weights, L->bias, out,
                                   static_cast<int32_t*>(kernel_scratch));
            return true;
        case TC_OP_DENSE: {
            const tc_dense_dims dd = {1, L->in_c, L->out_c};
            tc_fully_connected_s8(&dd, &q, in, L->weights, L->bias, out);
            return true;
        }
        case TC_OP_MAX_POOL:
            if (!window_of(L, L->in_c, &d)) return false;
            tc_max_pool_s8(&d, L->act_min, L->act_max, in, out);
            return true;
        case TC_OP_AVG_POOL:
            if (!window_of(L, L->in_c, &d)) return false;
            tc_avg_pool_s8(&d, L->act_min, L->act_max, in, out);
            return true;
        case TC_OP_MEAN: {
            // Over all of H and W (the export checked the axes); one multiplier, the operator's.
            if (L->out_h != 1 || L->out_w != 1 || L->out_c != L->in_c) return false;
            const tc_mean_dims md = {1, L->in_h, L->in_w, L->in_c};
            tc_s8_quant mq = q;
            mq.per_channel = 0;
            tc_mean_s8(&md, &mq, in, out);
            return true;
        }
        default:
            return false;  // an operator this build has no int8 kernel for
    }
}

}  // namespace

const int8_t* tc_backbone_run(const tc_model* m, const int8_t* x, int8_t* scratch_a,
                              int8_t* scratch_b, void* kernel_scratch) {
    const int8_t* cur = x;
    for (uint16_t i = 0; i < m->n_layers; ++i) {
        const tc_layer* L = &m->layers[i];
        if (L->op == TC_OP_RESHAPE) continue;  // NHWC bytes stay where they are
        int8_t* out = cur == scratch_a ? scratch_b : scratch_a;
        if (!run_layer(m, L, cur, out, kernel_scratch)) return nullptr;
        cur = out;
    }
    return cur;
}
