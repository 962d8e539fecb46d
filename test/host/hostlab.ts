// Pieces of the host end-to-end tests: the seed's VM in the reference
// topology, `sixbed4 host` run inside it, what "the same state" means, and
// continuous pings whose losses are counted.
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';
import { CLI } from '../../lab/sixbed4.js';
import { TOPO, type Topology } from '../../lab/topology.js';

/** `sixbed4 host` as a process: the real CLI. */
export const HOST_CMD = [CLI, 'host'];

export const PREFIX = TOPO.prefix;
export const L11 = '2001:db8:9:10::11';
export const L30 = '2001:db8:9:10::30';

export async function host(ns: Netns, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const r = await ns.exec([process.execPath, ...HOST_CMD, ...args, '--log-format', 'text'], { timeoutMs: 30_000 });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

/**
 * The seed's starting point on the topology's router host ("the VM"): ::11/64
 * and ::30/64 on its uplink eth0 (DAD is off in lab namespaces), forwarding
 * off as on a fresh VM; the ISP routes the /64 to the VM's link-local.
 */
export async function seedVm(topo: Topology): Promise<Netns> {
  const vm = topo.router;
  await vm.sysctl('net.ipv6.conf.all.forwarding', 0);
  await vm.ipBatch([`addr add ${L11}/64 dev ${TOPO.routerUplinkIf}`, `addr add ${L30}/64 dev ${TOPO.routerUplinkIf}`]);
  return vm;
}

interface AddrLink {
  addr_info?: Record<string, unknown>[];
  [k: string]: unknown;
}

/**
 * The host's networking as `ip -j` shows it, in a form where only real
 * differences count: addresses sorted (a re-added address is listed in
 * another place), routes sorted, plus every forwarding/accept_ra sysctl.
 * Taken once no address is tentative: duplicate address detection flags a
 * new address for a second or so (longer on a busy machine), and a snapshot
 * with the flag never equals one without it although the host is the same.
 */
export async function capture(ns: Netns): Promise<unknown> {
  const tentative = async () =>
    (await ns.json<AddrLink[]>(['addr', 'show'])).some((l) => (l.addr_info ?? []).some((a) => a.tentative));
  for (const until = Date.now() + 20_000; Date.now() < until && (await tentative());)
    await new Promise((r) => setTimeout(r, 100));
  const [links, routes, sysctls] = await Promise.all([
    ns.json<AddrLink[]>(['addr', 'show']),
    ns.json<Record<string, unknown>[]>(['-6', 'route', 'show']),
    ns.run(['sh', '-c', 'grep -H . /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/accept_ra']),
  ]);
  const key = (x: unknown) => JSON.stringify(x);
  return {
    links: links.map((l) => ({
      ...l,
      addr_info: [...(l.addr_info ?? [])].sort((a, b) => key(a).localeCompare(key(b))),
    })),
    routes: routes.map(key).sort(),
    sysctls: sysctls.trim().split('\n').sort(),
  };
}

/** `ping -6` every 20 ms, `count` times; the summary at exit counts lost replies. */
export function pingEvery20ms(ns: Netns, target: string, count: number): Proc {
  return ns.spawn(['ping', '-6', '-n', '-i', '0.02', '-c', String(count), '-W', '1', target]);
}

/**
 * The echo replies a pingEvery20ms has printed so far, by sequence number, and the numbers missing below the highest:
 * losses in the middle of the stream, whatever happens to the requests still in flight when it is stopped.
 */
export function repliesOf(p: Proc): { seqs: Set<number>; last: number; missing: number[] } {
  const seqs = new Set(
    p
      .lines()
      .map((l) => /bytes from .*icmp_seq=(\d+)/.exec(l.text)?.[1])
      .filter((x) => x !== undefined)
      .map(Number),
  );
  const last = Math.max(0, ...seqs);
  const missing: number[] = [];
  for (let i = 1; i < last; i++) if (!seqs.has(i)) missing.push(i);
  return { seqs, last, missing };
}

export async function lossOf(p: Proc): Promise<{ sent: number; received: number; output: string }> {
  await p.exited;
  const out = p.output();
  const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
  if (!m) throw new Error(`no ping summary:\n${out}`);
  return { sent: Number(m[1]), received: Number(m[2]), output: out };
}
