// The fast path's seen-peers drain (bpf.c, map_drain; programs.ts, takeSeen) on a real LRU hash map of the seen
// map's shape, filled past its size as a flood of new sources fills it. The kernel hands a hash map over bucket by
// bucket, whole or not at all: buffers that end inside a bucket answer ENOSPC, which once killed the router. Every
// entry must come out exactly once, whatever the buffer size, and the drain must never throw for it.
import test from 'ava';
import { bpfSyscalls, native, type MapDrain } from '../../agent/io/native.js';
import { BPF_MAP_TYPE_LRU_HASH } from '../../agent/bpf/object.js';
import { isRoot } from '../../lab/topology.js';

const skip = isRoot() ? null : 'needs root (CAP_BPF) to make a BPF map';
const rootTest = skip ? test.serial.skip : test.serial;
const title = (name: string) => (skip ? `${name} (skipped: ${skip})` : name);
const SIZE = 65536;

/** A seen map (8-byte key, 1-byte value, LRU, size entries) filled with n keys 1..n: what the kernel kept of them. */
function filledMap(n: number, size = SIZE): number {
  const fd = bpfSyscalls.mapCreate(BPF_MAP_TYPE_LRU_HASH, 8, 1, size, 'test_seen');
  const key = new Uint8Array(8),
    v = new DataView(key.buffer),
    one = Uint8Array.of(1);
  for (let i = 1; i <= n; i++) {
    v.setBigUint64(0, BigInt(i), true);
    bpfSyscalls.mapUpdate(fd, key, one);
  }
  return fd;
}

/** Drains fd with buffers of `entries` entries until the walk ends: the keys and the statuses met. */
function drainAll(fd: number, entries: number): { keys: bigint[]; statuses: Set<MapDrain['status']>; calls: number } {
  let keys = new Uint8Array(8 * entries),
    values = new Uint8Array(entries);
  const out: bigint[] = [],
    statuses = new Set<MapDrain['status']>();
  let calls = 0;
  for (;;) {
    const r = bpfSyscalls.mapDrain(fd, keys, values);
    calls++;
    statuses.add(r.status);
    const v = new DataView(keys.buffer);
    for (let i = 0; i < r.count; i++) out.push(v.getBigUint64(8 * i, true));
    if (r.status === 'end') return { keys: out, statuses, calls };
    if (r.status === 'grow') {
      keys = new Uint8Array(keys.length * 2);
      values = new Uint8Array(values.length * 2);
    }
    if (calls > 10 * SIZE) throw new Error('the drain does not end');
  }
}

rootTest(
  title('a seen map filled past its size drains whole, once each, with buffers that end inside buckets'),
  (t) => {
    const fd = filledMap(SIZE + SIZE / 2);
    try {
      // 4095: the buffers end inside a bucket about every call (ENOSPC after some entries: "full").
      const { keys, statuses } = drainAll(fd, 4095);
      t.true(keys.length > SIZE / 2, `the map held what the kernel kept (${keys.length})`);
      t.is(new Set(keys).size, keys.length, 'no entry twice');
      t.true(
        keys.every((k) => k >= 1n && k <= BigInt(SIZE + SIZE / 2)),
        'only keys that were put in',
      );
      t.true(statuses.has('full') && statuses.has('end'), [...statuses].join(','));
      t.is(bpfSyscalls.mapDrain(fd, new Uint8Array(8 * 16), new Uint8Array(16)).count, 0, 'the map is empty after');
    } finally {
      native.close(fd);
    }
  },
);

rootTest(title('a bucket bigger than the buffers asks for bigger ones, and nothing is lost'), (t) => {
  // 256 keys in 256 buckets: some bucket holds two or more (the birthday bound makes it all but certain).
  const fd = filledMap(256, 256);
  try {
    // One entry's buffers: a bucket of two answers ENOSPC with nothing copied ("grow"), and the caller doubles.
    const { keys, statuses } = drainAll(fd, 1);
    t.true(statuses.has('grow'), [...statuses].join(','));
    t.is(new Set(keys).size, keys.length);
    t.true(keys.length > 128, `${keys.length} keys`);
  } finally {
    native.close(fd);
  }
});

rootTest(title('a drain call on something that is not a hash map throws with the errno'), (t) => {
  const fd = bpfSyscalls.mapCreate(2 /* BPF_MAP_TYPE_ARRAY */, 4, 8, 4, 'test_arr');
  try {
    // Arrays have no lookup-and-delete: the kernel refuses the command (EINVAL / ENOTSUPP), which is a mistake in the
    // call, not a state to wait out.
    t.throws(() => bpfSyscalls.mapDrain(fd, new Uint8Array(64), new Uint8Array(64)), {
      message: /BPF_MAP_LOOKUP_AND_DELETE_BATCH/,
    });
  } finally {
    native.close(fd);
  }
});
