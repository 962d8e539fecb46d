// A real Kubernetes node for tests: containerd v2 + runc + the CNI reference plugins + kubelet, built from the Go
// module proxy by test/k8s/build-node.sh, registered with a test control plane (controlplane.ts). The node's host
// network is a network namespace the test made, never the machine's; everything else a node keeps (containerd's
// root and state, the kubelet's root dir, pod logs, CNI state, cgroups) lives under the node's own directory or a
// cgroup named for it, so two nodes and two test runs never share anything, and stop() leaves nothing behind.
//
// What it took (../shared/docs/real-node.md has the measurements):
// - containerd and the kubelet enter only the network namespace (`nsenter --net`): `ip netns exec` remounts /sys,
//   which hides the cgroup mounts from both.
// - cgroup v1 here (hybrid layout): kubelet needs failCgroupV1 false and the cgroupfs driver; each node has its own
//   cgroup root (/sixbed4-<node>), which must exist in every hierarchy before the kubelet starts.
// - root here lacks CAP_SYS_RESOURCE: containerd must not give sandboxes a negative OOM score
//   (restrict_oom_score_adj).
// - no registry: the sandbox ("pause") image and the product image are imported from a `docker save` archive and
//   the sandbox image is pinned in containerd's config.
// - the `kubernetes` Service's ClusterIP is answered on every node by a relay to the API server (no kube-proxy runs:
//   this is the one Service the product needs), so pods reach the API exactly as in a cluster, with the address and
//   CA that the kubelet gives them.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execCommand } from '../../agent/host/command.js';
import type { Netns } from '../../lab/netns.js';
import { bridgeApiInto, type ApiBridge } from '../helpers/api-bridge.js';
import {
  controlPlaneBinaries,
  controlPlaneCacheDir,
  controlPlaneVersions,
  isExecutable,
  kubeconfigJson,
  startProc,
  stopProc,
  tail,
  waitFor,
  type ControlPlane,
  type Proc,
} from './controlplane.js';

export const NODE_BUILD_SCRIPT = 'test/k8s/build-node.sh';
const CNI_PLUGINS = ['bridge', 'host-local', 'loopback', 'ptp', 'portmap'];
const NODE_BINARIES = [
  'kubelet',
  'kube-scheduler',
  'kubectl',
  'containerd',
  'containerd-shim-runc-v2',
  'ctr',
  'cnitool',
  'runc',
  ...CNI_PLUGINS.map((p) => `cni/${p}`),
];

/** The directory with the node binaries (CNI plugins in cni/), or null when build-node.sh has not finished there. */
export function nodeBinaries(): string | null {
  const override = process.env.SIXBED4_K8S_BIN_DIR;
  let bin = override;
  if (!bin) {
    const v = controlPlaneVersions().K8S_VERSION;
    if (!v) return null;
    bin = join(controlPlaneCacheDir(), v, 'bin');
    if (!existsSync(join(bin, '.stamp-node'))) return null;
  }
  return NODE_BINARIES.every((b) => isExecutable(join(bin!, b))) ? bin : null;
}

