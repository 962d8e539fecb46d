// SPDX-License-Identifier: BSD-2-Clause
/* sixbed4 native I/O addon: UDP/IPv4 sockets with recvmmsg/sendmmsg batches. */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/udp.h>
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
  if (s4_batch_slots(env, &b, slot, SIZE_MAX, &cap) != 0) return NULL;

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

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/*
 * UDP_GRO on the router's sockets (where the fast path does not run: it takes single datagrams at tc ingress, after
 * GRO, and leaves merged ones to the socket). The kernel then queues a flow's datagrams that came in together as one
 * buffer, with their size in a UDP_GRO cmsg; udpRecvGro cuts it here into the datagrams the engine would have
 * received one by one. Received into a carry of S4_GRO_MSGS buffers of S4_GRO_BUF bytes (the most GRO merges); what
 * the batch has no room for waits there, its place in the state (agent/io/batch.ts newUdpGro), for the next call.
 */
#define S4_GRO_MSGS 64
#define S4_GRO_BUF 65536
enum {
  R_MSGS = 0, /* buffers in the carry still to hand out (0: none) */
  R_CUR,      /* the buffer being handed out */
  R_AT,       /* offset of its next datagram */
  R_MERGED,   /* counter: buffers that held several datagrams */
  R_DATAGRAMS, /* counter: the datagrams cut from them */
  R_PER = 8,  /* then per buffer: length, datagram size, source address, port */
  S4_UDP_GRO_STATE = R_PER + 4 * S4_GRO_MSGS
};

/* udpGro(fd, on?): sets UDP_GRO when on is given; whether the socket has it (false where the kernel has none). */
static napi_value udp_gro(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  int fd, v = 0;
  socklen_t sl = sizeof v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1) {
    s4_throw_type(env, "not enough arguments");
    return NULL;
  }
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (argc > 1) {
    napi_valuetype t;
    bool on;
    if (napi_typeof(env, argv[1], &t) != napi_ok) return NULL;
    if (t != napi_undefined) {
      if (s4_arg_bool(env, argv[1], "on", &on) != 0) return NULL;
      int w = on ? 1 : 0;
      (void)setsockopt(fd, SOL_UDP, UDP_GRO, &w, sizeof w);
    }
  }
  if (getsockopt(fd, SOL_UDP, UDP_GRO, &v, &sl) != 0) v = 0;
  napi_get_boolean(env, v != 0, &result);
  return result;
}

/*
 * udpRecvGro(fd, data, off, len, addr, port, slot, carry, state): count
 * udpRecv for a socket with UDP_GRO: the same entries, one datagram each, as without it.
 */
