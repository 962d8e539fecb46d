// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4 native I/O addon: TCP coalescing into the TUN's writes (peers → kernel), as wireguard-go does it
 * (tun/offload_linux.go, tcpGRO). The engine has decided on every packet of a batch one by one; among the packets
 * it hands to the TUN, consecutive TCP/IPv6 segments of one flow that the kernel's own GRO would have merged are
 * written as one super-packet, with a virtio_net_hdr asking the kernel to cut it again (GSO TCPV6) where it must:
 * on the uplink, segment by segment, the same TCP/IPv6 packets as written one by one (the kernel's tcp_gso_segment
 * repeats the first one's headers, advances the sequence number, puts PSH on the last only, makes each checksum).
 *
 * So only what that cut gives back exactly is merged: the same IPv6 header but for the payload length (version,
 * traffic class, flow label, hop limit, addresses; no extension header), the same TCP header but for the sequence
 * number and PSH (ports, acknowledgment, data offset, window, urgent pointer, options byte for byte, so timestamps
 * too, as the kernel's GRO and wireguard-go ask), only ACK set (PSH too on the last one), consecutive sequence
 * numbers, the same payload size but for a shorter last one, and each one's checksum right (a wrong one is written
 * alone, for the kernel to drop it: merged, the kernel's new checksums would hide it). A super-packet stays within
 * 64 KiB and S4_COALESCE_MAX_SEGS segments. Nothing else changes: what cannot be merged is written as tunWrite
 * does, with an empty header. The payloads are not copied: one writev per super-packet, the headers (amended in a
 * copy) then each segment's payload where it lies in the batch.
 */
#define _GNU_SOURCE
#include "common.h"
#include "csum.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/virtio_net.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* Segments in one super-packet at most (the 64 KiB bound comes first at the tunnel's 1280-byte MTU: 53). */
#define S4_COALESCE_MAX_SEGS 64
/* The largest super-packet: its IPv6 payload length is a 16-bit field. */
#define S4_COALESCE_MAX_LEN (40 + 65535)

#define TCP_ACK 0x10
#define TCP_PSH 0x08

/* The counters (a Uint32Array of at least 4; agent/io/batch.ts TUN_COALESCE_*), added to; the caller zeroes them. */
enum {
  C_PACKETS = 0, /* super-packets written */
  C_SEGMENTS,    /* segments merged into them */
  C_REFUSED,     /* super-packets the kernel refused (their segments then written one by one) */
  S4_COALESCE_STATE = 4
};

/*
 * Whether p (len bytes) is a TCP/IPv6 segment that may take part in a merge: no extension header, lengths that add
 * up, only ACK (or ACK+PSH), some payload. Returns its TCP header length, 0 when it may not.
 */
static size_t candidate(const uint8_t *p, size_t len) {
  if (len < 60 || len > S4_COALESCE_MAX_LEN || (p[0] >> 4) != 6 || p[6] != IPPROTO_TCP) return 0;
  if (s4_get16(p + 4) != len - 40) return 0;
  size_t thl = (size_t)(p[52] >> 4) * 4;
  if (thl < 20 || len <= 40 + thl) return 0; /* no payload: nothing to merge */
  uint8_t fl = p[53];
  if (fl != TCP_ACK && fl != (TCP_ACK | TCP_PSH)) return 0;
  return thl;
}

/* Whether the TCP checksum of p (len bytes, a candidate) is right. */
static int csum_ok(const uint8_t *p, size_t len) {
  return s4_csum_fold(s4_csum_add(s4_pseudo6(p, (uint32_t)(len - 40), IPPROTO_TCP), p + 40, len - 40)) == 0xffff;
}

/*
 * How many entries from i on (of count) make one super-packet: 1 when entry i goes alone. *gso: the payload size of
 * its segments (all but a shorter last one).
 */
static size_t group(const s4_batch *b, size_t i, size_t count, size_t *gso) {
  const uint8_t *h = b->data + b->off[i];
  size_t hlen = b->len[i], thl = candidate(h, hlen);
  *gso = 0;
  if (!thl || (h[53] & TCP_PSH) || i + 1 >= count || !csum_ok(h, hlen)) return 1;
  size_t size = hlen - 40 - thl, total = hlen, n = 1;
  uint32_t next = s4_get32(h + 44) + (uint32_t)size;
  while (i + n < count && n < S4_COALESCE_MAX_SEGS) {
    const uint8_t *p = b->data + b->off[i + n];
    size_t len = b->len[i + n];
    if (candidate(p, len) != thl) break;
    size_t pay = len - 40 - thl;
    if (pay > size || total + pay > S4_COALESCE_MAX_LEN) break;
    /* IPv6: version, traffic class, flow label; hop limit, addresses (the payload length differs). */
    if (memcmp(p, h, 4) != 0 || p[7] != h[7] || memcmp(p + 8, h + 8, 32) != 0) break;
    /* TCP: ports; the next sequence number; acknowledgment; data offset; window, urgent pointer; options. */
    if (memcmp(p + 40, h + 40, 4) != 0 || s4_get32(p + 44) != next || memcmp(p + 48, h + 48, 5) != 0 ||
        memcmp(p + 54, h + 54, 2) != 0 || memcmp(p + 58, h + 58, thl - 18) != 0)
      break;
    if (!csum_ok(p, len)) break;
    total += pay;
    next += (uint32_t)pay;
    n++;
    if (pay < size || (p[53] & TCP_PSH)) break; /* nothing may follow a shorter one, nor one with PSH */
  }
  if (n > 1) *gso = size;
  return n;
}

/* Errors after which the fd is unusable (as tun.c's): the caller must close it. */
static int fatal_fd_error(int err) {
  return err == EBADF || err == EBADFD || err == EFAULT;
}

/* Writes entry i alone with an empty virtio_net_hdr: 1 written (or refused), 0 on EAGAIN, -errno when fatal. */
static int write_one(int fd, const s4_batch *b, size_t i, uint32_t *refused) {
  uint8_t vh[sizeof(struct virtio_net_hdr)] = { 0 };
  struct iovec iov[2] = { { vh, sizeof vh }, { b->data + b->off[i], b->len[i] } };
  for (;;) {
    if (writev(fd, iov, 2) >= 0) return 1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (fatal_fd_error(errno)) return -errno;
    (*refused)++;
    return 1;
  }
}

/*
 * Writes entries [i, i + n) (n >= 2, gso their payload size) as one super-packet: 1 written, 0 on EAGAIN, -1 when
 * the kernel refused it (nothing written), -errno-1 when the fd is unusable.
 */
static int write_merged(int fd, const s4_batch *b, size_t i, size_t n, size_t gso) {
  const uint8_t *h = b->data + b->off[i];
  size_t thl = (size_t)(h[52] >> 4) * 4, hdr = 40 + thl, total = hdr;
  uint8_t head[40 + 60];
  struct virtio_net_hdr vh;
  struct iovec iov[2 + S4_COALESCE_MAX_SEGS];
  memcpy(head, h, hdr);
  iov[1].iov_base = head;
  iov[1].iov_len = hdr;
  for (size_t k = 0; k < n; k++) {
    iov[2 + k].iov_base = b->data + b->off[i + k] + hdr;
    iov[2 + k].iov_len = b->len[i + k] - hdr;
    total += b->len[i + k] - hdr;
  }
  /* PSH as the last one has it (the kernel's cut puts it on the last segment only). */
  head[53] = (uint8_t)(h[53] | (b->data[b->off[i + n - 1] + 53] & TCP_PSH));
  s4_put16(head + 4, (uint16_t)(total - 40));
  /* CHECKSUM_PARTIAL: the field holds the pseudo-header's sum, the kernel adds the rest of each segment. */
  s4_put16(head + 56, s4_csum_fold(s4_pseudo6(head, (uint32_t)(total - 40), IPPROTO_TCP)));
  memset(&vh, 0, sizeof vh);
  vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV6;
  vh.hdr_len = (uint16_t)hdr;
  vh.gso_size = (uint16_t)gso;
  vh.csum_start = 40;
  vh.csum_offset = 16;
  iov[0].iov_base = &vh;
  iov[0].iov_len = sizeof vh;
  for (;;) {
    if (writev(fd, iov, (int)(2 + n)) >= 0) return 1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (fatal_fd_error(errno)) return -errno - 1;
    return -1;
  }
}

static int get_stats(napi_env env, napi_value v, uint32_t **out) {
  napi_typedarray_type t;
  size_t n, boff;
  void *p;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &t, &n, &p, &ab, &boff) != napi_ok || t != napi_uint32_array ||
      n < S4_COALESCE_STATE) {
    s4_throw_type(env, "stats must be a Uint32Array of 4 entries");
    return -1;
  }
  *out = p;
  return 0;
}

