// The firmware's request handlers and the table that routes message types to them. A new
// request type is one handler function plus one line in kRoutes (handlers.cpp).
#pragma once
#include <stddef.h>

#include "tc_dispatch.h"

namespace app {

extern const tc::Route kRoutes[];
extern const size_t kRouteCount;

// Fills the INFO payload from the board, the runtime's description of its model and the
// learned state's persistence.
void fill_info(tc_info_t& info);

}  // namespace app
