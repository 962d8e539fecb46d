/**
 * Minimal network-namespace harness for the lab, the end-to-end tests and the
 * benchmarks.  Everything goes through iproute2 (`ip netns ...`), so the only
 * requirements are root and the `ip` binary.
 *
 * Design notes:
 * - Commands never go through a shell: argv arrays are passed verbatim, so
 *   addresses, names and scripts (`node -e ...`) need no quoting.
 * - `ip netns exec NS cmd` exec()s the command in place (it does not fork when
 *   not in batch mode), so the pid of a spawned child *is* the pid of the
 *   command; signals reach it directly.
 * - Tests run concurrently (several ava workers, each possibly a worker
 *   thread of the same process), so names must be unique per process *and*
 *   per thread, and every namespace must be removed even on failure.
 */
import { spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
import { cleanPath, findSystemTool, systemTool } from '../host/tools.js';

export { findSystemTool, systemTool };

/** Result of a finished command.  `code` is null when killed by a signal. */
export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the command was killed because it exceeded `timeoutMs`. */
  timedOut: boolean;
}

export interface ExecOptions {
  /** Kill (SIGKILL) the command after this many ms.  Default 60 s; 0 = never. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string | Buffer;
  /**
   * Extra environment variables, merged over process.env (whose PATH is
   * stripped of node_modules/.bin entries unless PATH is given here).
   */
  env?: Record<string, string>;
  cwd?: string;
}

const DEFAULT_EXEC_TIMEOUT_MS = 60_000;

/** A child's environment: PATH without node_modules/.bin (agent/host/tools.ts says why). */
function childEnv(extra: Record<string, string> | undefined): NodeJS.ProcessEnv {
  return { ...process.env, PATH: cleanPath(process.env.PATH), ...extra };
}

/** Absolute path of iproute2's `ip`; resolved lazily so importing never throws. */
const IP = (): string => systemTool('ip');

/**
 * Runs a command to completion and collects its output.  Only rejects when the
 * command cannot be started at all (e.g. `ip` missing); a non-zero exit status
 * is reported in the result, not thrown.
 */
