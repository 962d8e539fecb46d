// SPDX-License-Identifier: BSD-2-Clause
/*
 * sd_notify(3) for `sixbed4 router` under systemd (Type=notify): one datagram
 * on the AF_UNIX socket named by $NOTIFY_SOCKET. Node has no AF_UNIX datagram
 * sockets, and libsystemd is not something every host (or the image) has, so
 * this is the protocol itself: a path, or '@' for the abstract namespace.
 */
#include "common.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* notify(path, message): sends message as one datagram to path; throws on failure. */
static napi_value notify(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  char msg[4096];
  if (s4_arg_str(env, argv[0], "socket path", path, sizeof path) != 0) return NULL;
  if (s4_arg_str(env, argv[1], "message", msg, sizeof msg) != 0) return NULL;
  size_t plen = strlen(path);
  if (plen == 0 || plen >= sizeof(((struct sockaddr_un *)0)->sun_path) || (path[0] != '/' && path[0] != '@')) {
    s4_throw_range(env, "NOTIFY_SOCKET must be an absolute path or start with @ (abstract), shorter than 108 bytes");
    return NULL;
  }
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, plen);
  if (path[0] == '@') sa.sun_path[0] = '\0'; /* abstract: no terminating NUL counted */
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '@' ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    s4_throw_errno(env, errno, "socket");
    return NULL;
  }
  ssize_t n;
  do n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) {
    s4_throw_errno(env, err, "sendto");
    return NULL;
  }
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

napi_status s4_init_notify(napi_env env, napi_value exports) {
  return s4_export_fn(env, exports, "notify", notify);
}
