// SPDX-License-Identifier: BSD-2-Clause
/*
 * udpSteerEbpf(fd, progFd): attaches an eBPF program of type BPF_PROG_TYPE_SK_REUSEPORT (agent/bpf/steer.bpf.c,
 * loaded by agent/router/steer-ebpf.ts) to the SO_REUSEPORT group of fd (SO_ATTACH_REUSEPORT_EBPF). It replaces
 * whatever program the group had, classic or eBPF, whoever attached it (the kernel releases that one); the group
 * holds the program from then on, so progFd may be closed. The classic twin is udpSteer (udp.c).
 */
#include "common.h"

#include <errno.h>
#include <sys/socket.h>

#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52 /* asm-generic/socket.h since Linux 4.6 */
#endif

static napi_value udp_steer_ebpf(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  int fd, prog;
  if (s4_arg_fd(env, argv[0], &fd) || s4_arg_fd(env, argv[1], &prog)) return NULL;
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof prog) != 0)
    s4_throw_errno(env, errno, "setsockopt(SO_ATTACH_REUSEPORT_EBPF)");
  return NULL;
}

napi_status s4_init_steer(napi_env env, napi_value exports) {
  return s4_export_fn(env, exports, "udpSteerEbpf", udp_steer_ebpf);
}
