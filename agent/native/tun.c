// SPDX-License-Identifier: BSD-2-Clause
/* sixbed4 native I/O addon: TUN devices, fd helpers, interface lookup and offload state. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/*
 * Whether the existing TUN interface name was opened with IFF_VNET_HDR (sysfs tun_flags); -1 when there is no such
 * TUN interface. The flag belongs to the interface, not to a queue: a queue attached with another one would change
 * what the queues already open read and write.
 */
static int existing_vnet_hdr(const char *name) {
  char path[64 + IFNAMSIZ], buf[32];
  unsigned long flags;
  snprintf(path, sizeof path, "/sys/class/net/%s/tun_flags", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (r <= 0) return -1;
  buf[r] = '\0';
  flags = strtoul(buf, NULL, 16);
  return (flags & IFF_VNET_HDR) != 0;
}

/*
 * The offloads asked of the kernel: checksums, TSO for IPv6 (what the router's TUN carries; IPv4 TCP, which it
 * never routes there, the kernel goes on cutting itself), and USO where the kernel has it (6.2+; both families or
 * neither).
 */
#define S4_TUN_F_USO4 0x20
#define S4_TUN_F_USO6 0x40
static int set_offload(int fd) {
  if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO6 | S4_TUN_F_USO4 | S4_TUN_F_USO6) == 0) return 0;
  return ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO6);
}

/*
 * tunOpen(name: string, multiQueue: boolean, offload?: boolean): { fd, name, offload }
 * offload: open with IFF_VNET_HDR and TUNSETOFFLOAD (checksum, TSO6, USO), so a read may return a whole GSO
 * super-packet (read it with tunReadGso, write with the header: tunWrite's vnet). When the kernel refuses, or the
 * interface exists already without it (a handover from a router that had it off), the queue opens without; the
 * result's offload says which.
 */
static napi_value tun_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char name[IFNAMSIZ];
  bool mq, offload = false;
  struct ifreq ifr;
  int fd;
  napi_value result, vfd, vname, voff;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) {
    s4_throw_type(env, "not enough arguments");
    return NULL;
  }
  if (s4_arg_str(env, argv[0], "name", name, sizeof name) != 0) return NULL;
  if (s4_arg_bool(env, argv[1], "multiQueue", &mq) != 0) return NULL;
  if (argc > 2) {
    napi_valuetype t;
    if (napi_typeof(env, argv[2], &t) != napi_ok) return NULL;
    if (t != napi_undefined && s4_arg_bool(env, argv[2], "offload", &offload) != 0) return NULL;
  }
  if (argc > 2 && name[0]) {
    int existing = existing_vnet_hdr(name);
    if (existing >= 0) offload = existing; /* adopting a running interface: its mode, whatever was asked */
  }
reopen:

  fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    s4_throw_errno(env, errno, "open");
    return NULL;
  }
  memset(&ifr, 0, sizeof ifr);
  /* No packet-info header: every read/write is exactly one IP packet. */
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (mq ? IFF_MULTI_QUEUE : 0) | (offload ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, strlen(name)); /* fits: checked against IFNAMSIZ */
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    s4_throw_errno(env, err, "ioctl(TUNSETIFF)");
    return NULL;
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  if (offload && set_offload(fd) != 0) {
    /* The header without the offloads would only cost: open again without either. */
    close(fd);
    offload = false;
    goto reopen;
  }

  if (napi_create_object(env, &result) != napi_ok ||
      napi_create_int32(env, fd, &vfd) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &vname) != napi_ok ||
      napi_get_boolean(env, offload, &voff) != napi_ok ||
      napi_set_named_property(env, result, "fd", vfd) != napi_ok ||
      napi_set_named_property(env, result, "name", vname) != napi_ok ||
      napi_set_named_property(env, result, "offload", voff) != napi_ok) {
    close(fd);
    return NULL;
  }
  return result;
}

