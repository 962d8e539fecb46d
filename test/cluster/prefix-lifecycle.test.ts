// The prefix agent's lifecycle (agent/cluster/prefix-agent.ts), one row per event, as MetalLB's
// speaker/layer2_controller_test.go tables its controller: the API is the in-memory server (test/helpers/memkube.ts)
// with the operator's reconcile on it (test/operator/memworld.ts), so the share comes from the operator's ConfigMap
// and the agent's report goes into the node's Lease (NodeReports, NodeLease) and from there into the prefix's status
// and finalizer. The agent's other parts (host, router, failover member, slices, clock) are fakes that only record
// what is asked of them: each row checks the order of those calls, and what the API holds afterwards.
//
// The order (docs/kubernetes.md "Removing it", docs/failover.md "Planned stop"): a deleted prefix releases the slices,
// withdraws the failover member, stops the router, reverts the host, and only then reports reverted (which lets the
// operator drop its finalizer); a stop by signal keeps slices and host and hands the router over; a share removed
// from the node stops member and router, then releases the slices and gives the host back. No root: the unit lane. The real parts together:
// agent.test.ts, test/failover (root).
import test, { type ExecutionContext } from 'ava';
import { AGENT_REPORTS_ANNOTATION, FINALIZER, agentLeaseName, type AgentReport } from '../../kube/api.js';
import { paths } from '../../kube/client.js';
import { Counters } from '../../agent/router/counters.js';
import { FailoverMetrics } from '../../agent/failover/metrics.js';
import { shareFromData } from '../../agent/cluster/config.js';
import { NodeLease } from '../../agent/cluster/lease.js';
import { NodeReports } from '../../agent/cluster/reports.js';
import { PrefixAgentRunner } from '../../agent/cluster/prefix-agent.js';
import type {
  PrefixMember,
  PrefixParts,
  PrefixRouter,
  PrefixSlices,
  UplinkLink,
} from '../../agent/cluster/prefix-parts.js';
import type { PrefixAgentOptions } from '../../agent/cluster/prefix.js';
import { Registry } from 'prom-client';
import { logOnFailure, ringLogger } from '../helpers/logring.js';
import { NS, World } from '../operator/memworld.js';

const NODE = 'n1';
const P64 = '2001:db8:9:10::/64';
const FLOAT = '198.51.100.10';

/** The agent's parts as fakes: each call is one line in `calls`, in the order the agent made it. */
class Rig {
  readonly calls: string[] = [];
  /** the prefix the node's state file was saved for (a previous agent applied it); undefined: no state file */
  saved: string | undefined;
  /** what `ip -j link show` says of the uplink */
  uplink: UplinkLink | undefined = { link_type: 'ether', flags: ['BROADCAST', 'MULTICAST', 'UP'] };
  readonly reports = new NodeReports();
  agent!: PrefixAgentRunner<PrefixSlices>;

  constructor(readonly w: World) {}

  parts(): PrefixParts<PrefixSlices> {
    const rec = (line: string): void => {
      this.calls.push(line);
    };
    const slices: PrefixSlices = {
      start: (s) => rec(`slices start ${s.node64}`),
      releaseAll: async () => rec('slices release all'),
      stop: async () => rec('slices stop'),
    };
    return {
      slices,
      applyHost: async (host) => {
        rec(`host apply ${host.prefix.text}`);
        this.saved = host.prefix.text;
        return { plan: { uplink: 'eth0', steps: ['one step'] } };
      },
      revertHost: async () => {
        rec('host revert');
        this.saved = undefined;
        return {};
      },
      savedPrefix: async () => this.saved,
      stateExists: async () => this.saved !== undefined,
      startRouter: async (cfg) => {
        rec(`router start${cfg.freebind ? ` freebind on ${cfg.bindUplink}` : ''}`);
        const router: PrefixRouter = {
          registry: new Registry(),
          counters: async () => new Counters().snapshot(),
          stop: async (o) => rec(`router stop wait=${o?.waitForSuccessorMs ?? 0}`),
        };
        return router;
      },
      uplinkLink: async () => this.uplink,
      failoverMember: () => {
        const member: PrefixMember = {
          role: 'standby',
          standbyReady: true,
          describe: () => `ready standby for ${FLOAT}`,
          prepare: async () => rec('member prepare'),
          start: async () => rec('member start'),
          stop: async (keep) => rec(keep ? 'member stop (keeps its macvlan)' : 'member stop'),
        };
        return member;
      },
      every: () => () => rec('heartbeat cancelled'),
    };
  }

