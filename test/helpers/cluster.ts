// Helpers of the tests against a real API server (test/operator, test/cluster, test/k8s): `kubectl apply` of YAML files through
// client-node's KubernetesObjectApi (server-side apply), waiting for
// conditions, and the operator as a child process with its metrics endpoint.
import { CLI } from '../../lab/sixbed4.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ApiException,
  KubernetesObjectApi,
  PatchStrategy,
  type KubeConfig,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freePort, type ControlPlane } from '../k8s/controlplane.js';
import { Kube, paths } from '../../kube/client.js';
import type { KubeObject } from '../../kube/api.js';
import { LogRing, logOnFailure } from './logring.js';
import { eventually } from './wait.js';
import test, { type ExecutionContext } from 'ava';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/ (compiled tree) and the repository (sources, YAML) */
export const DIST = join(here, '..', '..');
export const REPO = join(DIST, '..');

/** Where the chart puts the operator, and the ServiceAccounts it makes. */
export const NS = 'sixbed4-system';
export const RELEASE = 'sixbed4';
export const OPERATOR_SA = 'sixbed4-operator';
export const AGENT_SA = 'sixbed4-agent';
/** The chart's agent DaemonSet (release sixbed4). */
export const AGENT_DAEMONSET = 'sixbed4-agent';

/** The operator as the cluster tests run it: short leader-election times so that takeovers fit in a test. */
export const OPERATOR_FLAGS = [
  '--namespace',
  NS,
  '--agent-daemonset',
  AGENT_DAEMONSET,
  '--leader-elect',
  '--lease-name',
  'sixbed4-operator',
  '--lease-duration',
  '4',
  '--renew-deadline',
  '3',
  '--retry-period',
  '0.5',
  '--agent-stale-after',
  '300',
  '--cleanup-timeout',
  '120',
];

/** `helm install` of the chart (CRDs, ServiceAccounts, RBAC, the operator Deployment: unscheduled here). */
export async function installChart(cp: ControlPlane, extra: string[] = []): Promise<void> {
  const home = (k: string) => join(cp.dir, `helm-${k}`);
  await promisify(execFile)(
    cp.helm,
    [
      'install',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--create-namespace',
      '--kubeconfig',
      cp.kubeconfigPath,
      ...extra,
    ],
    {
      env: {
        ...process.env,
        HELM_CACHE_HOME: home('cache'),
        HELM_CONFIG_HOME: home('config'),
        HELM_DATA_HOME: home('data'),
      },
    },
  );
}

export function readYamlDocs(file: string): KubernetesObject[] {
  return parseYamlDocs(readFileSync(file, 'utf8'));
}

export function parseYamlDocs(text: string): KubernetesObject[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as KubernetesObject | null)
    .filter((d): d is KubernetesObject => !!d && typeof d === 'object');
}

/** `kubectl apply --server-side [--dry-run=server]` of objects. */
export async function kubectlApply(
  kc: KubeConfig,
  objs: KubernetesObject[],
  opts: { dryRun?: boolean; fieldManager?: string } = {},
): Promise<KubernetesObject[]> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  const out: KubernetesObject[] = [];
  for (const o of objs) {
    out.push(
      await api.patch(
        o,
        undefined,
        opts.dryRun ? 'All' : undefined,
        opts.fieldManager ?? 'kubectl',
        true,
        PatchStrategy.ServerSideApply,
      ),
    );
  }
  return out;
}

/** The API server's message of a failed client-node call. */
export async function apiErrorMessage(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiException) {
      let body: unknown = e.body;
      if (typeof body === 'string') {
        try {
          body = JSON.parse(body);
        } catch {
          /* keep text */
        }
      }
      const message = (body as { message?: string } | undefined)?.message ?? String(body);
      return { code: e.code, message };
    }
    if (e instanceof Error && 'status' in e)
      return { code: (e as unknown as { status: number }).status, message: e.message };
    throw e;
  }
  throw new Error('the request succeeded but was expected to fail');
}

/**
 * A token of the agent ServiceAccount as the DaemonSet's Pod on `node` has it: bound to a Pod on that node, so the
 * API server records the node in it (user extra authentication.kubernetes.io/node-name), which the chart's
 * admission policies compare with the slices and Leases the agent writes. The Pod object is made once per node;
 * with no kubelet it stays Pending.
 */
export async function agentToken(cp: ControlPlane, node: string): Promise<string> {
  const admin = new Kube(cp.kubeConfig(), 'sixbed4-test');
  const name = `sixbed4-agent-test-${node}`.slice(0, 63).replace(/[^a-z0-9]+$/, '');
  const pod =
    (await admin.get<KubeObject>(paths.pod(NS, name))) ??
    (await admin.create<KubeObject>(paths.pods(NS), {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: { 'app.kubernetes.io/component': 'agent-test' } },
      spec: {
        nodeName: node,
        serviceAccountName: AGENT_SA,
        automountServiceAccountToken: false,
        containers: [{ name: 'agent', image: 'sixbed4:test' }],
      },
    }));
  return cp.serviceAccountToken(NS, AGENT_SA, 3600, { name, uid: pod.metadata.uid! });
}

