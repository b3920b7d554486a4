// Registers of the Cortex-M7 core that every board uses (ARMv7-M Architecture Reference Manual,
// "System Control Space"; Cortex-M7 Technical Reference Manual for the cache maintenance set).
#pragma once
#include <stdint.h>

namespace bsp::cm7 {

inline volatile uint32_t& reg(uint32_t address) {
    return *reinterpret_cast<volatile uint32_t*>(address);
}

// A read whose value is discarded, e.g. to let a just-enabled peripheral clock settle
// (`(void)reg(a)` would not access the register at all).
inline void read_back(uint32_t address) {
    const uint32_t value = reg(address);
    (void)value;
}

// System Control Block
constexpr uint32_t SCB_CPUID = 0xE000ED00;
constexpr uint32_t SCB_VTOR = 0xE000ED08;
constexpr uint32_t SCB_AIRCR = 0xE000ED0C;
constexpr uint32_t SCB_CCR = 0xE000ED14;
constexpr uint32_t SCB_HFSR = 0xE000ED2C;
constexpr uint32_t SCB_CCSIDR = 0xE000ED80;
constexpr uint32_t SCB_CSSELR = 0xE000ED84;
constexpr uint32_t SCB_CPACR = 0xE000ED88;
constexpr uint32_t SCB_ICIALLU = 0xE000EF50;
constexpr uint32_t SCB_DCISW = 0xE000EF60;

constexpr uint32_t AIRCR_VECTKEY = 0x05FAu << 16;
constexpr uint32_t AIRCR_PRIGROUP_MASK = 0x7u << 8;
constexpr uint32_t AIRCR_SYSRESETREQ = 1u << 2;
constexpr uint32_t CCR_DC = 1u << 16;
constexpr uint32_t CCR_IC = 1u << 17;
constexpr uint32_t HFSR_DEBUGEVT = 1u << 31;
constexpr uint32_t CPACR_CP10_CP11_FULL = 0xFu << 20;

// NVIC
constexpr uint32_t NVIC_ISER0 = 0xE000E100;
constexpr uint32_t NVIC_IPR0 = 0xE000E400;  // one byte per interrupt

inline void nvic_enable(unsigned irq, uint8_t priority) {
    *reinterpret_cast<volatile uint8_t*>(NVIC_IPR0 + irq) = priority;
    reg(NVIC_ISER0 + 4 * (irq / 32)) = 1u << (irq % 32);
}

// SysTick
constexpr uint32_t SYST_CSR = 0xE000E010;
constexpr uint32_t SYST_RVR = 0xE000E014;
constexpr uint32_t SYST_CVR = 0xE000E018;

// Debug: DEMCR and the Data Watchpoint and Trace unit's cycle counter
constexpr uint32_t DHCSR = 0xE000EDF0;
constexpr uint32_t DHCSR_C_DEBUGEN = 1u << 0;
constexpr uint32_t DEMCR = 0xE000EDFC;
constexpr uint32_t DEMCR_TRCENA = 1u << 24;
constexpr uint32_t DWT_CTRL = 0xE0001000;
constexpr uint32_t DWT_CYCCNT = 0xE0001004;
constexpr uint32_t DWT_LAR = 0xE0001FB0;  // the Cortex-M7 DWT is locked until this is written
constexpr uint32_t DWT_LAR_KEY = 0xC5ACCE55;
constexpr uint32_t DWT_CTRL_CYCCNTENA = 1u << 0;

inline void dsb() { __asm volatile("dsb 0xF" ::: "memory"); }
inline void isb() { __asm volatile("isb 0xF" ::: "memory"); }
inline void irq_disable() { __asm volatile("cpsid i" ::: "memory"); }
inline void irq_enable() { __asm volatile("cpsie i" ::: "memory"); }
inline void wfi() { __asm volatile("wfi" ::: "memory"); }

}  // namespace bsp::cm7