static napi_value udp_recv_gro(napi_env env, napi_callback_info info) {
  S4_ARGS(9);
  int fd;
  uint32_t slot, *st;
  s4_batch b;
  size_t cap, n = 0, carry_len;
  uint8_t *carry;
  napi_value result;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 1, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[6], "slot", UINT32_MAX, &slot) != 0) return NULL;
  if (s4_batch_slots(env, &b, slot, SIZE_MAX, &cap) != 0) return NULL;
  {
    bool is_buf;
    void *p;
    if (napi_is_buffer(env, argv[7], &is_buf) != napi_ok || !is_buf ||
        napi_get_buffer_info(env, argv[7], &p, &carry_len) != napi_ok ||
        carry_len < (size_t)S4_GRO_MSGS * S4_GRO_BUF) {
      s4_throw_type(env, "carry must be a Buffer of S4_GRO_MSGS * S4_GRO_BUF bytes");
      return NULL;
    }
    carry = p;
  }
  {
    napi_typedarray_type t;
    size_t len, boff;
    void *p;
    napi_value ab;
    if (napi_get_typedarray_info(env, argv[8], &t, &len, &p, &ab, &boff) != napi_ok || t != napi_uint32_array ||
        len < S4_UDP_GRO_STATE) {
      s4_throw_type(env, "state must be a Uint32Array of newUdpGro's size");
      return NULL;
    }
    st = p;
  }
  if (st[R_MSGS] > S4_GRO_MSGS || st[R_CUR] >= st[R_MSGS]) st[R_MSGS] = 0; /* not ours: start over */

  while (n < cap) {
    if (st[R_MSGS]) {
      uint32_t k = st[R_CUR], *m = st + R_PER + 4 * k;
      size_t len = m[0], seg = m[1], at = st[R_AT];
      size_t end = seg && at + seg < len ? at + seg : len, dl = end - at;
      memcpy(b.data + n * slot, carry + (size_t)k * S4_GRO_BUF + at, dl < slot ? dl : slot);
      b.off[n] = (uint32_t)(n * slot);
      b.len[n] = (uint32_t)(m[1] && m[1] < m[0] ? dl : m[0]); /* a datagram alone: its real length */
      b.addr[n] = m[2];
      b.port[n] = (uint16_t)m[3];
      n++;
      if (seg && seg < len) st[R_DATAGRAMS]++;
      if (end >= len) {
        st[R_AT] = 0;
        if (++st[R_CUR] >= st[R_MSGS]) st[R_MSGS] = st[R_CUR] = 0;
      } else {
        st[R_AT] = (uint32_t)end;
      }
      continue;
    }
    struct mmsghdr msgs[S4_GRO_MSGS];
    struct iovec iov[S4_GRO_MSGS];
    struct sockaddr_in from[S4_GRO_MSGS];
    union {
      char buf[CMSG_SPACE(sizeof(int))];
      struct cmsghdr align;
    } ctl[S4_GRO_MSGS];
    size_t want = cap - n < S4_GRO_MSGS ? cap - n : S4_GRO_MSGS;
    for (size_t i = 0; i < want; i++) {
      iov[i].iov_base = carry + i * S4_GRO_BUF;
      iov[i].iov_len = S4_GRO_BUF;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = ctl[i].buf;
      msgs[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
    }
    int r = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
      r = recvmmsg(fd, msgs, (unsigned)want, MSG_DONTWAIT | MSG_TRUNC, NULL);
      if (r >= 0) break;
      if (errno == EINTR) {
        attempt--;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK || icmp_induced(errno)) {
        r = 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        continue;
      }
      if (n > 0) {
        r = 0; /* hand over what we have; the error recurs next call */
        break;
      }
      s4_throw_errno(env, errno, "recvmmsg");
      return NULL;
    }
    if (r <= 0) break;
    for (int i = 0; i < r; i++) {
      uint32_t *m = st + R_PER + 4 * i, seg = 0;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c))
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
          int g;
          memcpy(&g, CMSG_DATA(c), sizeof g);
          if (g > 0) seg = (uint32_t)g;
        }
      m[0] = msgs[i].msg_len;
      if (seg && m[0] > S4_GRO_BUF) m[0] = S4_GRO_BUF; /* cannot happen: GRO stops at 64 KiB */
      m[1] = seg;
      m[2] = ntohl(from[i].sin_addr.s_addr);
      m[3] = ntohs(from[i].sin_port);
      if (seg && seg < m[0]) st[R_MERGED]++;
    }
    st[R_MSGS] = (uint32_t)r;
    st[R_CUR] = 0;
    st[R_AT] = 0;
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

/* Most datagrams one UDP_SEGMENT send may carry (UDP_MAX_SEGMENTS: 64 before Linux 6.10, 128 since). */
#define S4_GSO_MAX_SEGS 64
/* Most payload one UDP_SEGMENT send may carry: what fits one IPv4 packet (65535 - 20 - 8). */
#define S4_GSO_MAX_BYTES 65507

/* The gso argument of udpSend (a Uint32Array, agent/io/batch.ts newUdpGso): switch and counters. */
enum {
  U_ON = 0,    /* nonzero: group datagrams into UDP_SEGMENT sends */
  U_SENDS,     /* sends that carried UDP_SEGMENT */
  U_DATAGRAMS, /* datagrams they carried */
  U_OFF,       /* times the kernel refused one (EIO, EINVAL: e.g. a route through xfrm) and grouping went off */
  S4_UDP_GSO_STATE = 4
};