/** Why a real node cannot run here, or null when it can. */
export function nodeSkipReason(): string | null {
  if (process.platform !== 'linux') return `a node needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'a node needs root (containerd, kubelet, network namespaces)';
  if (!controlPlaneBinaries()) return `control-plane binaries not built; run: bash test/k8s/build-control-plane.sh`;
  if (!nodeBinaries())
    return `node binaries (kubelet, containerd, runc, CNI plugins) not built; run: bash ${NODE_BUILD_SCRIPT}`;
  return null;
}

export interface NodeOptions {
  /** Node name (also the kubelet's static-token user system:node:<name>, which the control plane must have). */
  name: string;
  /** The node's host network: a namespace the test made. */
  ns: Netns;
  /** The node's InternalIP (an IPv4 address in ns). */
  nodeIp: string;
  /** Subnet of the node's pod bridge (CNI bridge + host-local), e.g. 100.64.101.0/24. */
  podCidr: string;
  cp: ControlPlane;
  /** The `kubernetes` Service's ClusterIP (first address of the control plane's service range). */
  apiServiceIp: string;
  /** `docker save` archive with the sandbox image and the images the pods use. */
  imageArchive: string;
  /** Reference of the sandbox image in that archive, e.g. docker.io/library/sixbed4-pause:test. */
  sandboxImage: string;
  /** Parent directory; the node works in <dir>/<name>. */
  dir: string;
  /** Node labels given at registration. */
  labels?: Record<string, string>;
}

/** A running node. stop() is idempotent and never throws. */
export class KubeNode {
  private containerd?: Proc;
  private kubelet?: Proc;
  private relay?: ApiBridge;
  private stopped = false;

  private constructor(
    readonly o: NodeOptions,
    readonly bin: string,
    readonly home: string,
    readonly cgroupRoot: string,
  ) {}

  get name(): string {
    return this.o.name;
  }
  get logDir(): string {
    return join(this.home, 'logs');
  }
  get socket(): string {
    return join(this.home, 'containerd.sock');
  }
  /** This node's CNI config directory (its pod network list is 10-pods.conflist). */
  get cniConfDir(): string {
    return join(this.home, 'cni/net.d');
  }
  /** A CNI plugin directory of this node's own (searched before the shared reference plugins). */
  get cniBinDir(): string {
    return join(this.home, 'cni/bin');
  }
  /** Where containerd makes the pods' network namespaces (CNI_NETNS paths are below it). */
  get netnsDir(): string {
    return join(this.home, 'containerd/state');
  }

  static async start(o: NodeOptions): Promise<KubeNode> {
    const bin = nodeBinaries();
    if (!bin) throw new Error(nodeSkipReason() ?? 'node binaries missing');
    const home = join(o.dir, o.name);
    // Unique per node and per test run: the node's directory name is already unique (it is under a mkdtemp dir).
    const cgroupRoot = `/sixbed4-${o.ns.name}`;
    const node = new KubeNode(o, bin, home, cgroupRoot);
    try {
      await node.prepare();
      await node.bootRuntime();
      await node.importImages();
      await node.bootKubelet();
      await node.waitReady();
    } catch (e) {
      const logs = await node.logs(30);
      await node.stop();
      throw new Error(`node ${o.name} did not come up: ${(e as Error).message}\n${logs}`);
    }
    return node;
  }

  /** The last lines of containerd's and the kubelet's logs. */
  async logs(lines = 40): Promise<string> {
    const out: string[] = [];
    for (const p of [this.containerd, this.kubelet])
      if (p) out.push(`--- ${this.name} ${p.name} (${p.log}):\n${await tail(p.log, lines)}`);
    return out.join('\n');
  }

  /** The last lines of every container log on this node whose pod name contains `match` (kubelet's podLogsDir). */
  async podLogs(match: string, lines = 30): Promise<string> {
    const out: string[] = [];
    const root = join(this.home, 'pod-logs');
    for (const pod of await readdir(root).catch(() => [] as string[])) {
      if (!pod.includes(match)) continue;
      for (const c of await readdir(join(root, pod)).catch(() => [] as string[])) {
        for (const f of await readdir(join(root, pod, c)).catch(() => [] as string[])) {
          out.push(`--- ${this.name} ${pod}/${c}/${f}:\n${await tail(join(root, pod, c, f), lines)}`);
        }
      }
    }
    return out.join('\n');
  }

  private async prepare(): Promise<void> {
    for (const d of [
      'logs',
      'containerd/root',
      'containerd/state',
      'cni/net.d',
      'cni/bin',
      'cni/data',
      'kubelet',
      'pod-logs',
    ]) {
      await mkdir(join(this.home, d), { recursive: true });
    }
    await makeCgroupRoot(this.cgroupRoot);
    await makeSharedMount(this.netnsDir);
    // The `kubernetes` Service, answered on this node.
    this.relay = await bridgeApiInto(this.o.ns, this.o.cp.port, join(this.home, 'api.sock'), {
      host: this.o.apiServiceIp,
      port: 443,
    });
    await writeFile(
      join(this.home, 'cni/net.d/10-pods.conflist'),
      JSON.stringify(
        {
          cniVersion: '1.0.0',
          name: `pods-${this.o.ns.name}`,
          plugins: [
            {
              type: 'bridge',
              bridge: 'cni0',
              isGateway: true,
              ipMasq: false,
              hairpinMode: false,
              ipam: {
                type: 'host-local',
                ranges: [[{ subnet: this.o.podCidr }]],
                routes: [{ dst: '0.0.0.0/0' }],
                dataDir: join(this.home, 'cni/data'),
              },
            },
          ],
        },
        null,
        2,
      ),
    );
    await writeFile(join(this.home, 'containerd.toml'), this.containerdConfig());
    await writeFile(
      join(this.home, 'kubeconfig'),
      kubeconfigJson(
        `https://${this.o.apiServiceIp}:443`,
        this.o.cp.caData,
        [{ name: `system:node:${this.name}`, token: this.token() }],
        `system:node:${this.name}`,
      ),
      { mode: 0o600 },
    );
    await writeFile(join(this.home, 'kubelet.yaml'), this.kubeletConfig());
  }

  private token(): string {
    const t = this.o.cp.tokens[`system:node:${this.name}`];
    if (!t)
      throw new Error(
        `the control plane has no static user system:node:${this.name} (group system:nodes): start it with users: nodeUsers([...])`,
      );
    return t;
  }

  private containerdConfig(): string {
    const h = this.home;
    return `version = 3
root = "${h}/containerd/root"
state = "${h}/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${h}/containerd.sock"
[ttrpc]
  address = "${h}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.cri.v1.runtime"]
  # root here lacks CAP_SYS_RESOURCE: a negative OOM score for sandboxes would make runc fail
  restrict_oom_score_adj = true
  # pod network namespaces under this node's state dir, not /run/netns
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["${h}/cni/bin", "${this.bin}/cni"]
    conf_dir = "${h}/cni/net.d"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "${this.bin}/runc"
        SystemdCgroup = false

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "${this.o.sandboxImage}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`;
  }

  private kubeletConfig(): string {
    return JSON.stringify(
      {
        apiVersion: 'kubelet.config.k8s.io/v1beta1',
        kind: 'KubeletConfiguration',
        // cgroup v1 (this machine's hybrid layout) and no systemd
        failCgroupV1: false,
        cgroupDriver: 'cgroupfs',
        cgroupRoot: this.cgroupRoot,
        containerRuntimeEndpoint: `unix://${this.socket}`,
        address: this.o.nodeIp,
        port: 10250,
        readOnlyPort: 0,
        healthzBindAddress: '127.0.0.1',
        healthzPort: 10248,
        // the API server never calls the kubelet in these tests (no logs/exec); the namespace is reachable only from the test
        authentication: { anonymous: { enabled: true }, webhook: { enabled: false } },
        authorization: { mode: 'AlwaysAllow' },
        podLogsDir: join(this.home, 'pod-logs'),
        resolvConf: existsSync('/etc/resolv.conf') ? '/etc/resolv.conf' : '',
        failSwapOn: false,
        // the machine's disk is the tests', not the node's: no eviction or image GC because of it
        evictionHard: {
          'memory.available': '50Mi',
          'nodefs.available': '1%',
          'imagefs.available': '1%',
          'nodefs.inodesFree': '1%',
        },
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        nodeStatusUpdateFrequency: '4s',
        syncFrequency: '10s',
        serializeImagePulls: false,
        makeIPTablesUtilChains: false,
        rotateCertificates: false,
        serverTLSBootstrap: false,
        registerNode: true,
      },
      null,
      2,
    );
  }

  private async bootRuntime(): Promise<void> {
    const env = { PATH: `${this.bin}:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: this.home, TMPDIR: this.home };
    this.containerd = startProc(
      'containerd',
      nsenter(),
      [
        `--net=/run/netns/${this.o.ns.name}`,
        join(this.bin, 'containerd'),
        '--config',
        join(this.home, 'containerd.toml'),
        '--log-level',
        'warn',
      ],
      this.logDir,
      env,
    );
    await waitFor(`containerd on ${this.name}`, Date.now() + 60_000, [this.containerd], async () => {
      const r = await this.ctr(['version']);
      return r.code === 0;
    });
  }

  /** ctr against this node's containerd, in the k8s.io namespace (where the CRI keeps images and containers). */
  ctr(args: string[], timeoutMs = 120_000) {
    return execCommand([join(this.bin, 'ctr'), '--address', this.socket, '--namespace', 'k8s.io', ...args], {
      timeoutMs,
    });
  }

  private async importImages(): Promise<void> {
    await this.importImage(this.o.imageArchive);
  }

  /** Imports a `docker save` archive into this node's containerd (what a registry pull would bring). */
  async importImage(archive: string): Promise<void> {
    const r = await this.ctr(['images', 'import', '--local', archive], 300_000);
    if (r.code !== 0) throw new Error(`ctr images import ${archive}: ${r.stderr || r.stdout}`);
  }

  private async bootKubelet(): Promise<void> {
    const labels = Object.entries(this.o.labels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    const env = { PATH: `${this.bin}:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: this.home, TMPDIR: this.home };
    this.kubelet = startProc(
      'kubelet',
      nsenter(),
      [
        `--net=/run/netns/${this.o.ns.name}`,
        join(this.bin, 'kubelet'),
        `--config=${join(this.home, 'kubelet.yaml')}`,
        `--kubeconfig=${join(this.home, 'kubeconfig')}`,
        `--root-dir=${join(this.home, 'kubelet')}`,
        `--cert-dir=${join(this.home, 'kubelet', 'pki')}`,
        `--hostname-override=${this.name}`,
        `--node-ip=${this.o.nodeIp}`,
        ...(labels ? [`--node-labels=${labels}`] : []),
        '--v=1',
      ],
      this.logDir,
      env,
    );
  }

  /** Waits until the Node is Ready and carries no not-ready/unreachable taint (the node lifecycle controller's part). */
  async waitReady(timeoutMs = 120_000): Promise<void> {
    const procs = [this.containerd!, this.kubelet!];
    await waitFor(`node ${this.name} Ready and untainted`, Date.now() + timeoutMs, procs, async () => {
      const r = await execCommand(
        [join(this.bin, 'kubectl'), '--kubeconfig', this.o.cp.kubeconfigPath, 'get', 'node', this.name, '-o', 'json'],
        { timeoutMs: 10_000 },
      );
      if (r.code !== 0) return false;
      const n = JSON.parse(r.stdout) as {
        spec?: { taints?: { key: string }[] };
        status?: { conditions?: { type: string; status: string }[] };
      };
      const ready = n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
      const tainted = (n.spec?.taints ?? []).some((t) => t.key.startsWith('node.kubernetes.io/'));
      return ready && !tainted;
    });
  }

  /**
   * A power cut: the kubelet, containerd, the shims and every container killed at once, and what a reboot clears
   * cleared (runtime state, mounts, cgroups; a TUN device goes with its last process). The node's disk stays:
   * containerd's images and snapshots, the kubelet's root dir, hostPath directories. The host network namespace
   * itself stays as it is: a real reboot would also reset its addresses and sysctls.
   */
  async crash(): Promise<void> {
    if (this.kubelet) this.kubelet.child.kill('SIGKILL');
    await killCgroup(this.cgroupRoot);
    if (this.containerd) this.containerd.child.kill('SIGKILL');
    await killShims(this.home);
    await Promise.all([this.kubelet?.exited, this.containerd?.exited]);
    await unmountUnder(this.home);
    await removeCgroup(this.cgroupRoot);
    await rm(join(this.home, 'containerd', 'state'), { recursive: true, force: true });
  }

  /** Starts containerd and the kubelet again after crash(), and waits until the node is Ready. */
  async boot(): Promise<void> {
    await mkdir(join(this.home, 'containerd', 'state'), { recursive: true });
    await makeCgroupRoot(this.cgroupRoot);
    await makeSharedMount(this.netnsDir);
    await this.bootRuntime();
    await this.bootKubelet();
    await this.waitReady();
  }

  /**
   * Stops the node and removes every trace of it: the kubelet, the pods' processes (by the node's cgroups), containerd
   * and its shims, the mounts under the node's directory, the cgroups, the directory. The test deletes its objects
   * first so that the kubelet tears pods down the normal way (CNI DEL); this is what is left over.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const quiet = async (f: () => Promise<unknown>) => {
      try {
        await f();
      } catch {
        /* teardown goes on */
      }
    };
    if (this.kubelet) await quiet(() => stopProc(this.kubelet!));
    await quiet(() => killCgroup(this.cgroupRoot));
    if (this.containerd) await quiet(() => stopProc(this.containerd!));
    await quiet(() => killShims(this.home));
    await quiet(() => unmountUnder(this.home));
    await quiet(() => removeCgroup(this.cgroupRoot));
    if (this.relay) await quiet(() => this.relay!.close());
    await quiet(() => rm(this.home, { recursive: true, force: true }));
  }
}

