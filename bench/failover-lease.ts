// What failover Leases cost the API server (issue 26): N failover groups (one SixBed4Prefix with spec.failover each)
// against a real kube-apiserver + etcd (test/k8s), every member doing what agent/failover/member.ts does at the
// default timings with kube/leader.ts's attempt(): the active one renews every renewIntervalMs (500 ms: one PUT on
// the record it wrote last), a standby reads the Lease once per leaseDurationMs (2000 ms) and watches it (field
// selector) to try at once when it is released; the operator watches all of them (label component=failover-lease).
//
// Prints, for the window measured: requests/s the API server served (its own apiserver_request_total, leases only),
// watch events delivered, the CPU of kube-apiserver and etcd (from /proc, in cores; and the same window idle, with
// no renewals, for comparison), and how long the renewals took (p50/p99/max): a renewal slower than
// fenceAfterMs - renewIntervalMs (1000 ms) would make an active node withdraw.
//
// Run: npm run bench:failover-lease [-- --prefixes 100 --seconds 30 --standbys 1]
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { startControlPlane, controlPlaneSkipReason, type ControlPlane } from '../test/k8s/controlplane.js';
import { Kube, paths } from '../kube/client.js';
import { FAILOVER_DEFAULTS, FAILOVER_LEASE_COMPONENT, failoverLeaseName, LABEL_COMPONENT } from '../kube/api.js';
import { LeaderElector } from '../kube/leader.js';
import { createLogger } from '../lib/log.js';

const NS = 'sixbed4-system';
const { values } = parseArgs({
  options: {
    prefixes: { type: 'string', default: '100' },
    seconds: { type: 'string', default: '30' },
    standbys: { type: 'string', default: '1' },
  },
});
const N = Number(values.prefixes);
const SECONDS = Number(values.seconds);
const STANDBYS = Number(values.standbys);
const { leaseDurationMs, renewIntervalMs, fenceAfterMs } = FAILOVER_DEFAULTS;

