// nucleo_f746zg: STM32F746ZG on the NUCLEO-144 board. Register addresses and bit positions are
// from the STM32F75xxx/STM32F74xxx reference manual RM0385 (sections cited at each step) and the
// Cortex-M7 core documentation for SCB, caches and DWT.
//
// Serial: USART3 on PD8 (TX) / PD9 (RX), alternate function 7, wired to the ST-LINK/V2-1 virtual
// COM port. Clock: 216 MHz from the PLL, fed by the ST-LINK's 8 MHz MCO (HSE bypass) or, when
// that clock is absent, by the 16 MHz HSI.
#if defined(TC_BOARD_NUCLEO_F746ZG)

#include <stdint.h>

#include "bsp.h"
#include "bsp_internal.h"
#include "cortex_m7.h"
#include "rx_ring.h"
#include "tc_protocol_spec.h"

using namespace bsp::cm7;

namespace {

// ---- RM0385 §2.2.2 memory map: peripheral base addresses -----------------------------------
constexpr uint32_t PWR = 0x40007000;
constexpr uint32_t USART3 = 0x40004800;
constexpr uint32_t GPIOD = 0x40020C00;
constexpr uint32_t RCC = 0x40023800;
constexpr uint32_t FLASH_IF = 0x40023C00;
constexpr uint32_t RNG = 0x50060800;

// ---- RCC (RM0385 §5.3 RCC registers) ------------------------------------------------------
constexpr uint32_t RCC_CR = RCC + 0x00;
constexpr uint32_t RCC_PLLCFGR = RCC + 0x04;
constexpr uint32_t RCC_CFGR = RCC + 0x08;
constexpr uint32_t RCC_AHB1ENR = RCC + 0x30;
constexpr uint32_t RCC_AHB2ENR = RCC + 0x34;
constexpr uint32_t RCC_APB1ENR = RCC + 0x40;
constexpr uint32_t RCC_DCKCFGR2 = RCC + 0x90;
constexpr uint32_t CR_HSION = 1u << 0;
constexpr uint32_t CR_HSIRDY = 1u << 1;
constexpr uint32_t CR_HSEON = 1u << 16;
constexpr uint32_t CR_HSERDY = 1u << 17;
constexpr uint32_t CR_HSEBYP = 1u << 18;
constexpr uint32_t CR_PLLON = 1u << 24;
constexpr uint32_t CR_PLLRDY = 1u << 25;
constexpr uint32_t PLLCFGR_PLLSRC_HSE = 1u << 22;
// PLLM [5:0], PLLN [14:6], PLLP [17:16], PLLSRC [22], PLLQ [27:24]; every other bit is reserved.
constexpr uint32_t PLLCFGR_FIELDS = 0x3Fu | (0x1FFu << 6) | (3u << 16) | (1u << 22) | (0xFu << 24);
constexpr uint32_t CFGR_SW_MASK = 3u << 0;
constexpr uint32_t CFGR_SW_PLL = 2u << 0;
constexpr uint32_t CFGR_SWS_MASK = 3u << 2;
constexpr uint32_t CFGR_SWS_PLL = 2u << 2;
constexpr uint32_t CFGR_HPRE_MASK = 0xFu << 4;     // AHB prescaler: 0xxx = /1
constexpr uint32_t CFGR_PPRE1_MASK = 7u << 10;
constexpr uint32_t CFGR_PPRE1_DIV4 = 5u << 10;     // APB1 = HCLK / 4 (at most 54 MHz)
constexpr uint32_t CFGR_PPRE2_MASK = 7u << 13;
constexpr uint32_t CFGR_PPRE2_DIV2 = 4u << 13;     // APB2 = HCLK / 2 (at most 108 MHz)
constexpr uint32_t AHB1ENR_GPIODEN = 1u << 3;
constexpr uint32_t AHB2ENR_RNGEN = 1u << 6;
constexpr uint32_t APB1ENR_USART3EN = 1u << 18;
constexpr uint32_t APB1ENR_PWREN = 1u << 28;
constexpr uint32_t DCKCFGR2_USART3SEL_MASK = 3u << 4;  // 00: USART3 kernel clock = PCLK1

// ---- PWR (RM0385 §4.4 PWR registers) ------------------------------------------------------
constexpr uint32_t PWR_CR1 = PWR + 0x00;
constexpr uint32_t PWR_CSR1 = PWR + 0x04;
constexpr uint32_t CR1_VOS_MASK = 3u << 14;
constexpr uint32_t CR1_VOS_SCALE1 = 3u << 14;
constexpr uint32_t CR1_ODEN = 1u << 16;
constexpr uint32_t CR1_ODSWEN = 1u << 17;
constexpr uint32_t CSR1_ODRDY = 1u << 16;
constexpr uint32_t CSR1_ODSWRDY = 1u << 17;

// ---- Flash interface (RM0385 §3.7.1 FLASH_ACR) --------------------------------------------
constexpr uint32_t FLASH_ACR = FLASH_IF + 0x00;
constexpr uint32_t ACR_LATENCY_MASK = 0xFu;
constexpr uint32_t ACR_LATENCY_7WS = 7u;
constexpr uint32_t ACR_PRFTEN = 1u << 8;
constexpr uint32_t ACR_ARTEN = 1u << 9;
constexpr uint32_t ACR_ARTRST = 1u << 11;

// ---- GPIO (RM0385 §6.4 GPIO registers) ----------------------------------------------------
constexpr uint32_t GPIOD_MODER = GPIOD + 0x00;
constexpr uint32_t GPIOD_OSPEEDR = GPIOD + 0x08;
constexpr uint32_t GPIOD_PUPDR = GPIOD + 0x0C;
constexpr uint32_t GPIOD_AFRH = GPIOD + 0x24;

// ---- USART (RM0385 USART chapter, "USART registers") ----------------------------------------
constexpr uint32_t USART3_CR1 = USART3 + 0x00;
constexpr uint32_t USART3_CR3 = USART3 + 0x08;
constexpr uint32_t USART3_BRR = USART3 + 0x0C;
constexpr uint32_t USART3_ISR = USART3 + 0x1C;
constexpr uint32_t USART3_ICR = USART3 + 0x20;
constexpr uint32_t USART3_RDR = USART3 + 0x24;
constexpr uint32_t USART3_TDR = USART3 + 0x28;
constexpr uint32_t USART_CR1_UE = 1u << 0;
constexpr uint32_t USART_CR1_RE = 1u << 2;
constexpr uint32_t USART_CR1_TE = 1u << 3;
constexpr uint32_t USART_CR1_RXNEIE = 1u << 5;
constexpr uint32_t USART_CR3_EIE = 1u << 0;  // error interrupt (overrun, framing, noise)
constexpr uint32_t USART_ISR_PE = 1u << 0;
constexpr uint32_t USART_ISR_FE = 1u << 1;
constexpr uint32_t USART_ISR_NF = 1u << 2;
constexpr uint32_t USART_ISR_ORE = 1u << 3;
constexpr uint32_t USART_ISR_RXNE = 1u << 5;
constexpr uint32_t USART_ISR_TXE = 1u << 7;
constexpr uint32_t USART_ICR_ERRORS = USART_ISR_PE | USART_ISR_FE | USART_ISR_NF | USART_ISR_ORE;
constexpr unsigned kUsart3Irq = 39;

// ---- RNG (RM0385 RNG chapter, "RNG registers") ----------------------------------------------
constexpr uint32_t RNG_CR = RNG + 0x00;
constexpr uint32_t RNG_SR = RNG + 0x04;
constexpr uint32_t RNG_DR = RNG + 0x08;
constexpr uint32_t RNG_CR_RNGEN = 1u << 2;
constexpr uint32_t RNG_SR_DRDY = 1u << 0;
constexpr uint32_t RNG_SR_ERRORS = (1u << 1) | (1u << 2);  // clock error, seed error

// The serial line's baud rate: the board manifest's tinycil.serial.baudrate, passed by the
// dev-platform's build script (or `tinycil flash --baud N`), so host and firmware agree.
#ifndef TC_SERIAL_BAUD
#error "TC_SERIAL_BAUD is not defined: build with PlatformIO (the dev-platform sets it)"
#endif
constexpr uint32_t kBaudrate = TC_SERIAL_BAUD;
constexpr uint32_t kHsiHz = 16000000;
constexpr uint32_t kHseHz = TC_HSE_BYPASS_HZ;  // ST-LINK MCO, 8 MHz (board manifest)
constexpr uint32_t kSysclkHz = 216000000;

// Bounded waits, counted in polls: generous against the documented start-up times, but an absent
// clock or a wedged peripheral must not hang the board forever.
constexpr uint32_t kHseTimeout = 200000;
constexpr uint32_t kReadyTimeout = 2000000;
constexpr uint32_t kTxSpinLimit = 20000000;

bsp::RxRing<TC_DEVICE_RX_RING> rx_ring;
uint32_t core_hz = kHsiHz;
uint32_t tx_dropped;
uint32_t counter_last;
uint64_t counter_cycles;
uint32_t session;

bool wait_set(uint32_t address, uint32_t mask, uint32_t limit) {
    for (uint32_t i = 0; i < limit; ++i) {
        if ((reg(address) & mask) == mask) return true;
    }
    return false;
}

// The clock SYSCLK actually runs from, read back from RCC_CFGR.SWS (RM0385 §5.3.3: 00 HSI,
// 01 HSE, 10 PLL): what the USART's baud rate divider and INFO's clock must be computed from,
// whatever the set-up below asked for.
uint32_t sysclk_running_hz() {
    switch ((reg(RCC_CFGR) & CFGR_SWS_MASK) >> 2) {
        case 1: return kHseHz;
        case 2: return kSysclkHz;  // only ever switched to once the PLL was set up for 216 MHz
        default: return kHsiHz;
    }
}

// A step of the set-up failed (no PLL lock, no over-drive, the switch not reported): stay on the
// 16 MHz HSI, the clock the core runs from after reset (RM0385 §5.2: "HSI ... selected as system
// clock after reset"; RCC_CFGR.SW = 00 selects it). The bus prescalers go back to /1 (AHB, APB1
// and APB2 all within their limits at 16 MHz) so PCLK1, the USART3 kernel clock, is 16 MHz too.
// Earlier code returned the PLL's source here (8 MHz from the ST-LINK) while SYSCLK was still
// the HSI: the baud rate divider was then computed for half the real clock and the host heard
// nothing. The value returned is read back from SWS, never assumed.
uint32_t clock_fallback() {
    reg(RCC_CFGR) &= ~CFGR_SW_MASK;  // SW = 00: HSI (HSION is set at reset and never cleared)
    for (uint32_t i = 0; i < kReadyTimeout; ++i) {
        if ((reg(RCC_CFGR) & CFGR_SWS_MASK) == 0) break;
    }
    if ((reg(RCC_CFGR) & CFGR_SWS_MASK) == 0)
        reg(RCC_CFGR) &= ~(CFGR_HPRE_MASK | CFGR_PPRE1_MASK | CFGR_PPRE2_MASK);
    return sysclk_running_hz();
}

// RM0385 §5.2 (clocks), §4.1.4 (over-drive), §3.3.2 (flash read latency). Returns the SYSCLK
// frequency running at the end (read back from the hardware, see sysclk_running_hz).
uint32_t clock_init() {
    // Power interface clock, then voltage scale 1 (RM0385 §4.4.1 PWR_CR1.VOS). VOS may only be
    // changed while the PLL is off; it takes effect when the PLL starts.
    reg(RCC_APB1ENR) |= APB1ENR_PWREN;
    read_back(RCC_APB1ENR);  // read back: the enable needs a cycle before PWR is accessed
    reg(PWR_CR1) = (reg(PWR_CR1) & ~CR1_VOS_MASK) | CR1_VOS_SCALE1;

    // HSE in bypass mode (RM0385 §5.2.1): the NUCLEO has no crystal by default; the ST-LINK feeds
    // its 8 MHz MCO into OSC_IN. HSEBYP is written while HSEON is still 0.
    reg(RCC_CR) &= ~CR_HSEON;
    reg(RCC_CR) |= CR_HSEBYP;
    reg(RCC_CR) |= CR_HSEON;
    const bool hse = wait_set(RCC_CR, CR_HSERDY, kHseTimeout);
    if (!hse) {
        // No MCO (for example a board cut from its ST-LINK): run from HSI instead.
        reg(RCC_CR) &= ~(CR_HSEON | CR_HSEBYP);
        reg(RCC_CR) |= CR_HSION;
        if (!wait_set(RCC_CR, CR_HSIRDY, kReadyTimeout)) return clock_fallback();
    }

    // Main PLL (RM0385 §5.2.3, §5.3.2 RCC_PLLCFGR): VCO input = source / M = 2 MHz (the manual
    // recommends 2 MHz to limit jitter), VCO = 2 MHz * N = 432 MHz (100..432 MHz allowed),
    // SYSCLK = VCO / P = 216 MHz, 48 MHz domain = VCO / Q = 48 MHz (USB, SDMMC, RNG).
    const uint32_t source_hz = hse ? kHseHz : kHsiHz;
    const uint32_t pll_m = source_hz / 2000000;  // 4 from HSE, 8 from HSI
    const uint32_t pll_n = 216;
    const uint32_t pll_p_bits = 0;  // 00: P = 2
    const uint32_t pll_q = 9;
    reg(RCC_CR) &= ~CR_PLLON;
    for (uint32_t i = 0; i < kReadyTimeout && (reg(RCC_CR) & CR_PLLRDY); ++i) {
    }
    // Read-modify-write: the reserved bits (the reset value 0x24003010 sets bit 29) must keep
    // their reset value (RM0385 §5.3.2).
    reg(RCC_PLLCFGR) = (reg(RCC_PLLCFGR) & ~PLLCFGR_FIELDS) | (pll_m << 0) | (pll_n << 6) |
                       (pll_p_bits << 16) | (hse ? PLLCFGR_PLLSRC_HSE : 0) | (pll_q << 24);
    reg(RCC_CR) |= CR_PLLON;
    if (!wait_set(RCC_CR, CR_PLLRDY, kReadyTimeout)) return clock_fallback();

    // Over-drive (RM0385 §4.1.4 "Entering Over-drive mode"): needed above 180 MHz. ODEN, wait
    // ODRDY, then ODSWEN, wait ODSWRDY; done while SYSCLK is still HSE/HSI.
    reg(PWR_CR1) |= CR1_ODEN;
    if (!wait_set(PWR_CSR1, CSR1_ODRDY, kReadyTimeout)) return clock_fallback();
    reg(PWR_CR1) |= CR1_ODSWEN;
    if (!wait_set(PWR_CSR1, CSR1_ODSWRDY, kReadyTimeout)) return clock_fallback();

    // Flash wait states before raising the clock (RM0385 §3.3.2, Table 5: 7 WS for
    // 210 < HCLK <= 216 MHz at 2.7-3.6 V), then the ART accelerator and prefetch
    // (RM0385 §3.3.2 / §3.7.1). The ART is reset while disabled before it is enabled.
    reg(FLASH_ACR) = (reg(FLASH_ACR) & ~ACR_LATENCY_MASK) | ACR_LATENCY_7WS;
    if ((reg(FLASH_ACR) & ACR_LATENCY_MASK) != ACR_LATENCY_7WS) return clock_fallback();
    reg(FLASH_ACR) &= ~ACR_ARTEN;
    reg(FLASH_ACR) |= ACR_ARTRST;
    reg(FLASH_ACR) &= ~ACR_ARTRST;
    reg(FLASH_ACR) |= ACR_ARTEN | ACR_PRFTEN;

    // Bus prescalers (RM0385 §5.3.3 RCC_CFGR): AHB /1 = 216 MHz, APB1 /4 = 54 MHz,
    // APB2 /2 = 108 MHz, set before the switch so no bus ever runs above its limit.
    uint32_t cfgr = reg(RCC_CFGR);
    cfgr &= ~(CFGR_HPRE_MASK | CFGR_PPRE1_MASK | CFGR_PPRE2_MASK);
    cfgr |= CFGR_PPRE1_DIV4 | CFGR_PPRE2_DIV2;
    reg(RCC_CFGR) = cfgr;

    // Switch SYSCLK to the PLL and wait until the switch is reported (RCC_CFGR.SWS).
    reg(RCC_CFGR) = (reg(RCC_CFGR) & ~CFGR_SW_MASK) | CFGR_SW_PLL;
    for (uint32_t i = 0; i < kReadyTimeout; ++i) {
        if ((reg(RCC_CFGR) & CFGR_SWS_MASK) == CFGR_SWS_PLL) return sysclk_running_hz();
    }
    return clock_fallback();
}

uint32_t apb1_hz(uint32_t hclk) {
    // RM0385 §5.3.3: PPRE1 0xx = /1, 100 = /2, 101 = /4, 110 = /8, 111 = /16.
    const uint32_t ppre1 = (reg(RCC_CFGR) & CFGR_PPRE1_MASK) >> 10;
    return (ppre1 & 4u) ? hclk >> ((ppre1 & 3u) + 1) : hclk;
}

// Cortex-M7 caches (ARMv7-M ARM B3.2.x cache maintenance; STM32F7 programming manual PM0253
// "Cortex-M7 cache" section): invalidate, then enable. I-cache: ICIALLU. D-cache: invalidate
// every set and way through DCISW, geometry from CCSIDR after selecting the L1 data cache.
void caches_enable() {
    dsb();
    isb();
    reg(SCB_ICIALLU) = 0;
    dsb();
    isb();
    reg(SCB_CCR) |= CCR_IC;
    dsb();
    isb();

    reg(SCB_CSSELR) = 0;  // level 1, data cache
    dsb();
    const uint32_t ccsidr = reg(SCB_CCSIDR);
    const uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1;
    const uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1;
    const uint32_t line_shift = (ccsidr & 7u) + 4;  // log2(line bytes)
    const uint32_t way_shift = __builtin_clz(ways - 1);  // ways in the top bits of DCISW
    for (uint32_t set = 0; set < sets; ++set) {
        for (uint32_t way = 0; way < ways; ++way) {
            reg(SCB_DCISW) = (way << way_shift) | (set << line_shift);
        }
    }
    dsb();
    reg(SCB_CCR) |= CCR_DC;
    dsb();
    isb();
}

void usart3_init(uint32_t pclk1) {
    // PD8 = USART3_TX, PD9 = USART3_RX: alternate function mode (MODER = 10), AF7 in AFRH,
    // high speed, pull-up on RX so an unplugged line idles high (RM0385 §6.4.1/.3/.4/.10).
    reg(RCC_AHB1ENR) |= AHB1ENR_GPIODEN;
    reg(RCC_APB1ENR) |= APB1ENR_USART3EN;
    read_back(RCC_APB1ENR);
    reg(RCC_DCKCFGR2) &= ~DCKCFGR2_USART3SEL_MASK;  // kernel clock = PCLK1 (reset default)

    reg(GPIOD_MODER) = (reg(GPIOD_MODER) & ~(0xFu << 16)) | (0xAu << 16);
    reg(GPIOD_OSPEEDR) = (reg(GPIOD_OSPEEDR) & ~(0xFu << 16)) | (0xAu << 16);
    reg(GPIOD_PUPDR) = (reg(GPIOD_PUPDR) & ~(0xFu << 16)) | (0x4u << 16);
    reg(GPIOD_AFRH) = (reg(GPIOD_AFRH) & ~0xFFu) | 0x77u;

    // 8N1, oversampling by 16: BRR = f_ck / baud, rounded (RM0385 USART "baud rate generation").
    reg(USART3_CR1) = 0;
    reg(USART3_BRR) = (pclk1 + kBaudrate / 2) / kBaudrate;
    reg(USART3_CR3) = USART_CR3_EIE;
    reg(USART3_CR1) = USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE | USART_CR1_UE;
    nvic_enable(kUsart3Irq, 0x40);
}

void cycle_counter_enable() {
    reg(DEMCR) |= DEMCR_TRCENA;
    reg(DWT_LAR) = DWT_LAR_KEY;
    reg(DWT_CYCCNT) = 0;
    reg(DWT_CTRL) |= DWT_CTRL_CYCCNTENA;
}

uint32_t random_word() {
    // True random numbers from the RNG (clocked from the PLL's 48 MHz output).
    reg(RCC_AHB2ENR) |= AHB2ENR_RNGEN;
    read_back(RCC_AHB2ENR);
    reg(RNG_CR) |= RNG_CR_RNGEN;
    uint32_t value = 0;
    if (wait_set(RNG_SR, RNG_SR_DRDY, kReadyTimeout) && !(reg(RNG_SR) & RNG_SR_ERRORS)) {
        value = reg(RNG_DR);
    }
    reg(RNG_CR) &= ~RNG_CR_RNGEN;
    return value;
}

}  // namespace

