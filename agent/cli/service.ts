// `sixbed4 router --config FILE`: runs the single-host service until SIGINT or
// SIGTERM; SIGHUP re-reads the file (systemd's ExecReload sends it).
import type { Logger } from '../log.js';
import { startService } from '../service/run.js';

export async function serviceCommand(file: string, keepHost: boolean, log: Logger): Promise<number> {
  const service = await startService(file, { keepHost, log });
  const onHup = () => { void service.reload(); };
  process.on('SIGHUP', onHup);
  return new Promise((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); process.off('SIGHUP', onHup);
      service.stop().then(() => resolve(0), (err: Error) => {
        log.error(`cleanup after ${sig} failed: ${err.message}`);
        resolve(1);
      });
    };
    process.on('SIGINT', onSignal); process.on('SIGTERM', onSignal);
  });
}
