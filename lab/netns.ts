/**
 * Network namespaces for the lab, the end-to-end tests and the benchmarks.
 * Everything goes through iproute2 (`ip netns ...`), so the only
 * requirements are root and the `ip` binary.
 *
 * Design notes:
 * - `ip netns exec NS cmd` exec()s the command in place (it does not fork when
 *   not in batch mode), so the pid of a spawned child *is* the pid of the
 *   command; signals reach it directly.
 * - Tests run concurrently (several ava workers, each possibly a worker
 *   thread of the same process), so names must be unique per process *and*
 *   per thread, and every namespace must be removed even on failure.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { threadId } from 'node:worker_threads';
import {
  CommandError,
  execCommand,
  runCommand,
  type CommandOptions,
  type CommandResult,
} from '../agent/host/command.js';
import { inNetns, ipIn, ipJsonIn } from '../agent/host/ip.js';
import { Proc, type SpawnOptions } from './proc.js';

// Lab commands run on a test machine that may be loaded: they get the
// runner's own default timeout rather than the agent's short one.
const LAB: CommandOptions = { timeoutMs: 60_000 };

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
      const argv = ['ip', 'netns', 'add', name];
      const r = await execCommand(argv, LAB);
      if (r.code === 0) return;
      if (i >= 2 || /exists/i.test(r.stderr)) throw CommandError.fromResult(argv, r, LAB.timeoutMs!);
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
        'sysctl',
        '-q',
        '-w',
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
  exec(argv: readonly string[], opts?: CommandOptions): Promise<CommandResult> {
    return execCommand(inNetns(this, argv), opts);
  }

  /** Runs argv inside the namespace; throws unless it exits 0.  Returns stdout. */
  run(argv: readonly string[], opts?: CommandOptions): Promise<string> {
    return runCommand(inNetns(this, argv), opts);
  }

  /**
   * `ip ARGS` in this namespace (via `ip -n`, cheaper than `ip netns exec`).
   * Throws on failure; returns stdout.
   */
  ip(args: readonly string[], opts?: CommandOptions): Promise<string> {
    return ipIn(this, args, { ...LAB, ...opts });
  }

  /**
   * Runs several `ip` commands (one per element, without the leading `ip`)
   * in a single process.  Stops at, and throws for, the first failing one.
   */
  async ipBatch(commands: readonly string[]): Promise<void> {
    if (commands.length === 0) return;
    await this.ip(['-batch', '-'], { input: commands.join('\n') + '\n' });
  }

  /** `ip -j ARGS` in this namespace, parsed.  E.g. `json(['addr', 'show', 'dev', 'eth0'])`. */
  json<T = unknown>(args: readonly string[]): Promise<T> {
    return ipJsonIn<T>(this, args, LAB);
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
    const p = new Proc(inNetns(this, argv), opts);
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
    const pids = await execCommand(['ip', 'netns', 'pids', name], { timeoutMs: 10_000 });
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
    await execCommand(['ip', 'netns', 'del', name], { timeoutMs: 10_000 });
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
  return (await ipJsonIn<Array<{ name: string }>>(undefined, ['netns', 'list'], LAB)).map((n) => n.name);
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