  async start(failover: boolean): Promise<void> {
    const { w } = this;
    const log = ringLogger(w.log, 'agent');
    this.reports.writeTo(new NodeLease(w.kube, { namespace: NS, node: NODE, intervalMs: 10_000, log }));
    const o: PrefixAgentOptions = {
      prefixName: 'p',
      node: NODE,
      statePath: '/nonexistent/agent-p-n1.json',
      // What the node agent hands over: this node's part of the operator's ConfigMap.
      share: () => {
        const cm = w.configMap('p');
        return cm ? shareFromData(cm.data ?? {}, NODE) : null;
      },
      report: (r) => {
        this.calls.push(`report ${r.reverted ? 'reverted' : r.ready ? 'ready' : 'not ready'}`);
        this.reports.update('p', r);
      },
      ...(failover ? { failover: { namespace: NS, metrics: new FailoverMetrics(new Registry()) } } : {}),
    };
    this.agent = await PrefixAgentRunner.start(w.kube, o, log, this.parts());
    await this.written();
  }

  /** Once the reports on their way are in the Lease, and the operator has reconciled what it holds (a pass wrote nothing). */
  async written(): Promise<void> {
    await this.reports.written();
    await this.w.settle('p');
  }

  /** What the node's Lease says of the prefix. */
  leaseReport(): AgentReport | undefined {
    const lease = this.w.kube.peek(paths.lease(NS, agentLeaseName(NODE)));
    const all = JSON.parse(lease?.metadata.annotations?.[AGENT_REPORTS_ANNOTATION] ?? '{}') as Record<
      string,
      AgentReport
    >;
    return all.p;
  }

  /** The node's entry in the prefix status, as the operator copied it from the Lease. */
  statusEntry() {
    return this.w.get('p')?.status?.nodes?.find((e) => e.name === NODE);
  }

  async deletePrefix(): Promise<void> {
    await this.w.kube.delete(paths.prefix('p'));
    await this.written();
  }
}

/** The operator's cluster: node n1 (and n2, the failover group's second member), the prefix p selecting them. */
async function cluster(w: World, failover: boolean, selected = true): Promise<void> {
  await w.node(NODE, { role: selected ? 'edge' : 'other' }, failover ? '198.51.100.21' : '198.51.100.1');
  if (failover) await w.node('n2', { role: 'edge' }, '198.51.100.22');
  await w.prefix('p', {
    prefix: P64,
    nodeSelector: { role: 'edge' },
    ...(failover
      ? {
          listen: { address: FLOAT },
          failover: { upstream: 'RoutedNextHop', nextHop: '2001:db8:ffff::64', virtualRouterId: 7 },
        }
      : {}),
  });
  await w.settle('p');
}

/** The node no longer selected (relabelled): the operator takes its share out of the ConfigMap. */
async function unselect(w: World): Promise<void> {
  await w.kube.mergePatch(paths.node(NODE), { metadata: { labels: { role: 'other' } } });
  await w.settle('p');
}

interface Row {
  title: string;
  failover?: boolean;
  /** n1 matches the prefix's nodeSelector when the agent starts (default true) */
  selected?: boolean;
  /** the node as the agent finds it (a state file left by a previous agent, its uplink) */
  given?: (r: Rig) => void;
  /** the calls of the agent's start, in order */
  started: string[];
  /** what happens after the start */
  when?: (r: Rig, t: ExecutionContext) => Promise<void>;
  /** the calls of `when`, in order */
  calls?: string[];
  then: (t: ExecutionContext, r: Rig) => void;
}

