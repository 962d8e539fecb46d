/*
 * packetSend(ifname, frame): one whole Ethernet frame out of an interface through an AF_PACKET socket. A failover
 * member announces the addresses it takes over with gratuitous ARP (and the moving MAC with it); the kernel sends
 * no gratuitous ARP on request, and shelling out to arping for every announcement costs a process each time. The
 * frame is built in TypeScript (agent/failover/frames.ts); the socket is opened per call: announcements are rare.
 */
#include "common.h"

#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static napi_value packet_send(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  char name[IF_NAMESIZE];
  void *data;
  size_t len;
  bool is_typed;
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  if (s4_arg_str(env, argv[0], "interface name", name, sizeof name) != 0) return NULL;
  if (napi_is_typedarray(env, argv[1], &is_typed) != napi_ok) return NULL;
  if (!is_typed) {
    s4_throw_type(env, "frame must be a Uint8Array");
    return NULL;
  }
  if (napi_get_typedarray_info(env, argv[1], &t, &len, &data, &ab, &off) != napi_ok) return NULL;
  if (t != napi_uint8_array || len < 14 || len > 1514) {
    s4_throw_range(env, "frame must be a Uint8Array of 14..1514 bytes (an Ethernet header and its payload)");
    return NULL;
  }
  unsigned idx = if_nametoindex(name);
  if (idx == 0) {
    s4_throw_errno(env, errno, "if_nametoindex");
    return NULL;
  }
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    s4_throw_errno(env, errno, "socket");
    return NULL;
  }
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_ifindex = (int)idx;
  sll.sll_halen = ETH_ALEN;
  memcpy(sll.sll_addr, data, ETH_ALEN);
  ssize_t n;
  do n = sendto(fd, data, len, 0, (struct sockaddr *)&sll, sizeof sll);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) {
    s4_throw_errno(env, err, "sendto");
    return NULL;
  }
  return NULL;
}

napi_status s4_init_packet(napi_env env, napi_value exports) {
  return s4_export_fn(env, exports, "packetSend", packet_send);
}
