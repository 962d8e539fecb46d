// sixbed4-cni, the static C shim that container runtimes run as a CNI plugin (agent/cni/shim/), tested as the
// built executable:
//
// - Direct runs with CNI_* variables and a network configuration on stdin: VERSION; every kind of bad input gives
//   its CNI error code; a chained ADD for a pod that does not ask for a slice prints prevResult byte for byte and
//   CHECK says nothing, both without touching the agent's socket; with the agent down, a pod that asks (or a
//   standalone attachment) gets code 11 "try again later", a chained pod whose annotations the runtime did not
//   pass is let through with a warning, and DEL, GC and STATUS succeed.
// - The shim's side of the agent protocol, against a stand-in for the agent (FakeAgent below: a protocol test of
//   the shim, not of the agent, whose end-to-end test lives with the agent): what the shim sends, how it relays
//   "ok"/"error" replies, and what it does with replies that are not the protocol or never come.
// - The reference CNI client (cnitool, built by test/k8s/build-node.sh) running a conflist of ptp + sixbed4-cni
//   against network namespaces this test makes (root only): a pod that does not ask gets exactly ptp's result and
//   interface, passes CHECK, and is deleted twice; a pod that asks is refused while no agent runs and is cleaned
//   up by DEL; with the stand-in agent the shim forwards the configuration libcni built (prevResult, the pod's
//   annotations). GC and STATUS through cnitool too.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { accessSync, constants as fsc } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Netns, uniqueName } from '../../lab/netns.js';
import { requireRootReason } from '../../lab/topology.js';
import { NODE_BUILD_SCRIPT, nodeBinaries } from '../k8s/node.js';

const SHIM_DIR = fileURLToPath(new URL('../../../build/Release', import.meta.url));
const SHIM = join(SHIM_DIR, 'sixbed4-cni');
const ANNOTATIONS = 'io.kubernetes.cri.pod-annotations';
const SLICE = 'sixbed4.io/slice';
const isCI = process.env.CI === 'true' || process.env.CI === '1';

try {
  accessSync(SHIM, fsc.X_OK);
} catch {
  throw new Error(`${SHIM} is missing: run npm run build:native (npm run build does it)`);
}

// ---------------------------------------------------------------------------
// Running the shim

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}
type Env = Record<string, string | undefined>;

/** Runs the shim with exactly this environment (nothing inherited) and stdin; never rejects on a non-zero exit. */
function runShim(env: Env, input: string | Buffer): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
  return new Promise((resolve, reject) => {
    const child = spawn(SHIM, [], { env: clean, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
    );
    child.stdin.on('error', () => {}); // the shim may refuse before reading all of stdin (EPIPE)
    child.stdin.end(input);
  });
}

let dir = '';
/** Where no agent listens: the path does not exist. */
const noAgent = () => join(dir, 'no-agent.sock');

const CID = 'c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789';
/** A runtime's environment for `command` (override or remove variables with `extra`). */
function cniEnv(command: string | undefined, extra: Env = {}): Env {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: CID,
    CNI_NETNS: '/run/netns/s4-cni-pod',
    CNI_IFNAME: 'eth0',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=0f1e2d3c',
    CNI_PATH: '/opt/cni/bin',
    ...extra,
  };
}

/** A network configuration as the runtime hands it to the plugin. */
function config(extra: Record<string, unknown> = {}, agentSocket = noAgent()): string {
  return JSON.stringify({ cniVersion: '1.1.0', name: 'pods', type: 'sixbed4-cni', agentSocket, ...extra });
}

/** runtimeConfig with the pod's annotations, as containerd and CRI-O pass them. */
const annotated = (annotations: Record<string, string>) => ({ runtimeConfig: { [ANNOTATIONS]: annotations } });

// prevResult as another plugin wrote it, with its own spacing and escapes: passed through, it must come out as is.
const PREV =
  '{ "cniVersion": "1.1.0",\n  "interfaces": [ {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/s4-cni-pod"} ],\n' +
  '  "ips": [ {"address": "100.64.7.2/24", "gateway": "100.64.7.1", "interface": 0} ],\n  "dns": {"search": ["caf\\u00e9.example", "a\\"b"]} }';
