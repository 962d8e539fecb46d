// What every `sixbed4` command does the same way: parse its flags (a mistake names the command's own --help), set up
// the logger from --log-level/--log-format, read numbers, find the kubeconfig and the pod's namespace, and run until
// SIGINT or SIGTERM with a clean stop. One place, so the commands cannot drift apart (they had: one took any
// --log-format, each rewrote node:util's parse errors in its own copy).
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { KubeConfig } from '@kubernetes/client-node';
import { createLogger, type LogFormat, type Logger } from '../lib/log.js';
import { InputError } from '../lib/errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** The flags every long-running command takes. */
export const COMMON_OPTIONS = {
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies Options;

export const COMMON_FLAGS_USAGE = 'common flags: --log-level LEVEL (info), --log-format text|json|auto (auto)\n';

/** Where a mistake sends the user: `sixbed4 --help`, or the command's own help. */
const helpHint = (command: string): string => `see sixbed4 ${command ? `${command} ` : ''}--help`;

/**
 * node:util's parseArgs with strict flags; its errors become InputErrors that name the command's help (and lose
 * node's advice about `--` for positionals, which no sixbed4 command takes).
 */
export function parseFlags<O extends Options>(command: string, args: string[], options: O) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (err) {
    throw flagError(command, err);
  }
}

/** parseFlags for a command with verbs or operands (`sixbed4 host plan`). */
export function parseFlagsAndOperands<O extends Options>(command: string, args: string[], options: O) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw flagError(command, err);
  }
}

function flagError(command: string, err: unknown): InputError {
  return new InputError(`${(err as Error).message.replace(/\. To specify.*$/s, '')} (${helpHint(command)})`);
}

/** The command's logger from --log-level and --log-format (text, json, or auto: json when not on a terminal). */
export function commandLogger(values: { 'log-level'?: string; 'log-format'?: string }, component: string): Logger {
  const format = (values['log-format'] ?? 'auto') as LogFormat;
  if (!['text', 'json', 'auto'].includes(format))
    throw new InputError(`--log-format ${format}: use text, json or auto`);
  return createLogger({ component, format, ...(values['log-level'] ? { level: values['log-level'] } : {}) });
}

/**
 * Loads the native addon before a command that needs it (TUN devices, batched UDP) starts anything, so that a
 * missing build is one clear line at start instead of a failure half-way through configuring the host.
 */
export async function requireNativeAddon(): Promise<void> {
  (await import('../agent/io/native.js')).loadNative();
}

/** A flag's whole number, or undefined when not given. */
export function wholeNumber(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new InputError(`${flag} '${v}' is not a whole number`);
  return Number(v);
}

/** A flag's positive number of seconds, in milliseconds; dflt seconds when not given. */
export function secondsFlag(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt * 1000;
  if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0)
    throw new InputError(`${flag} '${v}' is not a positive number of seconds`);
  return Number(v) * 1000;
}

const IN_CLUSTER_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** The namespace of the pod this runs in (its service account's), or undefined outside a cluster. */
export function podNamespace(): string | undefined {
  return existsSync(IN_CLUSTER_NAMESPACE) ? readFileSync(IN_CLUSTER_NAMESPACE, 'utf8').trim() : undefined;
}

/**
 * The kubeconfig: the file given, else $KUBECONFIG, in-cluster, ~/.kube/config (client-node's order). Loaded on
 * demand, so that the router and the peer start without the Kubernetes client.
 */
export async function loadKubeConfig(file: string | undefined): Promise<KubeConfig> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  try {
    if (file) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } catch (err) {
    throw new InputError(`cannot load the kubeconfig${file ? ` ${file}` : ''}: ${(err as Error).message}`);
  }
  if (!kc.getCurrentCluster()) {
    throw new InputError('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a pod');
  }
  return kc;
}

export interface SignalWait {
  /**
   * Call once started. Resolves with the exit code after stop() ran: 0 on SIGINT or SIGTERM, or the code `ended`
   * resolves with (something gave up by itself); 1 when stop() or `ended` failed. `reload` runs on SIGHUP, also for
   * one that came during the start.
   */
  started(stop: () => Promise<void>, opts?: { ended?: Promise<number>; reload?: () => void }): Promise<number>;
  /** Stops listening: for a start that failed. */
  dispose(): void;
}

/**
 * Listens for SIGINT and SIGTERM (and SIGHUP with hup) from the call on. Call it before starting what stop() stops:
 * a signal in between (right after "router ready", say) would otherwise meet no handler and kill the process
 * without its cleanup. A signal during the start stops it as soon as started() is called. Failures are logged to
 * log, else written to stderr.
 */
export function untilSignal(o: { log?: Logger; hup?: boolean } = {}): SignalWait {
  let signal: NodeJS.Signals | undefined;
  let hupPending = false;
  let onStop: ((why: string, code: number) => void) | undefined;
  let onHup: (() => void) | undefined;
  const report = (text: string) => (o.log ? o.log.error(text) : process.stderr.write(`sixbed4: ${text}\n`));
  const handleSignal = (sig: NodeJS.Signals) => {
    dispose();
    signal = sig;
    o.log?.info(`${sig}: shutting down`);
    onStop?.(sig, 0);
  };
  const handleHup = () => {
    if (onHup) onHup();
    else hupPending = true;
  };
  const dispose = () => {
    process.off('SIGINT', handleSignal);
    process.off('SIGTERM', handleSignal);
    process.off('SIGHUP', handleHup);
  };
  process.on('SIGINT', handleSignal);
  process.on('SIGTERM', handleSignal);
  if (o.hup) process.on('SIGHUP', handleHup);
  return {
    started: (stop, opts = {}) =>
      new Promise((resolve) => {
        let stopping = false;
        onStop = (why, code) => {
          if (stopping) return;
          stopping = true;
          dispose();
          stop().then(
            () => resolve(code),
            (err: Error) => {
              report(`cleanup after ${why} failed: ${err.message}`);
              resolve(code || 1);
            },
          );
        };
        if (opts.reload) {
          onHup = opts.reload;
          // The start read its configuration before that SIGHUP came: read it again, as asked.
          if (hupPending) opts.reload();
        }
        opts.ended?.then(
          (code) => onStop?.('the end', code),
          (err: Error) => {
            report(err.message);
            onStop?.('a failure', 1);
          },
        );
        if (signal) onStop(signal, 0);
      }),
    dispose,
  };
}

/** Starts something, then runs until SIGINT or SIGTERM and stops it (signals during the start included). */
export async function runUntilSignal<T extends { stop(): Promise<void> }>(
  start: () => Promise<T>,
  started: (x: T) => void = () => {},
  log?: Logger,
): Promise<number> {
  const signals = untilSignal(log ? { log } : {});
  let x: T;
  try {
    x = await start();
  } catch (err) {
    signals.dispose();
    throw err;
  }
  started(x);
  return signals.started(() => x.stop());
}
