// The slices' inbound policy on a real kernel: three namespaces,
//
//   [isp] isp0 2001:db8:ffff::1/64 ---- up0 2001:db8:ffff::2/64 [node] s4<hash> fe80::1 ---- eth6 <slice>::1/112 [pod]
//         route 2001:db8:9:10::/64 via the node         forwarding on, <slice> dev s4<hash>      default via fe80::1
//
// with the policy applied inside the node by applyInbound itself (a node
// process entered into the namespace, as the agent runs on a node), and what
// crosses the wire checked by its meaning: a connection is answered, refused
// or prohibited; never by how long anything took.
//
// Root only; skips with the reason otherwise. A missing nft skips too, except
// under CI (CI=true), where it fails: the policy cannot be shown without it.
import test from 'ava';
import { findSystemTool } from '../../agent/host/tools.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { veth } from '../../lab/veth.js';
import { ping6 } from '../../lab/sixbed4.js';
import { isRoot } from '../../lab/topology.js';
import { parseAllowInbound, type InboundEntry, type LiveInbound } from '../../agent/slices/inbound.js';
import type { InboundResult } from '../../agent/slices/inbound-apply.js';
import { parseSlice } from '../../agent/slices/slice.js';

const isCI = process.env.CI === 'true' || process.env.CI === '1';
const skipReason =
  process.platform !== 'linux'
    ? `network namespaces need Linux (this is ${process.platform})`
    : !isRoot()
      ? 'needs root to create network namespaces (run as root, e.g. sudo)'
      : !findSystemTool('ip')
        ? 'missing command ip (install iproute2)'
        : !findSystemTool('nft') && !isCI
          ? 'missing command nft (install nftables); under CI this fails instead'
          : null;
const serial = skipReason ? test.serial.skip : test.serial;
const title = (s: string) => (skipReason ? `${s} [skipped: ${skipReason}]` : s);

const SLICE = parseSlice('2001:db8:9:10:1:1::/112');
/** A second filtered slice whose link does not exist: matching is by name, so its rules load all the same. */
const OTHER = parseSlice('2001:db8:9:10:1:2::/112');
const ISP = '2001:db8:ffff::1';
const POD = SLICE.address;

const filtered = (annotation: string): InboundEntry => ({
  hostIf: SLICE.hostIf,
  slice: SLICE.text,
  mode: 'filtered',
  rules: parseAllowInbound(annotation).rules,
});
const open: InboundEntry = { hostIf: SLICE.hostIf, slice: SLICE.text, mode: 'open', rules: [] };
const other: InboundEntry = { hostIf: OTHER.hostIf, slice: OTHER.text, mode: 'filtered', rules: [] };

let net: { isp: Netns; node: Netns; pod: Netns } | undefined;
const made: Netns[] = [];

test.before(async () => {
  if (skipReason) return;
  if (!findSystemTool('nft'))
    throw new Error("nftables' nft is missing (install nftables): under CI the inbound policy test must run");
  for (const tag of ['inisp', 'innode', 'inpod']) made.push(await Netns.create(uniqueName(tag)));
  const [isp, node, pod] = made as [Netns, Netns, Netns];
  await veth(isp, 'isp0', node, 'up0');
  await veth(node, SLICE.hostIf, pod, 'eth6');
  await isp.ipBatch([
    `addr add ${ISP}/64 dev isp0 nodad`,
    'route add 2001:db8:9:10::/64 via 2001:db8:ffff::2 dev isp0',
  ]);
  await node.sysctl('net.ipv6.conf.all.forwarding', 1);
  await node.ipBatch([
    'addr add 2001:db8:ffff::2/64 dev up0 nodad',
    `addr add fe80::1/64 dev ${SLICE.hostIf} nodad`,
    `route replace ${SLICE.text} dev ${SLICE.hostIf}`,
  ]);
  await pod.ipBatch([`addr add ${POD}/112 dev eth6 nodad`, 'route add default via fe80::1 dev eth6']);
  // Listeners: the pod serves 443 and 8080 (TCP) and echoes on UDP 5353; the ISP serves 7000.
  const tcpServer = (ports: number[]) => [
    process.execPath,
    '-e',
    `const net = require('net'); let n = 0; for (const p of ${JSON.stringify(ports)}) net.createServer((s) => s.end('hello ' + p + '\\n')).listen(p, '::', () => { if (++n === ${ports.length}) console.log('ready'); });`,
  ];
  await pod.spawn(tcpServer([443, 8080])).waitFor(/^ready$/, 10_000);
  await pod
    .spawn([
      process.execPath,
      '-e',
      `const s = require('dgram').createSocket('udp6'); s.on('message', (m, r) => s.send('echo ' + m, r.port, r.address)); s.bind(5353, '::', () => console.log('ready'));`,
    ])
    .waitFor(/^ready$/, 10_000);
  await isp.spawn(tcpServer([7000])).waitFor(/^ready$/, 10_000);
  // Ready once the ISP reaches the pod (veth carrier and neighbour discovery settle first).
  for (let i = 0; ; i++) {
    if ((await ping6(isp, POD, { count: 1, timeoutS: 1 })).received === 1) break;
    if (i === 20) throw new Error(`the ISP never reached the pod at ${POD} without any policy`);
  }
  net = { isp, node, pod };
});

