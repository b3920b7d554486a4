// Single-producer single-consumer byte ring: the UART receive interrupt produces, the main loop
// consumes. Indices run freely and wrap by masking, so "full" and "empty" need no spare slot.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <atomic>

namespace bsp {

template <uint32_t Size>
class RxRing {
    static_assert(Size >= 2 && (Size & (Size - 1)) == 0, "ring size must be a power of two");

public:
    // Interrupt side. Returns false (and counts the byte as lost) when the ring is full.
    bool push(uint8_t byte) {
        const uint32_t head = head_.load(std::memory_order_relaxed);
        if (head - tail_.load(std::memory_order_acquire) >= Size) {
            lost_.store(lost_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            return false;
        }
        data_[head & (Size - 1)] = byte;
        head_.store(head + 1, std::memory_order_release);
        return true;
    }

    // Main-loop side.
    size_t pop(uint8_t* dst, size_t max) {
        const uint32_t head = head_.load(std::memory_order_acquire);
        uint32_t tail = tail_.load(std::memory_order_relaxed);
        size_t n = 0;
        while (n < max && tail != head) {
            dst[n++] = data_[tail & (Size - 1)];
            ++tail;
        }
        tail_.store(tail, std::memory_order_release);
        return n;
    }

    // Main-loop side: bytes received and not yet popped.
    uint32_t size() const {
        return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
    }

    bool empty() const {
        return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
    }

    // Also counted from the interrupt side, for hardware overruns.
    void count_lost() {
        lost_.store(lost_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    uint32_t lost() const { return lost_.load(std::memory_order_relaxed); }

private:
    uint8_t data_[Size];
    std::atomic<uint32_t> head_{0};
    std::atomic<uint32_t> tail_{0};
    std::atomic<uint32_t> lost_{0};
};

}  // namespace bsp