/* close(fd) */
static napi_value fd_close(napi_env env, napi_callback_info info) {
  S4_ARGS(1);
  int fd;
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  /*
   * Linux releases the fd even when close() reports EINTR, so retrying could
   * close an unrelated fd another thread just opened; only EBADF is an error.
   */
  if (close(fd) != 0 && errno == EBADF) s4_throw_errno(env, EBADF, "close");
  return NULL;
}

/*
 * Errors after which the fd is unusable (the caller must close it), as
 * opposed to a packet the kernel refused (EINVAL for a malformed packet,
 * EIO while the interface is down, ENOMEM, ...), which is dropped.
 */
static int fatal_fd_error(int err) {
  return err == EBADF || err == EBADFD || err == EFAULT;
}

/* tunRead(fd, data, off, len, slot): count */
static napi_value tun_read(napi_env env, napi_callback_info info) {
  S4_ARGS(5);
  int fd;
  uint32_t slot;
  s4_batch b;
  size_t cap, n = 0;
  napi_value result;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 0, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[4], "slot", UINT32_MAX, &slot) != 0) return NULL;
  if (s4_batch_slots(env, &b, slot, SIZE_MAX, &cap) != 0) return NULL;

  /*
   * A TUN fd hands out one packet per read(), and silently truncates a packet
   * longer than the buffer, returning only the copied length. The second
   * iovec catches the excess, so the returned length is the packet's real
   * length and a packet that did not fit shows up as len > slot (dropped
   * upstream as oversize) instead of as a valid-looking shorter packet.
   * 64 KiB covers the largest possible TUN MTU.
   */
  uint8_t overflow[65536];
  struct iovec iov[2];
  iov[1].iov_base = overflow;
  iov[1].iov_len = sizeof overflow;
  while (n < cap) {
    ssize_t r;
    iov[0].iov_base = b.data + n * slot;
    iov[0].iov_len = slot;
    r = readv(fd, iov, 2);
    if (r >= 0) {
      b.off[n] = (uint32_t)(n * slot);
      b.len[n] = (uint32_t)r;
      n++;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (n > 0) break; /* hand over what we have; the error recurs next call */
    s4_throw_errno(env, errno, "read");
    return NULL;
  }
  napi_create_uint32(env, (uint32_t)n, &result);
  return result;
}

/*
 * tunWrite(fd, data, off, len, count, refused, vnet?): written (incl. dropped; refused[0] += dropped)
 * vnet: the queue has IFF_VNET_HDR; each packet goes with an empty header (no GSO, its checksums complete).
 */
static napi_value tun_write(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  int fd;
  uint32_t count, *refused;
  s4_batch b;
  size_t i = 0;
  bool vnet = false;
  uint8_t hdr[10] = { 0 }; /* struct virtio_net_hdr: flags 0, gso_type NONE */
  napi_value result;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) {
    s4_throw_type(env, "not enough arguments");
    return NULL;
  }
  if (argc > 6) {
    napi_valuetype t;
    if (napi_typeof(env, argv[6], &t) != napi_ok) return NULL;
    if (t != napi_undefined && s4_arg_bool(env, argv[6], "vnet", &vnet) != 0) return NULL;
  }
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 0, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[4], "count", UINT32_MAX, &count) != 0) return NULL;
  if (s4_check_entries(env, &b, count) != 0) return NULL;
  if (s4_arg_counter(env, argv[5], &refused) != 0) return NULL;

  i = 0;
  while (i < count) {
    struct iovec iov[2] = { { hdr, sizeof hdr }, { b.data + b.off[i], b.len[i] } };
    ssize_t r = vnet ? writev(fd, iov, 2) : write(fd, b.data + b.off[i], b.len[i]);
    if (r >= 0) {
      i++;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (fatal_fd_error(errno)) {
      if (i > 0) break; /* report progress; the error recurs next call */
      s4_throw_errno(env, errno, "write");
      return NULL;
    }
    i++; /* the kernel refused this packet: drop it */
    (*refused)++;
  }
  napi_create_uint32(env, (uint32_t)i, &result);
  return result;
}