test.after.always(async () => {
  await Promise.all(made.map((ns) => ns.destroy()));
});

const MOD = new URL('../../agent/slices/inbound-apply.js', import.meta.url).href;

/** Calls an export of inbound-apply.js in a node process inside the node namespace (the agent's place). */
async function inNode<T>(
  fn: 'applyInbound' | 'removeInbound' | 'listInbound' | 'checkInbound',
  ...args: unknown[]
): Promise<T> {
  const code = `const m = await import(${JSON.stringify(MOD)}); const r = await m[process.argv[1]](...JSON.parse(process.argv[2])); process.stdout.write(JSON.stringify(r ?? null));`;
  return JSON.parse(
    await net!.node.run([process.execPath, '--input-type=module', '-e', code, fn, JSON.stringify(args)]),
  ) as T;
}

type Outcome = { ok: true; data: string } | { error: string };

/** A TCP connection from `from` to [host]:port: what it read, or the error code (ECONNREFUSED, EACCES, ...). */
async function connect(from: Netns, host: string, port: number): Promise<Outcome> {
  const out = await from.run([
    process.execPath,
    '-e',
    `
    const [host, port] = process.argv.slice(1);
    const done = (r) => { console.log(JSON.stringify(r)); process.exit(0); };
    const s = require('net').connect({ host, port: Number(port) });
    let data = '';
    s.setTimeout(10000, () => done({ error: 'no answer' }));
    s.on('data', (b) => { data += b; });
    s.on('end', () => done({ ok: true, data: data.trim() }));
    s.on('error', (e) => done({ error: e.code }));`,
    host,
    String(port),
  ]);
  return JSON.parse(out) as Outcome;
}

/** A UDP datagram from `from` to [host]:port on a connected socket: the echo, or the error the ICMPv6 answer raised. */
async function udp(from: Netns, host: string, port: number): Promise<Outcome> {
  const out = await from.run([
    process.execPath,
    '-e',
    `
    const [host, port] = process.argv.slice(1);
    const done = (r) => { console.log(JSON.stringify(r)); process.exit(0); };
    const s = require('dgram').createSocket('udp6');
    setTimeout(() => done({ error: 'no answer' }), 10000);
    s.on('message', (m) => done({ ok: true, data: String(m) }));
    s.on('error', (e) => done({ error: e.code }));
    s.connect(Number(port), host, () => s.send('hi', (e) => { if (e) done({ error: e.code }); }));`,
    host,
    String(port),
  ]);
  return JSON.parse(out) as Outcome;
}

const tables = async () =>
  (await net!.node.run([findSystemTool('nft')!, 'list', 'tables'])).trim().split('\n').filter(Boolean);
/** `nft -j list table` without the handles, which a re-created table renumbers. */
const listing = async () =>
  JSON.parse(
    await net!.node.run([findSystemTool('nft')!, '-j', 'list', 'table', 'ip6', 'sixbed4_slices']),
    (k, v: unknown) => (k === 'handle' ? undefined : v),
  ) as unknown;

