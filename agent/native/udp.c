// SPDX-License-Identifier: BSD-2-Clause
/* sixbed4 native I/O addon: UDP/IPv4 sockets with recvmmsg/sendmmsg batches. */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define S4_SOCKBUF (4 * 1024 * 1024)

/*
 * Raises a socket buffer. The *FORCE variant ignores net.core.[rw]mem_max but
 * needs CAP_NET_ADMIN; without it the plain option still gets us up to the
 * sysctl limit. Failure is not fatal: the socket works with a small buffer.
 */
static void raise_buf(int fd, int force_opt, int opt) {
  int size = S4_SOCKBUF;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof size) == 0) return;
  (void)setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

/*
 * udpOpen(ipv4: string, port: number, reusePort: boolean, freebind?: boolean): { fd, port }
 * freebind (IP_FREEBIND): bind an address that is not (yet) on this host. A failover standby's router binds the
 * floating address this way, so that taking over only moves the address, and its replies leave from exactly it.
 */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  char ip[INET_ADDRSTRLEN];
  uint32_t port;
  bool reuse, freebind = false;
  struct sockaddr_in sa;
  socklen_t salen = sizeof sa;
  int fd, one = 1;
  napi_value result, vfd, vport;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) {
    s4_throw_type(env, "not enough arguments");
    return NULL;
  }
  if (s4_arg_str(env, argv[0], "ipv4", ip, sizeof ip) != 0) return NULL;
  if (s4_arg_u32(env, argv[1], "port", 65535, &port) != 0) return NULL;
  if (s4_arg_bool(env, argv[2], "reusePort", &reuse) != 0) return NULL;
  if (argc > 3) {
    napi_valuetype t;
    if (napi_typeof(env, argv[3], &t) != napi_ok) return NULL;
    if (t != napi_undefined && s4_arg_bool(env, argv[3], "freebind", &freebind) != 0) return NULL;
  }

  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
    napi_throw_type_error(env, "ERR_INVALID_IP_ADDRESS", "ipv4 is not a dotted-quad IPv4 address");
    return NULL;
  }

  fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    s4_throw_errno(env, errno, "socket");
    return NULL;
  }
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int err = errno;
    close(fd);
    s4_throw_errno(env, err, "setsockopt");
    return NULL;
  }
  if (freebind && setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one) != 0) {
    int err = errno;
    close(fd);
    s4_throw_errno(env, err, "setsockopt");
    return NULL;
  }
  /*
   * ICMP errors for what we sent (a peer's NAT has no mapping any more: port
   * unreachable) are queued with the datagram they are about, so the router
   * can tell the IPv6 sender (udpRecvErrors). Best effort: without it the
   * errors are only swallowed, as before.
   */
  (void)setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
  raise_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF);
  raise_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int err = errno;
    close(fd);
    s4_throw_errno(env, err, "bind");
    return NULL;
  }
  if (getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
    int err = errno;
    close(fd);
    s4_throw_errno(env, err, "getsockname");
    return NULL;
  }

  if (napi_create_object(env, &result) != napi_ok ||
      napi_create_int32(env, fd, &vfd) != napi_ok ||
      napi_create_uint32(env, ntohs(sa.sin_port), &vport) != napi_ok ||
      napi_set_named_property(env, result, "fd", vfd) != napi_ok ||
      napi_set_named_property(env, result, "port", vport) != napi_ok) {
    close(fd);
    return NULL;
  }
  return result;
}

/*
 * Errors that an unconnected UDP socket can report on receive because an
 * ICMP error arrived for something we sent earlier (reported once through
 * sk_err, e.g. after recvmmsg stashed a mid-batch error). They say nothing
 * about the datagrams waiting, so they are dropped, not thrown.
 */
static int icmp_induced(int err) {
  switch (err) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENETDOWN:
    case EMSGSIZE:
    case EPROTO:
    case ENOPROTOOPT:
    case ETIMEDOUT:
      return 1;
    default:
      return 0;
  }
}

