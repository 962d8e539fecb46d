// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4 native I/O addon: the host's routing state changing, as rtnetlink announces it. The fast path's programs
 * keep the FIB's answers (agent/bpf/fastpath.bpf.h) for one generation of the host's routes; the router starts a new
 * generation on each notification that may change an answer (agent/bpf/routes.ts). One socket, no child process:
 * routeWatch() opens it, subscribed; routeWatchDrain() reads what arrived and says how many notifications matter.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef RTNLGRP_NEXTHOP
#define RTNLGRP_NEXTHOP 32 /* Linux 5.3: nexthop objects */
#endif

/* What can change a FIB answer: routes, policy rules, addresses (local and connected routes), links (up, down, MTU),
 * neighbours (the IPv4 next hop's MAC), the forwarding switches (netconf) and nexthop objects. */
static const int GROUPS[] = {
    RTNLGRP_LINK,        RTNLGRP_NEIGH,       RTNLGRP_IPV4_IFADDR,  RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV4_RULE,   RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE,   RTNLGRP_IPV6_RULE,
    RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV6_NETCONF, RTNLGRP_NEXTHOP,
};

/* routeWatch(): a non-blocking NETLINK_ROUTE socket subscribed to GROUPS (close it with close()). */
static napi_value route_watch(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    s4_throw_errno(env, errno, "socket(AF_NETLINK)");
    return NULL;
  }
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int err = errno;
    close(fd);
    s4_throw_errno(env, err, "bind(AF_NETLINK)");
    return NULL;
  }
  /* Room for a burst (a daemon installing a full table): an overrun is only a new generation, not a loss. */
  int rcvbuf = 1 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  for (size_t i = 0; i < sizeof GROUPS / sizeof GROUPS[0]; i++) {
    int g = GROUPS[i];
    /* A kernel without a group (nexthop objects before 5.3) refuses it: the others still tell the rest. */
    if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof g) < 0 && g != RTNLGRP_NEXTHOP) {
      int err = errno;
      close(fd);
      s4_throw_errno(env, err, "setsockopt(NETLINK_ADD_MEMBERSHIP)");
      return NULL;
    }
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

/*
 * Whether one notification may change an answer the programs keep. Neighbours matter only as IPv4 next hops on the
 * uplink (the direct IPv6 path resolves its neighbour in the kernel, per packet): the NOARP entries the kernel makes
 * on the TUN for every peer it sends to, and the IPv6 neighbours, would start a generation for nothing.
 */
static int matters(const struct nlmsghdr *h, uint32_t uplink) {
  if (h->nlmsg_type == RTM_NEWNEIGH || h->nlmsg_type == RTM_DELNEIGH) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ndmsg))) return 0;
    const struct ndmsg *n = NLMSG_DATA(h);
    return n->ndm_family == AF_INET && (uint32_t)n->ndm_ifindex == uplink;
  }
  return h->nlmsg_type != NLMSG_NOOP && h->nlmsg_type != NLMSG_DONE;
}

/* routeWatchDrain(fd, uplinkIfindex): reads every notification waiting; how many matter (an overrun counts as one). */
static napi_value route_watch_drain(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  int fd;
  uint32_t uplink;
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_u32(env, argv[1], "uplink ifindex", UINT32_MAX, &uplink) != 0) return NULL;
  static __thread char buf[32768] __attribute__((aligned(NLMSG_ALIGNTO)));
  uint32_t n = 0;
  for (;;) {
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) { /* notifications were lost: any of them may have mattered */
        n++;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      s4_throw_errno(env, errno, "recv(AF_NETLINK)");
      return NULL;
    }
    /* A datagram that filled the buffer may have been cut short: whatever it held may have mattered. */
    if ((size_t)got == sizeof buf) n++;
    int len = (int)got;
    for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len))
      if (matters(h, uplink)) n++;
  }
  napi_value result;
  napi_create_uint32(env, n, &result);
  return result;
}

napi_status s4_init_routes(napi_env env, napi_value exports) {
  napi_status s = s4_export_fn(env, exports, "routeWatch", route_watch);
  if (s != napi_ok) return s;
  return s4_export_fn(env, exports, "routeWatchDrain", route_watch_drain);
}