/** A chained configuration (prevResult embedded as written) with the given runtimeConfig. */
function chained(extra: Record<string, unknown>, agentSocket = noAgent(), prev = PREV): string {
  const base = config(extra, agentSocket);
  return `${base.slice(0, -1)},"prevResult":  ${prev}  }`;
}

interface CniError {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/** The run failed with a CNI error object of this code (exit status 1, a line on stderr). */
function isCniError(t: ExecutionContext, r: Run, code: number, version = '1.1.0'): CniError {
  t.is(r.code, 1, `exit status; stdout: ${r.stdout} stderr: ${r.stderr}`);
  const e = JSON.parse(r.stdout) as CniError;
  t.is(e.code, code, e.msg);
  t.is(e.cniVersion, version);
  t.true(typeof e.msg === 'string' && e.msg.length > 0);
  t.regex(r.stderr, new RegExp(`^sixbed4-cni: .*error ${code}: `, 'm'));
  return e;
}

// ---------------------------------------------------------------------------
// A stand-in for the agent's end of the protocol (a protocol test of the shim, not of the agent)

interface ShimRequest {
  version: number;
  command: string;
  containerId: string;
  netns: string;
  ifname: string;
  args: string;
  path: string;
  config: Record<string, unknown>;
}

/**
 * Listens on a Unix socket, records each request once the shim has shut down its side of the connection (which
 * the protocol requires), and answers with what `reply` returns: the raw reply bytes, or null to never answer.
 */
class FakeAgent {
  readonly raw: string[] = [];
  connections = 0;
  private readonly held = new Set<Socket>();

  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async start(path: string, reply: (req: ShimRequest) => string | Buffer | null): Promise<FakeAgent> {
    const server = createServer({ allowHalfOpen: true });
    const agent = new FakeAgent(path, server);
    server.on('connection', (sock) => {
      agent.connections++;
      agent.held.add(sock);
      sock.on('close', () => agent.held.delete(sock));
      sock.on('error', () => {});
      const chunks: Buffer[] = [];
      sock.on('data', (b: Buffer) => chunks.push(b));
      sock.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        agent.raw.push(text);
        const answer = reply(JSON.parse(text) as ShimRequest);
        if (answer !== null) sock.end(answer);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    return agent;
  }

  get requests(): ShimRequest[] {
    return this.raw.map((r) => JSON.parse(r) as ShimRequest);
  }

  async close(): Promise<void> {
    for (const s of this.held) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const agents: FakeAgent[] = [];
let agentCount = 0;
async function fakeAgent(reply: (req: ShimRequest) => string | Buffer | null): Promise<FakeAgent> {
  const a = await FakeAgent.start(join(dir, `agent-${agentCount++}.sock`), reply);
  agents.push(a);
  return a;
}

// ---------------------------------------------------------------------------
// Set-up for the cnitool scenarios (root, network namespaces, the node binaries)

const nodeBin = nodeBinaries();
const cnitoolReason =
  requireRootReason() ??
  (nodeBin ? null : `cnitool and the CNI reference plugins are not built; run: bash ${NODE_BUILD_SCRIPT}`);
if (cnitoolReason && isCI && process.getuid?.() === 0)
  throw new Error(`the cnitool scenarios cannot run under CI: ${cnitoolReason}`);
const cnitoolTest = cnitoolReason ? test.skip : test;
const cnitoolTitle = (s: string) => (cnitoolReason ? `${s} [skipped: ${cnitoolReason}]` : s);

const namespaces: Netns[] = [];
const networks: string[] = [];
let host: Netns | undefined;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 's4-cni-'));
  if (cnitoolReason) return;
  // ptp's host ends (veths, routes) go into this namespace, never the machine's own.
  host = await Netns.create(uniqueName('cnih'));
  namespaces.push(host);
});

test.after.always(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await Promise.all(namespaces.map((n) => n.destroy()));
  // libcni (inside cnitool) caches results under /var/lib/cni/results/<network>-<container>-<ifname>; a DEL
  // removes them, a failed test may not have got there.
  const results = '/var/lib/cni/results';
  const files = await readdir(results).catch(() => [] as string[]);
  await Promise.all(
    files.filter((f) => networks.some((n) => f.startsWith(`${n}-`))).map((f) => rm(join(results, f), { force: true })),
  );
  if (dir) await rm(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// VERSION and bad input

test('VERSION: the supported versions, in the cniVersion asked for (or the latest), without a full config', async (t) => {
  for (const [asked, answered] of [
    ['1.0.0', '1.0.0'],
    ['0.4.0', '0.4.0'],
    ['1.1.0', '1.1.0'],
    ['9.9.9', '1.1.0'],
  ]) {
    const r = await runShim({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: asked }));
    t.is(r.code, 0, r.stderr);
    t.deepEqual(JSON.parse(r.stdout), { cniVersion: answered, supportedVersions: ['0.4.0', '1.0.0', '1.1.0'] }, asked);
  }
});

const badInput: [string, Env, string, number][] = [
  ['no CNI_COMMAND', cniEnv(undefined), config(), 4],
  ['an unknown CNI_COMMAND', cniEnv('FROB'), config(), 4],
  ['stdin empty', cniEnv('ADD'), '', 6],
  ['stdin not JSON', cniEnv('ADD'), '{"cniVersion": "1.1.0", name: pods}', 6],
  ['stdin a JSON array', cniEnv('ADD'), '[{"cniVersion": "1.1.0"}]', 6],
  ['stdin with text after the object', cniEnv('ADD'), `${config()} {}`, 6],
  ['stdin larger than 1 MiB', cniEnv('ADD'), config().padEnd((1 << 20) + 1, ' '), 6],
  ['stdin nested deeper than the scanner allows', cniEnv('ADD'), `{"x":${'['.repeat(500)}${']'.repeat(500)}}`, 6],
  ['no cniVersion', cniEnv('ADD'), JSON.stringify({ name: 'pods', type: 'sixbed4-cni' }), 7],
  ['no name', cniEnv('ADD'), JSON.stringify({ cniVersion: '1.1.0', type: 'sixbed4-cni' }), 7],
  ['no type', cniEnv('ADD'), JSON.stringify({ cniVersion: '1.1.0', name: 'pods' }), 7],
  [
    'a name that is not a string',
    cniEnv('ADD'),
    JSON.stringify({ cniVersion: '1.1.0', name: 7, type: 'sixbed4-cni' }),
    7,
  ],
  ['an unsupported cniVersion', cniEnv('ADD'), config({ cniVersion: '0.3.1' }), 1],
  ['an agentSocket too long for a Unix socket address', cniEnv('ADD'), config({}, `/run/${'x'.repeat(200)}.sock`), 7],
  ['a prevResult that is not an object', cniEnv('ADD'), config({ prevResult: 'eth0' }), 7],
  ['pod annotations that are not an object', cniEnv('ADD'), config({ runtimeConfig: { [ANNOTATIONS]: ['x'] } }), 7],
  ['ADD without CNI_CONTAINERID', cniEnv('ADD', { CNI_CONTAINERID: undefined }), config(), 4],
  ['DEL without CNI_CONTAINERID', cniEnv('DEL', { CNI_CONTAINERID: undefined }), config(), 4],
  ['CHECK without CNI_CONTAINERID', cniEnv('CHECK', { CNI_CONTAINERID: undefined }), chained(annotated({})), 4],
  ['ADD without CNI_NETNS', cniEnv('ADD', { CNI_NETNS: undefined }), config(), 4],
  ['ADD without CNI_IFNAME', cniEnv('ADD', { CNI_IFNAME: '' }), config(), 4],
  ['CHECK without CNI_NETNS', cniEnv('CHECK', { CNI_NETNS: undefined }), chained(annotated({})), 4],
  ['a CNI variable longer than 64 KiB', cniEnv('ADD', { CNI_ARGS: 'K='.padEnd(70_000, 'v') }), config(), 4],
];

for (const [what, env, input, code] of badInput) {
  test(`bad input → CNI error ${code}: ${what}`, async (t) => {
    const r = await runShim(env, input);
    isCniError(t, r, code);
  });
}

test("an error object carries the configuration's cniVersion once it is known", async (t) => {
  const r = await runShim(cniEnv('ADD', { CNI_CONTAINERID: undefined }), config({ cniVersion: '1.0.0' }));
  isCniError(t, r, 4, '1.0.0');
});

// ---------------------------------------------------------------------------
// Decisions the shim makes alone

test('chained ADD for a pod that does not ask: prevResult exactly as given, and the agent is not asked', async (t) => {
  const agent = await fakeAgent(() => 'error\n{"cniVersion":"1.1.0","code":999,"msg":"must not be asked"}');
  const cases: Record<string, string>[] = [
    {},
    { [SLICE]: 'false' },
    { [SLICE]: 'True' },
    { 'example.org/other': 'true' },
  ];
  for (const annotations of cases) {
    const r = await runShim(cniEnv('ADD'), chained(annotated(annotations), agent.path));
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, PREV, JSON.stringify(annotations));
  }
  t.is(agent.connections, 0);
});

test('chained CHECK for a pod that does not ask: exit 0, no output, the agent is not asked', async (t) => {
  const agent = await fakeAgent(() => 'error\n{"cniVersion":"1.1.0","code":999,"msg":"must not be asked"}');
  const r = await runShim(cniEnv('CHECK'), chained(annotated({ 'example.org/other': 'x' }), agent.path));
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, '');
  t.is(agent.connections, 0);
});

