// Which of the router's SO_REUSEPORT sockets a datagram lands in, decided in the kernel by a classic BPF program
// (SO_ATTACH_REUSEPORT_CBPF) before any socket buffer: the originator check, done cheaply on the headers, splits the
// traffic. Datagrams whose IPv6 source is the 6bed4 address of their own IPv4:port (what every peer sends, and
// what junk from anyone else fails: broken headers, RS/NS from :: or link-local, sources of other mappings) go to
// the first half of each worker's sockets, the "checked" ones; the rest to the other half. Within each half the
// source (IPv4 + port) picks the socket, so one source flooding valid-looking datagrams still fills only its own
// socket's buffer, as the kernel's hash did before. The data path reads the checked sockets before each turn of
// another (datapath.ts), so a flood of junk from many sources fills the other sockets' buffers and not the ones
// the peers' traffic waits in. A flood that builds matching sources from many addresses competes in the checked
// sockets (the fast path forwards that kind in the kernel).
//
// Pure: builds the program's bytes (struct sock_filter, 8 bytes an instruction); the router attaches it.

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD = 0x00,
  LDX = 0x01,
  ST = 0x02,
  ALU = 0x04,
  JMP = 0x05,
  RET = 0x06;
const W = 0x00,
  H = 0x08,
  B = 0x10;
const ABS = 0x20,
  MEM = 0x60,
  LEN = 0x80;
const AND = 0x50,
  RSH = 0x70,
  ADD = 0x00,
  MUL = 0x20,
  DIV = 0x30,
  MOD = 0x90;
const JEQ = 0x10,
  JGE = 0x30;
const K = 0x00,
  X = 0x08,
  A = 0x10;
/** Loads at this offset plus k read the network (IPv4) header; without it, the UDP payload (the IPv6 packet). */
const NET = -0x100000;

type Insn = [code: number, jt: number, jf: number, k: number];

/** How many of a worker's sockets (the first ones) take checked datagrams: half, rounded up. */
export function checkedSockets(sockets: number): number {
  return sockets < 2 ? 0 : Math.ceil(sockets / 2);
}

/**
 * Returns the index of socket first + (h mod (workers × n)) mod n of worker (h mod (workers × n)) / n, where h mixes
 * the source's IPv4 and port: a source keeps its socket, sources spread.
 */
function pick(workers: number, sockets: number, n: number, first: number): Insn[] {
  return [
    // h = IPv4 + (IPv4 >> 16) + port + (port >> 1): ports often share their low bit (peers bind even ones).
    [LD | W | ABS, 0, 0, (NET + 12) >>> 0],
    [ST, 0, 0, 1],
    [ALU | RSH | K, 0, 0, 16],
    [LDX | MEM, 0, 0, 1],
    [ALU | ADD | X, 0, 0, 0],
    [ST, 0, 0, 1],
    [LD | H | ABS, 0, 0, (NET + 20) >>> 0],
    [ST, 0, 0, 2],
    [ALU | RSH | K, 0, 0, 1],
    [LDX | MEM, 0, 0, 2],
    [ALU | ADD | X, 0, 0, 0],
    [LDX | MEM, 0, 0, 1],
    [ALU | ADD | X, 0, 0, 0],
    [ALU | MOD | K, 0, 0, workers * n],
    [ST, 0, 0, 1],
    [ALU | DIV | K, 0, 0, n],
    [ALU | MUL | K, 0, 0, sockets],
    [ST, 0, 0, 2],
    [LD | MEM, 0, 0, 1],
    [ALU | MOD | K, 0, 0, n],
    [ALU | ADD | K, 0, 0, first],
    [LDX | MEM, 0, 0, 2],
    [ALU | ADD | X, 0, 0, 0],
    [RET | A, 0, 0, 0],
  ];
}

/**
 * A program that leaves every choice to the kernel's hash (it returns an index past any group). Attached instead of
 * the split where it cannot be made, it replaces whatever program the group had (a previous router's, with
 * handover), so that no program keeps steering into sockets of a router that is going away.
 */
export function hashProgram(): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setUint16(0, RET | K, true);
  new DataView(out.buffer).setUint32(4, 0xffffffff, true);
  return out;
}

/**
 * The program for `workers` groups of `sockets` sockets each (in the order they were bound: worker by worker), for
 * the /64 prefix8 (its first 8 bytes). Returns null when there is nothing to split (one socket a worker).
 */
