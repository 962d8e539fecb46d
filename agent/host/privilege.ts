// Whether this process may configure networking: root, or CAP_NET_ADMIN in
// the effective set (as the cluster agent runs, unprivileged but capable).
import { readFileSync } from 'node:fs';

const CAP_NET_ADMIN = 12;
const CAP_NET_RAW = 13;

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
