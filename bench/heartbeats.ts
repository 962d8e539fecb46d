// Node agents' heartbeats against a real kube-apiserver (etcd + kube-apiserver from test/k8s): the exact API
// traffic of N simulated agents in one heartbeat round, in the old design and the new one.
//
//   before: every agent server-side applies its entry (with a fresh lastReport) into the one SixBed4Prefix's status,
//           and every agent watches all prefixes: N writes to one object per round, each sent to N watchers.
//   after:  every agent renews its node's Lease, which carries its reports (sent when they change); only the
//           operator watches the Leases, and it alone writes the prefix status when a report changed (not in a
//           steady round): N small writes, N events, none to the agents, one field manager in the prefix.
//
// Prints, per design and N: writes, writes/s, watch events delivered per round, and the prefix object's size.
// Run: npm run bench:heartbeats [-- --nodes 25,50,100,1000] (needs the binaries of test/k8s/build-control-plane.sh).
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { startControlPlane, controlPlaneSkipReason, repoRoot, type ControlPlane } from '../test/k8s/controlplane.js';
import { Kube, paths } from '../kube/client.js';
import { AGENT_REPORTS_ANNOTATION, agentFieldManager, agentLeaseName, API_VERSION, KIND } from '../kube/api.js';
import { microTime } from '../agent/cluster/lease.js';

const NS = 'sixbed4-system';
/** The old design's watchers stop at this many: beyond, one round sends N² copies of a growing object. */
const MAX_BEFORE = 100;

interface Row {
  design: 'before' | 'after';
  nodes: number;
  writes: number;
  writesPerSec: number;
  events: number;
  prefixKB: number;
  managers: number;
  failed?: string;
}

const { values } = parseArgs({
  options: { nodes: { type: 'string', default: '25,50,100,1000' }, concurrency: { type: 'string', default: '32' } },
});
const sizes = values.nodes
  .split(',')
  .map(Number)
  .filter((n) => Number.isInteger(n) && n > 0);
const concurrency = Number(values.concurrency);

/** A watch stream counting its events. */
class Watcher {
  events = 0;
  private req: ReturnType<typeof https.request> | undefined;
  constructor(cp: ControlPlane, path: string) {
    const u = new URL(path, cp.server);
    this.req = https.request(
      u,
      { headers: { Authorization: `Bearer ${cp.adminToken}` }, ca: cp.caData, agent: false },
      (res) => {
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          buf += c;
          let i;
          while ((i = buf.indexOf('\n')) >= 0) {
            buf = buf.slice(i + 1);
            this.events++;
          }
        });
        res.on('error', () => undefined);
      },
    );
    this.req.on('error', () => undefined);
    this.req.end();
  }
  close(): void {
    this.req?.destroy();
  }
}

async function pool(n: number, work: (i: number) => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const i = next++;
        await work(i);
      }
    }),
  );
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Waits until the watchers' count stops moving (the round has been delivered). */
async function settle(ws: Watcher[]): Promise<number> {
  let last = -1;
  for (;;) {
    const now = ws.reduce((a, w) => a + w.events, 0);
    if (now === last) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 1500));
  }
}

async function prefixSize(kube: Kube): Promise<{ kb: number; managers: number }> {
  const p = await kube.get<{ metadata: { managedFields?: unknown[] } }>(paths.prefix('bench'));
  return { kb: Math.round(JSON.stringify(p).length / 102.4) / 10, managers: p?.metadata.managedFields?.length ?? 0 };
}

async function run(cp: ControlPlane, kube: Kube, design: 'before' | 'after', n: number): Promise<Row> {
  await kube.delete(paths.prefix('bench')).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 500));
  await kube.create(paths.prefixes, {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name: 'bench' },
    spec: { prefix: '2001:db8:9::/48' },
  });
  const agents = new Agents(kube);
  // Round 0 (not measured): every agent reports once, as after its start. After: in its Lease, and the operator
  // copies the reports into the prefix in one write.
  if (design === 'before') await pool(n, (i) => agents.applyEntry(i, new Date().toISOString()));
  else {
    await pool(n, (i) => agents.renew(i));
    await agents.operatorCopies(n);
  }
  const all = watchers(cp, design, n);
  const base = await settle(all); // initial ADDED events of resourceVersion=0
  const stamp = new Date(Date.now() + 1000).toISOString();
  const secs =
    design === 'before' ? await pool(n, (i) => agents.applyEntry(i, stamp)) : await pool(n, (i) => agents.renew(i));
  const events = (await settle(all)) - base;
  for (const w of all) w.close();
  const size = await prefixSize(kube);
  if (design === 'after') await pool(n, (i) => kube.delete(paths.lease(NS, agentLeaseName(nodeName(i)))));
  return {
    design,
    nodes: n,
    writes: n,
    writesPerSec: Math.round(n / secs),
    events,
    prefixKB: size.kb,
    managers: size.managers,
  };
}

const nodeName = (i: number) => `node-${String(i).padStart(4, '0')}`;

/** A simulated agent's status entry on the bench prefix. */
const entry = (i: number, stamp: string) => ({
  name: nodeName(i),
  ready: true,
  livePeers: 3,
  message: 'forwarding',
  lastReport: stamp,
});

/**
 * The simulated agents' writes in either design. A class for the state the renewals share: each Lease's last
 * resourceVersion (a renewal replaces the record it wrote last, as kube/leader.ts does).
 */
class Agents {
  private readonly rvs: string[] = [];
  constructor(private readonly kube: Kube) {}

