/**
 * The TUN offload of the addon against the real kernel, run by offload.test.ts as root inside a throw-away
 * namespace (`ip netns exec NS node dist/test/io/offload-helper.js`). Prints one JSON line of observations.
 */
import { execFileSync } from 'node:child_process';
import { native, newBatch } from '../../agent/io/native.js';
import { newTunGso, TUN_GSO_PACKETS, TUN_GSO_SEGMENTS } from '../../agent/io/batch.js';
import { upperChecksum } from '../../agent/protocol/checksum.js';

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'inherit'] });

/** Queues of one interface share its mode: the first queue's, whatever a later one asks. */
function modes(): Record<string, boolean[]> {
  const out: Record<string, boolean[]> = {};
  for (const [name, first, second] of [
    ['s4off0', true, false],
    ['s4off1', false, true],
  ] as const) {
    const a = native.tunOpen(name, true, first),
      b = native.tunOpen(name, true, second);
    out[name] = [a.offload === true, b.offload === true, native.tunOffload(a.fd), native.tunOffload(b.fd)];
    native.close(b.fd);
    native.close(a.fd);
  }
  const plain = native.tunOpen('s4off2', false);
  out.plain = [plain.offload === true, native.tunOffload(plain.fd)];
  native.close(plain.fd);
  return out;
}

/**
 * One UDP_SEGMENT send of `total` bytes in segments of `size` from this host to an address the TUN is routed to
 * (USO: Linux 6.2+; python3 makes the send), read back through a batch of 3 entries: the segments, over as many
 * calls as it takes.
 */
function cut(total: number, size: number) {
  ip('link', 'set', 'lo', 'up');
  const t = native.tunOpen('s4cut0', false, true);
  ip('link', 'set', 'dev', 's4cut0', 'mtu', '1280', 'up');
  ip('-6', 'addr', 'add', '2001:db8:78::1/128', 'dev', 's4cut0', 'nodad');
  ip('-6', 'route', 'add', '2001:db8:78::/64', 'dev', 's4cut0');
  execFileSync('python3', [
    '-c',
    `import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(('2001:db8:78::1', 4000))
s.setsockopt(17, 103, ${size})
s.sendto(bytes((i * 7) & 255 for i in range(${total})), ('2001:db8:78::2', 9))`,
  ]);
  const b = newBatch(3, 1281),
    gso = newTunGso();
  const segments: { len: number; udpLen: number; checksumRight: boolean; first: number }[] = [];
  const calls: number[] = [];
  const payload: number[] = [];
  for (let i = 0; i < 50; i++) {
    const n = native.tunRead(t.fd, b, gso);
    if (n === 0) break;
    calls.push(n);
    for (let k = 0; k < n; k++) {
      const p = b.data.subarray(b.off[k]!, b.off[k]! + b.len[k]!);
      if (p[0]! >> 4 !== 6 || p[6] !== 17) continue; // the kernel's own (MLD, ...)
      segments.push({
        len: p.length,
        udpLen: p.readUInt16BE(44),
        checksumRight: upperChecksum(p, 0, 17, 40, p.length - 40) === 0,
        first: p[48]!,
      });
      payload.push(...p.subarray(48));
    }
  }
  const want = Array.from({ length: total }, (_, i) => (i * 7) & 255);
  native.close(t.fd);
  return {
    segments,
    calls,
    payloadWhole: payload.length === want.length && payload.every((x, i) => x === want[i]),
    superPackets: gso.state[TUN_GSO_PACKETS],
    cutSegments: gso.state[TUN_GSO_SEGMENTS],
  };
}

process.stdout.write(JSON.stringify({ modes: modes(), cut: cut(4500, 1000) }) + '\n');