/** One teardown step: one that fails must not leave the steps after it undone. */
export async function safely(step: () => Promise<unknown> | undefined): Promise<void> {
  try {
    await step();
  } catch {
    /* teardown goes on */
  }
}

/** `helm` against a control plane as its admin, with helm's cache, config and data under dir (never the user's). */
export function helmFor(cp: ControlPlane, dir: string): (args: string[]) => Promise<string> {
  const home = (k: string) => join(dir, `helm-${k}`);
  return async (args) =>
    (
      await promisify(execFile)(cp.helm, [...args, '--kubeconfig', cp.kubeconfigPath], {
        env: {
          ...process.env,
          HELM_CACHE_HOME: home('cache'),
          HELM_CONFIG_HOME: home('config'),
          HELM_DATA_HOME: home('data'),
        },
      })
    ).stdout;
}

/**
 * How the tests start `sixbed4 agent` in a node's namespace, as the DaemonSet runs it: the real CLI with the flags
 * every test passes (its namespace, node, kubeconfig and state directory; a readable log), then the test's own.
 */
export function agentArgv(
  o: { node: string; kubeconfig: string; stateDir: string; namespace?: string },
  ...flags: string[]
): string[] {
  return [
    process.execPath,
    CLI,
    'agent',
    '--namespace',
    o.namespace ?? NS,
    '--node',
    o.node,
    '--kubeconfig',
    o.kubeconfig,
    '--state-dir',
    o.stateDir,
    '--log-format',
    'text',
    ...flags,
  ];
}

/** How the tests start `sixbed4 operator`: the real CLI. */
export function operatorArgv(): string[] {
  return [join(DIST, 'cli', 'main.js'), 'operator'];
}

export class OperatorProcess {
  /** its recent log lines (winston JSON on stderr): shown when a test fails */
  readonly log = new LogRing(2000);
  readonly exited: Promise<number | null>;
  private constructor(
    readonly child: ChildProcess,
    readonly metricsAddr: string,
    readonly identity: string,
  ) {
    const collect = (buf: Buffer) => {
      for (const l of buf.toString('utf8').split('\n')) if (l) this.log.push(l);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    this.exited = new Promise((r) => child.on('exit', (code) => r(code)));
  }

  static async start(kubeconfig: string, identity: string, extra: string[] = []): Promise<OperatorProcess> {
    const port = await freePort();
    const metrics = `127.0.0.1:${port}`;
    const child = spawn(
      process.execPath,
      [
        ...operatorArgv(),
        '--kubeconfig',
        kubeconfig,
        '--identity',
        identity,
        '--metrics',
        metrics,
        '--log-format',
        'json',
        ...extra,
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
      },
    );
    const p = new OperatorProcess(child, metrics, identity);
    await eventually(
      `operator ${identity} metrics endpoint`,
      async () => {
        if (child.exitCode !== null)
          throw new Error(`operator exited ${child.exitCode}: ${p.lines.slice(-5).join('\n')}`);
        return (await p.metrics()).size > 0;
      },
      15_000,
      100,
    );
    return p;
  }

  /** Prometheus samples by full series name, e.g. 'sixbed4_operator_reconcile_total{result="success"}'. */
  metrics(): Promise<Map<string, number>> {
    return new Promise((resolve, reject) => {
      const [host, port] = this.metricsAddr.split(':');
      const req = request({ host, port: Number(port), path: '/metrics', timeout: 2000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          const m = new Map<string, number>();
          for (const line of body.split('\n')) {
            if (!line || line.startsWith('#')) continue;
            const i = line.lastIndexOf(' ');
            m.set(line.slice(0, i), Number(line.slice(i + 1)));
          }
          resolve(m);
        });
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('metrics timeout')));
      req.end();
    });
  }

  async metric(series: string): Promise<number> {
    return (await this.metrics()).get(series) ?? 0;
  }

  /** Sum over every series of a metric name (any labels). */
  async metricSum(name: string): Promise<number> {
    let s = 0;
    for (const [k, v] of await this.metrics()) if (k === name || k.startsWith(`${name}{`)) s += v;
    return s;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  get lines(): string[] {
    return this.log.tail();
  }

  tail(n = 30): string {
    return this.log.tail(n).join('\n');
  }
}

/**
 * ava's serial test against a control plane (skipped with the reason when there is none) that, when it fails,
 * logs the recent lines of the operators running then (and of other logs the test file keeps).
 */
export function clusterTest(
  skip: string | null,
  operators: () => readonly OperatorProcess[],
  others: () => Record<string, readonly string[]> = () => ({}),
) {
  return (title: string, fn: (t: ExecutionContext) => Promise<void>) => {
    if (skip) return test.serial.skip(title, () => {});
    return test.serial(title, async (t) => {
      logOnFailure(t, () => ({
        ...Object.fromEntries(operators().map((o) => [`operator ${o.identity}`, o.log.tail()])),
        ...others(),
      }));
      await fn(t);
    });
  };
}
