// Builds without TC_PERSIST: no slots are reserved, so there is nothing to write. Every board's
// flash_<board>.cpp provides the real driver when TC_PERSIST=1.
#if !(defined(TC_PERSIST) && TC_PERSIST)

#include "bsp_flash.h"

namespace bsp::flash {

bool available() { return false; }
uint32_t slot_size() { return 0; }
const uint8_t* slot_view(int) { return nullptr; }
bool erase(int) { return false; }
bool program(int, uint32_t, const uint8_t*, uint32_t) { return false; }

}  // namespace bsp::flash

#endif
