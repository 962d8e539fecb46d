// A failover /64 on real nodes (issue 26): two kubelet + containerd nodes on the ISP's segment, the chart installed,
// the docs' High availability sessions run word for word, and a peer behind the NAT on the floating address with
// pings every 20 ms and a TCP stream that checks every byte, across planned moves (the active agent's Pod deleted,
// `kubectl drain` of the active node) and a crash of the active node (every process killed, as in the reboot test).
// What is asserted is meaning: the other node takes over, the stream never resets and loses or repeats no byte, the
// peer keeps its address, the operator says why; the gaps are logged (their goals live in bench/failover.ts).
//
// Needs root, the control-plane and node binaries and a Docker Engine; skips with the reason otherwise.
import test from 'ava';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ping6 } from '../../lab/sixbed4.js';
import { TOPO } from '../../lab/topology.js';
import { nodeSkipReason } from './node.js';
import { readSession, runSession } from '../helpers/doc-session.js';
import { REPO } from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';
import { HA, HaLab, type Trial } from './failoverlab.js';

const run = promisify(execFile);
const isCI = process.env.CI === 'true' || process.env.CI === '1';
const why = process.env.SIXBED4_SKIP_DOCKER === '1' ? 'SIXBED4_SKIP_DOCKER=1' : nodeSkipReason();
if (why && isCI && process.getuid?.() === 0) throw new Error(`real-node tests cannot run under CI: ${why}`);
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const DOC = join(REPO, 'docs', 'kubernetes.md');

const s: { lab?: HaLab; statusShown: boolean } = { statusShown: false };
const lab = () => s.lab!;

test.before(async () => {
  if (why) return;
  s.lab = await HaLab.start();
  await lab().install();
});

test.after.always(async () => {
  await s.lab?.stop();
});

const describe = (r: Trial) =>
  `${r.what}: ${r.from} -> ${r.to}, pings' longest silence ${r.gapMs} ms, TCP's ${r.tcpSilenceMs} ms` +
  (r.parts ? ` (the new active's account: ${JSON.stringify(r.parts)})` : '');

/** The trial's meaning: the other node took over, the stream survived with every byte, the peer kept its address. */
async function check(t: import('ava').ExecutionContext, r: Trial, reason: string): Promise<void> {
  t.log(describe(r));
  t.not(r.to, r.from, 'the other node is active');
  t.true(r.tcpIntact, `the TCP stream survived with every byte in order (${describe(r)})`);
  const p = (await lab().prefix())!;
  t.like(p.status!.failover!.lastFailover, { from: r.from, to: r.to, reason });
  const back = await ping6(lab().lab.isp, lab().peer!.address, { count: 3 });
  t.is(back.received, 3, `the peer keeps its address ${lab().peer!.address}: ${back.output}`);
}

/**
 * The docs' status session, once edge-1 is the active node (the first election is a race) and the group has settled:
 * a ready standby, every member's role reported, the peer counted, the same for two looks 2 s apart (a member
 * restarting after a share change reports no role for a moment).
 */
async function statusSession(): Promise<void> {
  if (s.statusShown || (await lab().settled()) !== 'edge-1') return;
  const look = async () => {
    const p = await lab().prefix();
    const f = p?.status?.failover;
    const ok =
      f?.active === 'edge-1' &&
      f.standbysReady === '1/1' &&
      p!.status!.livePeers === 1 &&
      (p!.status!.nodes ?? []).every((e) => e.failover);
    return ok ? JSON.stringify([f, p!.status!.nodes!.map((e) => e.failover)]) : undefined;
  };
  const settledTwice = await eventually(
    'the group settled with edge-1 active and the peer counted',
    async () => {
      const a = await look();
      if (!a) return undefined;
      await new Promise((r) => setTimeout(r, 2000));
      return a === (await look());
    },
    120_000,
    500,
  ).then(
    () => true,
    () => false,
  );
  if (!settledTwice) return;
  await runSession(readSession(DOC, 'ha-status'), lab().docEnv()).catch(async (e: Error) => {
    throw new Error(`${e.message}\n${await lab().dump()}`);
  });
  s.statusShown = true;
}

serial(
  title(
    "the docs' High availability session: a failover /64 on two nodes, one active and one ready standby; a peer on the floating address reaches the ISP and back",
  ),
  async (t) => {
    await runSession(readSession(DOC, 'ha'), lab().docEnv()).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await lab().dump()}`);
    });
    const active = await lab().settled();
    t.true((HA.nodes as readonly string[]).includes(active));
    const p = (await lab().prefix())!;
    t.deepEqual(
      p.status!.nodes!.map((e) => [e.prefix, e.listen]),
      [
        [HA.prefix, `${HA.floating}:25790`],
        [HA.prefix, `${HA.floating}:25790`],
      ],
    );
    await lab().startPeer();
    t.true(lab().peer!.address.startsWith('2001:db8:9:20:'), lab().peer!.address);
    for (const [from, to, what] of [
      [lab().lab.peers.A, TOPO.ispV6, 'peer -> ISP'],
      [lab().lab.isp, lab().peer!.address, 'ISP -> peer'],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, `${what}: ${r.output}\n${r.received === 3 ? '' : await lab().dump()}`);
    }
    await statusSession();
  },
);

serial(
  title(
    "the active agent's Pod deleted: it withdraws and releases the Lease, the standby takes over (Handover); the TCP stream survives",
  ),
  async (t) => {
    const r = await lab().across('agent Pod deleted', () => lab().deleteActiveAgent());
    await check(t, r, 'Handover');
    await statusSession();
  },
);

serial(
  title(
    'kubectl drain of the active node: its agent hands over, the TCP stream survives; uncordoned, it stands by again',
  ),
  async (t) => {
    let drained = '';
    const r = await lab().across('kubectl drain', async () => {
      drained = (await lab().prefix())!.status!.failover!.active!;
      await run(join(lab().cp.binDir, 'kubectl'), [
        '--kubeconfig',
        lab().cp.kubeconfigPath,
        'drain',
        drained,
        '--ignore-daemonsets',
        '--delete-emptydir-data',
        '--force',
        '--timeout=120s',
      ]);
    });
    await check(t, r, 'Handover');
    await run(join(lab().cp.binDir, 'kubectl'), ['--kubeconfig', lab().cp.kubeconfigPath, 'uncordon', drained]);
    await lab().settled();
    await statusSession();
    t.true(s.statusShown, "the docs' ha-status session ran with edge-1 active");
  },
);

serial(
  title(
    'a crash of the active node (every process killed): the standby takes over once the Lease expires (ActiveLost); the TCP stream survives; the node boots and stands by',
  ),
  async (t) => {
    await lab().activeAwayFromOperator();
    let crashed = '';
    const r = await lab().across('crash', async () => {
      crashed = (await lab().prefix())!.status!.failover!.active!;
      await lab().crash(crashed);
    });
    await check(t, r, 'ActiveLost');
    await lab().boot(crashed);
    const active = await lab().settled();
    t.is(active, r.to, 'the node that came back stands by: no move back');
    await eventually(
      'the prefix Degraded no more',
      async () =>
        (await lab().prefix())?.status?.conditions?.some((c) => c.type === 'Degraded' && c.status === 'False'),
      120_000,
      500,
    );
  },
);
