// Pieces shared between startup.cpp and the board files; not part of the bsp interface.
#pragma once
#include <stdint.h>

extern "C" {
void Reset_Handler();
void HardFault_Handler();
void Default_Handler();
extern uint32_t __stack_top;
}

namespace bsp::detail {

extern volatile bool semihosting_absent;

// Semihosting call (operation in r0, argument block in r1); -1 when no host answers.
int semihost(int operation, const void* argument);

// Board reaction to an unrecoverable fault (the emulated board exits QEMU with
// bsp::kHardFaultExitCode; the NUCLEO stops at a breakpoint if a debugger is attached, then parks).
[[noreturn]] void board_fault();

// Interrupts off, sleep forever.
[[noreturn]] void park();

// Hash step for the session id.
uint32_t mix32(uint32_t h, uint32_t value);

using Handler = void (*)();

}  // namespace bsp::detail

// The 16 system exception entries every Cortex-M vector table starts with.
#define TC_CORE_VECTORS                                                                       \
    reinterpret_cast<bsp::detail::Handler>(&__stack_top), Reset_Handler,                     \
        Default_Handler,    /* NMI */                                                        \
        HardFault_Handler,  /* HardFault */                                                  \
        Default_Handler,    /* MemManage */                                                  \
        Default_Handler,    /* BusFault */                                                   \
        Default_Handler,    /* UsageFault */                                                 \
        nullptr, nullptr, nullptr, nullptr,                                                  \
        Default_Handler,    /* SVCall */                                                     \
        Default_Handler,    /* DebugMonitor */                                               \
        nullptr,                                                                             \
        Default_Handler,    /* PendSV */                                                     \
        Default_Handler     /* SysTick */
