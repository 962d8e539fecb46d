// Revert and rollback on state models: the snapshot taken before apply, the
// restore plan back to it (exact: same addresses, prefix lengths, flags,
// sysctls), what a second apply adds to the state file, and the executor's
// rollback when a step fails.
import test from 'ava';
import { hostConfig } from '../../agent/host/config.js';
import { executeSteps, StepFailure, type StepRunner } from '../../agent/host/execute.js';
import { planApply } from '../../agent/host/plan.js';
import { mergeSaved, planRestore, snapshotOf } from '../../agent/host/snapshot.js';
import { commandLine, type PlanStep } from '../../agent/host/steps.js';
import winston from 'winston';
import { canonical, formsOf, seedSpec, simulate, stateOf, type Spec } from './model.js';

const PREFIX = '2001:db8:9:10::/64';
const L11 = '2001:db8:9:10::11';
const L30 = '2001:db8:9:10::30';
const names = { uplink: 'eth0', prefix: PREFIX, tunnel: '6bed4', dummy: 'dumbo0' };
const log = winston.createLogger({ silent: true });

function applyAll(s: Spec, extra: Record<string, unknown> = {}) {
  const c = hostConfig({ prefix: PREFIX, localAddresses: [L11, L30], ...extra });
  const plan = planApply(c, stateOf(s));
  for (const step of plan.steps) simulate(s, step);
  return plan;
}

for (const [name, extra, prepare] of [
  ['uplink128', {}, (_s: Spec) => {}],
  [
    'dummy112',
    { localAddressMode: 'dummy112' },
    (s: Spec) => {
      s.dummy = { supported: true };
    },
  ],
  [
    'uplink128 with the tunnel up and unusual flags',
    {},
    (s: Spec) => {
      s.links['6bed4'] = { kind: 'tun', addrs: ['fe80::/128'] };
      s.links.eth0!.addrs = s.links.eth0!.addrs.map((a) => (a.startsWith(L30) ? `${L30}/64 nodad deprecated` : a));
      s.conf.eth0!.forwarding = '1'; // on for the uplink only: writing all.forwarding=0 on revert would reset it
    },
  ],
] as const) {
  test(`${name}: revert restores the state before apply exactly, keeping every address throughout`, (t) => {
    const s = seedSpec();
    prepare(s);
    const before = snapshotOf(stateOf(s), names);
    const original = canonical(s);
    const plan = applyAll(s, extra);
    t.notDeepEqual(canonical(s), original);
    const revert = planRestore(before, stateOf(s), {
      deleteDummy: plan.creates.dummy,
      deleteTunnelRoute: plan.creates.tunnelRoute,
    });
    for (const step of revert.steps) {
      simulate(s, step);
      for (const a of [L11, L30]) t.true(formsOf(s, a).length > 0, `${a} missing after '${commandLine(step.action)}'`);
    }
    t.deepEqual(canonical(s), original);
    t.deepEqual(
      planRestore(before, stateOf(s), { deleteDummy: true, deleteTunnelRoute: true }).steps,
      [],
      'a second revert has nothing to do',
    );
  });
}

test('revert writes all.forwarding first, then puts back what that write reset', (t) => {
  const s = seedSpec();
  s.conf.eth0!.forwarding = '1';
  const before = snapshotOf(stateOf(s), names);
  applyAll(s);
  const cmds = planRestore(before, stateOf(s), { deleteDummy: false, deleteTunnelRoute: false }).steps.map((x) =>
    commandLine(x.action),
  );
  t.deepEqual(cmds.slice(-2), [
    'sysctl -w net.ipv6.conf.all.forwarding=0',
    'sysctl -w net.ipv6.conf.eth0.forwarding=1',
  ]);
});

test('revert leaves the tunnel route to the router when apply did not add it', (t) => {
  const s = seedSpec();
  const before = snapshotOf(stateOf(s), names);
  applyAll(s);
  s.links['6bed4'] = { kind: 'tun', addrs: [] };
  s.routes.push(`${PREFIX} via fe80::1 dev 6bed4 metric 1024`); // the router started after apply
  const cmds = planRestore(before, stateOf(s), { deleteDummy: false, deleteTunnelRoute: false }).steps.map((x) =>
    commandLine(x.action),
  );
  t.false(cmds.some((c) => c.includes('route del')));
  const ours = planRestore(before, stateOf(s), { deleteDummy: false, deleteTunnelRoute: true }).steps.map((x) =>
    commandLine(x.action),
  );
  t.true(ours.includes(`ip -6 route del ${PREFIX} dev 6bed4`));
});

test('a second apply keeps the original snapshot and adds only addresses managed for the first time', (t) => {
  const s = seedSpec();
  s.links.eth0!.addrs.push('2001:db8:9:10::40/64');
  const first = snapshotOf(stateOf(s), names);
  // The first apply managed ::44 too, which was not on the host then (so apply added it).
  const saved = mergeSaved(
    undefined,
    first,
    [L11, L30, '2001:db8:9:10::40', '2001:db8:9:10::44'],
    { dummy: false, tunnelRoute: false },
    new Date(0),
  );
  t.is(saved.savedAt, '1970-01-01T00:00:00.000Z');
  // The second apply manages ::44 (now as apply left it) and ::50, which the user added in between.
  const s2 = seedSpec();
  s2.links.eth0!.addrs.push('2001:db8:9:10::44/128', '2001:db8:9:10::50/64');
  const merged = mergeSaved(
    saved,
    snapshotOf(stateOf(s2), names),
    ['2001:db8:9:10::44', '2001:db8:9:10::50'],
    { dummy: true, tunnelRoute: false },
    new Date(),
  );
  t.deepEqual(
    merged.addresses.map((a) => `${a.address}/${a.prefixLen}`).sort(),
    [`${L11}/64`, `${L30}/64`, '2001:db8:9:10::40/64', '2001:db8:9:10::50/64'].sort(),
  );
  t.true(merged.added.dummy);
  t.is(merged.savedAt, saved.savedAt);
});

const step = (n: number): PlanStep => ({
  action: { kind: 'ip', args: ['link', 'set', `x${n}`, 'up'] },
  reason: `step ${n}`,
});

test('a failing step: the rollback plan (from the state at that moment) runs and the error says the host is as it was', async (t) => {
  const ran: string[] = [];
  const runner: StepRunner = {
    async run(s) {
      ran.push(commandLine(s.action));
      if (s.reason === 'step 3') throw new Error('boom');
    },
  };
  const err = await t.throwsAsync(
    executeSteps([step(1), step(2), step(3), step(4)], log, runner, async () => [step(9)]),
  );
  t.true(err instanceof StepFailure && err.rolledBack);
  t.regex(err!.message, /^'ip link set x3 up' failed: boom; rolled back \(1 step\(s\)\): the host is as it was$/);
  t.deepEqual(ran, ['ip link set x1 up', 'ip link set x2 up', 'ip link set x3 up', 'ip link set x9 up']);
});

test('a failing rollback says the host is partly changed', async (t) => {
  const runner: StepRunner = {
    async run(s) {
      if (s.reason !== 'step 1') throw new Error(`no ${s.reason}`);
    },
  };
  const err = await t.throwsAsync(executeSteps([step(1), step(2)], log, runner, async () => [step(8)]));
  t.true(err instanceof StepFailure && !err.rolledBack);
  t.regex(err!.message, /the rollback failed too at 'ip link set x8 up': no step 8: the host is partly changed/);
});
