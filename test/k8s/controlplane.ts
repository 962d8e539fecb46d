// A real Kubernetes control plane for tests: etcd + kube-apiserver (+ optionally
// kube-controller-manager for garbage collection, namespace deletion, default
// ServiceAccounts ...) on 127.0.0.1, with RBAC on. The binaries are built from
// the Go module proxy by test/k8s/build-control-plane.sh and cached outside
// the clone; this module only runs them.
//
// Parallel-safe: every control plane gets its own free loopback ports and its
// own temporary directory (removed by stop()).
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync, statSync, accessSync, constants as fsc } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';

/** The script that builds the binaries; CI runs it before the tests. */
export const BUILD_SCRIPT = 'test/k8s/build-control-plane.sh';
const BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'helm'] as const;

/** Documentation range (RFC 5737 TEST-NET-2): never routed anywhere. */
export const SERVICE_CLUSTER_IP_RANGE = '198.51.100.0/24';
export const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

/** An identity authenticated by the API server's static token file. */
export interface StaticUser {
  /** user name, e.g. 'alice' or 'system:serviceaccount:sixbed4:operator' */
  name: string;
  /** groups besides system:authenticated (added by the API server) */
  groups?: string[];
}

export interface ControlPlaneOptions {
  /** Also run kube-controller-manager (garbage collector etc.). Default false. */
  controllerManager?: boolean;
  /**
   * kube-controller-manager --controllers. Default: garbagecollector,
   * namespace, serviceaccount, serviceaccount-token, root-ca-cert-publisher,
   * deployment, replicaset, daemonset.
   */
  controllers?: string[];
  /** Extra static-token identities (besides 'admin' and 'unprivileged'). */
  users?: StaticUser[];
  /** kube-apiserver --service-cluster-ip-range (default SERVICE_CLUSTER_IP_RANGE); its first address is the `kubernetes` Service's. */
  serviceClusterIpRange?: string;
  /** kube-apiserver --authorization-mode (default 'RBAC'; a node needs 'Node,RBAC'). */
  authorizationMode?: string;
  /** Also run kube-scheduler (built by build-node.sh). Default false. */
  scheduler?: boolean;
  /** Extra kube-apiserver flags, e.g. ['--feature-gates=...']. */
  apiServerArgs?: string[];
  /** Directory with the binaries (default: controlPlaneBinaries()). */
  binDir?: string;
  /** How long to wait for readiness. Default 120 s (two cores, cold caches). */
  startTimeoutMs?: number;
  /** Keep the temp dir (logs, etcd data) after stop(). Also SIXBED4_K8S_KEEP=1. */
  keepTempDir?: boolean;
}