/* ifIndex(name): index, 0 when there is no such interface */
static napi_value if_index(napi_env env, napi_callback_info info) {
  S4_ARGS(1);
  char name[IFNAMSIZ];
  napi_value result;
  napi_valuetype t;

  /* Names that cannot exist (too long) simply have no index. */
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_string) {
    s4_throw_type(env, "name must be a string");
    return NULL;
  }
  {
    size_t n;
    napi_get_value_string_utf8(env, argv[0], NULL, 0, &n);
    if (n >= sizeof name) {
      napi_create_uint32(env, 0, &result);
      return result;
    }
  }
  if (s4_arg_str(env, argv[0], "name", name, sizeof name) != 0) return NULL;
  napi_create_uint32(env, if_nametoindex(name), &result);
  return result;
}

/*
 * txChecksum(name): whether the interface offers to complete checksums on
 * transmit (ethtool's tx-checksumming; ETHTOOL_GTXCSUM). The fast path asks:
 * a packet whose checksum a local sender left to the hardware stays
 * unfinished through a virtual device that offers it (a veth hands it on as
 * it is), where a NIC, or the kernel for a device that does not offer it,
 * completes it.
 */
/* One ethtool_value request (SIOCETHTOOL) on the interface name: 0, or -1 with a JS error thrown. */
static int ethtool_value(napi_env env, const char *name, struct ethtool_value *ev) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    s4_throw_errno(env, errno, "socket");
    return -1;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, strlen(name));
  ifr.ifr_data = (void *)ev;
  int r = ioctl(fd, SIOCETHTOOL, &ifr);
  int err = errno;
  close(fd);
  if (r < 0) {
    s4_throw_errno(env, err, "ioctl(SIOCETHTOOL)");
    return -1;
  }
  return 0;
}

static napi_value tx_checksum(napi_env env, napi_callback_info info) {
  S4_ARGS(1);
  char name[IFNAMSIZ];
  struct ethtool_value ev = { .cmd = ETHTOOL_GTXCSUM };
  napi_value result;
  if (s4_arg_str(env, argv[0], "name", name, sizeof name) != 0 || ethtool_value(env, name, &ev) != 0) return NULL;
  napi_get_boolean(env, ev.data != 0, &result);
  return result;
}

/*
 * ethtoolSet(name, feature, on): turns one of the interface's offloads on or
 * off with ethtool's legacy switches, as `ethtool -K` does: "tso" (every TSO
 * kind, ETHTOOL_STSO) or "gro" (ETHTOOL_SGRO). The fast path's GRO pair needs
 * both (agent/bpf/gro.ts); an ioctl, so that no ethtool binary is needed.
 */
static napi_value ethtool_set(napi_env env, napi_callback_info info) {
  S4_ARGS(3);
  char name[IFNAMSIZ], feature[8];
  bool on;
  if (s4_arg_str(env, argv[0], "name", name, sizeof name) != 0 ||
      s4_arg_str(env, argv[1], "feature", feature, sizeof feature) != 0 || s4_arg_bool(env, argv[2], "on", &on) != 0)
    return NULL;
  struct ethtool_value ev = { .data = on ? 1 : 0 };
  if (strcmp(feature, "tso") == 0)
    ev.cmd = ETHTOOL_STSO;
  else if (strcmp(feature, "gro") == 0)
    ev.cmd = ETHTOOL_SGRO;
  else {
    s4_throw_range(env, "feature must be 'tso' or 'gro'");
    return NULL;
  }
  ethtool_value(env, name, &ev);
  return NULL;
}

napi_status s4_init_tun(napi_env env, napi_value exports) {
  napi_status st;
  if ((st = s4_export_fn(env, exports, "tunOpen", tun_open)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "ethtoolSet", ethtool_set)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "tunRead", tun_read)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "tunWrite", tun_write)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "close", fd_close)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "txChecksum", tx_checksum)) != napi_ok) return st;
  return s4_export_fn(env, exports, "ifIndex", if_index);
}