extern "C" void USART3_Handler() {
    const uint32_t isr = reg(USART3_ISR);
    if (isr & USART_ISR_ORE) {
        // A byte arrived while RDR was still full: it is gone. Count it; the protocol reports it.
        rx_ring.count_lost();
    }
    if (isr & USART_ICR_ERRORS) reg(USART3_ICR) = isr & USART_ICR_ERRORS;
    if (isr & USART_ISR_RXNE) rx_ring.push(static_cast<uint8_t>(reg(USART3_RDR)));
}

// 16 system exceptions + 98 STM32F746 interrupts (RM0385 §10.1.2 vector table); only USART3
// (IRQ 39) is used, every other entry falls to the default handler.
#define TC_D1 Default_Handler
#define TC_D8 TC_D1, TC_D1, TC_D1, TC_D1, TC_D1, TC_D1, TC_D1, TC_D1
#define TC_D10 TC_D8, TC_D1, TC_D1
extern "C" __attribute__((section(".isr_vector"), used))
const bsp::detail::Handler tc_vector_table[16 + 98] = {
    TC_CORE_VECTORS,
    TC_D10, TC_D10, TC_D10, TC_D8, TC_D1,          // IRQ 0-38
    USART3_Handler,                                // IRQ 39
    TC_D10, TC_D10, TC_D10, TC_D10, TC_D10, TC_D8, // IRQ 40-97
};
#undef TC_D10
#undef TC_D8
#undef TC_D1

