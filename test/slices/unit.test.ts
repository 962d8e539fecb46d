// The pure parts of slice delivery: reading pod UIDs out of cgroup paths
// (systemd and cgroupfs drivers), slice checks and link naming, the delivery
// planner (what to add, given what `ip -j` shows) and the reconcile diff.
import test from 'ava';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePrefix } from '../../lib/ip.js';
import {
  normalizePodUid,
  podUidFromCgroup,
  podUidsFromCgroupFile,
  scanPodProcesses,
} from '../../agent/slices/podns.js';
import { aliasFor, HOST_IF_RE, hostIfName, parseAlias, parseSlice } from '../../agent/slices/slice.js';
import { inPlace, interpret, planDelivery, resolveOptions, type Observed } from '../../agent/slices/deliver.js';
import { planSlices, type DesiredSlice } from '../../agent/slices/reconcile.js';

const UID = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
const UID_ = UID.replace(/-/g, '_');
const CID = 'a'.repeat(64);

test('pod UID from cgroup paths: systemd driver (all QoS classes), escaped dashes', (t) => {
  t.is(
    podUidFromCgroup(
      `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope`,
    ),
    UID,
  );
  t.is(
    podUidFromCgroup(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${CID}.scope`),
    UID,
  );
  // Guaranteed pods sit directly under kubepods.slice.
  t.is(podUidFromCgroup(`/kubepods.slice/kubepods-pod${UID_}.slice/docker-${CID}.scope`), UID);
  // The pod's own slice (the sandbox may sit there on some runtimes).
  t.is(podUidFromCgroup(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`), UID);
  // kind and other nested kubelets: kubelet.slice/kubelet-kubepods.slice/...
  t.is(
    podUidFromCgroup(
      `0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope`,
    ),
    UID,
  );
});

test('pod UID from cgroup paths: cgroupfs driver, v1 lines, custom roots, static pods', (t) => {
  t.is(podUidFromCgroup(`/kubepods/besteffort/pod${UID}/${CID}`), UID);
  t.is(podUidFromCgroup(`/kubepods/pod${UID}/${CID}`), UID, 'guaranteed QoS');
  t.is(podUidFromCgroup(`11:pids:/kubepods/burstable/pod${UID}/${CID}`), UID, 'a cgroup v1 line');
  t.is(podUidFromCgroup(`4:memory:/docker/${CID}/kubepods/besteffort/pod${UID}/${CID}`), UID, 'kubelet in a container');
  t.is(podUidFromCgroup(`/custom-root/kubepods/besteffort/pod${UID.toUpperCase()}`), UID, 'normalised to lower case');
  const staticUid = '5c3d9c1e2b7a4f6e8d0c1b2a3f4e5d6c';
  t.is(podUidFromCgroup(`/kubepods/burstable/pod${staticUid}/${CID}`), staticUid, 'static pods: a 32-digit hash');
});

test('not a pod: plain containers, system services, the QoS roots, pod<hex> outside kubepods', (t) => {
  for (const p of [
    '0::/',
    `0::/system.slice/docker-${CID}.scope`,
    `0::/docker/${CID}`,
    '0::/kubepods.slice',
    '0::/kubepods.slice/kubepods-besteffort.slice',
    '/kubepods/besteffort',
    `/user.slice/pod${UID}/x`,
    `/podcast/kubepods/besteffort`,
    '/kubepods/besteffort/podzz-not-hex/x',
  ])
    t.is(podUidFromCgroup(p), null, p);
});

test('a whole /proc/PID/cgroup file (hybrid v1+v2) yields the UID once', (t) => {
  const file = [
    `12:pids:/kubepods/besteffort/pod${UID}/${CID}`,
    `4:memory:/kubepods/besteffort/pod${UID}/${CID}`,
    '1:name=systemd:/',
    `0::/kubepods/besteffort/pod${UID}/${CID}`,
    '',
  ].join('\n');
  t.deepEqual([...podUidsFromCgroupFile(file)], [UID]);
  t.is(normalizePodUid(` ${UID_.toUpperCase()} `), UID);
});

