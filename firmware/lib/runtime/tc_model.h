// The exported model as data: what tinycil/deploy/export.py writes into firmware/generated/ and the one
// runtime (tc_runtime.cpp) interprets. Nothing here is model specific; a model is a table of
// frozen int8 layers (the prefix before the cut, possibly empty), a table of trainable float32
// layers (everything after the cut: conv2d, depthwise conv2d, pooling, dense), a growth plan and a
// replay buffer, all const so that they stay in flash.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "tc_protocol_spec.h"

#define TC_MODEL_FORMAT_VERSION 5
#define TC_MAX_TAIL_LAYERS 12

// Operators of the frozen int8 backbone (TFLite semantics, NHWC).
enum tc_op_kind : uint8_t {
    TC_OP_CONV2D = 1,
    TC_OP_DEPTHWISE_CONV2D = 2,
    TC_OP_DENSE = 3,
    TC_OP_MAX_POOL = 4,
    TC_OP_AVG_POOL = 5,
    TC_OP_MEAN = 6,     // mean over H and W (global average pooling), with requantisation
    TC_OP_RESHAPE = 7,  // flatten / expand / squeeze: the NHWC bytes do not move
};

struct tc_layer {
    uint8_t op;                 // tc_op_kind
    uint8_t padding;            // TC_PADDING_VALID / TC_PADDING_SAME (tc_kernels_common.h)
    uint8_t stride_h, stride_w;
    uint8_t k_h, k_w;           // kernel or pooling window
    uint16_t depth_multiplier;  // depthwise only
    uint16_t in_h, in_w, in_c;  // dense: in_h = in_w = 1, in_c = input features
    uint16_t out_h, out_w, out_c;
    int32_t in_zero_point;
    int32_t out_zero_point;
    int32_t act_min, act_max;   // fused activation range in the output's int8 domain
    const int8_t* weights;      // conv2d [oc][kh][kw][ic]; depthwise [kh][kw][oc]; dense [out][in]
    const int32_t* bias;        // [out_c], or null
    const int32_t* multiplier;  // per output channel (conv/dense), or one (mean)
    const int32_t* shift;
};

// One trainable float32 layer of the tail (NHWC, one sample at a time). `op` is a tc_op_kind:
//   TC_OP_CONV2D            weights [out][k_h][k_w][in], bias [out]
//   TC_OP_DEPTHWISE_CONV2D  weights [k_h][k_w][out] (depth multiplier 1: out == in), bias [out]
//   TC_OP_DENSE             weights [out][in_h][in_w][in] (it flattens its input map, channels
//                           fastest, as Keras' Flatten), bias [out]; out_h = out_w = 1
//   TC_OP_MAX_POOL, TC_OP_AVG_POOL  no parameters, out == in (global average pooling is an
//                           average pool whose window is the whole map)
// Channels grow with the plan; spatial sizes never change. Rows are packed at the current size.
struct tc_tail_layer {
    uint8_t op;
    uint8_t relu;                // 1: ReLU after the layer
    uint8_t padding;             // TC_PADDING_VALID / TC_PADDING_SAME
    uint8_t stride_h, stride_w, k_h, k_w;
    uint16_t in_h, in_w, out_h, out_w;
    uint16_t in_init, out_init;  // channels after the known tasks (the initial weights below)
    uint16_t in_max, out_max;    // channels after the last task of the plan (what the arena holds)
    const float* weights_init;   // null for pooling
    const float* bias_init;
};

// The tail's size after one task of the plan.
struct tc_plan_step {
    uint16_t classes_seen;
    uint16_t out[TC_MAX_TAIL_LAYERS];  // output channels of every tail layer (last = classes_seen)
};

struct tc_train_defaults {
    float lr, momentum, clip_norm;
    uint16_t batch_new, batch_replay;
    uint32_t seed;
    float balance_lr_scale;      // the end-of-task pass (tc_train_params)
    uint16_t balance_steps;
    uint8_t asymmetric_ce;
    uint8_t replay_shift;
    float head_weight;           // the discriminant head (tc_train_params)
    float head_shrinkage;
};

struct tc_model {
    uint32_t format_version;
    uint8_t signature[8];

    // Input: int8 with the backbone's input quantisation.
    uint8_t input_rank;
    uint16_t input_shape[4];
    uint32_t input_size;          // elements (= bytes) per sample
    float input_scale;
    int32_t input_zero_point;

    // Frozen backbone.
    uint16_t n_layers;
    const tc_layer* layers;
    uint32_t scratch_bytes;       // each of the two ping-pong activation buffers
    uint32_t kernel_scratch_bytes;  // working memory of the int8 convolution

    // Latent: the backbone's int8 output (the input itself when the backbone is empty),
    // dequantised for the tail; its NHWC shape is the first tail layer's input map.
    uint32_t latent_size;
    float latent_scale;
    int32_t latent_zero_point;

    // Trainable tail and its growth plan.
    uint16_t n_tail;
    const tc_tail_layer* tail;
    uint16_t n_plan;              // one step per task of the run
    uint16_t known_tasks;         // plan[known_tasks - 1] is the exported (initial) size
    const tc_plan_step* plan;
    uint16_t classes_max;

    // Replay buffer: the known tasks' samples in flash, room in RAM for the field tasks'.
    uint32_t buffer_flash_count;
    const int8_t* buffer_x;       // [count][input_size], or [count][latent_size] (buffer_store)
    const uint8_t* buffer_y;      // class indices
    uint32_t buffer_ram_capacity;

    uint16_t max_batch;           // the largest batch_new + batch_replay the export allows (no
                                  // RAM grows with it: samples are trained as they arrive)
    tc_train_defaults defaults;
    uint32_t arena_bytes;         // the runtime's static arena (TC_ARENA_BYTES)

    // What buffer_x and the RAM area hold: TC_BUFFER_STORES_* of tc_protocol_spec.h (INFO
    // reports it). The backbone is frozen, so a sample's int8 latent is the same every time the
    // sample is drawn: keeping the latent instead of the input skips the backbone (most of a
    // training sample's cost) for every replayed sample and gives the very same training. Inputs
    // are the default, as in the paper; latents are smaller for most backbones too.
    uint8_t buffer_store;
};

// Bytes of one replay-buffer sample (without its label).
static inline uint32_t tc_buffer_sample_size(const tc_model* m) {
    return m->buffer_store == TC_BUFFER_STORES_LATENTS ? m->latent_size : m->input_size;
}