export function execCommand(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: childEnv(opts.env),
      cwd: opts.cwd,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, timeoutMs)
        : undefined;
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${formatArgv([cmd, ...args])}: ${e.message}`));
    });
    let graceTimer: NodeJS.Timeout | undefined;
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      clearTimeout(graceTimer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    };
    // Normally wait for 'close' so that all output has been read; but a
    // background grandchild that inherited the pipes would delay it forever.
    child.on('exit', (code, signal) => {
      graceTimer = setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
        finish(code, signal);
      }, 1000);
    });
    child.on('close', finish);
    if (opts.input !== undefined) {
      // A command that exits without reading stdin gives EPIPE; that is not an error here.
      child.stdin!.on('error', () => {});
      child.stdin!.end(opts.input);
    }
  });
}

/** Like execCommand but throws (with the command line and stderr) unless the exit status is 0. */
export async function runCommand(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<string> {
  const r = await execCommand(cmd, args, opts);
  if (r.code !== 0) throw commandError([cmd, ...args], r);
  return r.stdout;
}

function commandError(argv: readonly string[], r: ExecResult): Error {
  const how = r.timedOut
    ? 'timed out'
    : r.code === null
      ? `was killed by ${r.signal}`
      : `exited with status ${r.code}`;
  const detail = (r.stderr.trim() || r.stdout.trim()).slice(-4000);
  return new Error(`command ${how}: ${formatArgv(argv)}${detail ? `\n${detail}` : ''}`);
}

/** Human-readable command line for error messages (not meant for a shell). */
function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

// ---------------------------------------------------------------------------
// Proc: a long-running child whose output is watched line by line.

export interface SpawnOptions {
  /** Extra environment variables; as for ExecOptions.env. */
  env?: Record<string, string>;
  cwd?: string;
  /** Keep stdin open as a pipe (see Proc.write); otherwise stdin is /dev/null. */
  stdin?: boolean;
}

export interface ProcLine {
  stream: 'stdout' | 'stderr';
  text: string;
}

type Waiter = { re: RegExp; resolve: (line: string) => void; reject: (e: Error) => void };

/** Every Proc still running in this process/thread, so they can be killed on exit. */
const liveProcs = new Set<Proc>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort against orphaned routers when a test run crashes: 'exit'
  // handlers must be synchronous, and a SIGKILL is.
  process.on('exit', () => {
    for (const p of liveProcs) p.child.kill('SIGKILL');
  });
}

/**
 * A spawned child process.  stdout and stderr are both split into lines and
 * kept (in arrival order), so tests can wait for log lines that were printed
 * before they started waiting.
 */
export class Proc {
  readonly child: ChildProcess;
  readonly argv: readonly string[];
  /** Resolves (never rejects) once the process has exited and its output is fully read. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly lineList: ProcLine[] = [];
  private readonly partial = { stdout: '', stderr: '' };
  private waiters: Waiter[] = [];
  private result: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private spawnError: Error | undefined;

  constructor(cmd: string, args: readonly string[], opts: SpawnOptions = {}) {
    this.argv = [cmd, ...args];
    this.child = spawnChild(cmd, args, {
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: childEnv(opts.env),
      cwd: opts.cwd,
    });
    installExitHook();
    liveProcs.add(this);
    this.exited = new Promise((resolve) => {
      let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      let graceTimer: NodeJS.Timeout | undefined;
      const finish = (): void => {
        if (this.result) return;
        clearTimeout(graceTimer);
        this.result = exitInfo ?? { code: null, signal: null };
        liveProcs.delete(this);
        this.flushPartial('stdout');
        this.flushPartial('stderr');
        const why = this.spawnError
          ? `could not be started: ${this.spawnError.message}`
          : `exited (code ${this.result.code}, signal ${this.result.signal})`;
        for (const w of this.waiters) w.reject(this.waitError(w.re, why));
        this.waiters = [];
        resolve(this.result);
      };
      this.child.on('error', (e) => {
        // Emitted when spawning fails (no 'exit' follows) or when a kill fails.
        if (this.child.pid === undefined) {
          this.spawnError = e;
          finish();
        }
      });
      this.child.on('exit', (code, signal) => {
        exitInfo = { code, signal };
        // Normally 'close' follows at once; a grandchild that inherited the
        // pipes could hold them open forever, so don't wait for it long.
        graceTimer = setTimeout(finish, 500);
      });
      this.child.on('close', (code, signal) => {
        exitInfo ??= { code, signal };
        finish();
      });
    });
    for (const stream of ['stdout', 'stderr'] as const) {
      this.child[stream]!.setEncoding('utf8');
      this.child[stream]!.on('data', (chunk: string) => this.onData(stream, chunk));
    }
    if (opts.stdin) this.child.stdin!.on('error', () => {});
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Exit status once exited; undefined while running. */
  get exitStatus(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.result;
  }

  get running(): boolean {
    return this.result === undefined;
  }

  /** All lines seen so far (stdout and stderr interleaved in arrival order). */
  lines(): readonly ProcLine[] {
    return this.lineList;
  }

  /** All output seen so far as text, one line per line. */
  output(): string {
    const partial = [this.partial.stdout, this.partial.stderr].filter((s) => s !== '');
    return [...this.lineList.map((l) => l.text), ...partial].join('\n');
  }

  /** Writes to stdin (only if spawned with `stdin: true`). */
  write(data: string | Buffer): void {
    if (!this.child.stdin) throw new Error('Proc was spawned without stdin: true');
    this.child.stdin.write(data);
  }

  /**
   * Resolves with the first line (already seen, or future) matching `re`.
   * Rejects, with the collected output in the message, on timeout or when the
   * process exits without such a line.
   */
  waitFor(re: RegExp, timeoutMs: number): Promise<string> {
    const seen = this.lineList.find((l) => testRe(re, l.text));
    if (seen) return Promise.resolve(seen.text);
    if (this.result) return Promise.reject(this.waitError(re, 'had already exited'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(this.waitError(re, `did not print it within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: Waiter = {
        re,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(waiter);
    });
  }

  /**
   * Sends `signal`, escalates to SIGKILL after `timeoutMs`, and resolves with
   * the exit code (null if the process died from a signal).  Safe to call on
   * an exited process.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5000): Promise<number | null> {
    if (this.result) return this.result.code;
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        resolve();
      }, timeoutMs);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    return (await this.exited).code;
  }

  private onData(stream: 'stdout' | 'stderr', chunk: string): void {
    const parts = (this.partial[stream] + chunk).split('\n');
    this.partial[stream] = parts.pop()!;
    for (const p of parts) this.addLine(stream, p.endsWith('\r') ? p.slice(0, -1) : p);
  }

  private flushPartial(stream: 'stdout' | 'stderr'): void {
    if (this.partial[stream] !== '') {
      const text = this.partial[stream];
      this.partial[stream] = '';
      this.addLine(stream, text);
    }
  }

  private addLine(stream: 'stdout' | 'stderr', text: string): void {
    this.lineList.push({ stream, text });
    if (this.waiters.length === 0) return;
    const matched = this.waiters.filter((w) => testRe(w.re, text));
    if (matched.length === 0) return;
    this.waiters = this.waiters.filter((w) => !matched.includes(w));
    for (const w of matched) w.resolve(text);
  }

  private waitError(re: RegExp, why: string): Error {
    const out = this.output();
    const tail = out.length > 8000 ? `...${out.slice(-8000)}` : out;
    return new Error(
      `waiting for ${re} from ${formatArgv(this.argv)}: process ${why}\n--- output ---\n${tail}\n--- end ---`,
    );
  }
}

/** RegExp.test without the lastIndex trap of /g and /y regexps. */
function testRe(re: RegExp, s: string): boolean {
  re.lastIndex = 0;
  return re.test(s);
}

