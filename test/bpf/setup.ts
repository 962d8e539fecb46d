// What the two differential tests of the fast path share: the router they
// stand for (its /64, address, port, the host's local table and the refused
// destinations it makes, an unusual TTL so the configured one shows), the
// programs configured as that router's in test-run mode, and its engine.
import test from 'ava';
import { FastPathPrograms } from '../../agent/bpf/programs.js';
import { Engine } from '../../agent/router/engine.js';
import { refusedRanges } from '../../agent/router/refused.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { isRoot } from '../../lab/topology.js';

export const skip = isRoot() ? null : 'needs root (CAP_BPF) to load a BPF program';
export const rootTest = skip ? test.skip : test;
export const t_ = (name: string) => (skip ? `${name} (skipped: ${skip})` : name);

export const prefix = parsePrefix64('2001:db8:9:10::/64');
export const ROUTER = parseIPv4('198.51.100.1');
export const PORT = 25790;
export const isp = parseIPv6('2001:db8:ffff::1');
/** The host's local table: its own address and a second network (refused as destinations). */
export const SECOND_NIC = parseIPv4('192.0.2.5');
export const LOCAL = [
  { start: ROUTER, end: ROUTER },
  { start: parseIPv4('192.0.2.0'), end: parseIPv4('192.0.2.255') },
];
export const REFUSED = refusedRanges(LOCAL, false);
/** Not 64, so the tests see the configured TTL is the one used. */
export const TTL = 61;
/** The next hop's MACs, in test-run mode (no FIB lookup is made). */
export const HOP = { dmac: Uint8Array.from([2, 0, 0, 0, 0, 0xaa]), smac: Uint8Array.from([2, 0, 0, 0, 0, 0xbb]) };

/** The programs, configured as the router's (tunIfindex 0: off), in test-run mode; xdp: with from-peers' XDP stage on. */
export function programs(tunIfindex = 7, xdp = false): FastPathPrograms {
  const p = new FastPathPrograms();
  try {
    p.configure({
      bindIPv4: ROUTER,
      bindPort: PORT,
      ownIPv4: ROUTER,
      ownPort: PORT,
      prefix: prefix.bytes,
      ttl: TTL,
      tunIfindex,
      uplinkIfindex: 3,
      testRun: HOP,
      // The XDP stage on, for frames to the test device's MAC (all zeros, as frames.ts makes them).
      ...(xdp ? { xdpMac: new Uint8Array(6) } : {}),
    });
    p.setRefused(REFUSED);
    return p;
  } catch (err) {
    p.close();
    throw err;
  }
}

/** The router's engine, the authority the programs are held to. */
export const newEngine = () => new Engine({ prefix, listenIPv4: ROUTER, port: PORT, routes: [], refused: REFUSED }, 1);
