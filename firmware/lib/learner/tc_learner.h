// tinycil's on-device learner as a library: call it from your own firmware with the data your
// own sensor produces. It wraps the runtime (lib/runtime: the exported model - frozen int8
// prefix, trainable float32 tail that grows when new classes arrive, replay buffer, SGD) behind
// a few calls. tinycil's own serial front end (firmware/src/learn_handlers.cpp) is one caller of
// this API: a host streaming samples over the link and an application reading its sensor go
// through the very same sequence (begin task, add sample -> train when the batch is full,
// predict, save/restore, statistics).
//
// Use:
//   0. The library is firmware/lib (its library.json compiles this folder with the runtime,
//      kernels and persistence): `lib_deps = symlink://<tinycil>/firmware/lib`, or
//      `file://<tinycil>/firmware/lib`, or the tinycil repository's URL (its top library.json).
//   1. Export a prepared run into a folder on your project's include path:
//      `tinycil export RUN --board B --into <project>/generated` writes model_data.h and
//      model_data.cpp there (`build_flags = -I generated`); the library compiles them in.
//      Without them every call answers TC_STATUS_NO_MODEL.
//   2. tc_learner_init() once at start-up: the model starts with the classes the host knew.
//   3. New classes: tc_learner_begin_task() with their labels (the next class numbers; the model
//      grows as the export's growth plan says), then tc_learner_add_sample() for each labelled
//      sample: when a mini-batch of new samples is full it trains one SGD step, mixing in samples
//      of the replay buffer. At the end of the task's data tc_learner_flush() trains on what is
//      left, tc_learner_remember() keeps a few of the task's samples so the new classes are
//      replayed later, and tc_learner_end_task() closes the task (its end-of-task pass). With
//      the discriminant head on, the task's samples then go once more to tc_learner_observe()
//      and tc_learner_fit_head() fits the head.
//   4. tc_learner_predict() at any time.
//   5. tc_learner_save() / tc_learner_restore() keep the learned state across resets (lib/persist
//      stores it in two flash slots safely; see tc_persist_runtime.h).
//
// Samples are int8, quantised with the model's input scale and zero point (tc_learner_quantize
// converts float sensor values); a sample is tc_learner_input_size() bytes, channels last.
// No heap, no board code: the runtime lives in one static arena the export sized. Not reentrant:
// call from one thread (the main loop). Every call returns a TC_STATUS_* of tc_protocol_spec.h.
#pragma once

#include <stdint.h>

#include "tc_protocol_spec.h"
#include "tc_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint16_t classes_seen;       // classes the model predicts now (0 .. classes_seen-1)
    uint16_t classes_max;        // classes the export planned for
    uint32_t steps;              // SGD steps since init
    uint32_t samples_trained;    // new + replayed samples in those steps
    uint32_t pending;            // new samples waiting for the next step
    uint32_t buffer_fill;        // replay buffer: samples held
    uint32_t buffer_capacity;    //   and how many it can hold
    float last_loss;             // mean cross-entropy of the last step
    uint64_t last_step_ticks;    // counter ticks of the last step: 0 unless the application
                                 // defines the C++ function `uint64_t tc_rt_ticks()` (e.g.
                                 // returning bsp::counter_read()); the library's is weak
    uint16_t head_classes;       // classes the discriminant head covers (0: none fitted)
    uint16_t head_features;      //   and the features it reads
    uint8_t head_observing;      // 1: tc_learner_end_task began the head's statistics, which
                                 // wait for tc_learner_observe and tc_learner_fit_head
} tc_learner_stats_t;

// Starts the runtime from the exported model. TC_STATUS_OK, or TC_STATUS_NO_MODEL when the
// firmware holds no (or a malformed) export.
int tc_learner_init(void);

// Training parameters (learning rate, momentum, clipping, new and replayed samples per
// mini-batch, seed); the export's defaults apply until this is called. Between mini-batches only.
int tc_learner_set_training(const tc_train_params* params);

// What the exported model is: signature, input shape and type, classes seen and planned, replay
// buffer, arena (tc_rt_desc of tc_runtime.h). All zero when the firmware holds no model.
void tc_learner_describe(tc_rt_desc* out);

// Bytes per sample, and the model's input quantisation (float = scale * (q - zero_point)).
uint32_t tc_learner_input_size(void);
float tc_learner_input_scale(void);
int32_t tc_learner_input_zero_point(void);

// Quantises `n` float values into the model's int8 input domain (rounded, saturated).
void tc_learner_quantize(const float* values, uint32_t n, int8_t* out);

// Begins a task bringing `n` class labels: already known labels are allowed, new ones must be the
// next numbers (classes_seen, classes_seen+1, ...), and the new count must be a size the export's
// plan knows. Momentum restarts; a half-formed mini-batch of the previous task is trained first
// (call tc_learner_flush at the end of a task's data to see that step's report).
int tc_learner_begin_task(const uint8_t* labels, uint16_t n);

// Adds one labelled sample of the current task; trains one SGD step when the mini-batch of new
// samples is full. `report` (may be null) says whether a step ran (stepped), its loss and
// gradient norm, and how many new samples wait for the next step (pending).
// TC_STATUS_BAD_ARGUMENT for a label beyond the classes seen.
int tc_learner_add_sample(const int8_t* x, uint8_t label, tc_step_report* report);

// Trains on the samples still waiting (a step with a partial batch); OK, and no step, when none
// wait. `report` as for tc_learner_add_sample (may be null).
int tc_learner_flush(tc_step_report* report);

// Keeps `n` labelled samples in the replay buffer's RAM area, all or none (TC_STATUS_FULL when
// they do not all fit): a few samples of every new class keep it from being forgotten when later
// classes arrive.
int tc_learner_remember(const int8_t* x, const uint8_t* labels, uint16_t n);

// Ends the task after its samples and its remembered samples: trains what still waits, then the
// end-of-task pass of the training parameters (balance_steps class-balanced steps over the whole
// buffer at lr * balance_lr_scale), which evens out the bias toward the newest classes. Call it
// once per task, before tc_learner_save. `report` (may be null): the pass's last step.
// With a head weight above 0 (tc_train_params.head_weight, the export's default when the run was
// prepared with the discriminant head) it then begins the head's statistics: give the task's
// samples once more to tc_learner_observe, then call tc_learner_fit_head (and save after it).
int tc_learner_end_task(tc_step_report* report);

// One labelled sample of the finished task for the discriminant head's statistics: forward only,
// nothing trains. BAD_STATE unless tc_learner_end_task began them.
int tc_learner_observe(const int8_t* x, uint8_t label);

// Fits the discriminant head (a linear discriminant over the output layer's input, added to its
// logits by tc_learner_predict at head_weight). BAD_STATE unless tc_learner_end_task began it.
int tc_learner_fit_head(void);

// Predicted class of one sample (0 .. classes_seen-1).
int tc_learner_predict(const int8_t* x, uint8_t* label);

// The learned state (tail weights at their grown size, plan position, training parameters, RAM
// replay samples). Save between mini-batches (call tc_learner_flush first).
uint32_t tc_learner_state_bytes(void);
int tc_learner_save(tc_state_writer* writer);
int tc_learner_restore(const uint8_t* data, uint32_t n);

void tc_learner_stats(tc_learner_stats_t* out);

#ifdef __cplusplus
}
#endif