const START = ['host apply 2001:db8:9:10::/64', 'router start', 'slices start 2001:db8:9:10::/64', 'report ready'];
const START_FAILOVER = [
  'host apply 2001:db8:9:10::/64',
  'member prepare',
  'router start freebind on 6b4vr7',
  'member start',
  'slices start 2001:db8:9:10::/64',
  'report ready',
];
const REVERT = ['slices release all', 'router stop wait=0', 'host revert', 'report reverted'];

/** The prefix went: finalizer dropped, and with it the object; the report said reverted. */
function gone(t: ExecutionContext, r: Rig): void {
  t.like(r.leaseReport(), { ready: false, reverted: true, message: 'host reverted: the prefix is being deleted' });
  t.is(r.w.get('p'), undefined, 'the operator removed its finalizer once the node reported reverted');
  t.true(r.w.reasons('p').includes('Normal HostsReverted'));
  t.true(r.agent.healthy(), 'a reverted prefix counts as healthy (the Pod stays Ready)');
}

/** The prefix stays, its finalizer with it, and the node is not reverted. */
function kept(t: ExecutionContext, r: Rig): void {
  const p = r.w.get('p');
  t.deepEqual(p?.metadata.finalizers, [FINALIZER]);
  t.is(p?.metadata.deletionTimestamp, undefined);
  t.false(r.leaseReport()?.reverted);
}