/** Static-token users for the kubelets of these nodes (the Node authorizer wants system:node:<name> in system:nodes). */
export function nodeUsers(names: string[]): { name: string; groups: string[] }[] {
  return names.map((n) => ({ name: `system:node:${n}`, groups: ['system:nodes'] }));
}

/** The control-plane options nodes need: the Node authorizer and NodeRestriction, as kubeadm sets them. */
export const NODE_AUTHORIZATION_MODE = 'Node,RBAC';
export const NODE_API_SERVER_ARGS = ['--enable-admission-plugins=NodeRestriction'];

/** Controllers a node needs besides the defaults: the node lifecycle controller removes the not-ready taint. */
export const NODE_CONTROLLERS = [
  'garbagecollector',
  'namespace',
  'serviceaccount',
  'serviceaccount-token',
  'root-ca-cert-publisher',
  'deployment',
  'replicaset',
  'daemonset',
  'nodelifecycle',
];

function nsenter(): string {
  for (const p of ['/usr/bin/nsenter', '/bin/nsenter', '/usr/sbin/nsenter']) if (existsSync(p)) return p;
  return 'nsenter';
}

// ---------------------------------------------------------------------------
// cgroups (v1 hierarchies and the unified one of the hybrid layout)

function hierarchies(): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0) continue;
    const fstype = f[sep + 1];
    if ((fstype === 'cgroup' || fstype === 'cgroup2') && f[4]!.startsWith('/sys/fs/cgroup')) out.push(f[4]!);
  }
  return out;
}

