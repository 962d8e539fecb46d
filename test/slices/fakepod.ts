// Test helpers for slice delivery: a kubelet-like cgroup for a "pod" process
// (so that discovery through /proc works as on a node), the run-slices child
// in a namespace, and `ip -j` snapshots.
//
// The cgroups are made under a top directory unique to the test
// (s4-test-<unique>/kubepods.slice/...), as a kubelet with --cgroup-root
// would make them, never in a real kubepods tree; destroy() moves any process
// still inside back to the hierarchy's root and removes the directories.
import { addressLines, routeLines, type IpAddrLink, type IpRoute } from '../helpers/netstate.js';
import { mkdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Netns } from '../../lab/netns.js';

export const RUNNER = fileURLToPath(new URL('./run-slices.js', import.meta.url));

interface CgroupMount {
  path: string;
  v2: boolean;
}

async function cgroupMounts(): Promise<CgroupMount[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: CgroupMount[] = [];
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fstype = right.split(' ')[0];
    const mnt = left.split(' ')[4]!;
    if (fstype === 'cgroup2') out.push({ path: mnt, v2: true });
    else if (fstype === 'cgroup' && /(^|,)(pids|name=systemd)(,|$)/.test(right.split(' ')[2] ?? ''))
      out.push({ path: mnt, v2: false });
  }
  return out;
}

export type Layout = 'systemd' | 'cgroupfs';

export class FakePodCgroup {
  private constructor(
    readonly mount: CgroupMount,
    readonly top: string,
    readonly leaf: string,
  ) {}

  /**
   * A pod cgroup in the given driver's layout: systemd in a cgroup2
   * hierarchy, cgroupfs in a v1 one where the machine has one (hybrid), each
   * falling back to the other kind. Throws with the reason when no writable
   * hierarchy exists.
   */
  static async create(layout: Layout, uid: string, unique: string): Promise<FakePodCgroup> {
    const mounts = await cgroupMounts();
    const preferred = mounts.filter((m) => m.v2 === (layout === 'systemd'));
    const mount = preferred[0] ?? mounts[0];
    if (!mount) throw new Error('no cgroup hierarchy is mounted (/proc/self/mountinfo lists none)');
    const top = `${mount.path}/s4-test-${unique}`;
    const container = 'c'.repeat(64);
    const rel =
      layout === 'systemd'
        ? `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice/cri-containerd-${container}.scope`
        : `kubepods/besteffort/pod${uid}/${container}`;
    const leaf = `${top}/${rel}`;
    await mkdir(leaf, { recursive: true });
    return new FakePodCgroup(mount, top, leaf);
  }

  /** Why pod cgroups cannot be made here, or null. */
  static async unavailable(): Promise<string | null> {
    const mounts = await cgroupMounts().catch(() => []);
    if (mounts.length === 0) return 'no cgroup hierarchy is mounted';
    const probe = `${mounts[0]!.path}/s4-test-probe-${process.pid}`;
    try {
      await mkdir(probe);
      await rmdir(probe);
      return null;
    } catch (err) {
      return `cannot create cgroups under ${mounts[0]!.path}: ${(err as Error).message}`;
    }
  }

  async add(pid: number): Promise<void> {
    await writeFile(`${this.leaf}/cgroup.procs`, `${pid}\n`);
  }

  /** Never throws: teardown. */
  async destroy(): Promise<void> {
    const left = (await readFile(`${this.leaf}/cgroup.procs`, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    for (const pid of left) await writeFile(`${this.mount.path}/cgroup.procs`, `${pid}\n`).catch(() => undefined);
    let dir = this.leaf;
    while (dir.length >= this.top.length) {
      for (let i = 0; i < 50; i++) {
        try {
          await rmdir(dir);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
          await sleep(20); // a process that was just killed leaves its cgroup a moment later
        }
      }
      dir = dir.slice(0, dir.lastIndexOf('/'));
    }
  }
}

/** Waits until pid has entered the namespace at nsPath (after `ip netns exec` set it up). */
export async function waitInNetns(pid: number, nsPath: string, timeoutMs = 5000): Promise<void> {
  const want = (await stat(nsPath)).ino;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ino = await stat(`/proc/${pid}/ns/net`).then(
      (s) => s.ino,
      () => -1,
    );
    if (ino === want) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} did not enter ${nsPath} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** Runs the slice agent (run-slices.js) in ns, as the node; returns its JSON answer and log. */
export async function runSlices<T>(
  ns: Netns,
  command: 'find' | 'reconcile',
  input: unknown,
): Promise<{ out: T; log: string }> {
  const r = await ns.exec([process.execPath, RUNNER, command, JSON.stringify(input)], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`run-slices ${command} in ${ns.name} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return { out: JSON.parse(r.stdout.trim().split('\n').pop()!) as T, log: r.stderr };
}

/** What re-delivery must not change: both sides' addresses, routes and rules, by their meaning (helpers/netstate.ts). */
export async function snapshot(
  node: Netns,
  hostIf: string,
  pod: { json<T>(args: string[]): Promise<T> },
): Promise<Record<string, string[]>> {
  return {
    hostAddrs: addressLines(await node.json<IpAddrLink[]>(['addr', 'show', 'dev', hostIf])),
    hostRoutes: routeLines(await node.json<IpRoute[]>(['-6', 'route', 'show'])),
    podAddrs: addressLines(await pod.json<IpAddrLink[]>(['addr', 'show'])),
    podRoutes: routeLines(await pod.json<IpRoute[]>(['-6', 'route', 'show', 'table', 'all'])),
    podRules: (await pod.json<Record<string, unknown>[]>(['-6', 'rule', 'show'])).map((r) => JSON.stringify(r)).sort(),
  };
}

export interface ReconcileOut {
  passes: {
    plan: unknown;
    statuses: {
      slice: string | null;
      hostIf?: string;
      state: string;
      outcome?: string;
      via?: string;
      reason?: string;
      address?: string;
    }[];
  }[];
  proxy: string[];
}
