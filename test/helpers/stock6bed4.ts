// The stock 6bed4 C implementation (test/stock/6bed4, vendored unchanged but for one guard in its generated
// nonstd.h): compiled with `cc` once per set of sources and defines into a cache outside the clone, and started in
// lab namespaces. The stock peer sends tunnelled traffic to its compiled-in router, so the router's IPv4 address is
// part of the build (its port is the stock 25790, UDP_PORT_6BED4).
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCommand } from '../../agent/host/command.js';
import { findSystemTool } from '../../agent/host/tools.js';
import { requireRootReason } from '../../lab/topology.js';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';

/** Where the vendored sources are (from dist/test/helpers back to the repository). */
export const STOCK_DIR = fileURLToPath(new URL('../../../test/stock/6bed4/', import.meta.url));
const SOURCES = ['src/6bed4peer.c', 'src/6bed4router.c', 'src/nonstd.h'];
/** The stock programs' UDP port (UDP_PORT_6BED4 in nonstd.h); the compiled-in router listens on it. */
export const STOCK_PORT = 25790;
/** The tunnel interface both stock programs make (INTERFACE_NAME_6BED4, as upstream's CMake sets it). */
export const STOCK_TUN = '6bed4';

/** Why the stock programs cannot be built and run here, or null. */
export const stockSkipReason: string | null =
  requireRootReason() ??
  (findSystemTool('cc') ? null : 'needs a C compiler as `cc` to build the stock 6bed4 (CI installs gcc)');

/**
 * The -D flags upstream's CMake would pass (LINUX, the interface name, LOCAL_OVERRIDES_PORT0) and the compiled-in
 * router in all the forms nonstd.h spells it, for `routerV4` on port 25790.
 */
export function stockDefines(routerV4: string): string[] {
  const b = routerV4.split('.').map(Number);
  if (b.length !== 4 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255))
    throw new Error(`not an IPv4 address: ${routerV4}`);
  const hex = (bytes: number[]) => `"${bytes.map((x) => `\\x${x.toString(16).padStart(2, '0')}`).join('')}"`;
  const port = [STOCK_PORT & 0xff, STOCK_PORT >> 8]; // little-endian, as the stock link-layer addresses carry it
  const addr = [...port, ...b];
  const mac = [addr[0]! ^ 0x02, ...addr.slice(1)];
  const defs: Record<string, string> = {
    LINUX: '1',
    INTERFACE_NAME_6BED4: `"${STOCK_TUN}"`,
    LOCAL_OVERRIDES_PORT0: 'yes',
    SERVER_6BED4_IPV4_TXT: `"${routerV4}"`,
    SERVER_6BED4_IPV4_INT32: String(((b[0]! << 24) >>> 0) + (b[1]! << 16) + (b[2]! << 8) + b[3]!),
    SERVER_6BED4_IPV4_INT0: String(b[0]),
    SERVER_6BED4_IPV4_INT1: String(b[1]),
    SERVER_6BED4_IPV4_INT2: String(b[2]),
    SERVER_6BED4_IPV4_INT3: String(b[3]),
    SERVER_6BED4_IPV4_BINSTR: hex(b),
    SERVER_6BED4_PORT_TXT: `"${STOCK_PORT}"`,
    SERVER_6BED4_PORT_BINSTR: hex(port),
    SERVER_6BED4_IPV4_PORT_TXT: `"${routerV4}:${STOCK_PORT}"`,
    SERVER_6BED4_PORT_IPV4_ADDRSTR: hex(addr),
    SERVER_6BED4_PORT_IPV4_MACSTR: hex(mac),
  };
  return Object.entries(defs).map(([k, v]) => `-D${k}=${v}`);
}

export interface StockBinaries {
  peer: string;
  router: string;
}

const builds = new Map<string, Promise<StockBinaries>>();

/**
 * Compiles 6bed4peer and 6bed4router for a stock peer whose compiled-in router is routerV4, into
 * `$SIXBED4_STOCK_CACHE` (default ~/.cache/sixbed4/stock6bed4)/<hash of sources, compiler and flags>/. Built once
 * per key (a finished build is reused by later runs); concurrent builders each build into a directory of their own
 * and the first rename wins.
 */
export function buildStock(routerV4: string): Promise<StockBinaries> {
  let p = builds.get(routerV4);
  if (!p) {
    p = build(routerV4);
    builds.set(routerV4, p);
  }
  return p;
}