test('a configuration of exactly 1 MiB is read whole', async (t) => {
  const text = chained(annotated({})).padEnd(1 << 20, ' ');
  const r = await runShim(cniEnv('ADD'), text);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, PREV);
});

test('podAnnotation names the annotation; keys are compared after JSON unescaping', async (t) => {
  // Default key written with an escaped slash: the pod asks, so with no agent it must be refused.
  const escaped = `${config().slice(0, -1)},"prevResult":${PREV},"runtimeConfig":{"${ANNOTATIONS}":{"sixbed4.io\\/slice":"true"}}}`;
  isCniError(t, await runShim(cniEnv('ADD'), escaped), 11);
  // A custom key: the default one no longer counts, the custom one does.
  const custom = { podAnnotation: 'example.org/ipv6' };
  const ignored = await runShim(cniEnv('ADD'), chained({ ...custom, ...annotated({ [SLICE]: 'true' }) }));
  t.is(ignored.code, 0, ignored.stderr);
  t.is(ignored.stdout, PREV);
  isCniError(t, await runShim(cniEnv('ADD'), chained({ ...custom, ...annotated({ 'example.org/ipv6': 'true' }) })), 11);
});

test('agent down: a pod that asks gets code 11 naming the socket (missing, or refusing connections)', async (t) => {
  const refusing = join(dir, 'not-a-socket');
  await writeFile(refusing, ''); // connect() to a file that is not a listening socket: ECONNREFUSED
  for (const sock of [noAgent(), refusing]) {
    for (const cmd of ['ADD', 'CHECK']) {
      const e = isCniError(t, await runShim(cniEnv(cmd), chained(annotated({ [SLICE]: 'true' }), sock)), 11);
      t.true(e.msg.includes(sock), e.msg);
      t.regex(e.msg, /sixbed4 agent on this node is not running/);
      t.regex(e.details ?? '', /No such file or directory|Connection refused/);
    }
  }
});

