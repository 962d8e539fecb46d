// The router's in-kernel fast path (milestone 1: peers -> kernel only): where
// it attaches, whether this kernel runs it right, and taking it down again.
//
// The program goes on the ingress of the interface that holds the router's
// bind address, through a tcx link (Linux 6.6+): the attachment is the link
// fd this process holds, so the kernel detaches it when the router stops or
// dies, however it dies; no tc filter can be left behind to forward (or, with
// the TUN gone, to swallow) peers' packets without a router. Kernels without
// tcx keep the TypeScript path. The program redirects into the router's TUN,
// so it cannot outlive the TUN's owner either.
import { native } from '../io/native.js';
import { ipJson } from '../host/ip.js';
import { InputError, formatIPv4 } from '../protocol/ip.js';
import { makeAddress } from '../protocol/address.js';
import { writeHeader } from '../protocol/ipv6.js';
import type { Logger } from '../log.js';
import { DecapProgram, TC_ACT_REDIRECT, type DecapCounters } from './decap.js';

export type FastPathMode = 'auto' | 'on' | 'off';

export function fastPathModeOf(text: string | undefined): FastPathMode {
  const m = text ?? 'off';
  if (m === 'auto' || m === 'on' || m === 'off') return m;
  throw new InputError(`--fast-path ${text}: use auto, on or off`);
}

export interface FastPathConfig {
  bindIPv4: number;
  port: number;
  prefix: Uint8Array;
  /** Why the fast path must stay off with this configuration, if it must (e.g. the neighbour proxy). */
  conflict?: string;
}

export interface FastPath {
  /** The interface whose ingress the program is on. */
  readonly uplink: string;
  counters(): DecapCounters;
  /** Detaches the program and releases it. Idempotent. */
  stop(): void;
}

/** A program loaded and tested, not attached yet: attach() once the router's TUN exists. */
export interface PreparedFastPath {
  /** Points the program at tun and attaches it; 'on' throws when it cannot, 'auto' logs why and returns undefined. */
  attach(tun: string): FastPath | undefined;
  /** Releases the program without attaching it (the router failed to start). Idempotent. */
  close(): void;
}

/**
 * Loads and tests the fast path as mode says, before the router makes anything, so a refusal leaves nothing to
 * undo: 'off' does nothing; 'on' throws when it cannot run; 'auto' logs why once and returns undefined, leaving
 * every packet to the TypeScript router.
 */
export async function prepareFastPath(mode: FastPathMode, cfg: FastPathConfig, log: Logger): Promise<PreparedFastPath | undefined> {
  if (mode === 'off') return undefined;
  const refuse = (why: string): undefined => {
    if (mode === 'on') throw new InputError(`--fast-path on: ${why}`);
    log.warn(`fast path unavailable, every packet takes the TypeScript path: ${why}`);
    return undefined;
  };
  let uplink: string, prog: DecapProgram;
  try {
    if (cfg.conflict) throw new Error(cfg.conflict);
    uplink = await uplinkOf(cfg.bindIPv4);
    prog = load(cfg);
  } catch (err) {
    return refuse((err as Error).message);
  }
  return {
    close: () => prog.close(),
    attach(tun) {
      try {
        const uplinkIndex = native.ifIndex(uplink), tunIndex = native.ifIndex(tun);
        if (!uplinkIndex || !tunIndex) throw new Error(`interface ${uplinkIndex ? tun : uplink} vanished`);
        prog.configure({ bindIPv4: cfg.bindIPv4, port: cfg.port, prefix: cfg.prefix, tunIfindex: tunIndex });
        attachIngress(prog, uplinkIndex, uplink);
      } catch (err) {
        prog.close();
        return refuse((err as Error).message);
      }
      log.info('fast path on: peers -> kernel packets are forwarded in the kernel', { uplink, tun });
      return { uplink, counters: () => prog.counters(), stop: () => prog.close() };
    },
  };
}

