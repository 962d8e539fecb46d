// `sixbed4 router --config FILE`: runs the single-host service until SIGINT or
// SIGTERM; SIGHUP re-reads the file (systemd's ExecReload sends it).
import type { Logger } from '../lib/log.js';
import { startService } from '../agent/service/run.js';
import { untilSignal } from './command.js';

export async function serviceCommand(file: string, keepHost: boolean, log: Logger): Promise<number> {
  // The handlers go in first: a stop asked for while the host is being configured (the router says it is ready
  // a moment before start resolves) waits for the start, then stops, so the host is still reverted; a SIGHUP
  // then re-reads the file once started.
  const signals = untilSignal({ log, hup: true });
  let service;
  try {
    service = await startService(file, { keepHost, log });
  } catch (err) {
    signals.dispose();
    throw err;
  }
  const s = service;
  return signals.started(() => s.stop(), { reload: () => void s.reload() });
}
