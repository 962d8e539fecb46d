// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4 native I/O addon: shared declarations.
 *
 * The addon is context-aware (one instance per Node environment, i.e. per
 * main thread / worker_thread): nothing here is global mutable state.
 */
#ifndef SIXBED4_NATIVE_COMMON_H
#define SIXBED4_NATIVE_COMMON_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Largest batch handled by one system call. The mmsghdr/iovec/sockaddr
 * arrays live on the C stack (~24 KiB at this size), so a batch costs no
 * heap allocation. udpRecv/tunRead clamp the batch capacity to this;
 * udpSend/tunWrite process longer batches in chunks of this size.
 * Must match MAX_BATCH in agent/io/batch.ts.
 */
#define S4_MAX_BATCH 256

/* Views of a Batch's arrays, as handed over by agent/io/native.ts. */
typedef struct {
  uint8_t *data;
  size_t data_len; /* bytes */
  uint32_t *off;
  uint32_t *len;
  uint32_t *addr; /* may be NULL for tun calls */
  uint16_t *port; /* may be NULL for tun calls */
  size_t cap;     /* entries usable in every array */
} s4_batch;

/* Per-environment state, stored with napi_set_instance_data. */
typedef struct {
  napi_ref poll_ctor; /* constructor of the PollHandle class */
} s4_instance;

/*
 * Throws an Error shaped like Node's own system errors:
 * message "<syscall> <CODE>: <strerror>", .code = "ECODE", .errno = -err
 * (negative, as in Node), .syscall.
 */
void s4_throw_errno(napi_env env, int err, const char *syscall);

/* Throws TypeError / RangeError with the given message and code. */
void s4_throw_type(napi_env env, const char *msg);
void s4_throw_range(napi_env env, const char *msg);

/*
 * Argument helpers. Each returns 0 on success; on failure it has thrown a
 * JS exception and returns -1, so callers just `return NULL`.
 */
int s4_arg_fd(napi_env env, napi_value v, int *fd);
int s4_arg_u32(napi_env env, napi_value v, const char *what, uint32_t max, uint32_t *out);
int s4_arg_bool(napi_env env, napi_value v, const char *what, bool *out);
/* Copies a JS string into buf (NUL-terminated); fails if it does not fit. */
int s4_arg_str(napi_env env, napi_value v, const char *what, char *buf, size_t bufsize);
/*
 * Reads the batch arrays (data, off, len[, addr, port]) from argv.
 * with_addr selects whether addr/port are present.
 */
int s4_arg_batch(napi_env env, napi_value *argv, int with_addr, s4_batch *b);

/*
 * For reads into a batch of fixed slots: how many entries one call may fill (the batch's capacity, S4_MAX_BATCH and
 * limit, whichever is least) into *cap; fails (thrown) when slot is 0 or the data does not hold cap slots.
 */
int s4_batch_slots(napi_env env, const s4_batch *b, uint32_t slot, size_t limit, size_t *cap);

/*
 * Reads a Uint32Array of at least one element whose [0] accumulates the
 * packets the kernel refused one by one (EPERM, EACCES, ENETUNREACH, ...):
 * consumed, as the batch goes on, but never delivered.
 */
int s4_arg_counter(napi_env env, napi_value v, uint32_t **out);

/* Module pieces (one file each), called from the module init. */
napi_status s4_init_tun(napi_env env, napi_value exports);
napi_status s4_init_udp(napi_env env, napi_value exports);
napi_status s4_init_poll(napi_env env, napi_value exports, s4_instance *inst);
napi_status s4_init_lock(napi_env env, napi_value exports);
napi_status s4_init_steer(napi_env env, napi_value exports);
napi_status s4_init_notify(napi_env env, napi_value exports);
napi_status s4_init_bpf(napi_env env, napi_value exports);
napi_status s4_init_packet(napi_env env, napi_value exports);
napi_status s4_init_gso(napi_env env, napi_value exports);
napi_status s4_init_routes(napi_env env, napi_value exports);

/* Defines a function property on exports. */
napi_status s4_export_fn(napi_env env, napi_value exports, const char *name,
                         napi_callback cb);

/* Shorthand for the common "fetch exactly n args" prologue. */
#define S4_ARGS(n)                                                            \
  size_t argc = (n);                                                          \
  napi_value argv[(n) > 0 ? (n) : 1];                                         \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)        \
    return NULL;                                                              \
  if (argc < (n)) {                                                           \
    s4_throw_type(env, "not enough arguments");                              \
    return NULL;                                                              \
  }

/* Checks count against the batch capacity and that entries [0, count) lie
 * inside data, before anything reaches the kernel (which would otherwise
 * read past the buffer). Throws a RangeError and returns -1 when not. */
int s4_check_entries(napi_env env, const s4_batch *b, uint32_t count);

#endif
