// /112 slices, pure parts: word and slice arithmetic, names (the name is the
// claim, so it must be a function of the slice and one-to-one), reserved
// slices, the deterministic first choice and probing, spec.slices, and the
// per-namespace plan (what stays, what goes and why, who needs a slice).
import test from 'ava';
import fc from 'fast-check';
import { formatIPv6, inPrefix, parseIPv6, parsePrefix, type Prefix } from '../../lib/ip.js';
import { parseSlice } from '../../agent/slices/slice.js';
import { subnetText } from '../../kube/subnets.js';
import type { SixBed4Range, SixBed4Slice } from '../../kube/api.js';
import {
  planNamespace,
  podAsks,
  targetPrefix,
  type NamespaceInfo,
  type PodInfo,
  type PrefixRef,
  type SlicingPrefix,
} from '../../operator/slices/plan.js';
import {
  checkSlices,
  chooseWord,
  isReserved,
  preferredWord,
  rangeName,
  rangePattern,
  reservedSlices,
  sliceAddress,
  sliceBytes,
  sliceKey,
  sliceName,
  sliceText,
  sliceWords,
  type CheckedSlices,
} from '../../kube/slice-model.js';
import { checkSpec, type LocalAddressSpec } from '../../kube/prefix-spec.js';

const N64 = parsePrefix('2001:db8:9:10::/64');
const P48 = parsePrefix('2001:db8:48::/48');

function locals(list: string[], prefix = '2001:db8:9:10::/64'): LocalAddressSpec[] {
  const r = checkSpec({ prefix, localAddresses: list });
  if (!r.spec || r.problems.length) throw new Error(r.problems.map((p) => p.message).join('; '));
  return r.spec.localAddresses;
}

test('a slice is <node /64>:A:B:0::/112, canonical text, its first address ::1', (t) => {
  t.deepEqual([...sliceBytes(N64, 5, 1)], [...parseIPv6('2001:db8:9:10:5:1::')]);
  t.is(sliceText(N64, 5, 1), '2001:db8:9:10:5:1::/112');
  t.is(sliceAddress(N64, 5, 1), '2001:db8:9:10:5:1:0:1');
  t.is(sliceText(N64, 0xffff, 0), '2001:db8:9:10:ffff::/112');
  t.is(sliceAddress(N64, 0xabcd, 0xffff), '2001:db8:9:10:abcd:ffff:0:1');
  // the delivery half reads the same text and finds the same address
  const s = parseSlice('2001:db8:9:10:5:1:0:0/112');
  t.is(s.text, sliceText(N64, 5, 1));
  t.is(s.address, sliceAddress(N64, 5, 1));
  t.deepEqual(sliceWords('2001:db8:9:10:5:1:0:0/112'), { node64: N64, a: 5, b: 1 });
  t.is(sliceWords('2001:db8:9:10:5:1:7:0/112'), undefined, 'port word not zero');
  t.is(sliceWords('2001:db8:9:10:5::/96'), undefined, 'not a /112');
  t.is(sliceWords('garbage'), undefined);
});

test('names: <prefix>-<index>-<A>-<B> and <prefix>-<A>, four hex digits each, at most 63 characters', (t) => {
  t.is(sliceName('edge', 0x1a, 5, 1), 'edge-001a-0005-0001');
  t.is(sliceName('edge', 0, 0xffff, 0xabcd), 'edge-0000-ffff-abcd');
  t.is(rangeName('edge', 5), 'edge-0005');
  const longest = 'p'.repeat(48);
  t.is(sliceName(longest, 0xffff, 0xffff, 0xffff).length, 63);
  t.true(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(sliceName('my-prefix', 0xbeef, 0xa, 0xb)), 'a DNS label');
});

