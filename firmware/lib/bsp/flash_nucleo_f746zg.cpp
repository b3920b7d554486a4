// nucleo_f746zg: storage for the persisted learning state in the STM32F746ZG's own flash, written
// through the embedded flash interface of RM0385 chapter 3 ("Embedded Flash memory"). The slots
// are sectors 6 and 7 (256 KB each, placed by nucleo_f746zg.ld); the rest of the flash holds the
// program, which keeps running from the same (single) bank: the core simply stalls on every
// flash fetch while an erase or a program operation is under way (RM0385 §3.3: a read during a
// write stalls the bus). Interrupt handlers live in flash too, so serial bytes that arrive during
// an erase (about a second for 256 KB) overrun: a save is a request the host waits on.
#if defined(TC_BOARD_NUCLEO_F746ZG) && defined(TC_PERSIST) && TC_PERSIST

#include <stdint.h>

#include "bsp.h"
#include "bsp_flash.h"
#include "cortex_m7.h"

// Tells the linker script to take the slots' 512 KB out of the code region (see nucleo_f746zg.ld).
__asm__(".global __tc_persist\n.set __tc_persist, 1\n");

extern "C" {
extern const uint8_t __persist_slot0[];
extern const uint8_t __persist_slot1[];
extern const uint8_t __persist_slot_size[];  // an absolute symbol: its address is the value
}

using namespace bsp::cm7;

namespace {

// ---- RM0385 §3.7 flash interface registers --------------------------------------------------
constexpr uint32_t FLASH_IF = 0x40023C00;
constexpr uint32_t FLASH_ACR = FLASH_IF + 0x00;
constexpr uint32_t FLASH_KEYR = FLASH_IF + 0x04;
constexpr uint32_t FLASH_SR = FLASH_IF + 0x0C;
constexpr uint32_t FLASH_CR = FLASH_IF + 0x10;

// FLASH_KEYR: the two keys, written in this order, unlock FLASH_CR (§3.5.1). A wrong sequence
// locks FLASH_CR until the next reset.
constexpr uint32_t KEY1 = 0x45670123;
constexpr uint32_t KEY2 = 0xCDEF89AB;

// FLASH_SR (§3.7.4). Error flags and EOP are cleared by writing 1.
constexpr uint32_t SR_EOP = 1u << 0;
constexpr uint32_t SR_OPERR = 1u << 1;
constexpr uint32_t SR_WRPERR = 1u << 4;   // write protection
constexpr uint32_t SR_PGAERR = 1u << 5;   // programming alignment
constexpr uint32_t SR_PGPERR = 1u << 6;   // programming parallelism (PSIZE vs access size)
constexpr uint32_t SR_ERSERR = 1u << 7;   // erase sequence
constexpr uint32_t SR_BSY = 1u << 16;
constexpr uint32_t SR_ERRORS = SR_OPERR | SR_WRPERR | SR_PGAERR | SR_PGPERR | SR_ERSERR;

// FLASH_CR (§3.7.5), single-bank STM32F74xxx: SNB is 4 bits at 3..6.
constexpr uint32_t CR_PG = 1u << 0;
constexpr uint32_t CR_SER = 1u << 1;
constexpr uint32_t CR_SNB_SHIFT = 3;
constexpr uint32_t CR_SNB_MASK = 0xFu << CR_SNB_SHIFT;
// PSIZE 10 = x32: the parallelism the manual allows at 2.7-3.6 V (§3.3.5 Table 6; the NUCLEO
// supplies 3.3 V). Every program access must then be a 32-bit word write.
constexpr uint32_t CR_PSIZE_X32 = 2u << 8;
constexpr uint32_t CR_PSIZE_MASK = 3u << 8;
constexpr uint32_t CR_STRT = 1u << 16;
constexpr uint32_t CR_LOCK = 1u << 31;

// FLASH_ACR (§3.7.1): the ART accelerator caches what the core fetches through the ITCM
// interface (0x00200000); it is reset after any change of the flash so that no stale line of a
// rewritten sector survives in it. ARTRST may only be set while ARTEN is 0.
constexpr uint32_t ACR_ARTEN = 1u << 9;
constexpr uint32_t ACR_ARTRST = 1u << 11;

// Cortex-M7 D-cache maintenance by address: invalidate one line (ARMv7-M ARM, cache maintenance
// operations; DCIMVAC). The flash region is write-through in the default memory map, so its
// lines are never dirty and invalidating alone is enough to make the new contents visible.
constexpr uint32_t SCB_DCIMVAC = 0xE000EF5C;
constexpr uint32_t kCacheLine = 32;

// Sector map of the 1 MB single-bank STM32F74xxx (§3.3.1 Table 3).
struct Sector {
    uint32_t address, size;
};
constexpr Sector kSectors[8] = {
    {0x08000000, 32 * 1024},  {0x08008000, 32 * 1024},  {0x08010000, 32 * 1024},
    {0x08018000, 32 * 1024},  {0x08020000, 128 * 1024}, {0x08040000, 256 * 1024},
    {0x08080000, 256 * 1024}, {0x080C0000, 256 * 1024},
};

// Bounds on the waits, in seconds of core clock: a 256 KB sector erase takes about 1-2 s at x32
// (datasheet t_ERASE256KB max 4 s), a word program tens of microseconds.
constexpr uint32_t kEraseTimeoutS = 8;
constexpr uint32_t kProgramTimeoutCycles = 2000000;  // about 10 ms at 216 MHz

uint32_t slot_address(int slot) {
    return reinterpret_cast<uint32_t>(slot == 0 ? __persist_slot0 : __persist_slot1);
}

int sector_of(int slot) {
    const uint32_t address = slot_address(slot);
    for (int s = 0; s < 8; ++s) {
        if (kSectors[s].address == address)
            return kSectors[s].size == bsp::flash::slot_size() ? s : -1;
    }
    return -1;
}

bool wait_not_busy(uint64_t timeout_cycles) {
    const uint64_t start = bsp::counter_read();
    while (reg(FLASH_SR) & SR_BSY) {
        if (bsp::counter_read() - start > timeout_cycles) return false;
    }
    return true;
}

bool unlock() {
    if (!wait_not_busy(kProgramTimeoutCycles)) return false;
    if (reg(FLASH_CR) & CR_LOCK) {
        reg(FLASH_KEYR) = KEY1;
        reg(FLASH_KEYR) = KEY2;
    }
    if (reg(FLASH_CR) & CR_LOCK) return false;
    reg(FLASH_SR) = SR_EOP | SR_ERRORS;  // stale flags of an earlier operation
    return true;
}

void lock() {
    reg(FLASH_CR) &= ~(CR_PG | CR_SER | CR_SNB_MASK);
    reg(FLASH_CR) |= CR_LOCK;
}

// After a change of the flash contents: no cache may serve the old bytes.
void forget_cached(uint32_t address, uint32_t n) {
    dsb();
    for (uint32_t a = address & ~(kCacheLine - 1); a < address + n; a += kCacheLine)
        reg(SCB_DCIMVAC) = a;
    dsb();
    isb();
    const uint32_t acr = reg(FLASH_ACR);
    if (acr & ACR_ARTEN) {
        reg(FLASH_ACR) = acr & ~ACR_ARTEN;
        reg(FLASH_ACR) = (acr & ~ACR_ARTEN) | ACR_ARTRST;
        reg(FLASH_ACR) = acr & ~(ACR_ARTEN | ACR_ARTRST);
        reg(FLASH_ACR) = acr & ~ACR_ARTRST;
    }
}

}  // namespace

