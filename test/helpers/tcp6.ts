// TCP/IPv6 segments built by hand, with their right checksum, and read back: for the tests of the router's TCP
// coalescing (agent/native/coalesce.c), which merges only what the kernel's GSO cuts back into the same segments.
import { IPV6_HEADER } from '../../agent/protocol/constants.js';
import { fold, sumWords } from '../../agent/protocol/checksum.js';
import { OFF_SRC, writeHeader } from '../../agent/protocol/ipv6.js';
import { newBatch, type Batch } from '../../agent/io/batch.js';

export const NH_TCP = 6;
export const ACK = 0x10;
export const PSH = 0x08;
export const FIN = 0x01;
export const SYN = 0x02;

export interface Seg {
  src: Uint8Array;
  dst: Uint8Array;
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  flags?: number;
  window?: number;
  /** TCP options, a multiple of 4 bytes (e.g. tsOption(...)) */
  options?: Uint8Array;
  payload: Uint8Array;
  hops?: number;
  /** the IPv6 header's second to fourth bytes' traffic class and flow label: [tc, flow label] */
  tc?: number;
  flow?: number;
}

/** The TCP timestamp option, padded as Linux sends it: NOP NOP TS val ecr. */
export function tsOption(val: number, ecr: number): Uint8Array {
  const o = Buffer.alloc(12);
  o[0] = 1;
  o[1] = 1;
  o[2] = 8;
  o[3] = 10;
  o.writeUInt32BE(val >>> 0, 4);
  o.writeUInt32BE(ecr >>> 0, 8);
  return o;
}

/** The ones'-complement TCP checksum of an IPv6 packet without extension headers (0 when the field is right). */
export function tcpSum(p: Uint8Array): number {
  const len = p.length - IPV6_HEADER;
  let acc = sumWords(p, OFF_SRC, 32);
  acc += Math.floor(len / 0x10000) + (len & 0xffff) + NH_TCP;
  acc = sumWords(p, IPV6_HEADER, len, acc);
  return ~fold(acc) & 0xffff;
}

/** A TCP/IPv6 segment with its right checksum. */
export function tcp6(s: Seg): Buffer {
  const opts = s.options ?? new Uint8Array(0);
  const thl = 20 + opts.length;
  const p = Buffer.alloc(IPV6_HEADER + thl + s.payload.length);
  writeHeader(p, 0, thl + s.payload.length, NH_TCP, s.hops ?? 64, s.src, s.dst);
  const tc = s.tc ?? 0,
    flow = s.flow ?? 0;
  p.writeUInt32BE(((6 << 28) | ((tc & 0xff) << 20) | (flow & 0xfffff)) >>> 0, 0);
  const t = IPV6_HEADER;
  p.writeUInt16BE(s.sport, t);
  p.writeUInt16BE(s.dport, t + 2);
  p.writeUInt32BE(s.seq >>> 0, t + 4);
  p.writeUInt32BE((s.ack ?? 1) >>> 0, t + 8);
  p[t + 12] = (thl / 4) << 4;
  p[t + 13] = s.flags ?? ACK;
  p.writeUInt16BE(s.window ?? 512, t + 14);
  p.set(opts, t + 20);
  p.set(s.payload, t + thl);
  p.writeUInt16BE(tcpSum(p), t + 16);
  return p;
}

/** A batch holding the packets in order, one a slot (slot: the largest of them). */
export function batchOf(pkts: readonly Uint8Array[]): Batch {
  const slot = Math.max(...pkts.map((p) => p.length));
  const b = newBatch(pkts.length, slot);
  pkts.forEach((p, i) => {
    b.off[i] = i * slot;
    b.len[i] = p.length;
    b.data.set(p, i * slot);
  });
  return b;
}

/** n bytes of a recognizable pattern starting at k. */
export function bytes(n: number, k = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (k + i * 7) & 255;
  return b;
}
