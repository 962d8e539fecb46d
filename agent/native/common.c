// SPDX-License-Identifier: BSD-2-Clause
/* sixbed4 native I/O addon: error and argument helpers. */
#define _GNU_SOURCE /* strerrorname_np */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

/*
 * The errno's symbolic name. libuv's table is the one Node uses for err.code,
 * so our errors look like the runtime's own; it lacks a few Linux errnos that
 * TUN devices return (EBADFD once the interface is deleted), which glibc names.
 */
static const char *errno_name(int err, char *buf, size_t bufsize) {
  const char *name = uv_err_name(-err);
  if (strncmp(name, "Unknown", 7) != 0) return name;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  name = strerrorname_np(err);
  if (name != NULL) return name;
#endif
  snprintf(buf, bufsize, "ERRNO%d", err);
  return buf;
}

/* Only called on error paths, so creating strings here is fine. */
void s4_throw_errno(napi_env env, int err, const char *syscall) {
  char namebuf[32];
  const char *code = errno_name(err, namebuf, sizeof namebuf);
  char msg[256];
  napi_value vmsg, vcode, verrno, vsys, error;

  snprintf(msg, sizeof msg, "%s %s: %s", syscall, code, strerror(err));
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &vmsg) != napi_ok ||
      napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &vcode) != napi_ok ||
      napi_create_int32(env, -err, &verrno) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &vsys) != napi_ok ||
      napi_create_error(env, vcode, vmsg, &error) != napi_ok) {
    napi_throw_error(env, code, msg);
    return;
  }
  napi_set_named_property(env, error, "errno", verrno);
  napi_set_named_property(env, error, "syscall", vsys);
  napi_throw(env, error);
}

void s4_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
}

void s4_throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
}

int s4_arg_u32(napi_env env, napi_value v, const char *what, uint32_t max, uint32_t *out) {
  char msg[128];
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    snprintf(msg, sizeof msg, "%s must be a number", what);
    s4_throw_type(env, msg);
    return -1;
  }
  /* Written so that NaN also fails. */
  if (!(d >= 0 && d <= (double)max) || d != (double)(uint32_t)d) {
    snprintf(msg, sizeof msg, "%s must be an integer in [0, %u]", what, max);
    s4_throw_range(env, msg);
    return -1;
  }
  *out = (uint32_t)d;
  return 0;
}

int s4_arg_fd(napi_env env, napi_value v, int *fd) {
  uint32_t u;
  if (s4_arg_u32(env, v, "fd", INT32_MAX, &u) != 0) return -1;
  *fd = (int)u;
  return 0;
}

int s4_arg_bool(napi_env env, napi_value v, const char *what, bool *out) {
  char msg[128];
  if (napi_get_value_bool(env, v, out) != napi_ok) {
    snprintf(msg, sizeof msg, "%s must be a boolean", what);
    s4_throw_type(env, msg);
    return -1;
  }
  return 0;
}

int s4_arg_str(napi_env env, napi_value v, const char *what, char *buf, size_t bufsize) {
  char msg[128];
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
    snprintf(msg, sizeof msg, "%s must be a string", what);
    s4_throw_type(env, msg);
    return -1;
  }
  if (n >= bufsize) {
    snprintf(msg, sizeof msg, "%s is too long (at most %zu bytes)", what, bufsize - 1);
    s4_throw_range(env, msg);
    return -1;
  }
  napi_get_value_string_utf8(env, v, buf, bufsize, &n);
  if (strlen(buf) != n) { /* embedded NUL would silently shorten the name */
    snprintf(msg, sizeof msg, "%s must not contain NUL characters", what);
    s4_throw_type(env, msg);
    return -1;
  }
  return 0;
}

/* Fetches one typed array of the expected element type. */
static int typed(napi_env env, napi_value v, napi_typedarray_type want,
                 const char *what, void **data, size_t *length) {
  char msg[128];
  napi_typedarray_type type;
  napi_value ab;
  size_t byte_offset;
  if (napi_get_typedarray_info(env, v, &type, length, data, &ab, &byte_offset) != napi_ok ||
      type != want) {
    snprintf(msg, sizeof msg, "batch.%s has the wrong type", what);
    s4_throw_type(env, msg);
    return -1;
  }
  return 0;
}

int s4_arg_batch(napi_env env, napi_value *argv, int with_addr, s4_batch *b) {
  size_t n, cap;
  void *p;

  /* A Buffer is a Uint8Array; the data pointer already includes byteOffset. */
  if (typed(env, argv[0], napi_uint8_array, "data", &p, &b->data_len) != 0) return -1;
  b->data = p;
  if (typed(env, argv[1], napi_uint32_array, "off", &p, &cap) != 0) return -1;
  b->off = p;
  if (typed(env, argv[2], napi_uint32_array, "len", &p, &n) != 0) return -1;
  b->len = p;
  if (n < cap) cap = n;
  b->addr = NULL;
  b->port = NULL;
  if (with_addr) {
    if (typed(env, argv[3], napi_uint32_array, "addr", &p, &n) != 0) return -1;
    b->addr = p;
    if (n < cap) cap = n;
    if (typed(env, argv[4], napi_uint16_array, "port", &p, &n) != 0) return -1;
    b->port = p;
    if (n < cap) cap = n;
  }
  b->cap = cap;
  return 0;
}

int s4_arg_counter(napi_env env, napi_value v, uint32_t **out) {
  void *p;
  size_t n;
  if (typed(env, v, napi_uint32_array, "refused", &p, &n) != 0) return -1;
  if (n < 1) {
    s4_throw_range(env, "refused must have at least one element");
    return -1;
  }
  *out = p;
  return 0;
}

napi_status s4_export_fn(napi_env env, napi_value exports, const char *name,
                         napi_callback cb) {
  napi_value fn;
  napi_status st = napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  if (st != napi_ok) return st;
  return napi_set_named_property(env, exports, name, fn);
}

int s4_check_entries(napi_env env, const s4_batch *b, uint32_t count) {
  size_t i;
  if (count > b->cap) {
    s4_throw_range(env, "count exceeds the batch capacity");
    return -1;
  }
  for (i = 0; i < count; i++) {
    if ((uint64_t)b->off[i] + b->len[i] > b->data_len) {
      s4_throw_range(env, "batch entry lies outside batch.data");
      return -1;
    }
  }
  return 0;
}

int s4_batch_slots(napi_env env, const s4_batch *b, uint32_t slot, size_t limit, size_t *cap) {
  size_t c = b->cap < S4_MAX_BATCH ? b->cap : S4_MAX_BATCH;
  if (limit < c) c = limit;
  if (slot == 0 || (uint64_t)c * slot > b->data_len) {
    s4_throw_range(env, "batch.data is smaller than cap * slot");
    return -1;
  }
  *cap = c;
  return 0;
}
