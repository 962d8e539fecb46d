// Waiting for the n-th line of a process that matches (Proc.waitFor finds the first one only).
import { setTimeout as sleep } from 'node:timers/promises';
import type { Proc } from '../../lab/proc.js';

export function count(p: Proc, re: RegExp): number {
  return p.lines().filter((l) => re.test(l.text)).length;
}

/** Resolves once p has printed n lines matching re; the timeout only bounds a failure. */
export async function nthLine(p: Proc, re: RegExp, n: number, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (count(p, re) < n) {
    if (!p.running)
      throw new Error(`${p.argv.join(' ')} exited before printing ${n} lines matching ${re}:\n${p.output()}`);
    if (Date.now() > until)
      throw new Error(`${p.argv.join(' ')} printed ${count(p, re)} of ${n} lines matching ${re}:\n${p.output()}`);
    await sleep(50);
  }
}