// ---------------------------------------------------------------------------
// Netns

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * `ip netns add` in a process that races with another one can fail spuriously
 * the very first time (both try to set up the shared /run/netns mount).
 * Serialise our own adds and retry a couple of times on anything but
 * "already exists".
 */
let addChain: Promise<unknown> = Promise.resolve();

async function netnsAdd(name: string): Promise<void> {
  const attempt = async (): Promise<void> => {
    for (let i = 0; ; i++) {
      const r = await execCommand(IP(), ['netns', 'add', name]);
      if (r.code === 0) return;
      if (i >= 2 || /exists/i.test(r.stderr)) throw commandError(['ip', 'netns', 'add', name], r);
      await sleep(50 * (i + 1));
    }
  };
  const p = addChain.then(attempt, attempt);
  addChain = p.catch(() => {});
  return p;
}

export class Netns {
  private readonly procs = new Set<Proc>();
  private destroying: Promise<void> | undefined;

  private constructor(readonly name: string) {}

  /**
   * Creates the namespace, brings `lo` up, and makes IPv6 addresses usable
   * at once (no DAD) and deterministic (no router advertisements).  Fails if
   * the name is taken: namespaces are never shared between users.
   */
  static async create(name: string): Promise<Netns> {
    if (!NAME_RE.test(name)) throw new Error(`invalid network namespace name: ${JSON.stringify(name)}`);
    await netnsAdd(name);
    const ns = new Netns(name);
    try {
      await ns.ip(['link', 'set', 'lo', 'up']);
      // "default" applies to interfaces created later (our veths); "all" is
      // consulted too by the kernel for DAD, so both are needed.
      await ns.run([
        'sysctl', '-q', '-w',
        'net.ipv6.conf.all.disable_ipv6=0',
        'net.ipv6.conf.default.disable_ipv6=0',
        'net.ipv6.conf.all.accept_dad=0',
        'net.ipv6.conf.default.accept_dad=0',
        'net.ipv6.conf.all.accept_ra=0',
        'net.ipv6.conf.default.accept_ra=0',
      ]);
    } catch (e) {
      await ns.destroy();
      throw e;
    }
    return ns;
  }

  /** Runs argv inside the namespace.  Never throws on a non-zero exit status. */
  exec(argv: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
    return execCommand(IP(), ['netns', 'exec', this.name, ...argv], opts);
  }

  /** Runs argv inside the namespace; throws unless it exits 0.  Returns stdout. */
  async run(argv: readonly string[], opts?: ExecOptions): Promise<string> {
    const r = await this.exec(argv, opts);
    if (r.code !== 0) throw commandError(['ip', 'netns', 'exec', this.name, ...argv], r);
    return r.stdout;
  }

  /**
   * `ip ARGS` in this namespace (via `ip -n`, cheaper than `ip netns exec`).
   * Throws on failure; returns stdout.
   */
  ip(args: readonly string[], opts?: ExecOptions): Promise<string> {
    return runCommand(IP(), ['-n', this.name, ...args], opts);
  }

  /**
   * Runs several `ip` commands (one per element, without the leading `ip`)
   * in a single process.  Stops at, and throws for, the first failing one.
   */
  async ipBatch(commands: readonly string[]): Promise<void> {
    if (commands.length === 0) return;
    await runCommand(IP(), ['-n', this.name, '-batch', '-'], { input: commands.join('\n') + '\n' });
  }