namespace bsp::flash {

bool available() { return sector_of(0) >= 0 && sector_of(1) >= 0; }

uint32_t slot_size() { return reinterpret_cast<uint32_t>(__persist_slot_size); }

const uint8_t* slot_view(int slot) {
    if (slot < 0 || slot >= kSlots) return nullptr;
    return slot == 0 ? __persist_slot0 : __persist_slot1;
}

bool erase(int slot) {
    if (slot < 0 || slot >= kSlots) return false;
    const int sector = sector_of(slot);
    if (sector < 0 || !unlock()) return false;
    // RM0385 §3.3.7 sector erase: SER and SNB, then STRT; BSY stays set until the erase ends.
    uint32_t cr = reg(FLASH_CR) & ~(CR_PG | CR_SNB_MASK | CR_PSIZE_MASK);
    cr |= CR_SER | (static_cast<uint32_t>(sector) << CR_SNB_SHIFT) | CR_PSIZE_X32;
    reg(FLASH_CR) = cr;
    reg(FLASH_CR) = cr | CR_STRT;
    dsb();
    const uint64_t timeout = static_cast<uint64_t>(kEraseTimeoutS) * bsp::clock_hz();
    const bool done = wait_not_busy(timeout);
    const bool ok = done && (reg(FLASH_SR) & SR_ERRORS) == 0;
    lock();
    forget_cached(slot_address(slot), slot_size());
    return ok;
}

bool program(int slot, uint32_t offset, const uint8_t* data, uint32_t n) {
    if (slot < 0 || slot >= kSlots || offset % kProgramUnit != 0 || n % kProgramUnit != 0 ||
        offset > slot_size() || n > slot_size() - offset || sector_of(slot) < 0)
        return false;
    if (!unlock()) return false;
    // RM0385 §3.3.8 programming: PG set, then one write of the PSIZE width per word; BSY is set
    // while the word is programmed. The dsb makes the write leave the core's write buffer
    // before BSY is sampled, otherwise the poll can see BSY clear for a write not yet started.
    reg(FLASH_CR) = (reg(FLASH_CR) & ~(CR_SER | CR_SNB_MASK | CR_PSIZE_MASK)) | CR_PSIZE_X32 | CR_PG;
    const uint32_t base = slot_address(slot) + offset;
    bool ok = true;
    for (uint32_t i = 0; i < n && ok; i += 4) {
        volatile uint32_t* target = reinterpret_cast<volatile uint32_t*>(base + i);
        if (*target != 0xFFFFFFFFu) {  // not erased: programming would corrupt the word
            ok = false;
            break;
        }
        const uint32_t value = static_cast<uint32_t>(data[i]) |
                               static_cast<uint32_t>(data[i + 1]) << 8 |
                               static_cast<uint32_t>(data[i + 2]) << 16 |
                               static_cast<uint32_t>(data[i + 3]) << 24;
        *target = value;
        dsb();
        ok = wait_not_busy(kProgramTimeoutCycles) && (reg(FLASH_SR) & SR_ERRORS) == 0;
    }
    lock();
    forget_cached(base, n);
    return ok;
}

}  // namespace bsp::flash

#endif  // TC_BOARD_NUCLEO_F746ZG && TC_PERSIST