async function makeCgroupRoot(root: string): Promise<void> {
  for (const h of hierarchies()) {
    const d = join(h, root);
    await mkdir(d, { recursive: true });
    // A new cpuset cgroup starts with no CPUs and no memory nodes: no task could join it.
    if (existsSync(join(d, 'cpuset.cpus'))) {
      for (const f of ['cpuset.cpus', 'cpuset.mems'])
        await writeFile(join(d, f), (await readFile(join(h, f), 'utf8')).trim());
    }
  }
}

/** Every cgroup directory under root in every hierarchy, deepest first. */
function cgroupDirs(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let entries: string[];
    try {
      entries = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(d, e));
    out.push(d);
  };
  for (const h of hierarchies()) walk(join(h, root));
  return out;
}

async function killCgroup(root: string): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const pids = new Set<number>();
    for (const d of cgroupDirs(root)) {
      try {
        for (const p of (await readFile(join(d, 'cgroup.procs'), 'utf8')).split('\n')) if (p) pids.add(Number(p));
      } catch {
        /* gone */
      }
    }
    if (pids.size === 0) return;
    for (const pid of pids)
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    await sleep(100);
  }
}

async function removeCgroup(root: string): Promise<void> {
  for (const d of cgroupDirs(root)) {
    for (let i = 0; i < 20; i++) {
      try {
        await rmdir(d);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
        await sleep(100); // a dying task still counted
      }
    }
  }
}

