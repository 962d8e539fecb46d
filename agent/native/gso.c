// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4 native I/O addon: TUN offload (IFF_VNET_HDR + TUNSETOFFLOAD), as wireguard-go does it
 * (tun/offload_linux.go). With TSO on the TUN, the kernel hands the router a whole TCP (or, with USO, UDP)
 * super-packet per read, with a virtio_net_hdr in front saying how to cut it; tunReadGso cuts it here, in C, into
 * the packets the kernel would have handed over one read each without the offload (each segment's IPv6 payload
 * length, TCP sequence number, flags and checksum, or UDP length and checksum, as the kernel's software
 * segmentation makes them), one per batch entry, so the engine decides on every segment exactly as before.
 *
 * A super-packet may need more entries than the batch has left: the rest waits in the carry buffer, with its
 * place in state[], and the next call hands it out before it reads again.
 */
#define _GNU_SOURCE
#include "common.h"
#include "csum.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif

/* The carry state (a Uint32Array of S4_GSO_STATE entries; agent/io/batch.ts newTunGso): where a cut stands. */
enum {
  G_LEN = 0,    /* bytes of the super-packet in the carry buffer; 0: nothing waits */
  G_NEXT,       /* offset of the next segment's payload */
  G_INDEX,      /* number of the next segment */
  G_SIZE,       /* gso_size: payload bytes a segment */
  G_HDR,        /* bytes of headers every segment repeats (IPv6 + extension headers + TCP/UDP) */
  G_CSUM_START, /* where TCP/UDP starts */
  G_CSUM_OFF,   /* the checksum's offset in it */
  G_KIND,       /* IPPROTO_TCP or IPPROTO_UDP */
  /* counters, added to by each call (the caller takes and zeroes them) */
  G_PACKETS,    /* super-packets read */
  G_SEGMENTS,   /* segments cut from them */
  G_CSUMS,      /* single packets whose checksum the kernel left to us (NEEDS_CSUM), completed */
  G_BAD,        /* super-packets that could not be cut (handed over whole: the engine drops them) */
  S4_GSO_STATE = 16
};

/*
 * Completes a checksum the kernel left partial (CHECKSUM_PARTIAL: the field holds the pseudo-header's sum), as
 * skb_checksum_help does: the sum from start to the end, with a result of 0 sent as 0xffff.
 */
static int complete_csum(uint8_t *pkt, size_t len, size_t start, size_t off) {
  if (start + off + 2 > len) return -1;
  uint64_t sum = s4_get16(pkt + start + off);
  s4_put16(pkt + start + off, 0);
  uint16_t c = (uint16_t)~s4_csum_fold(s4_csum_add(sum, pkt + start, len - start));
  s4_put16(pkt + start + off, c ? c : 0xffff);
  return 0;
}

/*
 * Cuts segment state[G_INDEX] of the super-packet in in (len bytes) into out (room bytes); returns its length (which
 * may exceed room: then only its first room bytes are there, and the engine drops it as oversize).
 */