test('property: the name is a one-to-one function of the slice (one object per slice, one slice per object)', (t) => {
  const lengths = fc.constantFrom(48, 52, 56, 60, 63, 64);
  fc.assert(
    fc.property(
      lengths,
      fc.nat(0xffff),
      fc.nat(0xffff),
      fc.nat(0xffff),
      fc.nat(0xffff),
      fc.nat(0xffff),
      fc.nat(0xffff),
      (len, i1, a1, b1, i2, a2, b2) => {
        const p = parsePrefix(`2001:db8:48::/${len}`);
        const count = 2 ** (64 - len);
        const idx1 = i1 % count;
        const idx2 = i2 % count;
        const s1 = sliceText(parsePrefix(subnetText(p, idx1)), a1, b1);
        const s2 = sliceText(parsePrefix(subnetText(p, idx2)), a2, b2);
        const n1 = sliceName('edge', idx1, a1, b1);
        const n2 = sliceName('edge', idx2, a2, b2);
        if ((s1 === s2) !== (n1 === n2)) return false;
        // round trip through the text, and always port word 0, inside the prefix
        const w = sliceWords(s1)!;
        return (
          w.a === a1 &&
          w.b === b1 &&
          w.node64.text === subnetText(p, idx1) &&
          inPrefix(p, parsePrefix(s1).bytes) &&
          parsePrefix(s1).bytes[12] === 0 &&
          parsePrefix(s1).bytes[13] === 0
        );
      },
    ),
    { numRuns: 2000 },
  );
  t.pass();
});

test('range pattern: the node group is * in a split prefix', (t) => {
  t.is(rangePattern(N64, 5), '2001:db8:9:10:5:*:0:0/112');
  t.is(rangePattern(P48, 0x1f), '2001:db8:48:*:1f:*:0:0/112');
  t.is(rangePattern(parsePrefix('2001:db8:0:ab00::/56'), 0xffff), '2001:db8:0:*:ffff:*:0:0/112');
});

test('reserved: A = 0 always; every slice holding a configured local address', (t) => {
  const l = locals(['::11', '::7:1:0:11', '2001:db8:9:10:9:2:0:30', '2001:db8:9:11:9:3:0:30'], '2001:db8:9:10::/63');
  const r = reservedSlices(N64, l);
  t.deepEqual(
    [...r].sort((x, y) => x - y),
    [sliceKey(0, 0), sliceKey(7, 1), sliceKey(9, 2)],
    '::x in every /64, full addresses in theirs',
  );
  const other = reservedSlices(parsePrefix('2001:db8:9:11::/64'), l);
  t.true(other.has(sliceKey(9, 3)) && !other.has(sliceKey(9, 2)));
  t.true(isReserved(0, 0, r));
  t.true(isReserved(0, 123, new Set()), "the whole of A = 0 is the host's");
  t.true(isReserved(7, 1, r));
  t.false(isReserved(7, 2, r));
});

test('property: a word chosen by probing is free, in range, never reserved, and the preferred one when that is free', (t) => {
  fc.assert(
    fc.property(
      fc.nat(0xffff),
      fc.nat(40),
      fc.string(),
      fc.uniqueArray(fc.nat(60), { maxLength: 61 }),
      fc.array(fc.nat(60), { maxLength: 5 }),
      (first0, span, key, takenRel, localRel) => {
        const first = Math.max(1, Math.min(first0, 0xffff - span));
        const range = { first, last: first + span };
        const taken = new Set(takenRel.map((x) => first + x));
        const a = 5;
        const local = localRel.map((x) => {
          const b = (first + x) & 0xffff;
          return `::${a.toString(16)}:${b.toString(16)}:0:11`;
        });
        const reserved = reservedSlices(N64, locals(local));
        const pref = preferredWord(key, range);
        if (pref < range.first || pref > range.last || preferredWord(key, range) !== pref) return false;
        const w = chooseWord(pref, range, (x) => taken.has(x) || isReserved(a, x, reserved));
        const free = [];
        for (let x = range.first; x <= range.last; x++) if (!taken.has(x) && !isReserved(a, x, reserved)) free.push(x);
        if (w === undefined) return free.length === 0;
        if (!free.includes(w)) return false;
        if (free.includes(pref) && w !== pref) return false;
        // and the slice holds no local address
        const bytes = parsePrefix(sliceText(N64, a, w));
        return local.every((l) => !inPrefix(bytes, parseIPv6(formatIPv6(parseIPv6(`2001:db8:9:10${l.slice(1)}`)))));
      },
    ),
    { numRuns: 1000 },
  );
  t.pass();
});