export function steerProgram(prefix8: Uint8Array, workers: number, sockets: number): Uint8Array | null {
  if (sockets < 2) return null;
  const checked = checkedSockets(sockets),
    rest = sockets - checked;
  const hi = ((prefix8[0]! << 24) | (prefix8[1]! << 16) | (prefix8[2]! << 8) | prefix8[3]!) >>> 0;
  const lo = ((prefix8[4]! << 24) | (prefix8[5]! << 16) | (prefix8[6]! << 8) | prefix8[7]!) >>> 0;
  // Jumps go to labels, resolved below: every failed test ends in UNCHECKED.
  // A jump: jt 0 when its test holds (on to the next instruction), else to jumpTo; inverse: the other way round.
  const prog: (Insn | { jumpTo: string; code: number; k: number; inverse?: boolean } | { label: string })[] = [
    [LD | W | LEN, 0, 0, 0], // A = payload length
    { code: JMP | JGE | K, k: 40, jumpTo: 'UNCHECKED' }, // an IPv6 header at least
    { code: JMP | JGE | K, k: 1281, jumpTo: 'UNCHECKED', inverse: true }, // at most the tunnel's MTU
    [ST, 0, 0, 0],
    [LD | H | ABS, 0, 0, 4],
    [ALU | ADD | K, 0, 0, 40],
    [LDX | MEM, 0, 0, 0],
    { code: JMP | JEQ | X, k: 0, jumpTo: 'UNCHECKED' }, // and exactly the IPv6 packet its header says
    [LD | B | ABS, 0, 0, 7],
    { code: JMP | JGE | K, k: 2, jumpTo: 'UNCHECKED' }, // a hop limit the router can forward
    [LD | B | ABS, 0, 0, 24],
    { code: JMP | JGE | K, k: 0xff, jumpTo: 'UNCHECKED', inverse: true }, // not to multicast
    // Not Neighbour Discovery (ICMPv6 133..137 right after the header): control, answered at a limited rate. (A load
    // past the end would end the program with 0, the first socket: the length is checked before.)
    [LD | B | ABS, 0, 0, 6],
    { code: JMP | JEQ | K, k: 58, jumpTo: 'NOTICMP' },
    [LD | W | LEN, 0, 0, 0],
    { code: JMP | JGE | K, k: 41, jumpTo: 'UNCHECKED' },
    [LD | B | ABS, 0, 0, 40],
    { code: JMP | JGE | K, k: 133, jumpTo: 'NOTICMP' },
    { code: JMP | JGE | K, k: 138, jumpTo: 'UNCHECKED' },
    { label: 'NOTICMP' },
    [LD | B | ABS, 0, 0, (NET + 0) >>> 0], // IPv4 version and header length: 0x45 (no options), so UDP is at 20
    { code: JMP | JEQ | K, k: 0x45, jumpTo: 'UNCHECKED' },
    [LD | B | ABS, 0, 0, 0],
    [ALU | AND | K, 0, 0, 0xf0],
    { code: JMP | JEQ | K, k: 0x60, jumpTo: 'UNCHECKED' }, // IPv6
    [LD | W | ABS, 0, 0, 8],
    { code: JMP | JEQ | K, k: hi, jumpTo: 'UNCHECKED' }, // source in the /64
    [LD | W | ABS, 0, 0, 12],
    { code: JMP | JEQ | K, k: lo, jumpTo: 'UNCHECKED' },
    // The IPv4 in the interface id (its first byte's two low bits moved to byte 14's top) is the datagram's source.
    [LD | W | ABS, 0, 0, (NET + 12) >>> 0],
    [ALU | AND | K, 0, 0, 0xfcffffff],
    [ST, 0, 0, 0],
    [LD | W | ABS, 0, 0, 16],
    [ALU | AND | K, 0, 0, 0xfcffffff],
    [LDX | MEM, 0, 0, 0],
    { code: JMP | JEQ | X, k: 0, jumpTo: 'UNCHECKED' },
    [LD | B | ABS, 0, 0, (NET + 12) >>> 0],
    [ALU | AND | K, 0, 0, 3],
    [ST, 0, 0, 0],
    [LD | B | ABS, 0, 0, 22],
    [ALU | RSH | K, 0, 0, 6],
    [LDX | MEM, 0, 0, 0],
    { code: JMP | JEQ | X, k: 0, jumpTo: 'UNCHECKED' },
    // And the port word is the datagram's source port.
    [LD | H | ABS, 0, 0, (NET + 20) >>> 0],
    [ST, 0, 0, 0],
    [LD | H | ABS, 0, 0, 20],
    [LDX | MEM, 0, 0, 0],
    { code: JMP | JEQ | X, k: 0, jumpTo: 'UNCHECKED' },
    // Checked: u = source mod (workers × checked); worker u / checked, its socket u mod checked.
    ...pick(workers, sockets, checked, 0),
    { label: 'UNCHECKED' },
    // The rest: u = source mod (workers × rest); worker u / rest, its socket checked + u mod rest.
    ...pick(workers, sockets, rest, checked),
  ];
  const labels = new Map<string, number>();

  let n = 0;
  for (const p of prog)
    if ('label' in p) labels.set(p.label, n);
    else n++;
  const out = new Uint8Array(8 * n),
    v = new DataView(out.buffer);
  let i = 0;
  for (const p of prog) {
    if ('label' in p) continue;
    const to = 'jumpTo' in p ? labels.get(p.jumpTo)! - i - 1 : 0;
    const [code, jt, jf, k] = 'jumpTo' in p ? (p.inverse ? [p.code, to, 0, p.k] : [p.code, 0, to, p.k]) : p;
    v.setUint16(8 * i, code, true);
    out[8 * i + 2] = jt;
    out[8 * i + 3] = jf;
    v.setUint32(8 * i + 4, k >>> 0, true);
    i++;
  }
  return out;
}