export interface ControlPlane {
  /** https://127.0.0.1:<port> */
  server: string;
  /** kubeconfig (JSON, readable by kubectl/helm) for the admin user; contexts for every static user too */
  kubeconfigPath: string;
  /** PEM bundle to trust for `server` (and for the API server's other addresses, the `kubernetes` Service's included) */
  caData: string;
  /** the API server's port on 127.0.0.1 */
  port: number;
  /** bearer token of the admin user (group system:masters) */
  adminToken: string;
  /** static-token users by name → token: 'admin', 'unprivileged' and opts.users */
  tokens: Record<string, string>;
  /** directory with etcd, kube-apiserver, kube-controller-manager, helm */
  binDir: string;
  /** path of the helm binary */
  helm: string;
  /** temp dir of this control plane (logs/ has each process's output) */
  dir: string;
  /** how long the start took, in milliseconds */
  startMs: number;
  /** process ids of the running etcd, kube-apiserver (, kube-controller-manager) */
  pids(): number[];
  /** KubeConfig for a static user (default 'admin') */
  kubeConfig(user?: string): KubeConfig;
  /** KubeConfig for any bearer token (e.g. one from serviceAccountToken()) */
  kubeConfigForToken(token: string, name?: string): KubeConfig;
  /** Writes a kubeconfig file for a bearer token (for helm/kubectl as that identity). */
  writeKubeconfig(token: string, name?: string): Promise<string>;
  /**
   * Mints a real ServiceAccount token (TokenRequest API) for
   * system:serviceaccount:<namespace>:<name>, creating the namespace and the
   * ServiceAccount if needed. RBAC then applies to it like in a cluster.
   * Bound to a Pod (as the kubelet's projected tokens are), the API server
   * also records the Pod's node in the token (user extra
   * authentication.kubernetes.io/node-name).
   */
  serviceAccountToken(
    namespace: string,
    name: string,
    expirationSeconds?: number,
    boundPod?: { name: string; uid: string },
  ): Promise<string>;
  /** Kills every process and removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------
// locating the binaries

function findRepoRoot(): string | null {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(d, 'test', 'k8s-build', 'versions.env'))) return d;
    const up = dirname(d);
    if (up === d) return null;
    d = up;
  }
}

/** The pinned versions (test/k8s-build/versions.env). */
export function controlPlaneVersions(): Record<string, string> {
  const root = findRepoRoot();
  if (!root) throw new Error('test/k8s-build/versions.env not found above ' + fileURLToPath(import.meta.url));
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(root, 'test', 'k8s-build', 'versions.env'), 'utf8').split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(\S*)\s*$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** Cache root used by the build script. */
export function controlPlaneCacheDir(): string {
  return process.env.SIXBED4_K8S_CACHE || join(homedir(), '.cache', 'sixbed4', 'k8s');
}

/** An executable regular file. */
export function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsc.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * Where the binaries are: $SIXBED4_K8S_BIN_DIR if set, else
 * <cache>/<K8S_VERSION>/bin when the build script finished there (stamp file
 * present) — or null when they have not been built.
 */
export function controlPlaneBinaries(): string | null {
  const override = process.env.SIXBED4_K8S_BIN_DIR;
  if (override) return BINARIES.every((b) => isExecutable(join(override, b))) ? override : null;
  let v: Record<string, string>;
  try {
    v = controlPlaneVersions();
  } catch {
    return null;
  }
  if (!v.K8S_VERSION) return null;
  const bin = join(controlPlaneCacheDir(), v.K8S_VERSION, 'bin');
  let stamp: string;
  try {
    stamp = readFileSync(join(bin, '.stamp'), 'utf8');
  } catch {
    return null; // never built, or a build did not finish
  }
  // etcd/helm bumped without a Kubernetes bump: the cached ones are stale
  if (!stamp.includes(`etcd=${v.ETCD_VERSION} `) || !stamp.includes(`helm=${v.HELM_VERSION} `)) return null;
  return BINARIES.every((b) => isExecutable(join(bin, b))) ? bin : null;
}

/** Why tests needing the control plane cannot run, or null when they can. */
export function controlPlaneSkipReason(): string | null {
  if (controlPlaneBinaries()) return null;
  return `Kubernetes control-plane binaries not built or out of date (looked in ${process.env.SIXBED4_K8S_BIN_DIR || join(controlPlaneCacheDir(), safeVersion(), 'bin')}); run: bash ${BUILD_SCRIPT}`;
}

function safeVersion(): string {
  try {
    return controlPlaneVersions().K8S_VERSION ?? '<version>';
  } catch {
    return '<version>';
  }
}

// ---------------------------------------------------------------------------
// helpers

/** A free TCP port on 127.0.0.1 (the OS picks it; raced only by other binders). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function token(): string {
  return randomBytes(24).toString('base64url');
}

/** A control-plane or node process with its log file (logs/<name>.log). */
export interface Proc {
  name: string;
  child: ChildProcess;
  log: string;
  exited: Promise<number | null>;
  exitCode?: number | null;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a test forgot stop(): do not leave servers behind.
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
}

export function startProc(name: string, bin: string, args: string[], logDir: string, env: NodeJS.ProcessEnv): Proc {
  const log = join(logDir, `${name}.log`);
  const out = createWriteStream(log);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  live.add(child);
  child.stdout!.pipe(out, { end: false });
  child.stderr!.pipe(out, { end: false });
  const p: Proc = { name, child, log, exited: Promise.resolve(null) };
  p.exited = new Promise((res) => {
    child.on('error', (e) => {
      out.write(`\n[harness] spawn error: ${e.message}\n`);
      p.exitCode = -1;
      live.delete(child);
      res(-1);
    });
    child.on('exit', (code, sig) => {
      p.exitCode = code ?? (sig ? -1 : null);
      live.delete(child);
      // let the pipes drain before closing the log
      setImmediate(() => out.end());
      res(p.exitCode);
    });
  });
  return p;
}

export async function stopProc(p: Proc, graceMs = 10_000): Promise<void> {
  if (p.exitCode !== undefined) return;
  p.child.kill('SIGTERM');
  const ac = new AbortController();
  const t = sleep(graceMs, 'timeout' as const, { signal: ac.signal }).catch(() => 'aborted' as const);
  const r = await Promise.race([p.exited, t]);
  ac.abort(); // do not keep the event loop alive for the grace period
  if (r === 'timeout') {
    p.child.kill('SIGKILL');
    await p.exited;
  }
}

export async function tail(file: string, lines = 40): Promise<string> {
  try {
    const s = await readFile(file, 'utf8');
    return s.split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function get(
  url: string,
  opts: { token?: string; ca?: string; timeoutMs?: number } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const u = new URL(url);
    const isHttps = u.protocol === 'https:';
    const headers: Record<string, string> = {};
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    const req = (isHttps ? httpsRequest : httpRequest)(
      u,
      {
        method: 'GET',
        headers,
        timeout: opts.timeoutMs ?? 5000,
        ...(isHttps ? (opts.ca ? { ca: opts.ca } : { rejectUnauthorized: false }) : {}),
      },
      (r) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => (body += c));
        r.on('end', () => res({ status: r.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
    req.end();
  });
}

export async function waitFor(
  what: string,
  deadline: number,
  procs: Proc[],
  check: () => Promise<boolean>,
): Promise<void> {
  let lastErr = '';
  while (Date.now() < deadline) {
    for (const p of procs) {
      if (p.exitCode !== undefined) {
        throw new Error(
          `${p.name} exited (code ${p.exitCode}) while waiting for ${what}; last log lines (${p.log}):\n${await tail(p.log)}`,
        );
      }
    }
    try {
      if (await check()) return;
    } catch (e) {
      lastErr = (e as Error).message;
    }
    await sleep(200);
  }
  const logs = await Promise.all(procs.map(async (p) => `--- ${p.name} (${p.log}):\n${await tail(p.log, 25)}`));
  throw new Error(`timed out waiting for ${what}${lastErr ? ` (last error: ${lastErr})` : ''}\n${logs.join('\n')}`);
}

/** The CA certificate(s) in the self-signed bundle kube-apiserver wrote to --cert-dir. */
function caFromServingBundle(pem: string): string {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const cas = blocks.filter((b) => {
    try {
      return new X509Certificate(b).ca;
    } catch {
      return false;
    }
  });
  return (cas.length ? cas : blocks).join('\n') + '\n';
}

interface KubeconfigUser {
  name: string;
  token: string;
}

export function kubeconfigJson(server: string, caData: string, users: KubeconfigUser[], current: string): string {
  const ca = Buffer.from(caData).toString('base64');
  return JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'sixbed4-test', cluster: { server, 'certificate-authority-data': ca } }],
      users: users.map((u) => ({ name: u.name, user: { token: u.token } })),
      contexts: users.map((u) => ({
        name: u.name,
        context: { cluster: 'sixbed4-test', user: u.name, namespace: 'default' },
      })),
      'current-context': current,
      preferences: {},
    },
    null,
    2,
  );
}

