// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4 native I/O addon: the byte order and ones'-complement arithmetic of packet headers, shared by the TUN
 * offload's cutting (gso.c) and merging (coalesce.c). Inline: both use them per packet.
 */
#ifndef SIXBED4_NATIVE_CSUM_H
#define SIXBED4_NATIVE_CSUM_H

#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t s4_get16(const uint8_t *p) {
  return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t s4_get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void s4_put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* The ones'-complement sum of p[0, len) added to sum, as 16-bit big-endian words, not folded. */
static inline uint64_t s4_csum_add(uint64_t sum, const uint8_t *p, size_t len) {
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    sum += ntohl(w);
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    sum += (uint32_t)p[0] << 8 | p[1];
    p += 2;
    len -= 2;
  }
  if (len) sum += (uint32_t)p[0] << 8;
  return sum;
}

static inline uint16_t s4_csum_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)sum;
}

/* The IPv6 pseudo-header's sum for an upper-layer packet of len bytes of protocol proto (pkt: the IPv6 header). */
static inline uint64_t s4_pseudo6(const uint8_t *pkt, uint32_t len, uint8_t proto) {
  return s4_csum_add(0, pkt + 8, 32) + (len >> 16) + (len & 0xffff) + proto;
}

#endif