/*
 * tunWriteCoalesce(fd, data, off, len, count, refused, stats): written (incl. dropped; refused[0] += dropped)
 * tunWrite with vnet for a queue opened with the offload, the segments that can be merged written merged (above);
 * stats counts the super-packets and their segments. Returns how many entries were consumed: less than count only
 * on EAGAIN.
 */
static napi_value tun_write_coalesce(napi_env env, napi_callback_info info) {
  S4_ARGS(7);
  int fd;
  uint32_t count, *refused, *stats;
  s4_batch b;
  size_t i = 0;
  napi_value result;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (s4_arg_batch(env, argv + 1, 0, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[4], "count", UINT32_MAX, &count) != 0) return NULL;
  if (s4_check_entries(env, &b, count) != 0) return NULL;
  if (s4_arg_counter(env, argv[5], &refused) != 0) return NULL;
  if (get_stats(env, argv[6], &stats) != 0) return NULL;

  while (i < count) {
    size_t gso, n = group(&b, i, count, &gso);
    int r;
    if (n > 1) {
      r = write_merged(fd, &b, i, n, gso);
      if (r == 1) {
        stats[C_PACKETS]++;
        stats[C_SEGMENTS] += (uint32_t)n;
        i += n;
        continue;
      }
      if (r == 0) break;
      if (r < -1) {
        if (i > 0) break; /* report progress; the error recurs next call */
        s4_throw_errno(env, -r - 1, "write");
        return NULL;
      }
      /* Refused whole (an old kernel, say): the same segments one by one, as without coalescing. */
      stats[C_REFUSED]++;
      size_t k = 0;
      for (; k < n; k++) {
        r = write_one(fd, &b, i + k, refused);
        if (r != 1) break;
      }
      i += k;
      if (k < n) {
        if (r < 0 && i == 0) {
          s4_throw_errno(env, -r, "write");
          return NULL;
        }
        break;
      }
      continue;
    }
    r = write_one(fd, &b, i, refused);
    if (r == 1) {
      i++;
      continue;
    }
    if (r < 0 && i == 0) {
      s4_throw_errno(env, -r, "write");
      return NULL;
    }
    break;
  }
  napi_create_uint32(env, (uint32_t)i, &result);
  return result;
}

