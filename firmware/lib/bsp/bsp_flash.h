// Board storage for the persisted learning state: two slots, each exactly one erasable unit of
// the board's flash (or of its stand-in), placed by the board's linker script. Present only in
// builds with TC_PERSIST=1; the linker script then takes the slots out of the region code may
// occupy, so the program can never land in them.
//
// The medium behaves as NOR flash on every board: erase sets a whole slot to 0xFF, programming
// can only clear bits, in 32-bit words at word-aligned offsets of erased words.
#pragma once
#include <stdint.h>

namespace bsp::flash {

constexpr int kSlots = 2;
constexpr uint32_t kProgramUnit = 4;  // bytes per program operation (x32 parallelism)

// True when this build reserves the slots (TC_PERSIST=1) and the board can write them.
bool available();

// Bytes per slot (both slots have the same size); 0 when not available.
uint32_t slot_size();

// Memory-mapped view of a slot (flash is readable in place on every board); null when not
// available or `slot` is out of range.
const uint8_t* slot_view(int slot);

// Erases a whole slot to 0xFF. False on a hardware error (reported by the flash interface).
bool erase(int slot);

// Programs `n` bytes at `offset` of `slot`. `offset` and `n` must be multiples of
// kProgramUnit and the target words erased. False on a bad argument or a hardware error.
bool program(int slot, uint32_t offset, const uint8_t* data, uint32_t n);

}  // namespace bsp::flash
