// Long-running child processes the lab and the tests watch line by line: a
// router, a peer, `docker logs -f`. Commands that run to completion go through
// agent/host/command.ts instead.
//
// Every Proc still running when this process exits is killed, so that a
// crashed test run leaves no routers behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { childEnv, formatArgv } from '../agent/host/command.js';

export interface SpawnOptions {
  /** Extra environment variables; as for CommandOptions.env. */
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

  constructor(argv: readonly string[], opts: SpawnOptions = {}) {
    this.argv = [...argv];
    const [cmd, ...args] = argv;
    if (cmd === undefined) throw new Error('Proc: empty argv');
    this.child = spawn(cmd, args, {
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
