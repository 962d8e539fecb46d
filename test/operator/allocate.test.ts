// /64 allocation: inside the prefix, one node per /64, stable across restarts
// (same record in -> same answer), across a node leaving and coming back,
// deterministic without a record, reclaiming only when full.
import test from 'ava';
import fc from 'fast-check';
import { parsePrefix } from '../../lib/ip.js';
import {
  allocate,
  formatAllocations,
  parseAllocations,
  preferredIndex,
  subnetCount,
  subnetIndex,
  subnetText,
} from '../../kube/subnets.js';

const P48 = parsePrefix('2001:db8:9::/48');
const P63 = parsePrefix('2001:db8:9:10::/63');
const P64 = parsePrefix('2001:db8:9:10::/64');

test('subnets of a /48, /56, /63 and /64 round-trip', (t) => {
  t.is(subnetCount(P48), 65536);
  t.is(subnetText(P48, 0), '2001:db8:9::/64');
  t.is(subnetText(P48, 0xdc00), '2001:db8:9:dc00::/64');
  t.is(subnetIndex(P48, '2001:db8:9:dc00::/64'), 0xdc00);
  const p56 = parsePrefix('2001:db8:9:ab00::/56');
  t.is(subnetCount(p56), 256);
  t.is(subnetText(p56, 0x12), '2001:db8:9:ab12::/64');
  t.is(subnetIndex(p56, '2001:db8:9:ab12::/64'), 0x12);
  t.is(subnetIndex(p56, '2001:db8:9:ac12::/64'), -1, 'outside the /56');
  t.is(subnetText(P63, 1), '2001:db8:9:11::/64');
  t.is(subnetIndex(P63, '2001:db8:9:12::/64'), -1);
  t.is(subnetIndex(P64, '2001:db8:9:10::/64'), 0);
  t.is(subnetIndex(P48, '2001:db8:9:10::/56'), -1, 'not a /64');
  t.is(subnetIndex(P48, 'garbage'), -1);
});

test('three nodes in a /48 get distinct /64s inside it, the same ones every time', (t) => {
  const r = allocate(P48, ['node-c', 'node-a', 'node-b'], {});
  t.deepEqual([...r.assigned.keys()].sort(), ['node-a', 'node-b', 'node-c']);
  const subs = [...r.assigned.values()];
  t.is(new Set(subs).size, 3);
  for (const s of subs) t.true(subnetIndex(P48, s) >= 0, s);
  t.deepEqual(r.unassigned, []);
  t.deepEqual(r.added.sort(), ['node-a', 'node-b', 'node-c']);
  // deterministic without a record: the first choice is a hash of the name
  t.deepEqual(allocate(P48, ['node-a', 'node-b', 'node-c'], {}).allocations, r.allocations);
  t.is(r.assigned.get('node-a'), subnetText(P48, preferredIndex('node-a', 65536)));
  // with the record: nothing changes
  const again = allocate(P48, ['node-a', 'node-b', 'node-c'], r.allocations);
  t.deepEqual(again.allocations, r.allocations);
  t.deepEqual(again.added, []);
});

test('a node that leaves keeps its /64 in the record and gets it back when it returns', (t) => {
  const first = allocate(P48, ['a', 'b', 'c'], {});
  const without = allocate(P48, ['a', 'c'], first.allocations);
  t.false(without.assigned.has('b'));
  t.is(without.allocations.b, first.allocations.b, 'retained while b is gone');
  // a newcomer does not take b's /64 while there is room
  const newcomer = allocate(P48, ['a', 'c', 'd'], without.allocations);
  t.not(newcomer.assigned.get('d'), first.allocations.b);
  const back = allocate(P48, ['a', 'b', 'c', 'd'], newcomer.allocations);
  t.is(back.assigned.get('b'), first.allocations.b);
  t.is(back.assigned.get('a'), first.allocations.a);
});

