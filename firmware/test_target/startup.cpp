// Reset and fault handling for the kernel test images.
#include <stdint.h>
#include <string.h>

#include "semihosting.h"

extern "C" {
extern uint32_t __stack_top;
extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end;
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
int main();
void tc_test_reset();
void tc_test_fault();
void SysTick_Handler();
}

// Weak so an image that does not count SysTick wraps needs no handler.
extern "C" __attribute__((weak)) void SysTick_Handler() {}

// Any fault ends the run with a distinct status instead of hanging the emulator.
extern "C" void tc_test_fault() {
    tc_semihost_puts("FAULT\n");
    tc_semihost_exit(250);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])() = {
    reinterpret_cast<void (*)()>(&__stack_top),
    tc_test_reset,
    tc_test_fault,  // NMI
    tc_test_fault,  // HardFault
    tc_test_fault,  // MemManage
    tc_test_fault,  // BusFault
    tc_test_fault,  // UsageFault
    nullptr, nullptr, nullptr, nullptr,
    tc_test_fault,  // SVCall
    tc_test_fault,  // DebugMon
    nullptr,
    tc_test_fault,  // PendSV
    SysTick_Handler,
};

static void init_memory() {
    memcpy(&__data_start, &__data_load,
           (size_t)((char*)&__data_end - (char*)&__data_start));
    memset(&__bss_start, 0, (size_t)((char*)&__bss_end - (char*)&__bss_start));
    for (void (**f)(void) = __init_array_start; f < __init_array_end; ++f) (*f)();
}

// Naked: the FPU must be on (CPACR CP10/CP11 full access) before the compiler may emit any
// floating-point instruction, so the first instructions are written out by hand.
extern "C" __attribute__((naked)) void tc_test_reset() {
    __asm__ volatile(
        "ldr r0, =0xE000ED88\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "bl %0\n"
        "bl main\n"
        "bl %1\n" ::"i"(init_memory),
        "i"(tc_semihost_exit));
}