static void restore_pmtu(int fd, int *saved) {
  if (*saved < 0) return;
  (void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, saved, sizeof *saved);
  *saved = -1;
}

/*
 * udpSend(fd, data, off, len, addr, port, count, refused, gso?): sent (incl. dropped; refused[0] += dropped)
 *
 * With gso (and gso[U_ON]): consecutive datagrams to one address and port, all of one length but for a possibly
 * shorter last, go as one sendmsg with UDP_SEGMENT of that length (the kernel cuts it into the same datagrams, each
 * with its own checksum, once through the stack). A refused group is dropped whole, as its datagrams would have
 * been one by one; a group the kernel does not take as such (EIO, EINVAL) turns grouping off for good (gso[U_OFF])
 * and goes again one datagram at a time.
 */
static napi_value udp_send(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  int fd;
  uint32_t count, *refused, *gso = NULL;
  s4_batch b;
  struct mmsghdr msgs[S4_MAX_BATCH];
  struct iovec iov[S4_MAX_BATCH];
  struct sockaddr_in to[S4_MAX_BATCH];
  uint32_t first[S4_MAX_BATCH + 1]; /* message m carries entries [first[m], first[m + 1]) */
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctl[S4_MAX_BATCH];
  size_t done = 0, plain_until = 0;
  int pmtu_saved = -1;
  napi_value result;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 8) {
    s4_throw_type(env, "not enough arguments");
    return NULL;
  }
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 1, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[6], "count", UINT32_MAX, &count) != 0) return NULL;
  if (s4_check_entries(env, &b, count) != 0) return NULL;
  if (s4_arg_counter(env, argv[7], &refused) != 0) return NULL;
  if (argc > 8) {
    napi_valuetype t;
    if (napi_typeof(env, argv[8], &t) != napi_ok) return NULL;
    if (t != napi_undefined) {
      napi_typedarray_type tt;
      size_t n, boff;
      void *p;
      napi_value ab;
      if (napi_get_typedarray_info(env, argv[8], &tt, &n, &p, &ab, &boff) != napi_ok || tt != napi_uint32_array ||
          n < S4_UDP_GSO_STATE) {
        s4_throw_type(env, "gso must be a Uint32Array of 4 entries");
        return NULL;
      }
      gso = p;
    }
  }

  while (done < count) {
    /* Up to S4_MAX_BATCH messages from entry done on, grouped where they can be. */
    size_t nmsg = 0, k = done, limit = done < plain_until ? plain_until : count;
    int grouping = gso != NULL && gso[U_ON] != 0 && done >= plain_until, groups = 0;
    while (k < limit && nmsg < S4_MAX_BATCH) {
      size_t j = k + 1, bytes = b.len[k];
      if (grouping && b.len[k] > 0) {
        while (j < count && j - done < S4_MAX_BATCH && j - k < S4_GSO_MAX_SEGS && b.addr[j] == b.addr[k] && b.port[j] == b.port[k] &&
               b.len[j - 1] == b.len[k] && b.len[j] <= b.len[k] && b.len[j] > 0 &&
               bytes + b.len[j] <= S4_GSO_MAX_BYTES)
          bytes += b.len[j++];
      }
      struct msghdr *mh = &msgs[nmsg].msg_hdr;
      memset(mh, 0, sizeof *mh);
      memset(&to[nmsg], 0, sizeof to[nmsg]);
      to[nmsg].sin_family = AF_INET;
      to[nmsg].sin_addr.s_addr = htonl(b.addr[k]);
      to[nmsg].sin_port = htons(b.port[k]);
      mh->msg_name = &to[nmsg];
      mh->msg_namelen = sizeof to[nmsg];
      first[nmsg] = (uint32_t)k;
      if (j - k > 1) {
        /* The datagrams' bytes as they lie (not contiguous): the kernel cuts the whole every len[k] bytes. */
        struct iovec *v = &iov[k - done];
        for (size_t e = k; e < j; e++) {
          iov[e - done].iov_base = b.data + b.off[e];
          iov[e - done].iov_len = b.len[e];
        }
        mh->msg_iov = v;
        mh->msg_iovlen = j - k;
        mh->msg_control = ctl[nmsg].buf;
        mh->msg_controllen = sizeof ctl[nmsg].buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(mh);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = (uint16_t)b.len[k];
        memcpy(CMSG_DATA(c), &size, sizeof size);
        groups++;
      } else {
        iov[k - done].iov_base = b.data + b.off[k];
        iov[k - done].iov_len = b.len[k];
        mh->msg_iov = &iov[k - done];
        mh->msg_iovlen = 1;
      }
      nmsg++;
      k = j;
      if (k - done >= S4_MAX_BATCH) break; /* iov[] is full */
    }
    first[nmsg] = (uint32_t)k;
    /*
     * The kernel sets DF on a datagram no longer than the route's MTU (IP_PMTUDISC_WANT, the default), judging a
     * UDP_SEGMENT send by its whole length: it would send the segments without DF. With IP_PMTUDISC_DO for the
     * call they carry DF as each would alone (all fit the MTU: the kernel refuses a segment size that does not);
     * a datagram alone that no longer fits (a smaller path MTU) is refused then, not fragmented: it goes again
     * after the call, as before. Restored at the end.
     */
    if (groups && pmtu_saved < 0) {
      socklen_t sl = sizeof pmtu_saved;
      int v = IP_PMTUDISC_DO;
      if (getsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu_saved, &sl) != 0 ||
          setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof v) != 0)
        pmtu_saved = -1;
    }

    /*
     * sendmmsg stops at the first failing message: it returns how many went
     * before it, or -1 if the very first one failed. So on -1 the message at
     * `sent` is the culprit and is skipped, after one retry when the error
     * may be an ICMP error about an earlier datagram: the kernel reports
     * those once (sk_err) on whatever call comes next, this datagram
     * included, and the retry sends it for real.
     */
    size_t sent = 0;
    int retried = 0, regroup = 0;
    while (sent < nmsg) {
      int n = sendmmsg(fd, msgs + sent, (unsigned)(nmsg - sent), MSG_DONTWAIT);
      if (n > 0) {
        if (grouping)
          for (size_t m = sent; m < sent + (size_t)n; m++)
            if (first[m + 1] - first[m] > 1) {
              gso[U_SENDS]++;
              gso[U_DATAGRAMS] += first[m + 1] - first[m];
            }
        sent += (size_t)n;
        retried = 0;
        continue;
      }
      if (n == 0) break; /* not expected from the kernel; avoid spinning */
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (programming_error(errno)) {
        if (first[sent] > 0) break; /* report progress; next call will throw */
        int err = errno;
        restore_pmtu(fd, &pmtu_saved);
        s4_throw_errno(env, err, "sendmmsg");
        return NULL;
      }
      if (!retried && icmp_induced(errno)) {
        retried = 1;
        continue;
      }
      if (errno == EMSGSIZE && pmtu_saved >= 0 && plain_until < first[sent + 1]) {
        /* Too long for the path as sent here (one datagram under DO, or a group's segment size): these again,
         * one by one, as before (the kernel fragments one that does not fit, or refuses it). */
        plain_until = first[sent + 1];
        restore_pmtu(fd, &pmtu_saved);
        regroup = 1;
        break;
      }
      if (first[sent + 1] - first[sent] > 1 && (errno == EIO || errno == EINVAL)) {
        /* The kernel does not take UDP_SEGMENT here: off for good, and this group again one by one. */
        gso[U_ON] = 0;
        gso[U_OFF]++;
        regroup = 1;
        break;
      }
      retried = 0;
      *refused += first[sent + 1] - first[sent];
      sent++;
    }
    done = first[sent];
    if (regroup) continue;
    if (sent < nmsg) break;
  }
  restore_pmtu(fd, &pmtu_saved);
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
  if (s4_batch_slots(env, &b, slot, einfo_len, &cap) != 0) return NULL;
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
  if ((st = s4_export_fn(env, exports, "udpRecvGro", udp_recv_gro)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "udpGro", udp_gro)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "udpRecvErrors", udp_recv_errors)) != napi_ok) return st;
  return s4_export_fn(env, exports, "udpSend", udp_send);
}
