// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4 native I/O addon: module entry point.
 *
 * Linux-only syscalls the Node runtime does not expose: TUN devices and
 * batched UDP (recvmmsg/sendmmsg), raw Ethernet frames (AF_PACKET, for announcements), plus uv_poll readiness callbacks so the
 * reads happen in JS on the owning thread's event loop. The JS-facing,
 * typed API is agent/io/native.ts; these functions take the batch arrays
 * as separate arguments so a call costs no property lookups.
 *
 * Context-aware (NAPI_MODULE_INIT): loadable in several worker_threads at
 * once; per-environment state lives in napi instance data.
 */
#include "common.h"

#include <stdlib.h>

/* agent/native/coalesce.c */
napi_status s4_init_coalesce(napi_env env, napi_value exports);

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  s4_instance *inst = calloc(1, sizeof *inst);
  napi_value max;
  if (inst == NULL) {
    napi_throw_error(env, "ENOMEM", "sixbed4_native: out of memory");
    return NULL;
  }
  /* s4_init_poll hands inst to napi_set_instance_data, which frees it later. */
  if (s4_init_poll(env, exports, inst) != napi_ok) return NULL;
  if (s4_init_tun(env, exports) != napi_ok) return NULL;
  if (s4_init_udp(env, exports) != napi_ok) return NULL;
  if (s4_init_lock(env, exports) != napi_ok) return NULL;
  if (s4_init_steer(env, exports) != napi_ok) return NULL;
  if (s4_init_notify(env, exports) != napi_ok) return NULL;
  if (s4_init_bpf(env, exports) != napi_ok) return NULL;
  if (s4_init_packet(env, exports) != napi_ok) return NULL;
  if (s4_init_gso(env, exports) != napi_ok) return NULL;
  if (s4_init_coalesce(env, exports) != napi_ok) return NULL;
  if (s4_init_routes(env, exports) != napi_ok) return NULL;
  if (napi_create_uint32(env, S4_MAX_BATCH, &max) != napi_ok ||
      napi_set_named_property(env, exports, "MAX_BATCH", max) != napi_ok)
    return NULL;
  return exports;
}