static size_t cut_segment(const uint8_t *in, size_t len, uint32_t *st, uint8_t *out, size_t room) {
  size_t hdr = st[G_HDR], cs = st[G_CSUM_START], at = st[G_NEXT];
  size_t end = at + st[G_SIZE] < len ? at + st[G_SIZE] : len;
  size_t seg = hdr + (end - at);
  int last = end == len;
  if (seg > room) {
    /* Not worth cutting: the engine only needs to see that it is too long. */
    memcpy(out, in, room < hdr ? room : hdr);
  } else {
    memcpy(out, in, hdr);
    memcpy(out + hdr, in + at, end - at);
    s4_put16(out + 4, (uint16_t)(seg - 40)); /* IPv6 payload length */
    if (st[G_KIND] == IPPROTO_TCP) {
      uint32_t seq;
      memcpy(&seq, in + cs + 4, 4);
      seq = htonl(ntohl(seq) + st[G_SIZE] * st[G_INDEX]);
      memcpy(out + cs + 4, &seq, 4);
      /* As the kernel's tcp_gso_segment: FIN and PSH on the last segment only, CWR on the first only. */
      if (!last) out[cs + 13] &= (uint8_t)~0x09;
      if (st[G_INDEX] > 0) out[cs + 13] &= (uint8_t)~0x80;
      s4_put16(out + cs + 16, 0);
      s4_put16(out + cs + 16,
            (uint16_t)~s4_csum_fold(s4_csum_add(s4_pseudo6(out, (uint32_t)(seg - cs), IPPROTO_TCP), out + cs, seg - cs)));
    } else {
      s4_put16(out + cs + 4, (uint16_t)(seg - cs)); /* UDP length */
      s4_put16(out + cs + 6, 0);
      uint16_t c =
          (uint16_t)~s4_csum_fold(s4_csum_add(s4_pseudo6(out, (uint32_t)(seg - cs), IPPROTO_UDP), out + cs, seg - cs));
      s4_put16(out + cs + 6, c ? c : 0xffff);
    }
  }
  st[G_NEXT] = (uint32_t)end;
  st[G_INDEX]++;
  st[G_SEGMENTS]++;
  if (last) st[G_LEN] = 0;
  return seg;
}

/*
 * Reads the virtio_net_hdr of a super-packet of len bytes in buf and sets up its cut in st; -1 when it cannot be cut
 * (not IPv6, a GSO type other than TCPv6 or UDP, headers that do not add up).
 */
static int start_cut(const uint8_t *buf, size_t len, const struct virtio_net_hdr *h, uint32_t *st) {
  uint8_t type = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
  size_t cs = h->csum_start, hdr;
  if (len < 40 || (buf[0] >> 4) != 6 || !(h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) || cs < 40 || h->gso_size == 0)
    return -1;
  if (type == VIRTIO_NET_HDR_GSO_TCPV6) {
    if (len < cs + 20 || h->csum_offset != 16) return -1;
    /* hdr_len is not to be trusted (it can be the whole first packet on a forwarded one): TCP's data offset is. */
    hdr = cs + (size_t)(buf[cs + 12] >> 4) * 4;
    if (hdr < cs + 20) return -1;
    st[G_KIND] = IPPROTO_TCP;
  } else if (type == VIRTIO_NET_HDR_GSO_UDP_L4) {
    if (h->csum_offset != 6) return -1;
    hdr = cs + 8;
    st[G_KIND] = IPPROTO_UDP;
  } else {
    return -1;
  }
  if (hdr >= len) return -1;
  st[G_LEN] = (uint32_t)len;
  st[G_NEXT] = (uint32_t)hdr;
  st[G_INDEX] = 0;
  st[G_SIZE] = h->gso_size;
  st[G_HDR] = (uint32_t)hdr;
  st[G_CSUM_START] = (uint32_t)cs;
  st[G_CSUM_OFF] = h->csum_offset;
  return 0;
}

static int get_u32_array(napi_env env, napi_value v, size_t min, uint32_t **out) {
  napi_typedarray_type t;
  size_t n, boff;
  void *p;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &t, &n, &p, &ab, &boff) != napi_ok || t != napi_uint32_array || n < min) {
    s4_throw_type(env, "state must be a Uint32Array of 16 entries");
    return -1;
  }
  *out = p;
  return 0;
}

/*
 * tunReadGso(fd, data, off, len, slot, carry, state): count
 * tunRead for a TUN opened with IFF_VNET_HDR: packet i at off[i] = i * slot (len[i] > slot: too long, only its
 * start is there), super-packets cut into segments, partial checksums completed.
 */
