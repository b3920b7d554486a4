// The on-device learning runtime: runs the exported model (tc_model.h) - frozen int8 prefix,
// trainable float32 tail of any supported layers - grows the tail at every new task, keeps the
// replay buffer and trains with SGD, accumulating the gradients of a mini-batch sample by sample
// (RAM holds one sample's activations whatever the batch). No heap: everything lives in one
// static arena whose size the export plans.
// The serial handlers and the host twin (tinycil/deploy/twin.py, through ctypes) call exactly this API.
// Statuses are TC_STATUS_* of tc_protocol_spec.h.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t signature[8];
    uint8_t has_model;
    uint8_t input_type;          // TC_INPUT_*
    uint8_t input_rank;
    uint8_t buffer_store;        // TC_BUFFER_STORES_*
    uint16_t input_shape[4];
    float input_scale;
    int32_t input_zero_point;
    uint32_t input_size;         // bytes per sample
    uint16_t classes_max;
    uint16_t classes_seen;
    uint32_t buffer_capacity;    // flash samples + RAM slots
    uint32_t buffer_fill;
    uint32_t arena_bytes;        // planned (the static arena)
    uint32_t arena_used;         // carved at init
    uint16_t task;               // index in the plan of the current size
    uint16_t max_batch;
} tc_rt_desc;

typedef struct {
    float lr;
    float momentum;
    float clip_norm;             // <= 0: no clipping
    uint16_t batch_new;
    uint16_t batch_replay;
    uint32_t seed;
    // The end of a task (tc_rt_end_task): balance_steps steps of batch_replay class-balanced
    // buffer draws at lr * balance_lr_scale, from zero momentum. 0 steps: none.
    float balance_lr_scale;
    uint16_t balance_steps;
    // 1: a new sample's softmax spans only its task's own units (from the lowest label given to
    // tc_rt_begin_task up); replayed samples span every unit seen (ER-ACE). 0: all units.
    uint8_t asymmetric_ce;
    // A replayed sample's latent (the tail's input map) is moved by an offset drawn uniformly in
    // -replay_shift..replay_shift along its height and its width (each only when longer than 1),
    // zeros shifted in; two PRNG draws after the buffer draw, height first. 0: not moved.
    uint8_t replay_shift;
    // The discriminant head (see tc_rt_fit_head): a prediction adds head_weight times the head's
    // logits to the output layer's once the head covers every class seen; 0: no head (a model
    // whose output layer reads more than TC_HEAD_MAX_FEATURES features allows only 0).
    // head_shrinkage: the scatter's shrinkage toward its mean variance, in [0, 1].
    float head_weight;
    float head_shrinkage;
} tc_train_params;

typedef struct {
    float loss;                  // mean cross-entropy of the step's batch (0 when no step ran)
    float grad_norm;             // global gradient norm before clipping
    uint16_t batch;              // samples in the step (new + replay)
    uint16_t pending;            // new samples waiting for the next step
    uint8_t stepped;             // 1 when an SGD step ran
    uint8_t reserved[3];
} tc_step_report;

// A struct tag, not a typedef: the function tc_rt_stats has the same name, so callers write
// `struct tc_rt_stats s; tc_rt_stats(&s);`.
struct tc_rt_stats {
    uint32_t steps;              // SGD steps since boot
    uint32_t samples_trained;    // new + replay samples in those steps
    uint64_t last_step_ticks;    // counter ticks (cycles or instructions) of the last step
    uint32_t arena_high_water;   // bytes of the arena in use (the arena is carved once)
    uint32_t buffer_fill;
};

int tc_rt_init(void);
void tc_rt_describe(tc_rt_desc* out);
int tc_rt_set_training(const tc_train_params* p);
int tc_rt_begin_task(const uint8_t* new_labels, uint16_t n);
// Each new sample runs forward and backward as it arrives: its gradient, scaled by 1 / (batch_new
// + the batch's replay draws), joins the batch's sums, and the sample is not kept.
// `end_of_batch` adds the replay draws and steps. BAD_STATE from tc_rt_predict while a batch of
// one (batch_new 1, no replay) waits for its step.
int tc_rt_train_samples(const int8_t* x, const uint8_t* y, uint16_t n, uint8_t end_of_batch,
                        tc_step_report* rep);
int tc_rt_add_buffer_samples(const int8_t* x, const uint8_t* y, uint16_t n);
// The task is complete (its buffer samples added): runs the end-of-task pass of the training
// parameters over the whole buffer. BAD_STATE while new samples wait for a step. `rep` (may be
// null) reports the pass's last step (stepped 0: the pass took no step); tc_rt_stats counts
// its steps and samples with the others.
// With head_weight above 0 it then begins the discriminant head's statistics: one forward pass
// over the buffer gives every class's mean feature (the output layer's input); the head stays
// off until tc_rt_fit_head.
int tc_rt_end_task(tc_step_report* rep);
// The discriminant head: a linear discriminant over the output layer's input features (Gaussian
// classes sharing one covariance), fitted at the end of every task. Its means are the buffer's
// class means; its covariance averages the classes' scatters: the classes given to
// tc_rt_observe_samples (the task's own samples, streamed once more after tc_rt_end_task) count
// as many classes as they are, their scatter pooled; every other class with at least two buffer
// samples adds its buffer scatter; then shrinkage toward the mean variance, a Cholesky solve.
// Forward only: no training step, no PRNG draw, the weights do not change. BAD_STATE unless
// tc_rt_end_task began the statistics (head_weight above 0) and nothing since began a task,
// trained or added buffer samples (each drops them: the head stays off until the next fit).
int tc_rt_observe_samples(const int8_t* x, const uint8_t* y, uint16_t n);
// Fits the head from the statistics (a buffer-only head when nothing was observed). OK, also
// when no class had a scatter (the head then stays off); BAD_STATE as above. The scatter lives
// in the largest gradient block of the arena (or its own block), which the next step overwrites:
// tc_rt_tail_grads is meaningless after a fit until the next step.
int tc_rt_fit_head(void);
// 1 while the statistics tc_rt_end_task began wait for tc_rt_fit_head, else 0.
int tc_rt_head_observing(void);
// The head: classes x features weights (row per class) and one bias per class; returns
// classes * features, 0 when no head is fitted, -1 without a model.
int32_t tc_rt_head_params(float* weights, float* bias, uint16_t* classes, uint16_t* features);
int tc_rt_predict(const int8_t* x, uint16_t n, uint8_t* pred);
void tc_rt_stats(struct tc_rt_stats* out);

