// Two-slot persistence of a payload (the learned state) in NOR flash, safe against a power cut or
// reset at any moment of a save.
//
// Each slot is one erasable unit and holds
//     header (32 bytes): magic, format version, header size, model signature, sequence number,
//                        payload length, payload CRC-32, header CRC-32
//     payload
// A save first runs its producer without writing anything (a dry run that measures the payload
// and its CRC): a producer that fails, or a payload too large for a slot, then costs nothing and
// both slots stay as they were. Only then is the slot to write erased. The slot written is never
// the one whose state the caller runs (tc_persist_save_keeping; by default the newest valid
// one): erase, program the payload, read it back and check its CRC, then program the header LAST. The header is the commit record: its own CRC is
// its last word, so until that word is fully programmed the slot is invalid and the other slot -
// untouched by this save - still holds the previous state. Load picks the valid slot with the
// highest sequence number (compared modulo 2^32, so the counter may wrap) whose signature is the
// running model's.
//
// No heap, no board code: the flash is reached through tc_persist_medium, so the same library
// runs on the boards (bsp::flash) and on the host against a simulated flash.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "tc_runtime.h"  // tc_state_writer

#define TC_PERSIST_MAGIC 0x53504354u  // "TCPS" little-endian
#define TC_PERSIST_FORMAT_VERSION 1u
#define TC_PERSIST_HEADER_BYTES 32u
#define TC_PERSIST_SLOTS 2

// Results of the persistence calls.
enum tc_persist_status {
    TC_PERSIST_OK = 0,
    TC_PERSIST_NOTHING = 1,      // load: no valid slot for this model
    TC_PERSIST_UNAVAILABLE = 2,  // the medium has no slots (build without TC_PERSIST)
    TC_PERSIST_TOO_LARGE = 3,    // save: the payload does not fit a slot
    TC_PERSIST_ERASE_FAILED = 4,
    TC_PERSIST_PROGRAM_FAILED = 5,
    TC_PERSIST_VERIFY_FAILED = 6,  // save: what was read back differs from what was written
    TC_PERSIST_PRODUCER_FAILED = 7,  // save: the payload's producer reported an error
    TC_PERSIST_REJECTED = 8,     // load: the runtime refused every valid slot's state
    TC_PERSIST_NOT_FINITE = 9,   // save: the state holds NaN or infinite values: never saved
};

// The flash medium: two slots of slot_size bytes, NOR semantics (erase to 0xFF, program clears
// bits), programmed in units of program_unit bytes (a power of two, at most 16) at offsets that
// are multiples of it. Slots are readable in place through view().
struct tc_persist_medium {
    void* ctx;
    uint32_t slot_size;
    uint32_t program_unit;
    bool (*erase)(void* ctx, int slot);
    bool (*program)(void* ctx, int slot, uint32_t offset, const uint8_t* data, uint32_t n);
    const uint8_t* (*view)(void* ctx, int slot);
};

// What a valid slot holds.
struct tc_persist_slot_info {
    int slot;               // 0 or 1; -1 when none
    uint32_t sequence;
    uint32_t payload_bytes;
    const uint8_t* payload; // in place in the medium
};

// Checks one slot: TC_PERSIST_OK and *out filled when it holds a complete save for `signature`.
int tc_persist_check_slot(const tc_persist_medium* m, int slot, const uint8_t signature[8],
                          tc_persist_slot_info* out);

// The newest valid save for `signature`: TC_PERSIST_OK, or TC_PERSIST_NOTHING.
int tc_persist_find(const tc_persist_medium* m, const uint8_t signature[8],
                    tc_persist_slot_info* out);

// Produces the payload by writing it, in pieces of any size, to the writer it is given. It is
// called twice per save (a dry run, then the real write) and must write the same bytes both
// times. Returns 0 on success; a TC_PERSIST_* failure code (passed on as the save's result) or
// anything else (TC_PERSIST_PRODUCER_FAILED) aborts the save.
typedef int (*tc_persist_producer)(tc_state_writer* writer, void* arg);

// Saves the payload `produce` writes, as described above, never writing slot `keep` (the slot
// whose state the caller runs; -1: none, then the older of the two is written). The new save's
// sequence number is above every valid one, so it loads first. On success *out (may be null)
// names the slot written and its sequence number. On any failure the slot `keep` (and, when the
// producer failed, both slots) stays as it was.
int tc_persist_save_keeping(const tc_persist_medium* m, const uint8_t signature[8], int keep,
                            tc_persist_producer produce, void* arg, tc_persist_slot_info* out);

// tc_persist_save_keeping that keeps the newest valid slot.
int tc_persist_save(const tc_persist_medium* m, const uint8_t signature[8],
                    tc_persist_producer produce, void* arg, tc_persist_slot_info* out);

// Convenience: saves a payload that is already in memory.
int tc_persist_save_bytes(const tc_persist_medium* m, const uint8_t signature[8],
                          const uint8_t* payload, uint32_t n, tc_persist_slot_info* out);

// A short English name of a status, for messages.
const char* tc_persist_status_name(int status);