static napi_value tun_read_gso(napi_env env, napi_callback_info info) {
  S4_ARGS(7);
  int fd;
  uint32_t slot, *st;
  s4_batch b;
  size_t cap, n = 0, carry_len;
  uint8_t *carry;
  napi_value result;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 0, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[4], "slot", UINT32_MAX, &slot) != 0) return NULL;
  {
    bool is_buf;
    void *p;
    if (napi_is_buffer(env, argv[5], &is_buf) != napi_ok || !is_buf ||
        napi_get_buffer_info(env, argv[5], &p, &carry_len) != napi_ok || carry_len <= 65536) {
      s4_throw_type(env, "carry must be a Buffer of more than 65536 bytes");
      return NULL;
    }
    carry = p;
  }
  if (get_u32_array(env, argv[6], S4_GSO_STATE, &st) != 0) return NULL;
  if (s4_batch_slots(env, &b, slot, SIZE_MAX, &cap) != 0) return NULL;
  if (st[G_LEN] > carry_len) st[G_LEN] = 0; /* not ours: start over */

  while (n < cap) {
    if (st[G_LEN]) {
      uint8_t *out = b.data + n * slot;
      b.off[n] = (uint32_t)(n * slot);
      b.len[n] = (uint32_t)cut_segment(carry, st[G_LEN], st, out, slot);
      n++;
      continue;
    }
    struct virtio_net_hdr h;
    struct iovec iov[2] = { { &h, sizeof h }, { carry, carry_len } };
    ssize_t r = readv(fd, iov, 2);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (n > 0) break; /* hand over what we have; the error recurs next call */
      s4_throw_errno(env, errno, "read");
      return NULL;
    }
    if ((size_t)r < sizeof h) continue; /* nothing after the header: nothing to forward */
    size_t len = (size_t)r - sizeof h;
    if (len == carry_len) {
      /* It filled the carry buffer, so it may have been longer (the read cut it off): not to be cut as it is. */
      st[G_BAD]++;
      continue;
    }
    if (h.gso_type != VIRTIO_NET_HDR_GSO_NONE) {
      if (start_cut(carry, len, &h, st) == 0) {
        st[G_PACKETS]++;
        continue; /* cut at the top of the loop */
      }
      /*
       * One it cannot cut (IPv4 UDP, headers that do not add up) goes to the engine whole, which drops it by its
       * rules (too long, not IPv6, ...), as it counts everything the TUN gives it; its checksum completed first,
       * where the kernel left it partial, so that nothing leaves with one unfinished.
       */
      st[G_BAD]++;
    }
    if (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      if (complete_csum(carry, len, h.csum_start, h.csum_offset) != 0) {
        st[G_BAD]++;
        continue;
      }
      if (h.gso_type == VIRTIO_NET_HDR_GSO_NONE) st[G_CSUMS]++;
    }
    memcpy(b.data + n * slot, carry, len < slot ? len : slot);
    b.off[n] = (uint32_t)(n * slot);
    b.len[n] = (uint32_t)len;
    n++;
  }
  napi_create_uint32(env, (uint32_t)n, &result);
  return result;
}

/* tunOffload(fd): whether the TUN queue fd was opened with IFF_VNET_HDR (its reads and writes carry the header). */
static napi_value tun_offload(napi_env env, napi_callback_info info) {
  S4_ARGS(1);
  int fd;
  struct ifreq ifr;
  napi_value result;
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) != 0) {
    s4_throw_errno(env, errno, "ioctl(TUNGETIFF)");
    return NULL;
  }
  napi_get_boolean(env, (ifr.ifr_flags & IFF_VNET_HDR) != 0, &result);
  return result;
}

/* udpGso(fd): whether the kernel takes UDP_SEGMENT on this socket (Linux 4.18+): sends may carry it. */
static napi_value udp_gso(napi_env env, napi_callback_info info) {
  S4_ARGS(1);
  int fd, zero = 0;
  napi_value result;
  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  napi_get_boolean(env, setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0, &result);
  return result;
}

napi_status s4_init_gso(napi_env env, napi_value exports) {
  napi_status st;
  if ((st = s4_export_fn(env, exports, "tunReadGso", tun_read_gso)) != napi_ok) return st;
  if ((st = s4_export_fn(env, exports, "tunOffload", tun_offload)) != napi_ok) return st;
  return s4_export_fn(env, exports, "udpGso", udp_gso);
}