test('agent down: a standalone ADD (no prevResult: the network was asked for by name) gets code 11', async (t) => {
  isCniError(t, await runShim(cniEnv('ADD'), config()), 11);
  isCniError(t, await runShim(cniEnv('ADD'), config(annotated({}))), 11);
});

test('agent down: chained ADD/CHECK without pod annotations fail open: prevResult through, a warning on stderr', async (t) => {
  const add = await runShim(cniEnv('ADD'), chained({}));
  t.is(add.code, 0, add.stderr);
  t.is(add.stdout, PREV);
  t.regex(
    add.stderr,
    /runtime passed no pod annotations.*io\.kubernetes\.cri\.pod-annotations.*passing the previous result through/,
  );
  const check = await runShim(cniEnv('CHECK'), chained({ runtimeConfig: {} }));
  t.is(check.code, 0, check.stderr);
  t.is(check.stdout, '');
  t.regex(check.stderr, /runtime passed no pod annotations/);
});

test('agent down: DEL, GC and STATUS succeed with a note on stderr', async (t) => {
  const cases: [string, Env, string][] = [
    ['DEL', cniEnv('DEL'), chained(annotated({ [SLICE]: 'true' }))],
    ['DEL', cniEnv('DEL', { CNI_NETNS: '', CNI_IFNAME: undefined }), config()], // the pod's netns may be gone already
    [
      'GC',
      { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' },
      config({ 'cni.dev/valid-attachments': [{ containerID: CID, ifname: 'eth0' }] }),
    ],
    ['STATUS', { CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' }, config()],
  ];
  for (const [cmd, env, input] of cases) {
    const r = await runShim(env, input);
    t.is(r.code, 0, `${cmd}: ${r.stdout} ${r.stderr}`);
    t.is(r.stdout, '', cmd);
    t.regex(r.stderr, new RegExp(`^sixbed4-cni: ${cmd}\\b.*the sixbed4 agent did not answer`, 'm'));
  }
});

// ---------------------------------------------------------------------------
// The protocol, against the stand-in agent

test('protocol: the request is one JSON object with the CNI variables and the configuration verbatim', async (t) => {
  const body = '{"cniVersion":"1.1.0","interfaces":[],"ips":[]}';
  const agent = await fakeAgent(() => `ok\n${body}`);
  // Values that need escaping on the way: quotes, backslashes, a newline, a control character, non-ASCII.
  const odd = { CNI_ARGS: 'K8S_POD_NAME=we"b\\1;X=line\nbreak\u0001;Y=café ✓', CNI_PATH: '/opt/cni/bin:/usr/lib/cni' };
  const input = `  ${chained(annotated({ [SLICE]: 'true' }), agent.path)}\n`;
  const r = await runShim(cniEnv('ADD', odd), input);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, body);
  t.is(agent.connections, 1);
  const [raw] = agent.raw;
  t.true(raw!.includes(`"config":${input}}`), 'the configuration is embedded byte for byte');
  const req = agent.requests[0]!;
  t.deepEqual(
    { ...req, config: undefined },
    {
      version: 1,
      command: 'ADD',
      containerId: CID,
      netns: '/run/netns/s4-cni-pod',
      ifname: 'eth0',
      args: odd.CNI_ARGS,
      path: odd.CNI_PATH,
      config: undefined,
    },
  );
  t.deepEqual(req.config, JSON.parse(input));
});

test('protocol: missing variables are sent as empty strings (GC, STATUS)', async (t) => {
  const agent = await fakeAgent(() => 'ok\n');
  for (const cmd of ['GC', 'STATUS']) {
    const r = await runShim({ CNI_COMMAND: cmd }, config({}, agent.path));
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, '');
  }
  t.deepEqual(
    agent.requests.map((q) => [q.command, q.containerId, q.netns, q.ifname, q.args, q.path]),
    [
      ['GC', '', '', '', '', ''],
      ['STATUS', '', '', '', '', ''],
    ],
  );
});

test('protocol: what goes to the agent and what the shim decides alone', async (t) => {
  const agent = await fakeAgent((q) =>
    q.command === 'ADD' ? `ok\n${JSON.stringify(q.config.prevResult ?? { cniVersion: '1.1.0' })}` : 'ok\n',
  );
  const asks = annotated({ [SLICE]: 'true' });
  const runs: [string, string][] = [
    ['ADD', chained(asks, agent.path)], // asks
    ['ADD', config(asks, agent.path)], // standalone
    ['ADD', chained({}, agent.path)], // unknown: the agent decides when it is up
    ['ADD', chained(annotated({}), agent.path)], // does not ask: not forwarded
    ['CHECK', chained(asks, agent.path)],
    ['CHECK', chained(annotated({}), agent.path)], // does not ask: not forwarded
    ['DEL', chained(annotated({}), agent.path)], // DEL always goes to the agent: it owns the cleanup
  ];
  for (const [cmd, input] of runs) {
    const r = await runShim(cniEnv(cmd), input);
    t.is(r.code, 0, `${cmd}: ${r.stderr}`);
  }
  t.deepEqual(
    agent.requests.map((q) => q.command),
    ['ADD', 'ADD', 'ADD', 'CHECK', 'DEL'],
  );
});

test('protocol: an "error" reply is printed unchanged with exit status 1', async (t) => {
  const body =
    '{"cniVersion":"1.1.0","code":11,"msg":"no slice allocated for this pod yet","details":"pod default/web"}\n';
  const agent = await fakeAgent(() => `error\n${body}`);
  const r = await runShim(cniEnv('ADD'), chained(annotated({ [SLICE]: 'true' }), agent.path));
  t.is(r.code, 1);
  t.is(r.stdout, body);
});

test('protocol: a malformed reply is CNI error 5 for ADD/CHECK, and never blocks DEL/STATUS', async (t) => {
  const replies = ['hello\n{}', 'ok\nnot json', 'ok\n', 'ok\n[1]', 'error\n', 'error\n"text"', 'OK\n{}'];
  for (const reply of replies) {
    const agent = await fakeAgent(() => reply);
    const add = await runShim(cniEnv('ADD'), chained(annotated({ [SLICE]: 'true' }), agent.path));
    const e = isCniError(t, add, 5);
    t.regex(e.msg, /reply could not be used/, JSON.stringify(reply));
    const del = await runShim(cniEnv('DEL'), chained(annotated({ [SLICE]: 'true' }), agent.path));
    t.is(del.code, 0, `${JSON.stringify(reply)}: ${del.stdout}`);
    const status = await runShim({ CNI_COMMAND: 'STATUS' }, config({}, agent.path));
    t.is(status.code, 0, `${JSON.stringify(reply)}: ${status.stdout}`);
  }
});

test('protocol: a reply over 1 MiB is refused (code 5)', async (t) => {
  const big = `ok\n{"cniVersion":"1.1.0","pad":"${'x'.repeat(1 << 20)}"}`;
  const agent = await fakeAgent(() => big);
  isCniError(t, await runShim(cniEnv('ADD'), chained(annotated({ [SLICE]: 'true' }), agent.path)), 5);
});

test('protocol: the agent closes without replying: code 11 for a pod that asks, 0 for DEL', async (t) => {
  const agent = await fakeAgent(() => '');
  isCniError(t, await runShim(cniEnv('ADD'), chained(annotated({ [SLICE]: 'true' }), agent.path)), 11);
  const del = await runShim(cniEnv('DEL'), config({}, agent.path));
  t.is(del.code, 0, del.stdout);
  t.regex(del.stderr, /closed the connection without a reply/);
});

test('protocol: GC to an agent that accepts but never answers ends at the 10 s limit with exit 0', async (t) => {
  const agent = await fakeAgent(() => null);
  const r = await runShim({ CNI_COMMAND: 'GC' }, config({}, agent.path));
  t.is(r.code, 0, r.stdout);
  t.regex(r.stderr, /no complete reply from .* within 10 s/);
  t.is(agent.connections, 1);
});

// ---------------------------------------------------------------------------
// With the reference CNI client: ptp, then sixbed4-cni, on namespaces made here

interface CniResult {
  cniVersion: string;
  interfaces: { name: string; mac: string; sandbox?: string }[];
  ips: { address: string; gateway?: string; interface: number }[];
}
interface IpLink {
  ifname: string;
  address: string;
}
interface IpAddr {
  ifname: string;
  addr_info: { family: string; local: string; prefixlen: number }[];
}

let subnetCount = 0;
/** A network of ptp + sixbed4-cni (a conflist of its own), and a pod namespace to attach. */
async function podNetwork(agentSocket: string) {
  const name = uniqueName('cni');
  networks.push(name);
  const pod = await Netns.create(uniqueName('cnip'));
  namespaces.push(pod);
  const conf = join(dir, `conf-${name}`);
  await mkdir(conf);
  const subnet = `100.64.${210 + subnetCount++}.0/24`;
  await writeFile(
    join(conf, `${name}.conflist`),
    JSON.stringify(
      {
        cniVersion: '1.1.0',
        name,
        plugins: [
          {
            type: 'ptp',
            ipMasq: false,
            ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: join(dir, `ipam-${name}`) },
          },
          { type: 'sixbed4-cni', agentSocket, capabilities: { [ANNOTATIONS]: true } },
        ],
      },
      null,
      2,
    ),
  );
  const netnsPath = `/run/netns/${pod.name}`;
  /** cnitool COMMAND in the host namespace, for a pod with these annotations (none: the runtime passes none). */
  const cnitool = (command: string, annotations?: Record<string, string>) =>
    host!.exec([join(nodeBin!, 'cnitool'), command, name, netnsPath], {
      env: {
        NETCONFPATH: conf,
        CNI_PATH: [join(nodeBin!, 'cni'), SHIM_DIR].join(':'),
        CNI_IFNAME: 'eth0',
        CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web',
        CAP_ARGS: annotations ? JSON.stringify({ [ANNOTATIONS]: annotations }) : '',
      },
    });
  return { name, pod, netnsPath, subnet, cnitool };
}

