// sd_notify(3) for `sixbed4 router` under systemd (Type=notify): READY=1 once
// the tunnel forwards, RELOADING=1 ... READY=1 around a reload, STOPPING=1.
// Without $NOTIFY_SOCKET (not started by systemd) nothing is sent.
import { notifySocket } from '../io/native.js';
import type { Logger } from '../../lib/log.js';

export function sdNotify(
  fields: Record<string, string | number>,
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  const path = env.NOTIFY_SOCKET;
  if (!path) return false;
  const message = Object.entries(fields)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n');
  try {
    notifySocket(path, message);
    return true;
  } catch (err) {
    // systemd would time the start out, and say so; the router itself runs on.
    log.warn(`cannot notify systemd on ${path}: ${(err as Error).message}`);
    return false;
  }
}

/** CLOCK_MONOTONIC in microseconds (libuv's hrtime reads it), which systemd wants with RELOADING=1. */
export function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}
