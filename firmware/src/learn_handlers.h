// Handlers of the learning requests (BEGIN_TASK, TRAIN_CONTROL, TRAIN_SAMPLES, BUFFER_SAMPLES,
// EVAL_SAMPLES, STATS, SELFTEST) and RESET. The learning requests are sequenced: run once each,
// strictly in seq order, with repeats answered from a cache of recent replies (see
// tinycil/protocol_spec.py, "the reliable transport of the learning messages").
#pragma once

#include "tc_dispatch.h"

namespace app {

// What tc_learner_init() said at boot: the learning requests answer with it when it is not OK.
void set_runtime_status(int status);

// The seq the sequenced transport expects next: what a damage report tells the host to resend.
uint16_t expected_seq();

void handle_sync(const tc::Frame& request, tc::Responder& out);
void handle_unlock(const tc::Frame& request, tc::Responder& out);
void handle_begin_task(const tc::Frame& request, tc::Responder& out);
void handle_train_control(const tc::Frame& request, tc::Responder& out);
void handle_train_samples(const tc::Frame& request, tc::Responder& out);
void handle_buffer_samples(const tc::Frame& request, tc::Responder& out);
void handle_eval_samples(const tc::Frame& request, tc::Responder& out);
void handle_stats(const tc::Frame& request, tc::Responder& out);
void handle_selftest(const tc::Frame& request, tc::Responder& out);
void handle_reset(const tc::Frame& request, tc::Responder& out);

}  // namespace app