// For tests and the host twin: the tail's float32 parameters and the latent of one sample.
// tc_rt_tail_params copies layer `layer`'s weights (tc_model.h's layout at the current size)
// and bias; returns the number of weights (0 for pooling), or -1 for a bad layer. Channels go
// to *out_n / *in_n.
int32_t tc_rt_tail_params(uint16_t layer, float* weights, float* bias, uint16_t* out_n,
                          uint16_t* in_n);
// The gradient sums of the last SGD step's batch (before clipping: the update folds the clipping
// factor in; for a batch ended early, scaled by 1 / the planned batch, not its own size), same
// layout; returns the number of weights, or -1 for a bad layer and for a dense layer after a
// step at batch 1 (its weight gradient, an outer product, is never stored).
int32_t tc_rt_tail_grads(uint16_t layer, float* grad_weights, float* grad_bias);
#if defined(TC_RT_STAGE_TICKS)
// Benchmark builds only: counter ticks of the training steps so far, per stage (forward with the
// latent and any replay backbone, softmax cross-entropy, backward, norm, update); reset clears.
#define TC_RT_STAGES 5
void tc_rt_stage_ticks(uint64_t* out, uint8_t reset);
#endif
// Runs the int8 backbone on one sample; writes latent_size int8 values. Returns latent_size.
int32_t tc_rt_backbone(const int8_t* x, int8_t* latent);
// Logits of one sample over the classes seen (with the head's term when it is on, as tc_rt_predict
// decides); returns classes_seen.
int32_t tc_rt_logits(const int8_t* x, float* logits);

// ---- Persistence of the learned state (lib/persist stores it in flash with two slots) ------
// The learned state is what a device must not forget across a reset: the tail's weights and
// biases at their current (grown) widths, the task index in the growth plan (and so the classes
// seen), the training parameters, the PRNG state, and the RAM replay area's samples and labels.
// Momentum is not part of it: every task begins with zero momentum, and the state is meant to be
// saved at a task boundary (after the task's buffer samples were added).
//
// Serialised little-endian, TC_RT_STATE_VERSION:
//   u16 version, u16 n_tail, u8 signature[8], u16 task, u16 classes_seen,
//   f32 lr, f32 momentum, f32 clip_norm, u16 batch_new, u16 batch_replay, u32 seed,
//   f32 balance_lr_scale, u16 balance_steps, u8 asymmetric_ce, u8 replay_shift,
//   f32 head_weight, f32 head_shrinkage, u32 prng_state, u32 ram_count, u32 sample_size,
//   per tail layer: u16 in, u16 out, f32 weights[...], f32 bias[out] (none for pooling),
//   the head: u16 classes, u16 features, f32 weights[classes][features], f32 bias[classes]
//   (0 and 0 and nothing else when no head is fitted),
//   i8 ram_x[ram_count][sample_size], u8 ram_y[ram_count]
#define TC_RT_STATE_VERSION 3
#define TC_RT_STATE_FIXED_BYTES 64   // everything before the first tail layer
// Byte offsets in the fixed part that the persistence layer's scan reads.
#define TC_RT_STATE_LR_AT 16         // lr, momentum, clip_norm: three floats from here
#define TC_RT_STATE_BALANCE_LR_SCALE_AT 36
#define TC_RT_STATE_HEAD_AT 44       // head_weight, head_shrinkage: two floats from here
#define TC_RT_STATE_RAM_COUNT_AT 56
#define TC_RT_STATE_SAMPLE_SIZE_AT 60
#define TC_RT_STATE_LAYER_BYTES 4    // per layer, before its weights
#define TC_RT_STATE_HEAD_BYTES 4     // before the head's weights

// Receives the serialised state in pieces; write returns 0 to go on, anything else to abort.
typedef struct tc_state_writer {
    int (*write)(struct tc_state_writer* self, const void* data, uint32_t n);
    void* ctx;
} tc_state_writer;

// Bytes tc_rt_save_state writes for the current state; 0 without a model.
uint32_t tc_rt_state_bytes(void);
// Writes the learned state. TC_STATUS_OK; TC_STATUS_NO_MODEL; TC_STATUS_BAD_STATE while a
// mini-batch is half formed (save between batches); TC_STATUS_FULL when the writer refused.
int tc_rt_save_state(tc_state_writer* w);
// Restores a state tc_rt_save_state wrote, on a runtime initialised with the same model (the
// signature must match). Everything is checked before anything changes: on any error the
// runtime is left as it was. TC_STATUS_OK; TC_STATUS_NO_MODEL; TC_STATUS_BAD_ARGUMENT for a
// state of another model, version or size, or with values the model cannot hold.
int tc_rt_load_state(const uint8_t* data, uint32_t n);

#ifdef __cplusplus
}
#endif