/* udpRecv(fd, data, off, len, addr, port, slot): count */
static napi_value udp_recv(napi_env env, napi_callback_info info) {
  S4_ARGS(7);
  int fd, n = -1, attempt;
  uint32_t slot;
  s4_batch b;
  struct mmsghdr msgs[S4_MAX_BATCH];
  struct iovec iov[S4_MAX_BATCH];
  struct sockaddr_in from[S4_MAX_BATCH];
  size_t cap, i;
  napi_value result;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 1, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[6], "slot", UINT32_MAX, &slot) != 0) return NULL;
  cap = b.cap < S4_MAX_BATCH ? b.cap : S4_MAX_BATCH;
  if (slot == 0 || (uint64_t)cap * slot > b.data_len) {
    s4_throw_range(env, "batch.data is smaller than cap * slot");
    return NULL;
  }

  for (i = 0; i < cap; i++) {
    iov[i].iov_base = b.data + i * slot;
    iov[i].iov_len = slot;
    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }

  /*
   * MSG_TRUNC makes the kernel return each datagram's real length, so one
   * larger than its slot shows up as len > slot (and is dropped upstream)
   * instead of looking like a valid shorter packet. A pending ICMP error is
   * consumed by the failing call, so one retry reads the real data.
   */
  for (attempt = 0; attempt < 2; attempt++) {
    n = recvmmsg(fd, msgs, (unsigned)cap, MSG_DONTWAIT | MSG_TRUNC, NULL);
    if (n >= 0) break;
    if (errno == EINTR) {
      attempt--;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      n = 0;
      break;
    }
    if (!icmp_induced(errno)) {
      s4_throw_errno(env, errno, "recvmmsg");
      return NULL;
    }
    n = 0;
  }

  for (i = 0; i < (size_t)n; i++) {
    b.off[i] = (uint32_t)(i * slot);
    b.len[i] = msgs[i].msg_len;
    b.addr[i] = ntohl(from[i].sin_addr.s_addr);
    b.port[i] = ntohs(from[i].sin_port);
  }
  napi_create_uint32(env, (uint32_t)n, &result);
  return result;
}

/*
 * Errors that mean the caller passed something unusable (bad fd, bad memory),
 * as opposed to "this one datagram could not go out" (EPERM from a firewall,
 * ENETUNREACH, EMSGSIZE, ...), which is a per-packet drop.
 */
static int programming_error(int err) {
  switch (err) {
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EOPNOTSUPP:
    case EDESTADDRREQ:
    case ENOTCONN:
      return 1;
    default:
      return 0;
  }
}

/* udpSend(fd, data, off, len, addr, port, count, refused): sent (incl. dropped; refused[0] += dropped) */
static napi_value udp_send(napi_env env, napi_callback_info info) {
  S4_ARGS(8);
  int fd;
  uint32_t count, *refused;
  s4_batch b;
  struct mmsghdr msgs[S4_MAX_BATCH];
  struct iovec iov[S4_MAX_BATCH];
  struct sockaddr_in to[S4_MAX_BATCH];
  size_t done = 0, base, chunk, i;
  napi_value result;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 1, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[6], "count", UINT32_MAX, &count) != 0) return NULL;
  if (s4_check_entries(env, &b, count) != 0) return NULL;
  if (s4_arg_counter(env, argv[7], &refused) != 0) return NULL;

  for (base = 0; base < count; base += chunk) {
    size_t sent = 0;
    chunk = count - base < S4_MAX_BATCH ? count - base : S4_MAX_BATCH;
    for (i = 0; i < chunk; i++) {
      size_t k = base + i;
      iov[i].iov_base = b.data + b.off[k];
      iov[i].iov_len = b.len[k];
      memset(&to[i], 0, sizeof to[i]);
      to[i].sin_family = AF_INET;
      to[i].sin_addr.s_addr = htonl(b.addr[k]);
      to[i].sin_port = htons(b.port[k]);
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_name = &to[i];
      msgs[i].msg_hdr.msg_namelen = sizeof to[i];
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    /*
     * sendmmsg stops at the first failing datagram: it returns how many went
     * before it, or -1 if the very first one failed. So on -1 the datagram at
     * `sent` is the culprit and is skipped, after one retry when the error
     * may be an ICMP error about an earlier datagram: the kernel reports
     * those once (sk_err) on whatever call comes next, this datagram
     * included, and the retry sends it for real.
     */
    int retried = 0;
    while (sent < chunk) {
      int n = sendmmsg(fd, msgs + sent, (unsigned)(chunk - sent), MSG_DONTWAIT);
      if (n > 0) {
        sent += (size_t)n;
        retried = 0;
        continue;
      }
      if (n == 0) break; /* not expected from the kernel; avoid spinning */
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (programming_error(errno)) {
        if (done + sent > 0) break; /* report progress; next call will throw */
        s4_throw_errno(env, errno, "sendmmsg");
        return NULL;
      }
      if (!retried && icmp_induced(errno)) {
        retried = 1;
        continue;
      }
      retried = 0;
      sent++;
      (*refused)++;
    }
    done += sent;
    if (sent < chunk) break;
  }
  napi_create_uint32(env, (uint32_t)done, &result);
  return result;
}

/*
 * udpRecvErrors(fd, data, off, len, addr, port, slot, info): count
 * Reads up to cap entries of the socket's error queue (IP_RECVERR). Entry i:
 * the start of the datagram the error is about at off[i] (length len[i], as
 * much as the ICMP error quoted), the address it was sent to in
 * addr[i]/port[i], and info[i] = ICMP type << 8 | code. Only ICMP errors
 * (SO_EE_ORIGIN_ICMP) are returned; others are read and skipped.
 */
