// The counter behind tc_rt_stats' step ticks: the board's (cycles or instructions) on the
// device, none on the host twin.
#include <stdint.h>

#if defined(__arm__)
#include "bsp.h"
uint64_t tc_rt_ticks(void) { return bsp::counter_read(); }
#else
uint64_t tc_rt_ticks(void) { return 0; }
#endif
