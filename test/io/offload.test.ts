// The addon's TUN offload (agent/native/gso.c, tun.c) on a real TUN in a throw-away namespace (root): which mode a
// queue gets, and a super-packet cut over several reads of a small batch. The cut of TCP, byte for byte against
// the engine on a real transfer, is test/router/tun-offload.test.ts.
import { release } from 'node:os';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { Netns, uniqueName } from '../../lab/netns.js';
import { findSystemTool } from '../../agent/host/tools.js';
import { skipReason as rootSkip } from '../helpers/fixtures.js';

const HELPER = fileURLToPath(new URL('./offload-helper.js', import.meta.url));
const skipReason = rootSkip ?? (findSystemTool('python3') ? null : 'needs python3');
const rootTest = skipReason ? test.skip : test;
const title = (name: string) => (skipReason ? `${name} (skipped: ${skipReason})` : name);

interface Seen {
  modes: Record<string, boolean[]>;
  cut: {
    segments: { len: number; udpLen: number; checksumRight: boolean; first: number }[];
    calls: number[];
    payloadWhole: boolean;
    superPackets: number;
    cutSegments: number;
  };
}

let run: Promise<Seen> | undefined;
const seen = () =>
  (run ??= (async () => {
    const ns = await Netns.create(uniqueName('tso'));
    try {
      return JSON.parse(await ns.run([process.execPath, HELPER], { timeoutMs: 60_000 })) as Seen;
    } finally {
      await ns.destroy();
    }
  })());

rootTest(
  title("a queue has the offload its interface has: the first queue's, whatever a later one asks"),
  async (t) => {
    const { modes } = await seen();
    // [asked first, asked second] -> [first has it, second has it, and as TUNGETIFF says, for each]
    t.deepEqual(modes.s4off0, [true, true, true, true]);
    t.deepEqual(modes.s4off1, [false, false, false, false]);
    t.deepEqual(modes.plain, [false, false], 'not asked: without');
  },
);

rootTest(
  title('a UDP_SEGMENT super-packet is cut over several reads of a 3-entry batch, each segment whole'),
  async (t) => {
    const { cut } = await seen();
    const sizes = [1000, 1000, 1000, 1000, 500];
    t.deepEqual(
      cut.segments.map((s) => s.len),
      sizes.map((n) => 48 + n),
    );
    t.deepEqual(
      cut.segments.map((s) => s.udpLen),
      sizes.map((n) => 8 + n),
    );
    t.true(
      cut.segments.every((s) => s.checksumRight),
      'each with its own UDP checksum',
    );
    t.true(cut.payloadWhole, 'together the bytes sent, in order');
    t.true(cut.calls.length >= 2 && cut.calls[0] === 3, `over several reads: ${JSON.stringify(cut.calls)}`);
    // USO on the TUN (Linux 6.2+): one super-packet, cut here; before, the kernel cut it and the reads were plain.
    const [major, minor] = release().split('.').map(Number) as [number, number];
    const uso = major > 6 || (major === 6 && minor >= 2);
    t.deepEqual(
      { superPackets: cut.superPackets, cutSegments: cut.cutSegments },
      uso ? { superPackets: 1, cutSegments: 5 } : { superPackets: 0, cutSegments: 0 },
    );
  },
);