namespace bsp {

void init() {
    core_hz = clock_init();
    caches_enable();
    usart3_init(apb1_hz(core_hz));
    cycle_counter_enable();
    counter_reset();

    // Session id from the hardware RNG, mixed with the cycle count since reset (varies with
    // oscillator start-up) in case the RNG reports an error.
    session = detail::mix32(detail::mix32(0x5EED0746u, random_word()), reg(DWT_CYCCNT));

    irq_enable();
}

size_t serial_read(uint8_t* dst, size_t max) { return rx_ring.pop(dst, max); }

size_t serial_rx_pending() { return rx_ring.size(); }

size_t serial_write(const uint8_t* src, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        uint32_t spins = 0;
        while (!(reg(USART3_ISR) & USART_ISR_TXE)) {
            if (++spins > kTxSpinLimit) {
                tx_dropped += n - i;
                return i;
            }
        }
        reg(USART3_TDR) = src[i];
    }
    return n;
}

uint32_t rx_overruns() { return rx_ring.lost(); }
uint32_t tx_drops() { return tx_dropped; }

void counter_reset() {
    reg(DWT_CYCCNT) = 0;
    counter_last = 0;
    counter_cycles = 0;
}

uint64_t counter_read() {
    const uint32_t now = reg(DWT_CYCCNT);
    counter_cycles += now - counter_last;  // modulo 2^32 across a wrap
    counter_last = now;
    return counter_cycles;
}

uint8_t counter_kind() { return TC_COUNTER_CYCLES; }
uint32_t clock_hz() { return core_hz; }

void wait_for_interrupt() {
    irq_disable();
    if (rx_ring.empty()) wfi();
    irq_enable();
}

const char* board_name() { return TC_BOARD_ID; }

uint32_t session_id() { return session; }

}  // namespace bsp

namespace bsp::detail {

void board_fault() {
    if (reg(DHCSR) & DHCSR_C_DEBUGEN) __asm volatile("bkpt 0");
    park();
}

}  // namespace bsp::detail

#endif  // TC_BOARD_NUCLEO_F746ZG