/** The pod's links other than lo. */
async function podLinks(pod: Netns): Promise<IpLink[]> {
  return (await pod.json<IpLink[]>(['link', 'show'])).filter((l) => l.ifname !== 'lo');
}

cnitoolTest(
  cnitoolTitle(
    "cnitool, no agent: a pod that does not ask gets ptp's result and interface only; CHECK, DEL twice, GC, STATUS",
  ),
  async (t) => {
    const net = await podNetwork(noAgent());
    const add = await net.cnitool('add', { 'example.org/team': 'web' });
    t.is(add.code, 0, add.stderr);
    const result = JSON.parse(add.stdout) as CniResult;
    // ptp's result, checked against what ptp made in the kernel: its host veth, the pod's eth0 and its address.
    t.is(result.cniVersion, '1.1.0');
    t.is(result.interfaces.length, 2);
    const [hostIf, podIf] = result.interfaces;
    t.is(hostIf!.sandbox, undefined);
    t.deepEqual({ name: podIf!.name, sandbox: podIf!.sandbox }, { name: 'eth0', sandbox: net.netnsPath });
    t.deepEqual(
      (await podLinks(net.pod)).map((l) => [l.ifname, l.address]),
      [['eth0', podIf!.mac]],
      "only ptp's interface in the pod",
    );
    const hostLink = (await host!.json<IpLink[]>(['link', 'show', 'dev', hostIf!.name]))[0];
    t.is(hostLink?.address, hostIf!.mac);
    t.is(result.ips.length, 1);
    const addrs = await net.pod.json<IpAddr[]>(['-4', 'addr', 'show', 'dev', 'eth0']);
    const a = addrs[0]!.addr_info[0]!;
    t.is(result.ips[0]!.address, `${a.local}/${a.prefixlen}`);
    t.is(result.ips[0]!.interface, 1);
    t.true(result.ips[0]!.address.startsWith(net.subnet.split('.').slice(0, 3).join('.') + '.'));
    t.notRegex(add.stderr, /sixbed4-cni/, 'nothing to say: the agent was not needed');

    const check = await net.cnitool('check', { 'example.org/team': 'web' });
    t.is(check.code, 0, check.stderr);

    for (const round of [1, 2]) {
      const del = await net.cnitool('del', { 'example.org/team': 'web' });
      t.is(del.code, 0, `DEL ${round}: ${del.stderr}`);
      t.regex(del.stderr, /sixbed4-cni: DEL .*the sixbed4 agent did not answer/);
    }
    t.deepEqual(await podLinks(net.pod), [], 'ptp removed its interface');

    for (const cmd of ['gc', 'status']) {
      const r = await net.cnitool(cmd);
      t.is(r.code, 0, `${cmd}: ${r.stderr}`);
      t.regex(r.stderr, new RegExp(`sixbed4-cni: ${cmd.toUpperCase()}: the sixbed4 agent did not answer`));
    }
  },
);

