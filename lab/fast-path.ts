// The lab with the router's in-kernel fast path: SIXBED4_LAB_FAST_PATH=on
// (`npm test` runs the end-to-end suite once more so), or `sixbed4 lab
// --fast-path`. Routers the lab starts get --fast-path auto unless they say
// otherwise (routerArgs), and the topology's wires are made as the fast path
// needs them, as a real uplink is: full UDP checksums on what reaches the
// router (the NAT's wan side) and on what it sends (its own uplink), IPv4
// forwarding on that uplink for the kernel's route lookup (agent/bpf/), and
// GRO where the ISP's traffic comes in, as a NIC has it, so that downloads
// reach the tunnel merged. Without it they get --fast-path off (auto is the
// router's default): that run tests the TypeScript path.
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';
import { systemTool } from '../agent/host/tools.js';

let chosen = process.env.SIXBED4_LAB_FAST_PATH === 'on';

export function labFastPath(): boolean {
  return chosen;
}

/** `sixbed4 lab --fast-path`: the same for this process. */
export function useLabFastPath(on: boolean): void {
  chosen = on;
}

/**
 * `sixbed4 router` arguments with --fast-path added when they say nothing about it: auto when the lab runs with the
 * fast path (auto, because some routers the tests start cannot have it: one on a loopback address, one on a second
 * interface, and those run as ever), off when it does not. Tests that need it say --fast-path on.
 */
export function routerArgs(args: readonly string[]): string[] {
  if (args.includes('--fast-path') || args.includes('--config')) return [...args];
  return [...args, '--fast-path', labFastPath() ? 'auto' : 'off'];
}

/** Makes ifname of ns receive as a NIC does: GRO on, so TCP arrives merged. */
export async function nicReceives(ns: Netns, ifname: string): Promise<void> {
  await ns.run([systemTool('ethtool'), '-K', ifname, 'gro', 'on']);
}

/** Makes the wire ifname of ns as a NIC's: checksums complete on what it sends. */
export async function nicLike(ns: Netns, ifname: string): Promise<void> {
  await ns.run([systemTool('ethtool'), '-K', ifname, 'tx', 'off']);
}

/**
 * How many programs are attached (tcx) to dev's ingress and egress in ns, and whether one is at its XDP hook: what a
 * router's fast path leaves there.
 */
export async function attachedPrograms(
  ns: Netns,
  dev: string,
): Promise<{ ingress: number; egress: number; xdp: number }> {
  const [link] = JSON.parse(await ns.run([systemTool('ip'), '-j', '-d', 'link', 'show', 'dev', dev])) as {
    xdp?: unknown;
  }[];
  return { ...(await tcxPrograms(ns, dev)), xdp: link?.xdp ? 1 : 0 };
}

async function tcxPrograms(ns: Netns, dev: string): Promise<{ ingress: number; egress: number }> {
  const native = fileURLToPath(new URL('../agent/io/native.js', import.meta.url)),
    programs = fileURLToPath(new URL('../agent/bpf/programs.js', import.meta.url));
  const js = `Promise.all([import(${JSON.stringify(native)}), import(${JSON.stringify(programs)})]).then(([n, p]) => {
    const i = n.native.ifIndex(${JSON.stringify(dev)});
    if (!i) throw new Error('no interface ${dev}');
    console.log(JSON.stringify({ ingress: n.bpfSyscalls.progQuery(i, p.BPF_TCX_INGRESS), egress: n.bpfSyscalls.progQuery(i, p.BPF_TCX_EGRESS) }));
  })`;
  return JSON.parse(await ns.run([process.execPath, '--input-type=module', '-e', js])) as {
    ingress: number;
    egress: number;
  };
}