test('probing wraps around inside the range and reports exhaustion', (t) => {
  const range = { first: 10, last: 13 };
  t.is(
    chooseWord(12, range, (x) => x >= 12),
    10,
  );
  t.is(
    chooseWord(11, range, () => false),
    11,
  );
  t.is(
    chooseWord(12, range, () => true),
    undefined,
  );
  t.is(
    chooseWord(99, range, () => false),
    13,
    'a preferred word outside the range is clamped',
  );
});

test('spec.slices: defaults, and what CEL refuses the operator refuses too', (t) => {
  t.deepEqual(checkSlices(undefined).slices.enabled, false);
  t.deepEqual(checkSlices({ enabled: true }), {
    slices: {
      enabled: true,
      namespaceLabel: 'sixbed4.io/prefix',
      podAnnotation: 'sixbed4.io/slice',
      namespaceWords: { first: 1, last: 65535 },
      podWords: { first: 0, last: 65535 },
      inbound: 'filtered',
    },
    problems: [],
  });
  const custom = checkSlices({
    enabled: true,
    namespaceLabel: 'example.com/net',
    podAnnotation: 'example.com/ipv6',
    namespaceWords: { first: 16, last: 31 },
    podWords: { first: 1, last: 2 },
  });
  t.deepEqual(custom.problems, []);
  t.like(custom.slices, {
    namespaceLabel: 'example.com/net',
    podAnnotation: 'example.com/ipv6',
    namespaceWords: { first: 16, last: 31 },
    podWords: { first: 1, last: 2 },
  });
  const reasons = (raw: unknown) => checkSlices(raw).problems.map((p) => p.message);
  t.regex(
    reasons({ enabled: true, namespaceWords: { first: 0 } })[0]!,
    /namespaceWords.first 0 is not a word from 1 to 65535/,
  );
  t.regex(reasons({ enabled: true, podWords: { first: 9, last: 3 } })[0]!, /first 9 is greater than last 3/);
  t.regex(
    reasons({ enabled: true, podAnnotation: 'sixbed4.io/address' })[0]!,
    /an annotation the operator writes itself/,
  );
  t.false(
    checkSlices({ enabled: true, podAnnotation: 'sixbed4.io/address' }).slices.enabled,
    'unusable keys hand out nothing',
  );
  t.regex(reasons({ enabled: true, namespaceLabel: 'not a key!' })[0]!, /not a valid label key/);
});

// ---------------------------------------------------------------- the plan

const S: CheckedSlices = checkSlices({ enabled: true }).slices;
const W1 = parsePrefix(subnetText(P48, 0x11));
const W2 = parsePrefix(subnetText(P48, 0x22));

function slicing(over: Partial<SlicingPrefix> = {}): SlicingPrefix {
  return {
    name: 'edge',
    prefix: P48,
    slices: S,
    local: locals(['::11', '::5:3:0:11'], '2001:db8:48::/48'),
    serving: new Map([
      ['w1', { subnet: W1, index: 0x11 }],
      ['w2', { subnet: W2, index: 0x22 }],
    ]),
    pendingNodes: new Set(['w3']),
    notServing: (n) => `${n} is not selected`,
    ...over,
  };
}
const NS: NamespaceInfo = {
  name: 'demo',
  uid: 'ns-uid',
  labels: { 'sixbed4.io/prefix': 'edge' },
  annotations: {},
  deleting: false,
};
const pod = (
  name: string,
  node: string | undefined,
  ann: Record<string, string> = { 'sixbed4.io/slice': 'true' },
  extra: Partial<PodInfo> = {},
): PodInfo => ({
  name,
  uid: `uid-${name}`,
  hostNetwork: false,
  deleting: false,
  annotations: ann,
  ...(node ? { node } : {}),
  ...extra,
});
function sliceObj(
  p: SlicingPrefix,
  node: string,
  a: number,
  b: number,
  podName: string,
  over: Partial<SixBed4Slice['spec']> = {},
): SixBed4Slice {
  const srv = p.serving.get(node) ?? { subnet: W1, index: 0x11 };
  return {
    metadata: { name: sliceName(p.name, srv.index, a, b), uid: `s-${a}-${b}` },
    spec: {
      prefix: p.name,
      node,
      slice: sliceText(srv.subnet, a, b),
      address: sliceAddress(srv.subnet, a, b),
      pod: { namespace: 'demo', name: podName, uid: `uid-${podName}` },
      ...over,
    },
  };
}
const claim = (word: number, uid = 'ns-uid', prefix = 'edge'): SixBed4Range => ({
  metadata: { name: rangeName(prefix, word) },
  spec: { prefix, word, namespace: { name: 'demo', uid } },
});
const refs: PrefixRef[] = [
  { name: 'edge', namespaceLabel: 'sixbed4.io/prefix', podAnnotation: 'sixbed4.io/slice' },
  {
    name: 'off',
    namespaceLabel: 'sixbed4.io/prefix',
    podAnnotation: 'sixbed4.io/slice',
    why: 'spec.slices.enabled is not true',
  },
];

