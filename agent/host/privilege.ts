// Whether this process may configure networking: root, or CAP_NET_ADMIN in
// the effective set (as the cluster agent runs, unprivileged but capable);
// and whether it may load BPF programs (CAP_BPF, for the fast path).
import { readFileSync } from 'node:fs';

const CAP_NET_ADMIN = 12;
const CAP_NET_RAW = 13;
const CAP_BPF = 39;

function effectiveCaps(): bigint {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? BigInt('0x' + m[1]) : 0n;
  } catch {
    return 0n;
  }
}

export function hasNetAdmin(): boolean {
  return process.getuid?.() === 0 || (effectiveCaps() & (1n << BigInt(CAP_NET_ADMIN))) !== 0n;
}

export function hasNetRaw(): boolean {
  return process.getuid?.() === 0 || (effectiveCaps() & (1n << BigInt(CAP_NET_RAW))) !== 0n;
}

/** CAP_BPF in the effective set (the fast path's program and maps). Not implied by uid 0: a container's root may lack it. */
export function hasBpf(): boolean {
  return (effectiveCaps() & (1n << BigInt(CAP_BPF))) !== 0n;
}