  /** `ip -j ARGS` in this namespace, parsed.  E.g. `json(['addr', 'show', 'dev', 'eth0'])`. */
  async json<T = unknown>(args: readonly string[]): Promise<T> {
    const out = await this.ip(['-j', ...args]);
    // Some ip subcommands print nothing at all instead of "[]".
    return JSON.parse(out.trim() === '' ? '[]' : out) as T;
  }

  /** Sets a sysctl inside the namespace (e.g. `sysctl('net.ipv6.conf.all.forwarding', 1)`). */
  async sysctl(key: string, value: string | number): Promise<void> {
    await this.run(['sysctl', '-q', '-w', `${key}=${value}`]);
  }

  /** Reads a sysctl inside the namespace. */
  async getSysctl(key: string): Promise<string> {
    return (await this.run(['sysctl', '-n', key])).trim();
  }

  /**
   * Starts a long-running process inside the namespace.  It is stopped by
   * destroy(), so callers need not track it for cleanup.
   */
  spawn(argv: readonly string[], opts?: SpawnOptions): Proc {
    if (this.destroying) throw new Error(`network namespace ${this.name} is being destroyed`);
    const p = new Proc(IP(), ['netns', 'exec', this.name, ...argv], opts);
    this.procs.add(p);
    void p.exited.then(() => this.procs.delete(p));
    return p;
  }

  /**
   * Stops this namespace's Procs (SIGTERM, then SIGKILL), kills whatever else
   * still runs in it (e.g. a timed-out exec), and deletes it.  Idempotent and
   * never throws: it runs in teardown paths where the original error matters.
   */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      await Promise.all([...this.procs].map((p) => p.stop('SIGTERM', 2000).catch(() => null)));
      await deleteNamespace(this.name);
    })();
    return this.destroying;
  }
}

/** Kills every process left in the namespace, then deletes it.  Never throws. */
async function deleteNamespace(name: string): Promise<void> {
  try {
    // A namespace outlives its name while processes hold it, and those would
    // keep sockets bound and veths alive; they are ours, so kill them by pid.
    const pids = await execCommand(IP(), ['netns', 'pids', name], { timeoutMs: 10_000 });
    if (pids.code === 0) {
      const victims = pids.stdout
        .split(/\s+/)
        .filter(Boolean)
        .map(Number)
        .filter((pid) => Number.isInteger(pid) && pid > 1 && pid !== process.pid);
      for (const pid of victims) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      // Signals are delivered asynchronously; wait until they are really dead
      // so that, once destroy() resolves, nothing of the namespace still runs.
      const deadline = Date.now() + 5000;
      while (victims.some(isAlive) && Date.now() < deadline) await sleep(10);
    }
    await execCommand(IP(), ['netns', 'del', name], { timeoutMs: 10_000 });
  } catch {
    /* best effort: never mask the caller's error */
  }
}

/** True if the process exists and is not a zombie waiting to be reaped. */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Connects two namespaces with a veth pair and brings both ends up. */
export async function veth(a: Netns, ifA: string, b: Netns, ifB: string): Promise<void> {
  // Created directly inside the namespaces so the names never exist (and so
  // never collide) in the root namespace.
  await a.ip(['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  await Promise.all([a.ip(['link', 'set', ifA, 'up']), b.ip(['link', 'set', ifB, 'up'])]);
}

let nameCounter = 0;

/**
 * Short name unique within this machine for the lifetime of this process:
 * `s4-<tag>-<pid base36>[t<thread>]-<counter>`.  The thread id matters because
 * ava runs test files in worker threads that share one pid.
 */
export function uniqueName(tag: string): string {
  const thread = threadId ? `t${threadId.toString(36)}` : '';
  return `s4-${tag}-${process.pid.toString(36)}${thread}-${(nameCounter++).toString(36)}`;
}

/** Names of all network namespaces. */
export async function listNamespaces(): Promise<string[]> {
  const out = await runCommand(IP(), ['-j', 'netns', 'list']);
  if (out.trim() === '') return [];
  return (JSON.parse(out) as Array<{ name: string }>).map((n) => n.name);
}

/**
 * Deletes every namespace whose name starts with `prefix` (and kills what runs
 * in it).  A safety net for teardown hooks and the lab's Ctrl-C.  Returns the
 * names deleted.  Only rejects for a prefix so short it could match
 * namespaces that are not ours; cleanup failures are ignored.
 */
export async function cleanupAll(prefix: string): Promise<string[]> {
  if (prefix.length < 3) throw new Error(`cleanupAll: refusing the too-broad prefix ${JSON.stringify(prefix)}`);
  let names: string[];
  try {
    names = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
  await Promise.all(names.map(deleteNamespace));
  return names;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