cnitoolTest(
  cnitoolTitle('cnitool, no agent: a pod that asks is refused ("try again later") and DEL cleans up'),
  async (t) => {
    const net = await podNetwork(noAgent());
    const add = await net.cnitool('add', { [SLICE]: 'true' });
    t.not(add.code, 0);
    t.regex(
      add.stderr,
      /plugin type="sixbed4-cni" failed \(add\): the sixbed4 agent on this node is not running .*try again later/,
    );
    const del = await net.cnitool('del', { [SLICE]: 'true' });
    t.is(del.code, 0, del.stderr);
    t.deepEqual(await podLinks(net.pod), []);
  },
);

cnitoolTest(
  cnitoolTitle('cnitool, no agent, no annotations passed: the pod is attached anyway (fail open, with a warning)'),
  async (t) => {
    const net = await podNetwork(noAgent());
    const add = await net.cnitool('add');
    t.is(add.code, 0, add.stderr);
    t.regex(add.stderr, /passing the previous result through/);
    t.deepEqual(
      (await podLinks(net.pod)).map((l) => l.ifname),
      ['eth0'],
    );
    t.is((await net.cnitool('del')).code, 0);
  },
);

cnitoolTest(
  cnitoolTitle(
    "cnitool with the stand-in agent: a pod that asks is forwarded with libcni's config; the reply is the result",
  ),
  async (t) => {
    // The stand-in answers ADD with the prevResult it was given (the real agent adds the slice), the rest with ok.
    const agent = await fakeAgent((q) => (q.command === 'ADD' ? `ok\n${JSON.stringify(q.config.prevResult)}` : 'ok\n'));
    const net = await podNetwork(agent.path);
    const annotations = { [SLICE]: 'true', 'example.org/team': 'web' };
    const add = await net.cnitool('add', annotations);
    t.is(add.code, 0, add.stderr);
    t.is((await net.cnitool('check', annotations)).code, 0);
    for (const cmd of ['del', 'gc', 'status']) t.is((await net.cnitool(cmd, annotations)).code, 0, cmd);

    const [addReq, checkReq, delReq, gcReq, statusReq] = agent.requests;
    t.deepEqual(
      agent.requests.map((q) => q.command),
      ['ADD', 'CHECK', 'DEL', 'GC', 'STATUS'],
    );
    t.like(addReq, {
      version: 1,
      netns: net.netnsPath,
      ifname: 'eth0',
      args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web',
    });
    t.regex(addReq!.containerId, /^cnitool-[0-9a-f]+$/);
    t.is(addReq!.path, [join(nodeBin!, 'cni'), SHIM_DIR].join(':'));
    t.like(addReq!.config, { cniVersion: '1.1.0', name: net.name, type: 'sixbed4-cni', agentSocket: agent.path });
    t.deepEqual(addReq!.config.runtimeConfig, { [ANNOTATIONS]: annotations });
    const prev = addReq!.config.prevResult as CniResult;
    t.deepEqual(JSON.parse(add.stdout), prev, "the agent's reply is the result");
    t.is(prev.interfaces[1]!.sandbox, net.netnsPath);
    // CHECK and DEL get the cached result as prevResult; GC and STATUS concern the network, not a container.
    t.deepEqual(checkReq!.config.prevResult, prev);
    t.deepEqual(delReq!.config.prevResult, prev);
    t.is(delReq!.containerId, addReq!.containerId);
    t.like(gcReq, { containerId: '', netns: '' });
    t.like(statusReq, { containerId: '', netns: '' });
    t.deepEqual(await podLinks(net.pod), []);
  },
);