// ---------------------------------------------------------------------------
// processes and mounts left by containerd

/** containerd-shim-runc-v2 processes of this node: their command line names its containerd's socket. */
async function killShims(home: string): Promise<void> {
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('containerd-shim') && cmd.includes(home)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Unmounts everything mounted under dir (overlay roots, volumes, pod netns, the kubelet's self bind mount), deepest first. */
/**
 * Makes dir a shared mount point (a bind mount onto itself), as a node's netns directory is (iproute2 and the
 * runtimes make /run/netns shared): a pod that mounts it with HostToContainer propagation then sees namespaces
 * made after it started. This machine's / is a private mount, so without this the runtime refuses such a mount.
 */
export async function makeSharedMount(dir: string): Promise<void> {
  const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === dir);
  if (!mounted) {
    const r = await execCommand(['mount', '--bind', dir, dir]);
    if (r.code !== 0) throw new Error(`mount --bind ${dir}: ${r.stderr}`);
  }
  const r = await execCommand(['mount', '--make-shared', dir]);
  if (r.code !== 0) throw new Error(`mount --make-shared ${dir}: ${r.stderr}`);
}

export async function unmountUnder(dir: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const points = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4]?.replace(/\\040/g, ' '))
      .filter((p): p is string => !!p && (p === dir || p.startsWith(dir + '/')))
      .sort((a, b) => b.length - a.length);
    if (points.length === 0) return;
    for (const p of points) {
      const r = await execCommand(['umount', p]);
      if (r.code !== 0) await execCommand(['umount', '-l', p]);
    }
  }
}
