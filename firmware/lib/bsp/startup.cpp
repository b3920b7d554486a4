// Start-up and fault handling shared by every board: the reset handler, C runtime initialisation,
// semihosting, the HardFault handler and memory accounting from the linker script's symbols.
#include <stdint.h>
#include <string.h>

#include "bsp.h"
#include "bsp_internal.h"
#include "cortex_m7.h"

using namespace bsp::cm7;

extern "C" {
// Defined by the linker script (platform/ldscripts/tinycil_sections.ld).
extern uint32_t __flash_start;
extern uint32_t __flash_end;
extern uint32_t __flash_region_start;
extern uint32_t __flash_region_end;
extern uint32_t __data_start;
extern uint32_t __data_end;
extern uint32_t __data_load;
extern uint32_t __bss_start;
extern uint32_t __bss_end;
extern uint32_t __ram_start;
extern uint32_t __ram_end;

using InitFunction = void (*)();
extern InitFunction __init_array_start[];
extern InitFunction __init_array_end[];

int main();
void Reset_Handler();
void reset_continue();
}

// The very first instructions: the FPU must be on before the compiler's code may touch a VFP
// register (it is free to use them for copies), so this part is written in assembly.
extern "C" __attribute__((naked, noreturn)) void Reset_Handler() {
    __asm volatile(
        "ldr r0, =0xE000ED88\n"  // SCB->CPACR
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"  // CP10 and CP11: full access
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "b reset_continue\n");
}

extern "C" __attribute__((noreturn, used, optimize("no-tree-loop-distribute-patterns"))) void
reset_continue() {
    // Interrupts go through this image's vector table wherever the boot alias pointed.
    reg(SCB_VTOR) = reinterpret_cast<uint32_t>(&__flash_start);

    const uint32_t* src = &__data_load;
    for (uint32_t* dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
    for (uint32_t* dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;

    for (InitFunction* f = __init_array_start; f < __init_array_end; ++f) (*f)();

    const int code = main();
    bsp::exit(code);
}

// ---- semihosting -----------------------------------------------------------------------------
namespace bsp::detail {

// Set when a semihosting call trapped into HardFault instead of reaching a host (QEMU started
// without -semihosting-config, or a board without a debugger): later calls are skipped.
volatile bool semihosting_absent = false;

int semihost(int operation, const void* argument) {
    if (semihosting_absent) return -1;
    register int r0 __asm("r0") = operation;
    register const void* r1 __asm("r1") = argument;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

}  // namespace bsp::detail

namespace bsp {

void exit(int code) {
    // SYS_EXIT_EXTENDED with ADP_Stopped_ApplicationExit: the host ends with `code`.
    const uint32_t block[2] = {0x20026u, static_cast<uint32_t>(code)};
    detail::semihost(0x20, block);
    detail::park();
}

MemoryUsage memory_usage() {
    const auto addr = [](const uint32_t* p) { return reinterpret_cast<uint32_t>(p); };
    MemoryUsage usage;
    usage.ram_used = addr(&__bss_end) - addr(&__ram_start);
    usage.ram_total = addr(&__ram_end) - addr(&__ram_start);
    usage.flash_used = addr(&__flash_end) - addr(&__flash_region_start);
    usage.flash_total = addr(&__flash_region_end) - addr(&__flash_region_start);
    return usage;
}

void reset() {
    dsb();
    reg(SCB_AIRCR) = AIRCR_VECTKEY | (reg(SCB_AIRCR) & AIRCR_PRIGROUP_MASK) | AIRCR_SYSRESETREQ;
    dsb();
    for (;;) wfi();
}

}  // namespace bsp

namespace bsp::detail {

void park() {
    irq_disable();
    for (;;) wfi();
}

uint32_t mix32(uint32_t h, uint32_t value) {
    // A multiply-xorshift mixer: every input bit reaches every output bit.
    h ^= value + 0x9E3779B9u + (h << 6) + (h >> 2);
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

}  // namespace bsp::detail

// ---- faults ----------------------------------------------------------------------------------
extern "C" __attribute__((used)) void hard_fault_dispatch(uint32_t* frame) {
    // frame: r0, r1, r2, r3, r12, lr, pc, xPSR as stacked on exception entry.
    const uint32_t pc = frame[6];
    if (*reinterpret_cast<const volatile uint16_t*>(pc) == 0xBEAB) {
        // A semihosting `bkpt 0xAB` with nobody listening: answer -1 and step over it, so
        // semihosting is optional rather than fatal.
        bsp::detail::semihosting_absent = true;
        frame[0] = 0xFFFFFFFFu;
        frame[6] = pc + 2;
        reg(SCB_HFSR) = HFSR_DEBUGEVT;  // write 1 to clear
        return;
    }
    bsp::detail::board_fault();
}

extern "C" __attribute__((naked)) void HardFault_Handler() {
    // Pass the stacked frame of whichever stack was in use; returning from the C function with
    // the EXC_RETURN value still in lr completes the exception return.
    __asm volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "b hard_fault_dispatch\n");
}

extern "C" void Default_Handler() { bsp::detail::board_fault(); }

// ---- C and C++ runtime pieces ----------------------------------------------------------------
extern "C" {

// No heap: everything is allocated statically, so malloc (if anything ever calls it) fails
// instead of growing into memory the linker did not budget.
void* _sbrk(ptrdiff_t) {
    return reinterpret_cast<void*>(-1);
}

void __cxa_pure_virtual() { bsp::detail::board_fault(); }

}  // extern "C"