  /** before: agent i server-side applies its entry into the prefix's status, with its own field manager. */
  applyEntry(i: number, stamp: string): Promise<unknown> {
    return this.kube.apply(
      paths.prefixStatus('bench'),
      { apiVersion: API_VERSION, kind: KIND, metadata: { name: 'bench' }, status: { nodes: [entry(i, stamp)] } },
      agentFieldManager(nodeName(i)),
      { force: true },
    );
  }

  /** after: agent i creates, then renews, its node's Lease, which carries its reports. */
  async renew(i: number): Promise<void> {
    const name = agentLeaseName(nodeName(i));
    const reports = JSON.stringify({
      bench: { ready: true, livePeers: 3, message: 'forwarding', lastReport: '2026-11-28T05:00:00Z' },
    });
    const rv = this.rvs[i];
    const body = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name,
        namespace: NS,
        labels: { 'app.kubernetes.io/component': 'agent-lease' },
        annotations: { [AGENT_REPORTS_ANNOTATION]: reports },
        ...(rv ? { resourceVersion: rv } : {}),
      },
      spec: { holderIdentity: nodeName(i), leaseDurationSeconds: 40, renewTime: microTime(new Date()) },
    };
    const out = rv
      ? await this.kube.replace<{ metadata: { resourceVersion: string } }>(paths.lease(NS, name), body)
      : await this.kube.create<{ metadata: { resourceVersion: string } }>(paths.leases(NS), body);
    this.rvs[i] = out.metadata.resourceVersion;
  }

  /** after, round 0: the operator copies the n agents' reports into the prefix's status in one write. */
  async operatorCopies(n: number): Promise<void> {
    const at = new Date().toISOString();
    await this.kube.apply(
      paths.prefixStatus('bench'),
      {
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name: 'bench' },
        status: {
          nodes: Array.from({ length: n }, (_, i) => ({
            ...entry(i, at),
            prefix: `2001:db8:9:${i.toString(16)}::/64`,
            listen: `198.51.100.1:25790`,
          })),
        },
      },
      'sixbed4-operator',
      { force: true },
    );
  }
}

/** The watchers: the agents watch the prefixes (before only); the operator watches prefixes and, after, Leases. */
function watchers(cp: ControlPlane, design: 'before' | 'after', n: number): Watcher[] {
  const agentWatchers =
    design === 'before'
      ? Array.from(
          { length: n },
          () => new Watcher(cp, `${paths.prefixes}?watch=1&resourceVersion=0&allowWatchBookmarks=false`),
        )
      : [];
  const operatorWatchers = [
    new Watcher(cp, `${paths.prefixes}?watch=1&resourceVersion=0`),
    ...(design === 'after'
      ? [
          new Watcher(
            cp,
            `${paths.leases(NS)}?watch=1&resourceVersion=0&labelSelector=app.kubernetes.io%2Fcomponent%3Dagent-lease`,
          ),
        ]
      : []),
  ];
  return [...agentWatchers, ...operatorWatchers];
}

/** The prefix CRD (waited for until Established) and the namespace of the agents' Leases. */
async function setUp(kube: Kube): Promise<void> {
  for (const f of ['sixbed4.io_sixbed4prefixes.yaml']) {
    await kube.create(
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
      parseYaml(readFileSync(join(repoRoot(), 'crds', f), 'utf8')),
    );
  }
  await kube.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  for (let i = 0; i < 100; i++) {
    const crd = await kube.get<{ status?: { conditions?: { type: string; status: string }[] } }>(
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sixbed4prefixes.sixbed4.io',
    );
    if (crd?.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The table: per design and node count, writes, watch events per round, the prefix object's size and managers. */
function printRows(rows: Row[]): void {
  console.log('\ndesign  nodes  writes/round  writes/s  watch events/round  prefix object  managedFields');
  for (const r of rows) {
    if (r.failed) {
      console.log(
        `${r.design.padEnd(7)} ${String(r.nodes).padStart(5)}  the round did not complete: a write ${r.failed} (the API server was saturated)`,
      );
      continue;
    }
    console.log(
      `${r.design.padEnd(7)} ${String(r.nodes).padStart(5)}  ${String(r.writes).padStart(12)}  ${String(r.writesPerSec).padStart(8)}  ${String(r.events).padStart(18)}  ${`${r.prefixKB} KB`.padStart(13)}  ${String(r.managers).padStart(13)}`,
    );
  }
  console.log(
    `\n(before, at more than ${MAX_BEFORE} nodes: not run; one round would send N² copies of a prefix object that grows with N)`,
  );
}

async function main(): Promise<void> {
  const skip = controlPlaneSkipReason();
  if (skip) {
    console.error(`bench:heartbeats: ${skip}`);
    process.exit(2);
  }
  console.log(
    `heartbeat rounds against a real kube-apiserver (${cpus().length} CPUs: ${cpus()[0]?.model}); writes with concurrency ${concurrency}`,
  );
  const cp = await startControlPlane();
  try {
    const kube = new Kube(cp.kubeConfig(), 'bench');
    await setUp(kube);
    const rows: Row[] = [];
    for (const n of sizes) {
      for (const design of ['before', 'after'] as const) {
        if (design === 'before' && n > MAX_BEFORE) continue;
        process.stderr.write(`  ${design}, ${n} nodes ...\n`);
        try {
          rows.push(await run(cp, kube, design, n));
        } catch (err) {
          // The old design's round can overload the API server: that is a result too.
          rows.push({
            design,
            nodes: n,
            writes: n,
            writesPerSec: 0,
            events: 0,
            prefixKB: 0,
            managers: 0,
            failed: (err as Error).message.split(':').pop()!.trim(),
          });
          await new Promise((r) => setTimeout(r, 5000));
        }
      }
    }
    printRows(rows);
  } finally {
    await cp.stop();
  }
}

await main();
