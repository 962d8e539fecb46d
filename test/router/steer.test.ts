// The kernel's choice of socket (steer-ebpf.ts: the eBPF program agent/bpf/steer.bpf.c, or the classic one of
// steer.ts without CAP_BPF) on real sockets in a namespace of the test's own: datagrams the router would forward for
// the peer that sent them (the originator check passes, sane length and hop limit, not multicast, not ND) reach the
// checked sockets; everything else spreads over the other sockets by source, and never a checked one. With handover
// (the router's sockets join a previous router's group, which then closes, or not yet) the eBPF program steers the
// same way into the new router's sockets; without eBPF, handover means no steering, as before.
import test, { type ExecutionContext } from 'ava';
import { fileURLToPath } from 'node:url';
import { Netns, uniqueName } from '../../lab/netns.js';
import { isRoot } from '../../lab/topology.js';
import { hashProgram, steerProgram } from '../../agent/router/steer.js';
import type { Probe, ProbeResult } from './steer-probe.js';

const skip = isRoot() ? null : 'needs root for a network namespace';
const SCRIPT = fileURLToPath(new URL('./steer-probe.js', import.meta.url));
const JUNK = ['otherPort', 'hopLimit1', 'lengthLie', 'multicast', 'nd', 'short', 'notIPv6'];
/** Root without CAP_BPF (nor CAP_SYS_ADMIN, which would also allow bpf(2)): the kernel refuses the eBPF program. */
const NO_BPF = ['setpriv', ...['--inh-caps', '--ambient-caps', '--bounding-set'].map((o) => `${o}=-all,+net_admin`)];

test('without a second socket a worker has nothing to steer', (t) => {
  t.is(steerProgram(new Uint8Array(8), 1, 1), null);
  t.is(steerProgram(new Uint8Array(8), 2, 4)!.length % 8, 0);
  t.is(hashProgram().length, 8);
});

/** Runs the probe in a namespace of its own (without CAP_BPF when noBpf). */
async function probe(t: ExecutionContext, p: Probe, noBpf = false): Promise<ProbeResult> {
  const ns = await Netns.create(uniqueName('steer'));
  t.teardown(() => ns.destroy());
  await ns.ip(['link', 'set', 'lo', 'up']);
  const r = JSON.parse(
    await ns.run([...(noBpf ? NO_BPF : []), process.execPath, SCRIPT, JSON.stringify(p)]),
  ) as ProbeResult;
  t.log(JSON.stringify(r));
  return r;
}

const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

/** Valid datagrams in the first two of the router's four sockets, junk in the other two, each source's own. */
function assertSplit(t: ExecutionContext, r: ProbeResult): void {
  t.is(
    r.router.valid![0]! + r.router.valid![1]!,
    4,
    'from their own 6bed4 address: the checked sockets (the first half)',
  );
  for (const kind of JUNK) {
    t.is(r.router[kind]![0]! + r.router[kind]![1]!, 0, `${kind}: never a checked socket`);
    t.is(sum(r.router[kind]!), 4, `${kind}: all received by the router's sockets`);
  }
  t.true(
    r.router.valid!.filter((n) => n > 0).length > 1 && r.router.otherPort!.filter((n) => n > 0).length > 1,
    'sources spread within each half',
  );
  for (const [kind, got] of Object.entries(r.predecessor)) t.is(sum(got), 0, `${kind}: none for the previous router`);
}

const rootTest = (title: string, fn: (t: ExecutionContext) => Promise<void>) =>
  (skip ? test.skip : test)(`${title}${skip ? ` (skipped: ${skip})` : ''}`, fn);

rootTest("checked peers' datagrams reach the first sockets, junk the others: eBPF", async (t) => {
  const r = await probe(t, {});
  t.deepEqual(r.steering, { program: 'ebpf' });
  assertSplit(t, r);
});

rootTest('without CAP_BPF the classic program splits the same way, each source to the same socket', async (t) => {
  const [ebpf, cbpf] = await Promise.all([probe(t, {}), probe(t, {}, true)]);
  t.is(cbpf.steering.program, 'cbpf');
  t.regex(cbpf.steering.ebpfError ?? '', /EPERM/);
  assertSplit(t, cbpf);
  t.deepEqual(cbpf.router, ebpf.router, 'the two programs pick the same socket for each datagram');
});

rootTest('handover: after the previous router (steered) closes, the new one splits into its own sockets', async (t) => {
  const r = await probe(t, { handover: true, predecessor: 'steered' });
  t.deepEqual(r.steering, { program: 'ebpf' });
  assertSplit(t, r);
});

rootTest('handover: while both run, the new router gets everything, split; the previous one nothing', async (t) => {
  // Whether the previous router steered (this version: its eBPF program is replaced) or not (an older router).
  for (const predecessor of ['steered', 'unsteered'] as const) {
    const r = await probe(t, { handover: true, predecessor, predecessorOpen: true });
    t.deepEqual(r.steering, { program: 'ebpf' });
    t.is(Object.keys(r.predecessor).length, 8, 'the previous router had its sockets open');
    assertSplit(t, r);
  }
});

rootTest('handover without CAP_BPF: no steering, as before; every datagram still arrives', async (t) => {
  const r = await probe(t, { handover: true, predecessor: 'unsteered' }, true);
  t.is(r.steering.program, 'none');
  t.regex(r.steering.ebpfError ?? '', /EPERM/);
  t.is(r.steering.cbpfError, undefined);
  for (const kind of ['valid', ...JUNK]) t.is(sum(r.router[kind]!), 4, `${kind}: all received`);
});

rootTest(
  "handover without eBPF: a previous router's eBPF program is replaced by the kernel's hash, not left steering",
  async (t) => {
    // The previous router (this version) steers into its own sockets; the new one's program is refused (an object
    // that does not exist stands for it), so it leaves the choice to the hash: 32 sources then reach both routers'
    // sockets. Left attached, the previous router's program would send all of them to its own sockets; under the
    // hash, all 32 land in one router's four of the eight with a chance of 2^-31.
    const r = await probe(t, {
      handover: true,
      predecessor: 'steered',
      predecessorOpen: true,
      object: '/nonexistent/steer.bpf.o',
      senders: 32,
    });
    t.is(r.steering.program, 'none');
    t.regex(r.steering.ebpfError ?? '', /ENOENT|no such file/i);
    t.is(sum(Object.values(r.router).flat()) + sum(Object.values(r.predecessor).flat()), 8 * 32, 'all received');
    t.true(sum(Object.values(r.router).flat()) > 0, "the new router's sockets get their share");
    t.true(sum(Object.values(r.predecessor).flat()) > 0, "and the previous router's theirs");
  },
);