test('which prefix a namespace takes slices from: its label; unknown, disabled and several prefixes are problems', (t) => {
  const edge = slicing();
  const m = new Map([['edge', edge]]);
  t.is(targetPrefix(NS, m, refs).target, edge);
  const unknown = targetPrefix({ ...NS, labels: { 'sixbed4.io/prefix': 'nope' } }, m, refs);
  t.is(unknown.target, undefined);
  t.like(unknown.problems[0], {
    kind: 'Namespace',
    reason: 'UnknownPrefix',
    message: 'label sixbed4.io/prefix=nope names no SixBed4Prefix; the namespace gets no slices',
  });
  t.like(targetPrefix({ ...NS, labels: { 'sixbed4.io/prefix': 'off' } }, m, refs).problems[0], {
    reason: 'SlicesDisabled',
  });
  const other = slicing({ name: 'zz', slices: { ...S, namespaceLabel: 'example.com/net' } });
  const both = targetPrefix(
    { ...NS, labels: { 'sixbed4.io/prefix': 'edge', 'example.com/net': 'zz' } },
    new Map([
      ['edge', edge],
      ['zz', other],
    ]),
    refs,
  );
  t.is(both.target, edge);
  t.like(both.problems[0], { reason: 'MultiplePrefixes' });
  t.deepEqual(targetPrefix({ ...NS, labels: {} }, m, refs), { problems: [] });
});

test('a fresh namespace needs a word; pods that ask on serving nodes are candidates; the rest say why', (t) => {
  const pl = planNamespace({
    name: 'demo',
    ns: NS,
    slicing: new Map([['edge', slicing()]]),
    prefixes: refs,
    slices: [],
    ranges: [],
    pods: [
      pod('a', 'w1'),
      pod('b', 'w2'),
      pod('c', 'plain'),
      pod('d', undefined),
      pod('e', 'w3'),
      pod('f', 'w1', { 'sixbed4.io/slice': 'yes' }),
      pod('g', 'w1', {}),
      pod('h', 'w1', { 'sixbed4.io/slice': 'false' }),
      pod('i', 'w1', undefined, { hostNetwork: true }),
      pod('j', 'w1', undefined, { phase: 'Succeeded' }),
      pod('k', 'w1', undefined, { deleting: true }),
    ],
  });
  t.true(pl.needWord);
  t.is(pl.word, undefined);
  t.deepEqual(
    pl.candidates.map((c) => [c.pod.name, c.node, c.index]),
    [
      ['a', 'w1', 0x11],
      ['b', 'w2', 0x22],
    ],
  );
  t.deepEqual(pl.waiting, ['d', 'e'], "unscheduled, or its node's /64 not recorded yet");
  t.deepEqual(
    pl.problems.map((p) => [p.name, p.reason]),
    [
      ['c', 'NodeNotServing'],
      ['f', 'InvalidSliceAnnotation'],
      ['i', 'HostNetworkPod'],
    ],
  );
  t.is(
    pl.problems[0]!.message,
    'node plain serves no /64 of SixBed4Prefix edge (plain is not selected), so it has no slice to give; the pod runs without one',
  );
  t.is(
    pl.problems[1]!.message,
    'annotation sixbed4.io/slice: "yes" is neither "true" (give the pod a /112) nor "false"',
  );
  t.is(podAsks(pod('x', 'w1', { 'sixbed4.io/slice': 'true' }), 'sixbed4.io/slice'), 'yes');
});