const rows: Row[] = [
  {
    title: 'start: the host, then the router, then the slices; the report says forwarding',
    started: START,
    then: (t, r) => {
      // The operator's default fastPath is Auto; the fake router runs without one, as a node where it did not load.
      t.like(r.leaseReport(), {
        ready: true,
        reverted: false,
        message: "forwarding; without the fast path (fastPath Auto: it did not load here, the agent's log says why)",
      });
      t.like(r.statusEntry(), { ready: true, reverted: false });
      kept(t, r);
    },
  },
  {
    title: 'start with failover: the member is prepared before the router and joins after it',
    failover: true,
    started: START_FAILOVER,
    then: (t, r) => {
      t.like(r.leaseReport(), { ready: true, failover: 'Standby', message: `ready standby for ${FLOAT}` });
      kept(t, r);
    },
  },
  {
    title: "a state file for another /64 (the node's share moved): that host is reverted before the new one is applied",
    given: (r) => {
      r.saved = '2001:db8:9:99::/64';
    },
    started: ['host revert', ...START],
    then: kept,
  },
  {
    title: 'failover on an uplink without layer 2: the host applied is reverted, the report says why',
    failover: true,
    given: (r) => {
      r.uplink = { link_type: 'none', flags: ['POINTOPOINT', 'NOARP', 'UP'] };
    },
    started: ['host apply 2001:db8:9:10::/64', 'host revert', 'report not ready'],
    then: (t, r) => {
      t.like(r.leaseReport(), { ready: false, reason: 'FailoverUnsupported' });
      t.regex(r.leaseReport()?.message ?? '', /not Ethernet/);
      t.false(r.agent.healthy());
    },
  },
  {
    title: 'prefix deleted: slices released, router stopped, host reverted, then reported; the finalizer goes',
    started: START,
    when: async (r, t) => {
      await r.deletePrefix();
      t.deepEqual(r.w.get('p')?.metadata.finalizers, [FINALIZER], 'the operator waits for the node');
      t.deepEqual(r.calls, [], 'the agent is told by the node agent (agent.ts), not by the API directly');
      await r.agent.deleting();
      await r.written();
    },
    calls: REVERT,
    then: gone,
  },
  {
    title: 'prefix deleted with failover: the member withdraws (its Lease handed over) before the router stops',
    failover: true,
    started: START_FAILOVER,
    when: async (r) => {
      await r.deletePrefix();
      await r.agent.deleting();
      await r.written();
    },
    calls: ['slices release all', 'member stop', 'router stop wait=0', 'host revert', 'report reverted'],
    then: gone,
  },
  {
    title: 'prefix deleted twice, then the agent stopped (its ConfigMap gone): one revert, no second report',
    started: START,
    when: async (r) => {
      await r.deletePrefix();
      await r.agent.deleting();
      await r.agent.deleting();
      await r.agent.kick();
      await r.agent.stop({ waitForSuccessorMs: 20_000 });
      await r.written();
    },
    calls: [...REVERT, 'heartbeat cancelled', 'slices stop'],
    then: gone,
  },
  {
    title: 'a node without a share that a previous agent had configured: given back at start; deleted, nothing is left',
    selected: false,
    given: (r) => {
      r.saved = P64;
    },
    started: ['slices release all', 'host revert', 'report not ready'],
    when: async (r) => {
      await r.deletePrefix();
      await r.agent.deleting();
      await r.written();
    },
    calls: ['slices release all', 'report reverted'],
    then: gone,
  },
  {
    title: 'prefix deleted on a node without a share and no state file: nothing to revert, reported all the same',
    selected: false,
    started: ['report not ready'],
    when: async (r) => {
      await r.deletePrefix();
      await r.agent.deleting();
      await r.written();
    },
    calls: ['slices release all', 'report reverted'],
    then: gone,
  },
  {
    title: "node's share removed (unlabelled): the router stops, then slices released and the host given back",
    started: START,
    when: async (r) => {
      await unselect(r.w);
      await r.agent.kick();
      await r.written();
    },
    calls: ['router stop wait=0', 'slices release all', 'host revert', 'report not ready'],
    then: (t, r) => {
      t.like(r.leaseReport(), { ready: false, message: `no share of ${P64} for node ${NODE}` });
      t.is(r.w.configMap('p')?.data?.[`node.${NODE}.json`], undefined);
      t.false(r.agent.healthy());
      kept(t, r);
    },
  },
  {
    title: "node's share removed with failover: the member withdraws for good, the router stops, the host goes back",
    failover: true,
    started: START_FAILOVER,
    when: async (r) => {
      await unselect(r.w);
      await r.agent.kick();
      await r.written();
    },
    calls: ['member stop', 'router stop wait=0', 'slices release all', 'host revert', 'report not ready'],
    then: (t, r) => {
      t.like(r.leaseReport(), { ready: false, message: `no share of ${P64} for node ${NODE}` });
      kept(t, r);
    },
  },
  {
    title: 'agent stopped by signal: slices kept, router handed over, host kept, report says stopped',
    started: START,
    when: async (r) => {
      await r.agent.stop({ waitForSuccessorMs: 20_000 });
      await r.agent.stop();
      await r.agent.kick();
      await r.written();
    },
    calls: ['heartbeat cancelled', 'slices stop', 'router stop wait=20000', 'report not ready'],
    then: (t, r) => {
      t.like(r.leaseReport(), { ready: false, reverted: false, message: 'agent stopped' });
      t.like(r.statusEntry(), { ready: false, reverted: false });
      kept(t, r);
    },
  },
  {
    title: 'agent stopped by signal with failover: the member withdraws keeping its macvlan, then the router',
    failover: true,
    started: START_FAILOVER,
    when: async (r) => {
      await r.agent.stop({ waitForSuccessorMs: 20_000 });
      await r.written();
    },
    calls: [
      'heartbeat cancelled',
      'slices stop',
      'member stop (keeps its macvlan)',
      'router stop wait=20000',
      'report not ready',
    ],
    then: (t, r) => {
      t.like(r.leaseReport(), { ready: false, reverted: false, message: 'agent stopped' });
      kept(t, r);
    },
  },
];

for (const row of rows) {
  test(row.title, async (t) => {
    const w = new World();
    // The Lease's renewTime is the wall clock's (NodeLease): the operator's clock with it.
    w.now = new Date();
    const r = new Rig(w);
    logOnFailure(t, () => ({ log: w.log.tail() }));
    await cluster(w, row.failover ?? false, row.selected ?? true);
    row.given?.(r);
    await r.start(row.failover ?? false);
    t.deepEqual(r.calls.splice(0), row.started, 'the start');
    await row.when?.(r, t);
    t.deepEqual(r.calls, row.calls ?? [], 'what followed');
    row.then(t, r);
    await r.agent.stop();
  });
}