serial(
  title(
    'filtered with tcp/443 opened: 443 answers, 8080 is refused, UDP outside the list is prohibited, ping works, what the pod opens gets its replies',
  ),
  async (t) => {
    const r = await inNode<InboundResult>('applyInbound', [filtered('tcp/443, udp/5353, sctp/9'), other]);
    t.is(r.action, 'applied');
    t.deepEqual(r.filtered, [SLICE.hostIf, OTHER.hostIf].sort());
    t.deepEqual(await tables(), ['table ip6 sixbed4_slices']);

    t.deepEqual(await connect(net!.isp, POD, 443), { ok: true, data: 'hello 443' }, 'an opened port');
    t.deepEqual(
      await connect(net!.isp, POD, 8080),
      { error: 'ECONNREFUSED' },
      'a port not opened, though the pod listens: refused (TCP reset), not left hanging',
    );
    t.deepEqual(await udp(net!.isp, POD, 5353), { ok: true, data: 'echo hi' }, 'an opened UDP port');
    t.deepEqual(
      await udp(net!.isp, POD, 5354),
      { error: 'EACCES' },
      'UDP not opened: ICMPv6 administratively prohibited',
    );
    const ping = await ping6(net!.isp, POD, { count: 2 });
    t.is(ping.received, 2, ping.output);
    t.deepEqual(
      await connect(net!.pod, ISP, 7000),
      { ok: true, data: 'hello 7000' },
      "the pod's own connection gets its replies (established)",
    );
    const pingOut = await ping6(net!.pod, ISP, { count: 1 });
    t.is(pingOut.received, 1, pingOut.output);

    const live = await inNode<LiveInbound>('listInbound');
    t.deepEqual(
      live.filtered.map((f) => f.hostIf),
      [SLICE.hostIf, OTHER.hostIf].sort(),
    );
    t.deepEqual(
      live.filtered.find((f) => f.hostIf === SLICE.hostIf)?.rules,
      parseAllowInbound('tcp/443 udp/5353 sctp/9').rules,
    );
    t.deepEqual(live.oddities, []);
    t.deepEqual(await inNode<string[]>('checkInbound', [filtered('tcp/443, udp/5353, sctp/9'), other]), []);
    t.deepEqual(await inNode<string[]>('checkInbound', [filtered('tcp/443'), other]), [
      `${SLICE.hostIf} (${SLICE.text}) opens tcp/443, udp/5353, sctp/9 instead of tcp/443`,
    ]);
  },
);

serial(title('re-applying the same entries (in any order) changes nothing'), async (t) => {
  await inNode('applyInbound', [filtered('tcp/443'), other]);
  const before = await listing();
  await inNode('applyInbound', [other, filtered(' TCP/443 ,tcp/443')]);
  t.deepEqual(await listing(), before);
  await inNode('applyInbound', [filtered('tcp/443'), other]);
  t.deepEqual(await listing(), before);
  t.deepEqual(await connect(net!.isp, POD, 8080), { error: 'ECONNREFUSED' }, 'still filtering');
  // The comparison sees a change in meaning.
  await inNode('applyInbound', [filtered('tcp/444'), other]);
  t.notDeepEqual(await listing(), before, 'another port is another table');
});

serial(title('the slice made open (re-applied): 8080 answers, the other slice stays filtered'), async (t) => {
  await inNode('applyInbound', [filtered('tcp/443'), other]);
  t.deepEqual(await connect(net!.isp, POD, 8080), { error: 'ECONNREFUSED' });
  const r = await inNode<InboundResult>('applyInbound', [open, other]);
  t.deepEqual(r.filtered, [OTHER.hostIf]);
  t.deepEqual(await connect(net!.isp, POD, 8080), { ok: true, data: 'hello 8080' });
  t.deepEqual(
    await udp(net!.isp, POD, 5354),
    { error: 'ECONNREFUSED' },
    'now the pod itself answers: port unreachable',
  );
  t.deepEqual(
    (await inNode<LiveInbound>('listInbound')).filtered.map((f) => f.hostIf),
    [OTHER.hostIf],
  );
});

serial(title('removing: the table is gone, removing again and applying nothing succeed'), async (t) => {
  await inNode('applyInbound', [filtered('tcp/443'), other]);
  t.deepEqual(await tables(), ['table ip6 sixbed4_slices']);
  await inNode('removeInbound');
  t.deepEqual(await tables(), []);
  await inNode('removeInbound');
  t.like(await inNode<InboundResult>('applyInbound', []), { action: 'removed', filtered: [] });
  t.like(
    await inNode<InboundResult>('applyInbound', [open]),
    { action: 'removed', filtered: [] },
    'only open slices: no table',
  );
  t.deepEqual(await tables(), []);
  t.deepEqual(await inNode<LiveInbound>('listInbound'), { present: false, filtered: [], oddities: [] });
  t.deepEqual(await connect(net!.isp, POD, 8080), { ok: true, data: 'hello 8080' });
});