static napi_value udp_recv_errors(napi_env env, napi_callback_info info) {
  S4_ARGS(8);
  int fd;
  uint32_t slot, *einfo;
  s4_batch b;
  size_t cap, n = 0, einfo_len;
  void *p;
  napi_value result;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 1, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[6], "slot", UINT32_MAX, &slot) != 0) return NULL;
  {
    napi_typedarray_type t;
    napi_value ab;
    size_t boff;
    if (napi_get_typedarray_info(env, argv[7], &t, &einfo_len, &p, &ab, &boff) != napi_ok || t != napi_uint32_array) {
      s4_throw_type(env, "info must be a Uint32Array");
      return NULL;
    }
    einfo = p;
  }
  cap = b.cap < S4_MAX_BATCH ? b.cap : S4_MAX_BATCH;
  if (einfo_len < cap) cap = einfo_len;
  if (slot == 0 || (uint64_t)cap * slot > b.data_len) {
    s4_throw_range(env, "batch.data is smaller than cap * slot");
    return NULL;
  }
  while (n < cap) {
    struct sockaddr_in to;
    char control[512];
    struct iovec iov = { b.data + n * slot, slot };
    struct msghdr m;
    struct cmsghdr *c;
    ssize_t r;
    int found = 0;
    memset(&m, 0, sizeof m);
    m.msg_name = &to;
    m.msg_namelen = sizeof to;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    r = recvmsg(fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      break; /* EAGAIN: the queue is empty; anything else: nothing more to read now */
    }
    for (c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) {
        struct sock_extended_err *ee = (struct sock_extended_err *)CMSG_DATA(c);
        if (ee->ee_origin == SO_EE_ORIGIN_ICMP) {
          einfo[n] = ((uint32_t)ee->ee_type << 8) | ee->ee_code;
          found = 1;
        }
      }
    }
    if (!found) continue;
    b.off[n] = (uint32_t)(n * slot);
    b.len[n] = (uint32_t)r;
    b.addr[n] = ntohl(to.sin_addr.s_addr);
    b.port[n] = ntohs(to.sin_port);
    n++;
  }
  napi_create_uint32(env, (uint32_t)n, &result);
  return result;
}

/*
 * udpSteer(fd, program): attaches a classic BPF program (8 bytes an instruction, struct sock_filter) to the
 * SO_REUSEPORT group of fd (SO_ATTACH_REUSEPORT_CBPF): for each datagram it returns the index, in the order they
 * joined, of the group's socket that gets it (an index past the group: the kernel's hash decides).
 */
static napi_value udp_steer(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  int32_t fd;
  void *data;
  size_t len;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "fd must be a file descriptor");
    return NULL;
  }
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, &ab, &off) != napi_ok || type != napi_uint8_array ||
      len == 0 || len % sizeof(struct sock_filter) != 0 || len / sizeof(struct sock_filter) > BPF_MAXINSNS) {
    napi_throw_type_error(env, NULL, "program must be a Uint8Array of 1..4096 8-byte instructions");
    return NULL;
  }
  struct sock_fprog prog = { .len = (unsigned short)(len / sizeof(struct sock_filter)), .filter = (struct sock_filter *)data };
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0) {
    s4_throw_errno(env, errno, "setsockopt(SO_ATTACH_REUSEPORT_CBPF)");
    return NULL;
  }
  return NULL;
}

/*
 * udpTtl(fd, ttl): the IPv4 TTL of what fd sends from now on (IP_TTL; -1: the route's default again). The peer's
 * hop-limited first probe (agent/peer/direct.ts) goes out with a small one, to open its own NAT's mapping only.
 */
static napi_value udp_ttl(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  int32_t fd, ttl;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "fd must be a file descriptor");
    return NULL;
  }
  if (napi_get_value_int32(env, argv[1], &ttl) != napi_ok || (ttl != -1 && (ttl < 1 || ttl > 255))) {
    napi_throw_type_error(env, NULL, "ttl must be 1..255, or -1 for the default");
    return NULL;
  }
  if (setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) != 0) s4_throw_errno(env, errno, "setsockopt(IP_TTL)");
  return NULL;
}

napi_status s4_init_udp(napi_env env, napi_value exports) {
  napi_status st;
  if ((st = s4_export_fn(env, exports, "udpTtl", udp_ttl)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "udpSteer", udp_steer)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "udpOpen", udp_open)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "udpRecv", udp_recv)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "udpRecvErrors", udp_recv_errors)) != napi_ok) return st;
  return s4_export_fn(env, exports, "udpSend", udp_send);
}