async function build(routerV4: string): Promise<StockBinaries> {
  const flags = ['-O2', '-w', ...stockDefines(routerV4), '-I', join(STOCK_DIR, 'src')];
  const hash = createHash('sha256');
  hash.update(await runCommand(['cc', '--version']));
  hash.update(JSON.stringify(flags));
  for (const f of SOURCES) hash.update(await readFile(join(STOCK_DIR, f)));
  const root = process.env.SIXBED4_STOCK_CACHE ?? join(homedir(), '.cache', 'sixbed4', 'stock6bed4');
  const dir = join(root, hash.digest('hex').slice(0, 16));
  const out: StockBinaries = { peer: join(dir, '6bed4peer'), router: join(dir, '6bed4router') };
  if ((await exists(out.peer)) && (await exists(out.router))) return out;
  await mkdir(root, { recursive: true });
  const tmp = await mkdtemp(join(root, 'build-'));
  try {
    for (const name of ['6bed4peer', '6bed4router']) {
      await runCommand(['cc', ...flags, join(STOCK_DIR, 'src', `${name}.c`), '-o', join(tmp, name)], {
        timeoutMs: 120_000,
      });
    }
    await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
      // Someone else finished the same build first: theirs is as good.
      if (!(await exists(out.peer))) throw err;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Starts the stock peer in ns, in the foreground with its log on stderr (-f -e) and with `--default-route` (-r), and
 * resolves with the UDP port it bound (it picks an even one in 49152-65534 itself; its -p fails, as that binds the
 * socket a second time). `-s` names the router for its solicitations and keepalives; its tunnelled traffic goes to
 * the compiled-in router regardless.
 */
export async function startStockPeer(
  ns: Netns,
  bin: StockBinaries,
  routerV4: string,
): Promise<{ proc: Proc; port: number }> {
  const proc = ns.spawn(['stdbuf', '-oL', '-eL', bin.peer, '-f', '-e', '-r', '-s', routerV4]);
  try {
    const line = await proc.waitFor(/Bound to UDP port \d+/, 10_000);
    return { proc, port: Number(/Bound to UDP port (\d+)/.exec(line)![1]) };
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  }
}

/**
 * Starts the stock router in ns for prefix64 (a /64) on routerV4:25790 and waits for its startup lines. It prints
 * a line per packet (line-buffered here, so a failure message can show them). It does not route its /64 into its
 * tunnel itself: that route is added here, by hand, as docs/interop.md says.
 */
export async function startStockRouter(
  ns: Netns,
  bin: StockBinaries,
  routerV4: string,
  prefix64: string,
): Promise<Proc> {
  const proc = ns.spawn(['stdbuf', '-oL', '-eL', bin.router, '-l', routerV4, '-L', prefix64]);
  try {
    await proc.waitFor(/^LISTEN v6listen_linklocal_complete/, 10_000);
    await ns.ip(['-6', 'route', 'replace', prefix64, 'dev', STOCK_TUN]);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  }
  return proc;
}

/** Output of stock programs for a failure message. */
export function stockOutput(procs: Record<string, Proc | undefined>): string {
  return Object.entries(procs)
    .filter((e): e is [string, Proc] => e[1] !== undefined)
    .map(([name, p]) => {
      const out = p.output();
      return `--- ${name} (${p.running ? 'running' : `exited ${JSON.stringify(p.exitStatus)}`}) ---\n${out.length > 6000 ? `...${out.slice(-6000)}` : out}`;
    })
    .join('\n');
}

/** The global IPv6 addresses on the stock peer's tunnel in ns (none while it has no /114, or no tunnel). */
export async function stockAddresses(ns: Netns): Promise<string[]> {
  const links = await ns
    .json<{ addr_info?: { local: string; scope: string }[] }[]>(['-6', 'addr', 'show', 'dev', STOCK_TUN])
    .catch(() => []);
  return links
    .flatMap((l) => l.addr_info ?? [])
    .filter((a) => a.scope === 'global')
    .map((a) => a.local);
}

/**
 * The stock peer's address once its tunnel has one (from the router's RA); gives up when proc exits or after
 * timeoutMs, with `why()` (the programs' output) in the error.
 */
export async function waitStockAddress(ns: Netns, proc: Proc, why: () => string, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const global = await stockAddresses(ns);
    if (global.length > 0) return global[0]!;
    if (Date.now() > deadline || !proc.running)
      throw new Error(
        `${ns.name}: no global address on ${STOCK_TUN} (${proc.running ? `after ${timeoutMs} ms` : 'it exited'})\n${why()}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every address the stock peer has put on its tunnel so far (its log line per RA it took), in order. */
export function stockAssigned(proc: Proc): string[] {
  return [...proc.output().matchAll(/Assigning address (\S+) to tunnel/g)].map((m) => m[1]!);
}