/** Loads the program and runs the self-test, with a stand-in TUN ifindex (test runs redirect nothing). */
function load(cfg: FastPathConfig): DecapProgram {
  let prog: DecapProgram;
  try {
    prog = new DecapProgram();
  } catch (err) {
    throw new Error(`the kernel refused the BPF program (needs CAP_BPF and CAP_NET_ADMIN): ${(err as Error).message}`);
  }
  try {
    prog.configure({ bindIPv4: cfg.bindIPv4, port: cfg.port, prefix: cfg.prefix, tunIfindex: 1 });
    selfTest(prog, cfg);
    prog.resetCounters();
    return prog;
  } catch (err) {
    prog.close();
    throw err;
  }
}

function attachIngress(prog: DecapProgram, ifindex: number, uplink: string): void {
  try {
    prog.attachIngress(ifindex);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(e.code === 'EINVAL' || e.code === 'ENOTSUPP' || e.code === 'EOPNOTSUPP'
      ? `this kernel cannot attach through tcx (Linux 6.6 or later), which the fast path needs so that nothing stays attached without the router (${e.message})`
      : `cannot attach to ${uplink}'s ingress: ${e.message}`);
  }
}

/**
 * One valid datagram through the loaded program (BPF_PROG_TEST_RUN: nothing is sent). A kernel older than the
 * decapsulation flag (Linux 6.3) loads the program but refuses the flag at run time: this finds out before any
 * peer's packet would.
 */
function selfTest(prog: DecapProgram, cfg: FastPathConfig): void {
  const peer = (cfg.bindIPv4 ^ 1) >>> 0, port = 1; // a neighbour of the router's address: a unicast source it accepts
  const dst = Uint8Array.from(cfg.prefix);
  dst[7] = dst[7]! ^ 1; // another /64
  const inner = new Uint8Array(48);
  writeHeader(inner, 0, 8, 59, 64, makeAddress(cfg.prefix, peer, port, 1), dst);
  const f = new Uint8Array(14 + 28 + inner.length), v = new DataView(f.buffer);
  v.setUint16(12, 0x0800);
  f[14] = 0x45; v.setUint16(16, 28 + inner.length); f[22] = 64; f[23] = 17;
  v.setUint32(26, peer); v.setUint32(30, cfg.bindIPv4 >>> 0);
  let s = 0;
  for (let i = 14; i < 34; i += 2) s += v.getUint16(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  v.setUint16(24, ~s & 0xffff);
  v.setUint16(34, port); v.setUint16(36, cfg.port); v.setUint16(38, 8 + inner.length); // UDP checksum 0: none
  f.set(inner, 42);
  const r = prog.run(f);
  const c = prog.counters();
  if (r.retval !== TC_ACT_REDIRECT || r.out.length !== 14 + inner.length || r.out[14 + 7] !== 63) {
    throw new Error(c.decap_failed.packets
      ? 'this kernel refuses to decapsulate IPv4 into IPv6 in BPF (BPF_F_ADJ_ROOM_DECAP_L3_IPV6 needs Linux 6.3 or later)'
      : `the program's self-test gave ${r.retval} and ${r.out.length} bytes instead of a redirect of ${14 + inner.length}`);
  }
}

/** The interface holding ipv4: datagrams to it arrive there (a host with several uplinks: the others stay slow). */
async function uplinkOf(ipv4: number): Promise<string> {
  const text = formatIPv4(ipv4);
  const addrs = await ipJson<{ ifname: string; addr_info?: { local: string }[] }[]>('-4', 'addr', 'show');
  const a = addrs.find((x) => x.addr_info?.some((i) => i.local === text));
  if (!a) throw new Error(`no interface holds ${text}`);
  const [link] = await ipJson<{ link_type?: string }[]>('link', 'show', 'dev', a.ifname);
  // The program reads a 14-byte Ethernet header before the IPv4 one.
  if (link?.link_type !== 'ether') {
    throw new Error(`${text} is on ${a.ifname}, a ${link?.link_type ?? 'non-Ethernet'} interface: the fast path handles Ethernet uplinks only`);
  }
  return a.ifname;
}