test('scanPodProcesses maps pod UIDs to pids from a /proc tree and skips what it cannot read', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 's4-slices-proc-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const write = async (pid: string, text: string | null) => {
    await mkdir(join(root, pid));
    if (text !== null) await writeFile(join(root, pid, 'cgroup'), text);
  };
  const other = '11111111-2222-3333-4444-555555555555';
  await write(
    '10',
    `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope\n`,
  );
  await write('7', `0::/kubepods/besteffort/pod${UID}/${CID}\n`);
  await write('20', `0::/kubepods/pod${other}/${CID}\n`);
  await write('30', '0::/system.slice/ssh.service\n');
  await write('40', null); // exited between readdir and read
  await mkdir(join(root, 'self'));
  const m = await scanPodProcesses(root);
  t.deepEqual(m.get(UID), [7, 10]);
  t.deepEqual(m.get(other), [20]);
  t.is(m.size, 2);
});

test('slices: port-0 /112 only, canonical text, the pod address is ::1', (t) => {
  const s = parseSlice('2001:0db8:9:10:1:1:0:0/112');
  t.is(s.text, '2001:db8:9:10:1:1::/112');
  t.is(s.address, '2001:db8:9:10:1:1:0:1');
  t.is(s.hostIf, hostIfName('2001:db8:9:10:1:1::/112'));
  t.throws(() => parseSlice('2001:db8:9:10::/64'), { message: /is a \/64; slices are \/112/ });
  t.throws(() => parseSlice('2001:db8:9:10:1:1:5:0/112'), { message: /non-zero port word/ });
  t.throws(() => parseSlice('2001:db8:9:10::/112'), { message: /host's own local addresses/ });
  t.throws(() => parseSlice('2001:db8:9:10:1:1:0:1/112'), { message: /host bits set/ });
  t.throws(() => parseSlice('2001:db8:9:10:1:1::'), { message: /has no length/ });
});

test('host link names: 15 characters, s4 + hex, stable, distinct per slice', (t) => {
  const names = new Set<string>();
  for (let a = 1; a <= 50; a++)
    for (let b = 0; b < 20; b++) {
      const n = parseSlice(`2001:db8:9:10:${a.toString(16)}:${b.toString(16)}::/112`).hostIf;
      t.true(n.length <= 15 && HOST_IF_RE.test(n), n);
      names.add(n);
    }
  t.is(names.size, 1000);
  t.is(hostIfName('2001:db8:9:10:1:1::/112'), hostIfName('2001:db8:9:10:1:1::/112'));
  t.false(HOST_IF_RE.test('s4-slc-abc-0'), 'namespace names of the test harness never match');
});

test('alias records slice and pod, and reads back; foreign aliases are not ours', (t) => {
  const a = aliasFor('2001:db8:9:10:1:1::/112', UID, 'demo/web-0');
  t.is(a, `sixbed4 slice=2001:db8:9:10:1:1::/112 pod=${UID} ref=demo/web-0`);
  t.deepEqual(parseAlias(a), { slice: '2001:db8:9:10:1:1::/112', podUid: UID });
  t.is(parseAlias(undefined), null);
  t.is(parseAlias('uplink to the rack switch'), null);
  t.true(aliasFor('2001:db8:9:10:1:1::/112', UID, `demo/${'x'.repeat(300)}`).length <= 255);
  t.false(aliasFor('2001:db8:9:10:1:1::/112', UID, 'bad ref with spaces').includes('ref='));
});

// --- the delivery planner ---------------------------------------------------

const O = resolveOptions();
const SLICE = parseSlice('2001:db8:9:10:1:1::/112');
const POD = { uid: UID, name: 'web-0', namespace: 'demo' };
const PATH = '/proc/1/fd/9';

/** `ip -j` output of a node and pod where the slice is fully delivered (ifindex 7 <-> 2). */
function deliveredState() {
  return {
    host: {
      links: [
        {
          ifindex: 7,
          ifname: SLICE.hostIf,
          link_index: 2,
          flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
          ifalias: aliasFor(SLICE.text, UID, 'demo/web-0'),
          addr_info: [
            { local: 'fe80::1', prefixlen: 64 },
            { local: 'fe80::d4a1:2ff:fe03:405', prefixlen: 64 },
          ],
        },
      ],
      routes: [{ dst: '2001:db8:9:10:1:1::/112', dev: SLICE.hostIf }],
    },
    pod: {
      links: [
        { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP'] },
        {
          ifindex: 2,
          ifname: 'eth6',
          link_index: 7,
          flags: ['UP'],
          addr_info: [{ local: '2001:db8:9:10:1:1:0:1', prefixlen: 112 }],
        },
      ],
      routes: [
        { dst: 'default', gateway: 'fe80::1', dev: 'eth6' },
        { dst: 'default', gateway: 'fe80::1', dev: 'eth6', table: '25790' },
        { dst: '2001:db8:9:10:1:1::/112', dev: 'eth6' },
      ],
      rules: [
        { priority: 0, src: 'all', table: 'local' },
        { priority: 25790, src: '2001:db8:9:10:1:1::', srclen: 112, table: '25790' },
        { priority: 32766, src: 'all', table: 'main' },
      ],
    },
  };
}
const emptyPod = () => ({ links: [{ ifindex: 1, ifname: 'lo', flags: ['UP'] }], routes: [], rules: [] });
const argvs = (steps: { where: string; args: string[] }[]) => steps.map((s) => `${s.where}: ${s.args.join(' ')}`);

test('planner: nothing there -> the whole delivery, in an order that never routes into a half-made pod', (t) => {
  const seen = interpret(SLICE, O, { links: [], routes: [] }, emptyPod());
  t.deepEqual(seen, {
    host: null,
    route: 'none',
    pod: { link: null, mainDefault: 'none', rule: false, tableRoute: false },
  });
  const plan = planDelivery(SLICE, POD, PATH, seen, O);
  t.is(plan.outcome, 'created');
  t.deepEqual(argvs(plan.steps), [
    `host: link add ${SLICE.hostIf} type veth peer name eth6 netns ${PATH}`,
    `host: link set dev ${SLICE.hostIf} alias sixbed4 slice=2001:db8:9:10:1:1::/112 pod=${UID} ref=demo/web-0`,
    `host: addr add fe80::1/64 dev ${SLICE.hostIf} nodad`,
    `host: link set dev ${SLICE.hostIf} up`,
    'pod: net/ipv6/conf/eth6/disable_ipv6 0',
    'pod: addr add 2001:db8:9:10:1:1:0:1/112 dev eth6 nodad',
    'pod: link set dev eth6 up',
    'pod: -6 route add default via fe80::1 dev eth6',
    'pod: -6 rule add pref 25790 from 2001:db8:9:10:1:1::/112 table 25790',
    'pod: -6 route add default via fe80::1 dev eth6 table 25790',
    `host: -6 route replace 2001:db8:9:10:1:1::/112 dev ${SLICE.hostIf}`,
  ]);
});

test('planner: a pod with its own IPv6 default (dual-stack CNI) keeps it; the source rule does the rest', (t) => {
  const pod = { ...emptyPod(), routes: [{ dst: 'default', gateway: 'fe80::a', dev: 'eth0' }] };
  const seen = interpret(SLICE, O, { links: [], routes: [] }, pod);
  t.is(seen.pod.mainDefault, 'other');
  const steps = argvs(planDelivery(SLICE, POD, PATH, seen, O).steps);
  t.false(steps.some((s) => /route add default via fe80::1 dev eth6$/.test(s)));
  t.true(steps.includes('pod: -6 rule add pref 25790 from 2001:db8:9:10:1:1::/112 table 25790'));
});

test('planner: everything in place -> unchanged, no step at all (re-delivery after an agent restart)', (t) => {
  const s = deliveredState();
  const seen = interpret(SLICE, O, s.host, s.pod);
  t.true(inPlace(seen, SLICE, UID));
  t.deepEqual(planDelivery(SLICE, POD, PATH, seen, O), { outcome: 'unchanged', steps: [] });
  // The same, printed in other spellings by another iproute2.
  s.pod.links[1]!.addr_info = [{ local: '2001:db8:9:10:1:1::1', prefixlen: 112 }];
  t.is(planDelivery(SLICE, POD, PATH, interpret(SLICE, O, s.host, s.pod), O).outcome, 'unchanged');
});

test('planner: missing pieces are topped up, nothing else is touched', (t) => {
  const s = deliveredState();
  s.host.routes = [];
  s.pod.rules = s.pod.rules.filter((r) => r.priority !== 25790);
  s.pod.links[1]!.flags = [];
  const plan = planDelivery(SLICE, POD, PATH, interpret(SLICE, O, s.host, s.pod), O);
  t.is(plan.outcome, 'repaired');
  t.deepEqual(argvs(plan.steps), [
    'pod: link set dev eth6 up',
    'pod: -6 rule add pref 25790 from 2001:db8:9:10:1:1::/112 table 25790',
    `host: -6 route replace 2001:db8:9:10:1:1::/112 dev ${SLICE.hostIf}`,
  ]);
  // A route for the slice that points elsewhere is taken over.
  const s2 = deliveredState();
  s2.host.routes = [{ dst: '2001:db8:9:10:1:1::/112', dev: '6bed4' }];
  const seen2 = interpret(SLICE, O, s2.host, s2.pod);
  t.is(seen2.route, 'other');
  t.deepEqual(argvs(planDelivery(SLICE, POD, PATH, seen2, O).steps), [
    `host: -6 route replace 2001:db8:9:10:1:1::/112 dev ${SLICE.hostIf}`,
  ]);
});

test('planner: our link serving another pod (or recording none) is replaced; a foreign eth6 is refused', (t) => {
  const s = deliveredState();
  s.host.links[0]!.ifalias = aliasFor(SLICE.text, '99999999-2222-3333-4444-555555555555');
  // The new pod has no eth6: the old pair's pod end is elsewhere.
  const seen = interpret(SLICE, O, s.host, emptyPod());
  t.false(inPlace(seen, SLICE, UID));
  const plan = planDelivery(SLICE, POD, PATH, seen, O);
  t.is(plan.outcome, 'replaced');
  t.is(argvs(plan.steps)[0], `host: link del dev ${SLICE.hostIf}`);
  t.is(plan.steps.length, 12);

  // The agent stopped between creating the pair and naming it: same pod, no alias.
  const s2 = deliveredState();
  delete (s2.host.links[0] as { ifalias?: string }).ifalias;
  const p2 = planDelivery(SLICE, POD, PATH, interpret(SLICE, O, s2.host, s2.pod), O);
  t.is(p2.outcome, 'replaced');
  t.true(
    argvs(p2.steps).includes('pod: -6 route add default via fe80::1 dev eth6'),
    'the old default died with the old pod end',
  );
  t.false(
    argvs(p2.steps).some((a) => a.includes('rule add')),
    'the rule outlived the link and is still there',
  );

  const foreign = {
    ...emptyPod(),
    links: [...emptyPod().links, { ifindex: 3, ifname: 'eth6', link_index: 44, flags: ['UP'] }],
  };
  t.throws(() => planDelivery(SLICE, POD, PATH, interpret(SLICE, O, { links: [], routes: [] }, foreign), O), {
    message: /already has an interface named eth6 that is not sixbed4's/,
  });
});

test('planner: the pod end name is configurable and checked', (t) => {
  t.is(resolveOptions({ podIf: 'sixbed4' }).podIf, 'sixbed4');
  t.throws(() => resolveOptions({ podIf: 'much-too-long-name' }));
  t.throws(() => resolveOptions({ podIf: 'a b' }));
});

// --- the reconcile diff -----------------------------------------------------

const U1 = '11111111-1111-1111-1111-111111111111';
const U2 = '22222222-2222-2222-2222-222222222222';
const U3 = '33333333-3333-3333-3333-333333333333';
const S1 = '2001:db8:9:10:1:1::/112';
const S2 = '2001:db8:9:10:1:2::/112';
const S3 = '2001:db8:9:10:2:1::/112';
const link = (slice: string, podUid: string | null) => ({
  hostIf: hostIfName(slice),
  owner: podUid ? { slice, podUid } : null,
});

test('reconcile diff: new, present, moved, gone', (t) => {
  const desired: DesiredSlice[] = [
    { slice: S1, podUid: U1, podName: 'a', namespace: 'demo' },
    { slice: '2001:db8:9:10:1:2:0:0/112', podUid: U2.replace(/-/g, '_') }, // other spellings are the same slice and pod
    { slice: S3, podUid: U3 },
  ];
  const plan = planSlices(desired, [link(S2, U2), link(S3, U1), link('2001:db8:9:10:7:7::/112', U1)]);
  t.deepEqual(
    plan.deliver.map((d) => [d.slice.text, d.want.podUid, d.why]),
    [
      [S1, U1, 'new'],
      [S2, U2, 'present'],
      [S3, U3, 'moved'],
    ],
  );
  t.deepEqual(
    plan.release.map((r) => [r.slice, r.podUid, r.why]),
    [
      [S3, U1, `slice moved from pod ${U1} to ${U3}`],
      ['2001:db8:9:10:7:7::/112', U1, 'no longer allocated to this node'],
    ],
  );
  t.deepEqual(plan.invalid, []);
  t.deepEqual(planSlices([], []), { deliver: [], release: [], invalid: [] });
});

test('reconcile diff: links without an alias are released by name, or replaced when their slice is wanted', (t) => {
  const plan = planSlices([{ slice: S1, podUid: U1 }], [link(S1, null), link(S2, null)]);
  t.deepEqual(
    plan.deliver.map((d) => d.why),
    ['moved'],
  );
  t.deepEqual(
    plan.release.map((r) => [r.hostIf, r.slice, r.why]),
    [
      [hostIfName(S1), null, 'link records no owner'],
      [hostIfName(S2), null, 'link records no owner'],
    ],
  );
});

test('reconcile diff: bad input is reported per slice, never thrown', (t) => {
  const prefix = parsePrefix('2001:db8:9:10::/64');
  const plan = planSlices(
    [
      { slice: '2001:db8:9:10::/64', podUid: U1 },
      { slice: '2001:db8:9:11:1:1::/112', podUid: U1 },
      { slice: S2, podUid: 'not a uid!' },
      { slice: S3, podUid: U3 },
    ],
    [],
    { prefix },
  );
  t.deepEqual(
    plan.deliver.map((d) => d.slice.text),
    [S3],
  );
  t.deepEqual(
    plan.invalid.map((i) => i.reason.replace(/^slice '?\S+'? /, '')),
    ['is a /64; slices are /112', "is not inside this node's 2001:db8:9:10::/64", "pod UID 'not a uid!' is not a UID"],
  );
});

test('reconcile diff: a slice two pods claim goes to neither and its link stays; a pod gets one slice', (t) => {
  const plan = planSlices(
    [
      { slice: S1, podUid: U1 },
      { slice: S1, podUid: U2 },
      { slice: S3, podUid: U3 },
      { slice: S2, podUid: U3 },
      { slice: S1, podUid: U1 },
    ],
    [link(S1, U1)],
  );
  t.deepEqual(
    plan.deliver.map((d) => [d.slice.text, d.want.podUid]),
    [[S2, U3]],
    'the first in text order',
  );
  t.deepEqual(plan.release, [], 'the contested slice keeps its link');
  t.is(plan.invalid.filter((i) => /claimed by 2 pods/.test(i.reason)).length, 3);
  t.true(plan.invalid.some((i) => i.reason === `pod ${U3} already gets slice ${S2}; a pod has one slice`));
});

test('observed state of a fully delivered slice', (t) => {
  const s = deliveredState();
  const seen: Observed = interpret(SLICE, O, s.host, s.pod);
  t.deepEqual(seen, {
    host: { ifindex: 7, peerIfindex: 2, up: true, owner: { slice: SLICE.text, podUid: UID }, gateway: true },
    route: 'ours',
    pod: {
      link: { ifindex: 2, peerIfindex: 7, up: true, address: true },
      mainDefault: 'ours',
      rule: true,
      tableRoute: true,
    },
  });
});
