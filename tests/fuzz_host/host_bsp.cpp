// Board support for the host build of the firmware (tests only): the firmware's own main loop,
// handlers, protocol, runtime and kernels run on the host, and this file stands in for the board.
//
// Two serial ports, chosen before bsp::init():
//   - a TCP server on 127.0.0.1 (what QEMU's `-serial tcp:...,server=on` gives the emulated board):
//     the link tests talk to the firmware's code over a real socket, through the fault proxy;
//   - memory: the fuzzer hands bytes to the dispatcher itself and checks what comes back.
#include "host_bsp.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bsp.h"
#include "tc_protocol_spec.h"

namespace host {
namespace {

int g_listen = -1;
int g_client = -1;
SinkFn g_sink = nullptr;
uint32_t g_session = 0;

void accept_client() {
    while (g_client < 0) {
        g_client = accept(g_listen, nullptr, nullptr);
        if (g_client < 0 && errno != EINTR) {
            perror("accept");
            ::exit(2);
        }
    }
}

// A closed connection is a host that went away: wait for the next one, as QEMU's server does.
void drop_client() {
    close(g_client);
    g_client = -1;
    accept_client();
}

}  // namespace

void use_socket_server() {
    g_listen = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(g_listen, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(g_listen, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(g_listen, 1) != 0) {
        perror("listen");
        ::exit(2);
    }
    socklen_t len = sizeof(addr);
    getsockname(g_listen, reinterpret_cast<sockaddr*>(&addr), &len);
    printf("listening on port %u\n", ntohs(addr.sin_port));
    fflush(stdout);
}

void use_memory(SinkFn sink) { g_sink = sink; }

void set_session_id(uint32_t id) { g_session = id; }

}  // namespace host

namespace bsp {

void init() {
    if (host::g_session == 0) {
        FILE* f = fopen("/dev/urandom", "rb");
        if (f == nullptr || fread(&host::g_session, sizeof(host::g_session), 1, f) != 1)
            host::g_session = static_cast<uint32_t>(time(nullptr));
        if (f) fclose(f);
        host::g_session |= 1u;
    }
    if (host::g_listen >= 0) host::accept_client();
}

size_t serial_read(uint8_t* dst, size_t max) {
    if (host::g_client < 0) return 0;
    const ssize_t n = recv(host::g_client, dst, max, MSG_DONTWAIT);
    if (n > 0) return static_cast<size_t>(n);
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) host::drop_client();
    return 0;
}

size_t serial_rx_pending() {
    int n = 0;
    if (host::g_client < 0 || ioctl(host::g_client, FIONREAD, &n) != 0 || n < 0) return 0;
    // The socket holds more than the board's ring could: report a ring that is at most full.
    return n > TC_DEVICE_RX_RING ? TC_DEVICE_RX_RING : static_cast<size_t>(n);
}

size_t serial_write(const uint8_t* src, size_t n) {
    if (host::g_sink != nullptr) return host::g_sink(src, n);
    size_t sent = 0;
    while (host::g_client >= 0 && sent < n) {
        const ssize_t k = send(host::g_client, src + sent, n - sent, MSG_NOSIGNAL);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            return sent;  // the host went away; serial_read notices and waits for the next
        }
        sent += static_cast<size_t>(k);
    }
    return sent;
}

uint32_t rx_overruns() { return 0; }
uint32_t tx_drops() { return 0; }

void counter_reset() {}
uint64_t counter_read() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}
uint8_t counter_kind() { return TC_COUNTER_NONE; }
uint32_t clock_hz() { return 1000000000u; }

void wait_for_interrupt() {
    if (host::g_client < 0) return;
    pollfd p = {host::g_client, POLLIN, 0};
    poll(&p, 1, 50);
}

[[noreturn]] void reset() {
    // The host build has no board to restart: a RESET request ends the process (the fuzzer
    // never sends one, so reaching this while fuzzing is a finding).
    printf("reset requested\n");
    fflush(stdout);
    ::exit(host::g_sink != nullptr ? 3 : 0);
}

const char* board_name() { return "host"; }

[[noreturn]] void exit(int code) { ::exit(code); }

MemoryUsage memory_usage() { return MemoryUsage{0, 0, 0, 0}; }

uint32_t session_id() { return host::g_session; }

}  // namespace bsp
