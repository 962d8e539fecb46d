// `sixbed4 router --config FILE`: runs the single-host service until SIGINT or
// SIGTERM; SIGHUP re-reads the file (systemd's ExecReload sends it).
import type { Logger } from '../lib/log.js';
import { startService, type Service } from '../agent/service/run.js';

export async function serviceCommand(file: string, keepHost: boolean, log: Logger): Promise<number> {
  // The handlers go in first: a stop asked for while the host is being configured (the router says it is ready
  // a moment before start resolves) waits for the start, then stops, so the host is still reverted.
  let stopAsked: NodeJS.Signals | undefined;
  let service: Service | undefined;
  let finish: (sig: NodeJS.Signals) => void = (sig) => { stopAsked = sig; };
  const onSignal = (sig: NodeJS.Signals) => finish(sig);
  let hupPending = false;
  const onHup = () => { if (service) void service.reload(); else hupPending = true; };
  process.on('SIGINT', onSignal); process.on('SIGTERM', onSignal); process.on('SIGHUP', onHup);
  const unhook = () => { process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); process.off('SIGHUP', onHup); };
  try {
    service = await startService(file, { keepHost, log });
  } catch (err) {
    unhook();
    throw err;
  }
  const s = service;
  // The start read the file before the SIGHUP came: read it again, as asked.
  if (hupPending) void s.reload();
  return new Promise((resolve) => {
    finish = (sig) => {
      finish = () => undefined;
      unhook();
      s.stop().then(() => resolve(0), (err: Error) => {
        log.error(`cleanup after ${sig} failed: ${err.message}`);
        resolve(1);
      });
    };
    if (stopAsked) finish(stopAsked);
  });
}