// ---------------------------------------------------------------------------

/**
 * Starts etcd + kube-apiserver (+ kube-controller-manager when asked) on
 * 127.0.0.1 and waits until the API server is ready. Throws an Error naming
 * the build script when the binaries have not been built.
 */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const t0 = Date.now();
  const binDir = opts.binDir ?? controlPlaneBinaries();
  if (!binDir) throw new Error(controlPlaneSkipReason() ?? `control-plane binaries missing; run: bash ${BUILD_SCRIPT}`);
  for (const b of BINARIES) {
    if (!isExecutable(join(binDir, b))) throw new Error(`${join(binDir, b)} missing; run: bash ${BUILD_SCRIPT}`);
  }
  installExitHook();
  const keep = opts.keepTempDir ?? process.env.SIXBED4_K8S_KEEP === '1';
  const deadline = t0 + (opts.startTimeoutMs ?? 120_000);

  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-k8s-'));
  const logDir = join(dir, 'logs');
  const certDir = join(dir, 'certs');
  await mkdir(logDir);
  await mkdir(certDir, { mode: 0o700 });

  // A clean environment: no stray KUBECONFIG, proxies or Go debug settings.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, TMPDIR: dir };

  const procs: Proc[] = [];
  let stopped = false;
  const stopAll = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // reverse order: controller manager, API server, etcd
    for (const p of [...procs].reverse()) await stopProc(p);
    if (!keep) await rm(dir, { recursive: true, force: true });
  };

  try {
    // --- identities
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const saKey = join(certDir, 'sa.key');
    const saPub = join(certDir, 'sa.pub');
    await writeFile(saKey, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    await writeFile(saPub, publicKey.export({ type: 'spki', format: 'pem' }));

    const users: (StaticUser & { token: string })[] = [
      { name: 'admin', groups: ['system:masters'], token: token() },
      { name: 'unprivileged', groups: [], token: token() },
      ...(opts.users ?? []).map((u) => ({ ...u, token: token() })),
    ];
    const names = new Set<string>();
    for (const u of users) {
      if (names.has(u.name)) throw new Error(`duplicate static user ${u.name}`);
      if (/[",\n]/.test(u.name) || (u.groups ?? []).some((g) => /[",\n]/.test(g)))
        throw new Error(`static user ${u.name}: names and groups may not contain quotes, commas or newlines`);
      names.add(u.name);
    }
    const tokenFile = join(certDir, 'tokens.csv');
    await writeFile(
      tokenFile,
      users
        .map((u, i) => `${u.token},${u.name},uid-${i}${u.groups?.length ? `,"${u.groups.join(',')}"` : ''}`)
        .join('\n') + '\n',
      { mode: 0o600 },
    );
    const adminToken = users[0]!.token;

    // --- etcd (retry on a port race with another test process)
    let etcdUrl = '';
    for (let attempt = 1; ; attempt++) {
      const [clientPort, peerPort] = await freePorts(2);
      etcdUrl = `http://127.0.0.1:${clientPort}`;
      const peerUrl = `http://127.0.0.1:${peerPort}`;
      const etcd = startProc(
        attempt === 1 ? 'etcd' : `etcd-${attempt}`,
        join(binDir, 'etcd'),
        [
          '--name=sixbed4-test',
          `--data-dir=${join(dir, 'etcd')}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=${peerUrl}`,
          `--initial-advertise-peer-urls=${peerUrl}`,
          `--initial-cluster=sixbed4-test=${peerUrl}`,
          '--initial-cluster-state=new',
          '--unsafe-no-fsync=true',
          '--quota-backend-bytes=1073741824',
          '--log-level=warn',
        ],
        logDir,
        env,
      );
      procs.push(etcd);
      try {
        await waitFor('etcd /health', Math.min(deadline, Date.now() + 30_000), [etcd], async () => {
          const r = await get(`${etcdUrl}/health`, { timeoutMs: 2000 });
          return r.status === 200 && /"health":\s*"true"/.test(r.body);
        });
        break;
      } catch (e) {
        if (attempt >= 3 || etcd.exitCode === undefined) throw e;
        procs.pop();
        await rm(join(dir, 'etcd'), { recursive: true, force: true });
      }
    }

    // --- kube-apiserver
    let server = '';
    let apiserver: Proc | undefined;
    for (let attempt = 1; ; attempt++) {
      const [port] = await freePorts(1);
      server = `https://127.0.0.1:${port}`;
      apiserver = startProc(
        attempt === 1 ? 'kube-apiserver' : `kube-apiserver-${attempt}`,
        join(binDir, 'kube-apiserver'),
        [
          `--etcd-servers=${etcdUrl}`,
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          `--secure-port=${port}`,
          `--cert-dir=${certDir}`,
          `--token-auth-file=${tokenFile}`,
          `--authorization-mode=${opts.authorizationMode ?? 'RBAC'}`,
          `--service-cluster-ip-range=${opts.serviceClusterIpRange ?? SERVICE_CLUSTER_IP_RANGE}`,
          `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
          `--service-account-key-file=${saPub}`,
          `--service-account-signing-key-file=${saKey}`,
          // the loopback address may not be published as the `kubernetes` Service's endpoint
          '--endpoint-reconciler-type=none',
          '--allow-privileged=true',
          '--profiling=false',
          '--v=1',
          ...(opts.apiServerArgs ?? []),
        ],
        logDir,
        env,
      );
      procs.push(apiserver);
      try {
        // Port races show up as an early exit; readiness can take a while.
        await waitFor('kube-apiserver to listen', deadline, [apiserver], async () => {
          await get(`${server}/livez`, { timeoutMs: 2000 });
          return true;
        });
        break;
      } catch (e) {
        const log = await tail(apiserver.log, 20);
        if (attempt >= 3 || apiserver.exitCode === undefined || !/address already in use/.test(log)) throw e;
        procs.pop();
      }
    }
    await waitFor('kube-apiserver /readyz', deadline, procs, async () => {
      const r = await get(`${server}/readyz`, { token: adminToken, timeoutMs: 5000 });
      return r.status === 200;
    });

    const bundle = await readFile(join(certDir, 'apiserver.crt'), 'utf8');
    const caData = caFromServingBundle(bundle);
    const caFile = join(certDir, 'ca.crt');
    await writeFile(caFile, caData);
    // sanity: the CA we hand out really verifies the server
    const check = await get(`${server}/version`, { token: adminToken, ca: caData });
    if (check.status !== 200) throw new Error(`GET /version with the generated CA: HTTP ${check.status} ${check.body}`);

    const kubeconfigPath = join(dir, 'kubeconfig');
    await writeFile(kubeconfigPath, kubeconfigJson(server, caData, users, 'admin'), { mode: 0o600 });

    const kubeConfigForToken = (tok: string, name = 'token-user'): KubeConfig => {
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [
          { name: 'sixbed4-test', server, caData: Buffer.from(caData).toString('base64'), skipTLSVerify: false },
        ],
        users: [{ name, token: tok }],
        contexts: [{ name, cluster: 'sixbed4-test', user: name, namespace: 'default' }],
        currentContext: name,
      });
      return kc;
    };
    const tokens = Object.fromEntries(users.map((u) => [u.name, u.token]));
    const kubeConfig = (user = 'admin'): KubeConfig => {
      const tok = tokens[user];
      if (!tok) throw new Error(`no static user ${user}; known: ${Object.keys(tokens).join(', ')}`);
      return kubeConfigForToken(tok, user);
    };

    // --- kube-controller-manager
    if (opts.controllerManager) {
      const controllers = opts.controllers ?? [
        'garbagecollector',
        'namespace',
        'serviceaccount',
        'serviceaccount-token',
        'root-ca-cert-publisher',
        'deployment',
        'replicaset',
        'daemonset',
      ];
      const kcm = startProc(
        'kube-controller-manager',
        join(binDir, 'kube-controller-manager'),
        [
          `--kubeconfig=${kubeconfigPath}`,
          '--leader-elect=false',
          '--secure-port=0',
          `--controllers=${controllers.join(',')}`,
          `--service-account-private-key-file=${saKey}`,
          `--root-ca-file=${caFile}`,
          '--use-service-account-credentials=false',
          '--concurrent-gc-syncs=5',
          '--v=1',
        ],
        logDir,
        env,
      );
      procs.push(kcm);
      if (controllers.includes('serviceaccount') || controllers.includes('*')) {
        // Ready enough once its informers run: it created the default ServiceAccount.
        await waitFor('kube-controller-manager (default ServiceAccount in kube-system)', deadline, procs, async () => {
          const r = await get(`${server}/api/v1/namespaces/kube-system/serviceaccounts/default`, {
            token: adminToken,
            ca: caData,
          });
          return r.status === 200;
        });
      } else {
        await sleep(500);
        if (kcm.exitCode !== undefined)
          throw new Error(`kube-controller-manager exited (code ${kcm.exitCode}):\n${await tail(kcm.log)}`);
      }
    }

    // --- kube-scheduler
    if (opts.scheduler) {
      const sched = startProc(
        'kube-scheduler',
        join(binDir, 'kube-scheduler'),
        [`--kubeconfig=${kubeconfigPath}`, '--leader-elect=false', '--secure-port=0', '--v=1'],
        logDir,
        env,
      );
      procs.push(sched);
      await sleep(500);
      if (sched.exitCode !== undefined)
        throw new Error(`kube-scheduler exited (code ${sched.exitCode}):\n${await tail(sched.log)}`);
    }

    const cp: ControlPlane = {
      server,
      port: Number(new URL(server).port),
      kubeconfigPath,
      caData,
      adminToken,
      tokens,
      binDir,
      helm: join(binDir, 'helm'),
      dir,
      startMs: 0,
      pids: () => procs.filter((p) => p.exitCode === undefined && p.child.pid !== undefined).map((p) => p.child.pid!),
      kubeConfig,
      kubeConfigForToken,
      async writeKubeconfig(tok: string, name = 'token-user') {
        const p = join(dir, `kubeconfig-${name.replace(/[^A-Za-z0-9_.-]/g, '_')}-${randomBytes(3).toString('hex')}`);
        await writeFile(p, kubeconfigJson(server, caData, [{ name, token: tok }], name), { mode: 0o600 });
        return p;
      },
      async serviceAccountToken(
        namespace: string,
        name: string,
        expirationSeconds = 3600,
        boundPod?: { name: string; uid: string },
      ) {
        const auth = { token: adminToken, ca: caData };
        const send = (method: string, path: string, body: unknown) => requestJson(server, method, path, body, auth);
        let r = await send('POST', '/api/v1/namespaces', {
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: { name: namespace },
        });
        if (r.status !== 201 && r.status !== 409)
          throw new Error(`create namespace ${namespace}: HTTP ${r.status} ${r.body}`);
        r = await send('POST', `/api/v1/namespaces/${namespace}/serviceaccounts`, {
          apiVersion: 'v1',
          kind: 'ServiceAccount',
          metadata: { name },
        });
        if (r.status !== 201 && r.status !== 409)
          throw new Error(`create serviceaccount ${namespace}/${name}: HTTP ${r.status} ${r.body}`);
        r = await send('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: {
            expirationSeconds,
            ...(boundPod ? { boundObjectRef: { apiVersion: 'v1', kind: 'Pod', ...boundPod } } : {}),
          },
        });
        if (r.status !== 201) throw new Error(`TokenRequest for ${namespace}/${name}: HTTP ${r.status} ${r.body}`);
        return (JSON.parse(r.body) as { status: { token: string } }).status.token;
      },
      stop: stopAll,
    };
    cp.startMs = Date.now() - t0;
    return cp;
  } catch (e) {
    await stopAll();
    throw e;
  }
}

function requestJson(
  server: string,
  method: string,
  path: string,
  body: unknown,
  auth: { token: string; ca: string },
): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const data = JSON.stringify(body);
    const req = httpsRequest(
      new URL(path, server),
      {
        method,
        ca: auth.ca,
        timeout: 10_000,
        headers: {
          Authorization: `Bearer ${auth.token}`,
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(data),
        },
      },
      (r) => {
        let out = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => (out += c));
        r.on('end', () => res({ status: r.statusCode ?? 0, body: out }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
    req.end(data);
  });
}

/** Absolute path of the repository (where test/k8s-build/ is). */
export function repoRoot(): string {
  return findRepoRoot() ?? resolve('.');
}