/** A watch stream counting its events. */
class Watcher {
  events = 0;
  private readonly req: ReturnType<typeof https.request>;
  constructor(cp: ControlPlane, path: string) {
    this.req = https.request(
      new URL(path, cp.server),
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
    this.req.destroy();
  }
}

/** CPU seconds (user + system) of a process so far. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** The API server's count of lease requests by verb (its /metrics). */
async function leaseRequests(kube: Kube): Promise<Record<string, number>> {
  const text = await kube.request<string>('GET', '/metrics');
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{') || !line.includes('resource="leases"')) continue;
    const verb = /verb="([A-Z]+)"/.exec(line)?.[1] ?? '?';
    out[verb] = (out[verb] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? 0;
};

async function window(
  cp: ControlPlane,
  kube: Kube,
  seconds: number,
  during?: () => void,
): Promise<{ reqs: Record<string, number>; apiserver: number; etcd: number; wall: number }> {
  const [etcdPid, apiPid] = cp.pids();
  const r0 = await leaseRequests(kube);
  const c0 = [cpuSeconds(apiPid!), cpuSeconds(etcdPid!)];
  const t0 = performance.now();
  during?.();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const wall = (performance.now() - t0) / 1000;
  const c1 = [cpuSeconds(apiPid!), cpuSeconds(etcdPid!)];
  const r1 = await leaseRequests(kube);
  const reqs: Record<string, number> = {};
  for (const k of Object.keys(r1)) reqs[k] = (r1[k] ?? 0) - (r0[k] ?? 0);
  return { reqs, apiserver: (c1[0]! - c0[0]!) / wall, etcd: (c1[1]! - c0[1]!) / wall, wall };
}

async function main(): Promise<void> {
  const skip = controlPlaneSkipReason();
  if (skip) {
    console.error(`bench:failover-lease: ${skip}`);
    process.exit(2);
  }
  console.log(
    `failover Leases against a real kube-apiserver + etcd (${cpus().length} CPUs: ${cpus()[0]?.model}; a shared machine): ` +
      `${N} groups of 1 active + ${STANDBYS} standby, a round every ${renewIntervalMs} ms (lease ${leaseDurationMs} ms, fence ${fenceAfterMs} ms)`,
  );
  const cp = await startControlPlane();
  const log = createLogger({ level: 'error', component: 'bench' });
  try {
    const kube = new Kube(cp.kubeConfig(), 'bench');
    await createLeases(kube);
    const rounds = new Rounds(electors(cp, log));
    process.stderr.write(`  idle window (${SECONDS} s) ...\n`);
    const idle = await window(cp, kube, SECONDS);

    const watchers = openWatchers(cp);
    process.stderr.write('  warming up (5 s) ...\n');
    rounds.start(0);
    await new Promise((r) => setTimeout(r, 2000));
    for (let m = 1; m <= STANDBYS; m++) rounds.start(m);
    await new Promise((r) => setTimeout(r, 3000));
    const events0 = watchers.reduce((a, w) => a + w.events, 0);
    rounds.reset();
    process.stderr.write(`  renewing window (${SECONDS} s) ...\n`);
    const me0 = process.cpuUsage();
    const busy = await window(cp, kube, SECONDS);
    const me = process.cpuUsage(me0);
    const events = watchers.reduce((a, w) => a + w.events, 0) - events0;
    const renewals = rounds.took.length;
    await rounds.stop();
    for (const w of watchers) w.close();
    printResults(idle, busy, events, renewals, rounds, me);
  } finally {
    await cp.stop();
  }
}

/** The namespace and the Leases as the operator creates them: held by nobody, labelled for the watches. */
async function createLeases(kube: Kube): Promise<void> {
  await kube.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  for (let i = 0; i < N; i++) {
    await kube.create(paths.leases(NS), {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: failoverLeaseName(`p${i}`),
        namespace: NS,
        labels: { [LABEL_COMPONENT]: FAILOVER_LEASE_COMPONENT },
      },
      spec: {},
    });
  }
}

/**
 * Each group's members ([active, ...standbys]). One client per simulated node (10 nodes), as each agent has its own
 * connection; member m of group i on node (i + m) % 10, so a node is active for some groups and standby for others.
 */
function electors(cp: ControlPlane, log: ReturnType<typeof createLogger>): LeaderElector[][] {
  const clients = Array.from({ length: 10 }, (_, k) => new Kube(cp.kubeConfig(), `agent-${k}`));
  return Array.from({ length: N }, (_, i) =>
    Array.from(
      { length: 1 + STANDBYS },
      (_, m) =>
        new LeaderElector({
          kube: clients[(i + m) % 10]!,
          namespace: NS,
          name: failoverLeaseName(`p${i}`),
          identity: `node-${(i + m) % 10}_${i.toString(16).padStart(8, '0')}`,
          leaseDurationMs,
          renewDeadlineMs: fenceAfterMs,
          retryPeriodMs: renewIntervalMs,
          log,
          component: FAILOVER_LEASE_COMPONENT,
        }),
    ),
  );
}

/**
 * The members' attempts, every member on its own timer, spread over the round as real ones are: the active ones
 * (m = 0) every renewIntervalMs, timed, and counted as failed when they do not hold the Lease after; the standbys
 * every leaseDurationMs. A class for the state the loops share with the window: the times, the failures, running.
 */
class Rounds {
  took: number[] = [];
  failed = 0;
  private running = true;
  private readonly loops: Promise<void>[] = [];

  constructor(private readonly members: LeaderElector[][]) {}

  /** Starts member m of every group (the actives first, so they win). */
  start(m: number): void {
    for (const [i, group] of this.members.entries()) {
      const e = group[m]!;
      const period = m === 0 ? renewIntervalMs : leaseDurationMs;
      this.loops.push(
        (async () => {
          await new Promise((r) => setTimeout(r, (i * period) / N));
          let next = performance.now();
          while (this.running) {
            const t = performance.now();
            const a = await e.attempt();
            if (m === 0) {
              this.took.push(performance.now() - t);
              if (a.holder !== e.identity) this.failed++;
            }
            next += period;
            await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
          }
        })(),
      );
    }
  }

  /** Forgets the warm-up's figures. */
  reset(): void {
    this.took.length = 0;
    this.failed = 0;
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

/** The operator's watch of every failover Lease (by label), and each standby's of its group's (by name). */
function openWatchers(cp: ControlPlane): Watcher[] {
  const selector = `labelSelector=${encodeURIComponent(`${LABEL_COMPONENT}=${FAILOVER_LEASE_COMPONENT}`)}`;
  const watchers = [new Watcher(cp, `${paths.leases(NS)}?watch=1&${selector}`)];
  for (let i = 0; i < N; i++) {
    for (let m = 0; m < STANDBYS; m++) {
      watchers.push(
        new Watcher(
          cp,
          `${paths.leases(NS)}?watch=1&fieldSelector=${encodeURIComponent(`metadata.name=${failoverLeaseName(`p${i}`)}`)}`,
        ),
      );
    }
  }
  return watchers;
}

type WindowResult = Awaited<ReturnType<typeof window>>;

/** The table (idle and renewing windows) and the lines on renewal times, this process's CPU and what renewals add. */
function printResults(
  idle: WindowResult,
  busy: WindowResult,
  events: number,
  renewals: number,
  { took, failed }: Rounds,
  me: NodeJS.CpuUsage,
): void {
  const total = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
  const perSec = (n: number, w: number) => (n / w).toFixed(1);
  const verbs = (r: Record<string, number>, w: number) =>
    Object.entries(r)
      .filter(([, n]) => n > 0)
      .map(([v, n]) => `${v} ${perSec(n, w)}`)
      .join(', ');
  console.log('');
  console.log('window      lease requests/s (by verb)            watch events/s  kube-apiserver CPU  etcd CPU');
  console.log(
    `idle        ${perSec(total(idle.reqs), idle.wall).padStart(6)} (${verbs(idle.reqs, idle.wall) || '-'})`.padEnd(
      50,
    ) +
      `${'-'.padStart(14)}  ${`${(idle.apiserver * 100).toFixed(1)}%`.padStart(18)}  ${`${(idle.etcd * 100).toFixed(1)}%`.padStart(8)}`,
  );
  console.log(
    `${N} groups  ${perSec(total(busy.reqs), busy.wall).padStart(6)} (${verbs(busy.reqs, busy.wall)})`.padEnd(50) +
      `${perSec(events, busy.wall).padStart(14)}  ${`${(busy.apiserver * 100).toFixed(1)}%`.padStart(18)}  ${`${(busy.etcd * 100).toFixed(1)}%`.padStart(8)}`,
  );
  console.log('');
  console.log(
    `active members' renewals: ${renewals} in ${busy.wall.toFixed(1)} s (${perSec(renewals, busy.wall)}/s), ${failed} not won; ` +
      `time per renewal p50 ${pct(took, 50).toFixed(1)} ms, p99 ${pct(took, 99).toFixed(1)} ms, max ${Math.max(0, ...took).toFixed(1)} ms ` +
      `(an active node withdraws if it cannot renew within ${fenceAfterMs - renewIntervalMs} ms of its last renewal's slack)`,
  );
  console.log(
    `the ${N * (1 + STANDBYS)} simulated members (one Node.js process, 10 client connections): ${(((me.user + me.system) / 1e6 / busy.wall) * 100).toFixed(1)}% of a core; ` +
      `load average over the last minute ${loadavg()[0]!.toFixed(2)} on ${cpus().length} CPUs (other work on the machine included)`,
  );
  console.log(
    `added by the renewals: kube-apiserver ${((busy.apiserver - idle.apiserver) * 100).toFixed(1)}% of a core, etcd ${((busy.etcd - idle.etcd) * 100).toFixed(1)}% ` +
      `(${(((busy.apiserver - idle.apiserver) * 1000) / Math.max(1, total(busy.reqs) / busy.wall)).toFixed(2)} ms of API server CPU per request)`,
  );
}

await main();