test('slices stay while valid; every reason to release one is found (and the cache-dependent ones are checked)', (t) => {
  const edge = slicing();
  const pods = [
    pod('a', 'w1'),
    pod('b', 'w2'),
    pod('c', 'w1', {}),
    pod('d', 'w1', undefined, { phase: 'Failed' }),
    pod('e', 'w2'),
    pod('f', 'w1'),
    pod('g', 'w1'),
  ];
  const slices = [
    sliceObj(edge, 'w1', 5, 1, 'a'), // valid
    sliceObj(edge, 'w1', 5, 0x10, 'a'), // a second slice of a: the later one in text order goes
    sliceObj(edge, 'w2', 5, 2, 'b'), // valid
    sliceObj(edge, 'w1', 5, 4, 'c'), // no longer asks
    sliceObj(edge, 'w1', 5, 5, 'd'), // finished
    sliceObj(edge, 'w1', 5, 6, 'e'), // pod runs on w2
    sliceObj(edge, 'w1', 5, 7, 'gone'), // pod gone (checked with the API)
    sliceObj(edge, 'w1', 5, 3, 'f'), // holds the local address ::5:3:0:11
    sliceObj(edge, 'w1', 6, 1, 'g'), // word 6 not held (checked with the API)
    { ...sliceObj(edge, 'w1', 5, 8, 'g'), metadata: { name: 'edge-0011-0005-0042', uid: 'x' } }, // misnamed
    { ...sliceObj(edge, 'w1', 5, 9, 'g', { prefix: 'off' }), metadata: { name: 'off-0011-0005-0009', uid: 'y' } }, // prefix hands out no slices
  ];
  const pl = planNamespace({
    name: 'demo',
    ns: NS,
    slicing: new Map([['edge', edge]]),
    prefixes: refs,
    pods,
    slices,
    ranges: [claim(5)],
  });
  t.is(pl.word, 5);
  t.false(pl.needWord);
  t.deepEqual(
    [...pl.keep.entries()].map(([uid, s]) => [uid, s.spec.slice]),
    [
      ['uid-a', '2001:db8:48:11:5:1::/112'],
      ['uid-b', '2001:db8:48:22:5:2::/112'],
    ],
  );
  const why = Object.fromEntries(pl.release.map((r) => [r.slice.metadata.name, `${r.check ?? '-'} ${r.why}`]));
  t.deepEqual(why, {
    'edge-0011-0005-0010': '- pod demo/a holds 2001:db8:48:11:5:1::/112 already (a pod has one slice)',
    'edge-0011-0005-0004': '- pod demo/c no longer asks for a slice',
    'edge-0011-0005-0005': '- pod demo/d has finished (Failed)',
    'edge-0011-0005-0006': '- pod demo/e runs on w2, not w1',
    'edge-0011-0005-0007': 'pod pod demo/gone (uid-gone) is gone',
    'edge-0011-0005-0003': '- a local address of edge lies inside it',
    'edge-0011-0006-0001': 'range namespace demo does not hold word 6 of edge',
    'edge-0011-0005-0042': "- its name does not match its slice (that slice's object is edge-0011-0005-0008)",
    'off-0011-0005-0009': '- SixBed4Prefix off hands out no slices now',
  });
  // e, f and g ask and lost their slices: they are candidates again
  t.deepEqual(
    pl.candidates.map((c) => c.pod.name),
    ['e', 'f', 'g'],
  );
});