test('an admin may pin a node to a /64 in the record; unusable entries are dropped with a reason', (t) => {
  const r = allocate(P48, ['a', 'b'], { a: '2001:db8:9:10::/64', b: '2001:db8:9:10::/64', z: '2001:db8:77::/64' });
  t.is(r.assigned.get('a'), '2001:db8:9:10::/64');
  t.not(r.assigned.get('b'), '2001:db8:9:10::/64');
  t.true(
    r.dropped.some((m) => m.startsWith('b: 2001:db8:9:10::/64 is also allocated to a')),
    r.dropped.join('; '),
  );
  t.true(
    r.dropped.some((m) => m.startsWith('z: 2001:db8:77::/64 is not a /64 of 2001:db8:9::/48')),
    r.dropped.join('; '),
  );
  t.false('z' in r.allocations);
});

test('when the prefix is full, retained /64s of departed nodes are reclaimed, then nodes go without', (t) => {
  const first = allocate(P63, ['a', 'b'], {});
  t.is(first.assigned.size, 2);
  const swapped = allocate(P63, ['a', 'c'], first.allocations);
  t.is(swapped.assigned.get('c'), first.allocations.b, 'c takes the /64 kept for b');
  t.deepEqual(swapped.reclaimed, ['b']);
  t.false('b' in swapped.allocations);
  const full = allocate(P63, ['a', 'c', 'd'], swapped.allocations);
  t.deepEqual(full.unassigned, ['d']);
  t.is(full.assigned.get('a'), first.allocations.a);
});

test('a /64 goes to its one node; with several selected the holder keeps it, else nobody gets it', (t) => {
  const one = allocate(P64, ['a'], {});
  t.is(one.assigned.get('a'), '2001:db8:9:10::/64');
  const two = allocate(P64, ['a', 'b'], one.allocations);
  t.deepEqual([...two.assigned.keys()], ['a']);
  t.deepEqual(two.unassigned, ['b']);
  const ambiguous = allocate(P64, ['a', 'b'], {});
  t.is(ambiguous.assigned.size, 0);
  t.deepEqual(ambiguous.unassigned, ['a', 'b']);
  const moved = allocate(P64, ['b'], one.allocations);
  t.is(moved.assigned.get('b'), '2001:db8:9:10::/64');
  t.deepEqual(moved.reclaimed, ['a']);
});

test('the record survives its text form; broken annotations start afresh with a message', (t) => {
  const r = allocate(P48, ['x', 'y'], {});
  const text = formatAllocations(r.allocations);
  t.deepEqual(parseAllocations(text).record, r.allocations);
  t.regex(parseAllocations('{nope').error ?? '', /not JSON/);
  t.regex(parseAllocations('[1]').error ?? '', /not a JSON object/);
  t.deepEqual(parseAllocations(undefined).record, {});
});

test('property: any sequence of node sets keeps /64s unique, inside the prefix, and stable for nodes that stay', (t) => {
  const names = fc.constantFrom('n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7', 'n8', 'n9');
  const prefixes = fc.constantFrom(
    '2001:db8:9::/48',
    '2001:db8:9:ab00::/56',
    '2001:db8:9:10::/62',
    '2001:db8:9:10::/63',
  );
  fc.assert(
    fc.property(
      prefixes,
      fc.array(fc.uniqueArray(names, { maxLength: 10 }), { minLength: 1, maxLength: 12 }),
      (ptext, steps) => {
        const prefix = parsePrefix(ptext);
        const count = subnetCount(prefix);
        let record: Record<string, string> = {};
        let before = new Map<string, string>();
        for (const selected of steps) {
          const r = allocate(prefix, selected, record);
          const subs = Object.values(r.allocations);
          if (new Set(subs).size !== subs.length) return false;
          if (subs.some((s) => subnetIndex(prefix, s) < 0)) return false;
          // every selected node is assigned unless the prefix is full of selected nodes
          if (r.unassigned.length && r.assigned.size < Math.min(count, selected.length)) return false;
          // nodes that stay selected keep their /64
          for (const [n, s] of before) if (r.assigned.has(n) && r.assigned.get(n) !== s) return false;
          for (const n of selected) if (before.has(n) && !r.assigned.has(n)) return false;
          record = r.allocations;
          before = r.assigned;
        }
        return true;
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});