/*
 * tunCoalescePlan(data, off, len, count, out): groups
 * What tunWriteCoalesce would write for entries [0, count), without writing: out[2g] the number of entries of write
 * g (1: alone), out[2g + 1] its segments' payload size (0 alone). For tests: the merges, exactly.
 */
static napi_value tun_coalesce_plan(napi_env env, napi_callback_info info) {
  S4_ARGS(5);
  uint32_t count, *out;
  s4_batch b;
  size_t i = 0, g = 0, out_n, boff;
  napi_typedarray_type t;
  void *p;
  napi_value ab, result;

  if (s4_arg_batch(env, argv, 0, &b) != 0) return NULL;
  if (s4_arg_u32(env, argv[3], "count", UINT32_MAX, &count) != 0) return NULL;
  if (s4_check_entries(env, &b, count) != 0) return NULL;
  if (napi_get_typedarray_info(env, argv[4], &t, &out_n, &p, &ab, &boff) != napi_ok || t != napi_uint32_array ||
      out_n < 2 * (size_t)count) {
    s4_throw_type(env, "out must be a Uint32Array of 2 * count entries");
    return NULL;
  }
  out = p;
  while (i < count) {
    size_t gso, n = group(&b, i, count, &gso);
    out[2 * g] = (uint32_t)n;
    out[2 * g + 1] = (uint32_t)gso;
    g++;
    i += n;
  }
  napi_create_uint32(env, (uint32_t)g, &result);
  return result;
}

napi_status s4_init_coalesce(napi_env env, napi_value exports) {
  napi_status st;
  if ((st = s4_export_fn(env, exports, "tunWriteCoalesce", tun_write_coalesce)) != napi_ok) return st;
  return s4_export_fn(env, exports, "tunCoalescePlan", tun_coalesce_plan);
}
