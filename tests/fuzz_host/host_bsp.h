// The host build's serial port (see host_bsp.cpp): chosen before bsp::init().
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace host {

using SinkFn = size_t (*)(const uint8_t* data, size_t n);

// Serve the serial port as a TCP server on 127.0.0.1 (an OS-chosen port, printed on stdout).
void use_socket_server();
// Serial output goes to `sink`; input is handed to the dispatcher directly.
void use_memory(SinkFn sink);
// A fixed session id (the fuzzer's runs are reproducible); otherwise random at init.
void set_session_id(uint32_t id);

}  // namespace host
