// Frames from a capture file as tcpdump -w writes it (pcap, Ethernet link
// type): what a test saw on a wire, byte for byte, in order.
import { readFileSync } from 'node:fs';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';
import { systemTool } from '../../agent/host/tools.js';

const LINKTYPE_ETHERNET = 1;

/** The frames of the pcap file at path (each as captured: run tcpdump with -s 0 for whole frames). */
export function readPcap(path: string): Uint8Array[] {
  const b = readFileSync(path);
  if (b.length < 24) throw new Error(`${path}: ${b.length} bytes, not a pcap file`);
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && b.readUInt32BE(0) !== 0xa1b2c3d4 && b.readUInt32BE(0) !== 0xa1b23c4d)
    throw new Error(`${path}: not a pcap file (magic ${magic.toString(16)})`);
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  if (u32(20) !== LINKTYPE_ETHERNET) throw new Error(`${path}: link type ${u32(20)}, not Ethernet`);
  const frames: Uint8Array[] = [];
  for (let o = 24; o + 16 <= b.length;) {
    const caplen = u32(o + 8);
    if (o + 16 + caplen > b.length) break; // cut short by the capture's end
    frames.push(Uint8Array.from(b.subarray(o + 16, o + 16 + caplen)));
    o += 16 + caplen;
  }
  return frames;
}

/**
 * tcpdump on ns's iface, frames going q (in or out) that match filter, whole, into file; resolves once it listens.
 * Its buffer holds a transfer of some MB: what would overflow a smaller one is lost to the capture, not to the test.
 */
export async function startTcpdump(
  ns: Netns,
  iface: string,
  q: 'in' | 'out',
  filter: string,
  file: string,
): Promise<Proc> {
  const proc = ns.spawn([
    systemTool('tcpdump'),
    '-i',
    iface,
    '-Q',
    q,
    '-n',
    '-U',
    '-B',
    '65536',
    '-s',
    '0',
    '-w',
    file,
    filter,
  ]);
  await proc.waitFor(/listening on/, 10_000);
  return proc;
}
