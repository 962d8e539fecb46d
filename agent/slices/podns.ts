// Finding a pod's network namespace on its node, from the pod's UID alone.
//
// Runtime-agnostic path (/proc): the kubelet puts every process of a pod —
// the sandbox ("pause") and each container — into cgroups whose path carries
// the pod UID, whatever the runtime (containerd, CRI-O, cri-dockerd) and
// whatever the cgroup driver:
//   systemd:  /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_5678.slice/cri-containerd-<id>.scope
//   cgroupfs: /kubepods/besteffort/pod1234-5678/<container id>
// (systemd escapes the UID's dashes as underscores, because a dash in a slice
// name means nesting). So one pass over /proc/*/cgroup maps pod UIDs to pids,
// and a pid's /proc/PID/ns/net is the pod's network namespace.
//
// Docker path: where pods (or pod-like containers) run under Docker, the
// containers carry the label io.kubernetes.pod.uid; the Docker API gives each
// one's State.Pid. It needs the Docker socket, which is why it is a second
// choice and loaded only when used.
//
// Either way the agent must see the node's processes: in a cluster it runs
// with hostPID (and hostNetwork, so that /proc/self/ns/net is the node's).
//
// The handle: an open file descriptor on the namespace, named through
// /proc/<agent pid>/fd/<fd>. `ip link ... netns PATH` and
// `nsenter --net=PATH` both accept such a path, and while the agent holds
// the fd the path cannot start naming another namespace: a /proc/PID path
// could, if the pod's process exited and its pid were reused. The
// alternative, `ip netns attach NAME PID` (a bind mount under /run/netns so
// that `ip -n NAME` works), leaves a mount behind when the agent dies between
// attach and detach, and that mount keeps a deleted pod's namespace — with
// our veth in it — alive forever. An fd goes away with the process that held
// it, so nothing can leak.
import { open, readdir, readFile, stat, type FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import type Docker from 'dockerode';

export type PodNetnsSource = 'proc' | 'docker';

/** A pod UID as the API server writes it: lower case, with dashes. */
export function normalizePodUid(uid: string): string {
  return uid.trim().toLowerCase().replace(/_/g, '-');
}

// `pod<uid>` as a whole path element (cgroupfs) or as the last dash-separated
// part of a systemd slice name. The UID is hex digits in groups joined by
// dashes or underscores: a UUID from the API server, or for static pods the
// 32-digit hash the kubelet uses instead.
const POD_SEGMENT_RE = /(?:^|[/-])pod([0-9a-fA-F]{2,}(?:[-_][0-9a-fA-F]+)*)(?:\.slice)?(?=\/|$)/;

/**
 * The pod UID in a cgroup path or a whole /proc/PID/cgroup line
 * (`0::/kubepods.slice/...`), or null if it is not a pod's. The pod element
 * must come after an element containing "kubepods" (the kubelet's root
 * cgroup, also under a custom --cgroup-root or in kind's kubelet.slice), so
 * that an unrelated cgroup that happens to be called pod<hex> is not taken
 * for a pod.
 */
export function podUidFromCgroup(lineOrPath: string): string | null {
  // In "ID:controllers:path" the path itself may contain colons.
  const m1 = /^\d+:[^:]*:(.*)$/.exec(lineOrPath);
  const path = m1 ? m1[1]! : lineOrPath;
  const m = POD_SEGMENT_RE.exec(path);
  if (!m || !path.slice(0, m.index).includes('kubepods')) return null;
  return normalizePodUid(m[1]!);
}

/** Pod UIDs found in a /proc/PID/cgroup file (one per hierarchy line; usually all the same). */
export function podUidsFromCgroupFile(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const uid = podUidFromCgroup(line);
    if (uid) out.add(uid);
  }
  return out;
}

/**
 * One pass over /proc: pod UID → pids of the pod's processes. Processes that
 * exit during the scan are skipped; that is normal on a busy node.
 */
export async function scanPodProcesses(procRoot = '/proc'): Promise<Map<string, number[]>> {
  const pids = (await readdir(procRoot)).filter((n) => /^\d+$/.test(n)).map(Number);
  const byUid = new Map<string, number[]>();
  await Promise.all(
    pids.map(async (pid) => {
      let text: string;
      try {
        text = await readFile(`${procRoot}/${pid}/cgroup`, 'utf8');
      } catch {
        return;
      }
      for (const uid of podUidsFromCgroupFile(text)) {
        const list = byUid.get(uid);
        if (list) list.push(pid);
        else byUid.set(uid, [pid]);
      }
    }),
  );
  for (const list of byUid.values()) list.sort((a, b) => a - b);
  return byUid;
}