test("claims: the lowest valid one is the namespace's word; surplus, misnamed and foreign claims go unless a slice uses them", (t) => {
  const edge = slicing();
  const pods = [pod('a', 'w1')];
  const ranges = [
    claim(9),
    claim(5),
    claim(7),
    { ...claim(8), metadata: { name: 'edge-0042' } },
    claim(3, 'old-namespace-uid'),
    claim(4, 'ns-uid', 'off'),
  ];
  // a's slice lies in word 7 (a race left the namespace words 5 and 7): 7 stays while it is used
  const pl = planNamespace({
    name: 'demo',
    ns: NS,
    slicing: new Map([['edge', edge]]),
    prefixes: refs,
    pods,
    slices: [sliceObj(edge, 'w1', 7, 1, 'a')],
    ranges,
  });
  t.is(pl.word, 5);
  t.deepEqual(
    [...pl.keep.values()].map((s) => s.spec.slice),
    ['2001:db8:48:11:7:1::/112'],
  );
  t.deepEqual(
    pl.releaseRanges.map((r) => [r.range.metadata.name, r.why]),
    [
      ['edge-0009', 'namespace demo holds word 5 of edge already'],
      ['edge-0042', 'its name does not match its word (edge-0008)'],
      ['off-0004', 'namespace demo takes slices from edge now'],
    ],
    'the claim of an earlier namespace of the same name is left to the garbage collector',
  );

  // opted out: every claim and slice goes, pods that still ask hear why
  const out = planNamespace({
    name: 'demo',
    ns: { ...NS, labels: {} },
    slicing: new Map([['edge', edge]]),
    prefixes: refs,
    pods,
    slices: [sliceObj(edge, 'w1', 5, 1, 'a')],
    ranges: [claim(5)],
  });
  t.deepEqual(
    out.release.map((r) => r.why),
    ['namespace demo no longer takes slices from edge'],
  );
  t.deepEqual(
    out.releaseRanges.map((r) => r.why),
    ['namespace demo takes no slices now'],
  );
  t.false(out.needWord);
  t.like(out.problems[0], { kind: 'Pod', name: 'a', reason: 'NamespaceNotOptedIn' });
  t.regex(out.problems[0]!.message, /label it sixbed4.io\/prefix=edge/);

  // a namespace that is gone: nothing to decide (the garbage collector removes what it owned)
  const gone = planNamespace({
    name: 'demo',
    ns: undefined,
    slicing: new Map([['edge', edge]]),
    prefixes: refs,
    pods: [],
    slices: [sliceObj(edge, 'w1', 5, 1, 'a')],
    ranges: [claim(5)],
  });
  t.deepEqual([gone.release, gone.releaseRanges, gone.needWord], [[], [], false]);

  // a namespace being deleted gets no new word and no new slices
  const deleting = planNamespace({
    name: 'demo',
    ns: { ...NS, deleting: true },
    slicing: new Map([['edge', edge]]),
    prefixes: refs,
    pods,
    slices: [],
    ranges: [],
  });
  t.false(deleting.needWord);
  t.deepEqual(deleting.candidates, []);
});

test('a node whose /64 moved takes its slices with it; a prefix without slices releases all', (t) => {
  const edge = slicing();
  const moved = slicing({ serving: new Map([['w1', { subnet: W2, index: 0x22 }]]) });
  const s = sliceObj(edge, 'w1', 5, 1, 'a');
  const pl = planNamespace({
    name: 'demo',
    ns: NS,
    slicing: new Map([['edge', moved]]),
    prefixes: refs,
    pods: [pod('a', 'w1')],
    slices: [s],
    ranges: [claim(5)],
  });
  t.deepEqual(
    pl.release.map((r) => r.why),
    ['it is not inside 2001:db8:48:22::/64, the /64 node w1 serves now'],
  );
  t.deepEqual(
    pl.candidates.map((c) => [c.pod.name, c.index]),
    [['a', 0x22]],
  );
  const none = planNamespace({
    name: 'demo',
    ns: NS,
    slicing: new Map(),
    prefixes: [{ ...refs[0]!, why: 'it is being deleted' }],
    pods: [pod('a', 'w1')],
    slices: [s],
    ranges: [claim(5)],
  });
  t.deepEqual(
    none.release.map((r) => r.why),
    ['SixBed4Prefix edge hands out no slices now'],
  );
  t.like(none.problems[0], { kind: 'Namespace', reason: 'SlicesDisabled' });
});

test('helpers agree with the CRD: only port-0 /112s outside A = 0 ever come out', (t) => {
  const p: Prefix = W1;
  for (const [a, b] of [
    [1, 0],
    [0xffff, 0xffff],
    [5, 1],
  ] as const) {
    const s = parsePrefix(sliceText(p, a, b));
    t.is(s.length, 112);
    t.is((s.bytes[12]! << 8) | s.bytes[13]!, 0);
    t.false(isReserved(a, b, reservedSlices(p, [])));
  }
});
