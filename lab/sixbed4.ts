// Starting sixbed4's own commands inside lab namespaces, as the lab, the
// end-to-end tests and the benchmark all do: the real CLI in a child process.
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';
import type { Proc } from './proc.js';
import { routerArgs } from './fast-path.js';

/** The compiled CLI entry point (dist/cli/main.js). */
export const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** Runs `sixbed4 ARGS` in ns, with readable logs (a router with the lab's fast path: fast-path.ts). */
export function spawnSixbed4(ns: Netns, args: string[]): Proc {
  const [command, ...rest] = args;
  return ns.spawn([
    process.execPath,
    CLI,
    ...(command === 'router' ? ['router', ...routerArgs(rest)] : args),
    '--log-format',
    'text',
  ]);
}

/** Runs `sixbed4 ARGS` in ns until it prints a line matching `re`; killed if it does not. */
async function spawnUntil(
  ns: Netns,
  args: string[],
  re: RegExp,
  timeoutMs: number,
): Promise<{ proc: Proc; line: string }> {
  const proc = spawnSixbed4(ns, args);
  try {
    return { proc, line: await proc.waitFor(re, timeoutMs) };
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  }
}

/** Starts a router and waits until it says it is ready (with the lab's fast path: fast-path.ts). */
export async function startRouterIn(ns: Netns, args: string[], timeoutMs = 10_000): Promise<Proc> {
  return (await spawnUntil(ns, ['router', ...args], /router ready/, timeoutMs)).proc;
}

const PEER_ADDRESS = /peer address (\S+)/;

/** Starts a peer and resolves with it and the address its router gave it. */
export async function startPeerIn(
  ns: Netns,
  args: string[],
  timeoutMs = 15_000,
): Promise<{ proc: Proc; address: string }> {
  const { proc, line } = await spawnUntil(ns, ['peer', ...args], PEER_ADDRESS, timeoutMs);
  return { proc, address: PEER_ADDRESS.exec(line)![1]! };
}

export interface PingResult {
  sent: number;
  received: number;
  avgMs: number | null;
  output: string;
}

/** ping -6 from ns; never throws on loss (the result says). */
export async function ping6(
  ns: Netns,
  target: string,
  opts: { count?: number; interval?: number; hops?: number; timeoutS?: number; deadlineS?: number } = {},
): Promise<PingResult> {
  const count = opts.count ?? 3;
  const argv = [
    'ping',
    '-6',
    '-n',
    '-c',
    String(count),
    '-i',
    String(opts.interval ?? 0.2),
    '-W',
    String(opts.timeoutS ?? 2),
  ];
  if (opts.hops !== undefined) argv.push('-t', String(opts.hops));
  // -w: wait until count answers came or the deadline passed (sending on meanwhile). Without it ping waits -W only
  // while nothing answered, and after a first answer two round trips: an answer held up for a moment by a process
  // off the CPU (the stock router, seen under a load of 20 on 2 cores) counts as lost although it came.
  if (opts.deadlineS !== undefined) argv.push('-w', String(opts.deadlineS));
  const r = await ns.exec([...argv, target], { timeoutMs: 30_000 + (opts.deadlineS ?? 0) * 1000 });
  const out = r.stdout + r.stderr;
  const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(out);
  return {
    sent: m ? Number(m[1]) : count,
    // With a deadline ping sends on while an answer is late, and the late one may come with the next: the count's
    // worth of answers is what was asked.
    received: m ? (opts.deadlineS !== undefined ? Math.min(Number(m[2]), count) : Number(m[2])) : 0,
    avgMs: rtt ? Number(rtt[1]) : null,
    output: out,
  };
}

/** Reads a Prometheus endpoint from inside ns and returns samples by "name{labels}". */
export async function scrape(ns: Netns, hostPort: string): Promise<Map<string, number>> {
  const js = `fetch('http://${hostPort}/metrics').then(r => r.text()).then(t => process.stdout.write(t), e => { console.error(String(e)); process.exit(1); })`;
  const text = await ns.run([process.execPath, '-e', js]);
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
