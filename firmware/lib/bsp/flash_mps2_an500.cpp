// mps2_an500: storage for the persisted learning state. QEMU's AN500 has no flash controller, so
// the slots are two 256 KB areas of the 16 MB PSRAM at 0x60000000 (placed by mps2_an500.ld),
// which QEMU does not touch on a system reset: on reset it reloads only the image's segments,
// and none lies in the PSRAM. The driver makes that RAM behave as NOR flash, so that the two-slot
// logic runs here exactly as on the NUCLEO: erase writes 0xFF, programming ANDs the data into
// the word (it can only clear bits), and programming a word that is not erased is refused, as a
// real flash would corrupt it.
#if defined(TC_BOARD_MPS2_AN500) && defined(TC_PERSIST) && TC_PERSIST

#include <stdint.h>

#include "bsp_flash.h"

// Tells the linker script to take the slots' 512 KB out of the code region (see mps2_an500.ld).
__asm__(".global __tc_persist\n.set __tc_persist, 1\n");

extern "C" {
extern const uint8_t __persist_slot0[];
extern const uint8_t __persist_slot1[];
extern const uint8_t __persist_slot_size[];  // an absolute symbol: its address is the value
}

namespace {

volatile uint32_t* slot_words(int slot) {
    const uint8_t* base = slot == 0 ? __persist_slot0 : __persist_slot1;
    return reinterpret_cast<volatile uint32_t*>(const_cast<uint8_t*>(base));
}

}  // namespace

namespace bsp::flash {

bool available() { return true; }

uint32_t slot_size() { return reinterpret_cast<uint32_t>(__persist_slot_size); }

const uint8_t* slot_view(int slot) {
    if (slot < 0 || slot >= kSlots) return nullptr;
    return slot == 0 ? __persist_slot0 : __persist_slot1;
}

bool erase(int slot) {
    if (slot < 0 || slot >= kSlots) return false;
    volatile uint32_t* w = slot_words(slot);
    for (uint32_t i = 0; i < slot_size() / 4; ++i) w[i] = 0xFFFFFFFFu;
    return true;
}

bool program(int slot, uint32_t offset, const uint8_t* data, uint32_t n) {
    if (slot < 0 || slot >= kSlots || offset % kProgramUnit != 0 || n % kProgramUnit != 0 ||
        offset > slot_size() || n > slot_size() - offset)
        return false;
    volatile uint32_t* w = slot_words(slot) + offset / 4;
    for (uint32_t i = 0; i < n / 4; ++i) {
        if (w[i] != 0xFFFFFFFFu) return false;
        const uint32_t value = static_cast<uint32_t>(data[4 * i]) |
                               static_cast<uint32_t>(data[4 * i + 1]) << 8 |
                               static_cast<uint32_t>(data[4 * i + 2]) << 16 |
                               static_cast<uint32_t>(data[4 * i + 3]) << 24;
        w[i] = w[i] & value;
    }
    return true;
}

}  // namespace bsp::flash

#endif  // TC_BOARD_MPS2_AN500 && TC_PERSIST
