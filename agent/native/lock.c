// SPDX-License-Identifier: BSD-2-Clause
/*
 * flock(2) for `sixbed4 host apply|revert`: two runs at once would interleave
 * their steps and the last rename of the state file would win. Node has no
 * flock, and lockfiles made by O_EXCL outlive a crash; a flock dies with its
 * process.
 */
#include "common.h"

#include <errno.h>
#include <sys/file.h>

/* tryLock(fd): true when an exclusive lock was taken, false when another holds one. */
static napi_value try_lock(napi_env env, napi_callback_info info) {
  S4_ARGS(1);
  int fd;
  napi_value result;
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
      napi_get_boolean(env, true, &result);
      return result;
    }
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) {
      napi_get_boolean(env, false, &result);
      return result;
    }
    s4_throw_errno(env, errno, "flock");
    return NULL;
  }
}

napi_status s4_init_lock(napi_env env, napi_value exports) {
  return s4_export_fn(env, exports, "tryLock", try_lock);
}