/** Identity of a network namespace: nsfs device and inode, as `stat` reports them. */
export interface NetnsId {
  dev: number;
  ino: number;
}

export async function netnsIdOf(path: string): Promise<NetnsId | null> {
  try {
    const s = await stat(path);
    return { dev: s.dev, ino: s.ino };
  } catch {
    return null;
  }
}

const sameNetns = (a: NetnsId, b: NetnsId) => a.dev === b.dev && a.ino === b.ino;

/** An open pod network namespace; close() when done with it. */
export class PodNetns {
  /** /proc/<agent pid>/fd/<fd>: for `ip link ... netns PATH` and `nsenter --net=PATH`. */
  readonly path: string;
  private constructor(
    private readonly fh: FileHandle,
    readonly pid: number,
    readonly id: NetnsId,
    readonly source: PodNetnsSource,
  ) {
    this.path = `/proc/${process.pid}/fd/${fh.fd}`;
  }

  /**
   * Opens /proc/PID/ns/net and checks that it is still the namespace that
   * was looked at (the pid may have exited and been reused meanwhile).
   */
  static async open(pid: number, expected: NetnsId, source: PodNetnsSource): Promise<PodNetns | null> {
    let fh: FileHandle;
    try {
      fh = await open(`/proc/${pid}/ns/net`, 'r');
    } catch {
      return null;
    }
    try {
      const s = await fh.stat();
      if (!sameNetns({ dev: s.dev, ino: s.ino }, expected)) {
        await fh.close();
        return null;
      }
    } catch {
      await fh.close().catch(() => undefined);
      return null;
    }
    return new PodNetns(fh, pid, expected, source);
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

export type PodLookup =
  | { kind: 'found'; netns: PodNetns }
  /** Every process of the pod shares the node's namespace: a hostNetwork pod. */
  | { kind: 'hostNetwork'; reason: string }
  | { kind: 'notFound'; reason: string }
  /** The pod's processes are in more than one namespace (a container being set up): try again later. */
  | { kind: 'ambiguous'; reason: string };

export interface PodLocator {
  find(podUid: string): Promise<PodLookup>;
}

/** The namespace this agent counts as "the node's" (it runs with hostNetwork). */
export const HOST_NETNS = '/proc/self/ns/net';

/**
 * The pod's namespace among its processes'. A process still in the node's
 * namespace is either a hostNetwork pod's or one being set up by the runtime
 * (runc's init is put into the container's cgroup before it joins the pod's
 * namespace); so such processes are set aside, and only if nothing else
 * is left is the pod taken to be hostNetwork. A hostNetwork pod gets no
 * slice: its "namespace" is the node's own, and a veth end named eth6 with a
 * default route would land in the node's routing table.
 */
export async function lookupByPids(
  podUid: string,
  pids: readonly number[],
  source: PodNetnsSource,
  hostNetns = HOST_NETNS,
): Promise<PodLookup> {
  const host = await netnsIdOf(hostNetns);
  if (!host) throw new Error(`cannot stat ${hostNetns}: is /proc mounted?`);
  const groups = new Map<string, { id: NetnsId; pids: number[] }>();
  let inHost = 0;
  for (const pid of pids) {
    const id = await netnsIdOf(`/proc/${pid}/ns/net`);
    if (!id) continue; // exited
    if (sameNetns(id, host)) {
      inHost++;
      continue;
    }
    const k = `${id.dev}:${id.ino}`;
    const g = groups.get(k);
    if (g) g.pids.push(pid);
    else groups.set(k, { id, pids: [pid] });
  }
  const via = source === 'proc' ? 'cgroup' : 'Docker label';
  if (groups.size === 0) {
    return inHost > 0
      ? {
          kind: 'hostNetwork',
          reason: `pod ${podUid} uses the node's network namespace (hostNetwork): it gets no slice`,
        }
      : { kind: 'notFound', reason: `no running process of pod ${podUid} found by ${via}` };
  }
  if (groups.size > 1) {
    const desc = [...groups.values()].map((g) => `net:[${g.id.ino}] pids ${g.pids.join(',')}`).join('; ');
    return {
      kind: 'ambiguous',
      reason: `pod ${podUid}'s processes are in ${groups.size} network namespaces (${desc})`,
    };
  }
  const g = [...groups.values()][0]!;
  for (const pid of g.pids) {
    const netns = await PodNetns.open(pid, g.id, source);
    if (netns) return { kind: 'found', netns };
  }
  return { kind: 'notFound', reason: `pod ${podUid}'s processes exited while being looked at` };
}

/** Through /proc (see the top of this file). One /proc scan per instance: make one per reconcile pass. */
export class ProcLocator implements PodLocator {
  private index: Promise<Map<string, number[]>> | undefined;
  constructor(private readonly opts: { procRoot?: string; hostNetns?: string } = {}) {}

  async pids(podUid: string): Promise<number[]> {
    this.index ??= scanPodProcesses(this.opts.procRoot);
    return (await this.index).get(normalizePodUid(podUid)) ?? [];
  }

  async find(podUid: string): Promise<PodLookup> {
    return lookupByPids(normalizePodUid(podUid), await this.pids(podUid), 'proc', this.opts.hostNetns);
  }
}

/** The label the kubelet (dockershim, cri-dockerd) puts on every container of a pod. */
export const POD_UID_LABEL = 'io.kubernetes.pod.uid';
export const DOCKER_SOCKET = '/var/run/docker.sock';

/** Through the Docker API: running containers labelled with the pod UID. */
export class DockerLocator implements PodLocator {
  private client: Promise<Docker> | undefined;
  constructor(private readonly opts: { socketPath?: string; hostNetns?: string } = {}) {}

  /** A locator if the Docker socket exists, else null (no Docker on this node). */
  static ifAvailable(opts: { socketPath?: string; hostNetns?: string } = {}): DockerLocator | null {
    return existsSync(opts.socketPath ?? DOCKER_SOCKET) ? new DockerLocator(opts) : null;
  }

  private docker(): Promise<Docker> {
    // Loaded on first use: nodes without Docker never load the client.
    this.client ??= import('dockerode').then(
      ({ default: DockerClient }) => new DockerClient({ socketPath: this.opts.socketPath ?? DOCKER_SOCKET }),
    );
    return this.client;
  }

  /** Host pids of the pod's running containers. */
  async pids(podUid: string): Promise<number[]> {
    const uid = normalizePodUid(podUid);
    const docker = await this.docker();
    const list = await docker.listContainers({ filters: { label: [`${POD_UID_LABEL}=${uid}`], status: ['running'] } });
    const pids: number[] = [];
    for (const c of list) {
      try {
        const info = await docker.getContainer(c.Id).inspect();
        if (info.State.Running && info.State.Pid > 0) pids.push(info.State.Pid);
      } catch {
        /* removed meanwhile */
      }
    }
    return pids;
  }

  async find(podUid: string): Promise<PodLookup> {
    let pids: number[];
    try {
      pids = await this.pids(podUid);
    } catch (err) {
      return {
        kind: 'notFound',
        reason: `Docker API at ${this.opts.socketPath ?? DOCKER_SOCKET}: ${(err as Error).message}`,
      };
    }
    return lookupByPids(normalizePodUid(podUid), pids, 'docker', this.opts.hostNetns);
  }
}

/** Asks each locator in turn; the first answer other than notFound wins. */
export function firstLocator(locators: readonly PodLocator[]): PodLocator {
  return {
    async find(podUid) {
      const reasons: string[] = [];
      for (const l of locators) {
        const r = await l.find(podUid);
        if (r.kind !== 'notFound') return r;
        reasons.push(r.reason);
      }
      return { kind: 'notFound', reason: reasons.join('; ') || `no way to look for pod ${podUid}` };
    },
  };
}

/** What an agent uses by default: /proc, then Docker where its socket exists. */
export function defaultLocator(opts: { hostNetns?: string; dockerSocket?: string } = {}): PodLocator {
  const docker = DockerLocator.ifAvailable({ socketPath: opts.dockerSocket, hostNetns: opts.hostNetns });
  return firstLocator([new ProcLocator({ hostNetns: opts.hostNetns }), ...(docker ? [docker] : [])]);
}
