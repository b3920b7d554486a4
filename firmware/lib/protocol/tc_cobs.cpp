#include "tc_cobs.h"

namespace tc {

CobsWriter::CobsWriter(uint8_t* out, size_t capacity)
    : out_(out), capacity_(capacity), pos_(1), code_pos_(0), code_(1), after_full_block_(false),
      overflow_(capacity == 0) {}

void CobsWriter::close_block() {
    if (code_pos_ < capacity_) out_[code_pos_] = code_;
    code_pos_ = pos_++;
    code_ = 1;
}

void CobsWriter::put(uint8_t byte) {
    if (byte == 0) {
        close_block();
        after_full_block_ = false;
        return;
    }
    if (pos_ >= capacity_) {
        overflow_ = true;
    } else {
        out_[pos_] = byte;
    }
    ++pos_;
    ++code_;
    after_full_block_ = false;
    if (code_ == 0xFF) {
        close_block();
        after_full_block_ = true;
    }
}

void CobsWriter::put(const uint8_t* data, size_t n) {
    for (size_t i = 0; i < n; ++i) put(data[i]);
}

size_t CobsWriter::finish() {
    if (after_full_block_) {
        // The block opened after a full one is empty: the canonical form leaves it out.
        pos_ = code_pos_;
    } else if (code_pos_ < capacity_) {
        out_[code_pos_] = code_;
    }
    if (overflow_ || pos_ > capacity_ || code_pos_ > capacity_) return 0;
    return pos_;
}

size_t cobs_encode(const uint8_t* src, size_t n, uint8_t* dst, size_t capacity) {
    CobsWriter writer(dst, capacity);
    writer.put(src, n);
    return writer.finish();
}

bool cobs_decode(const uint8_t* src, size_t n, uint8_t* dst, size_t capacity, size_t* out_len) {
    size_t in = 0;
    size_t out = 0;
    while (in < n) {
        const uint8_t code = src[in++];
        if (code == 0) return false;
        const size_t run = code - 1u;
        if (run > n - in) return false;  // block runs past the end
        if (run > capacity - out) return false;
        for (size_t i = 0; i < run; ++i) {
            const uint8_t byte = src[in++];
            if (byte == 0) return false;
            dst[out++] = byte;
        }
        if (code != 0xFF && in < n) {
            if (out >= capacity) return false;
            dst[out++] = 0;
        }
    }
    *out_len = out;
    return true;
}

}  // namespace tc
