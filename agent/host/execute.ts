// Carrying out steps on the kernel, one by one with a log line each; when one
// fails, the host is brought back to where it was before the first step (by a
// fresh restore plan from the state re-read at that moment, which is exact even
// for sysctls whose writes ripple, like all.forwarding) — nothing half-applied.
import { ip, ipJson } from './ip.js';
import { commandLine, type PlanStep } from './steps.js';
import { writeConf } from './sysctl.js';
import type { Logger } from '../../lib/log.js';

export interface StepRunner {
  run(step: PlanStep): Promise<void>;
}

/** Runs steps on this host's kernel (the network namespace this process is in). */
export const kernelRunner: StepRunner = {
  async run(step) {
    const a = step.action;
    if (a.kind === 'ip') await ip(...a.args);
    else await writeConf(a.key, a.value);
    if (step.settle) await waitUsable(step.settle.dev, step.settle.address);
  },
};

/** Waits until a new address has passed duplicate address detection (a tentative address receives nothing). */
export async function waitUsable(dev: string, address: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const links = await ipJson<{ addr_info?: { local?: string; tentative?: boolean; dadfailed?: boolean }[] }[]>(
      '-6',
      'addr',
      'show',
      'dev',
      dev,
    );
    const a = links.flatMap((l) => l.addr_info ?? []).find((x) => x.local === address);
    if (!a) throw new Error(`${address} vanished from ${dev} while waiting for duplicate address detection`);
    if (a.dadfailed)
      throw new Error(`${address} on ${dev} failed duplicate address detection: another node on the link uses it`);
    if (!a.tentative) return;
    if (Date.now() > deadline) throw new Error(`${address} on ${dev} still tentative after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A failed step; rolledBack says whether the host is back where it started. */
export class StepFailure extends Error {
  override name = 'StepFailure';
  constructor(
    message: string,
    readonly rolledBack: boolean,
  ) {
    super(message);
  }
}

/**
 * Runs steps in order. On a failure, asks `rollback` for the steps that undo
 * what was done (computed from the state at that moment), runs them, and
 * throws a StepFailure saying how that went.
 */
export async function executeSteps(
  steps: readonly PlanStep[],
  log: Logger,
  runner: StepRunner,
  rollback: () => Promise<readonly PlanStep[]>,
): Promise<void> {
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    const cmd = commandLine(step.action);
    log.info(cmd, { step: `${i + 1}/${steps.length}`, reason: step.reason });
    try {
      await runner.run(step);
    } catch (err) {
      const why = (err as Error).message;
      log.error(`step ${i + 1}/${steps.length} failed: ${why}`);
      // Even the failed step may have changed something (an address added that then failed DAD).
      log.warn(`rolling back what steps 1..${i + 1} changed`);
      let undo: readonly PlanStep[];
      try {
        undo = await rollback();
      } catch (e) {
        throw new StepFailure(
          `'${cmd}' failed: ${why}; working out the rollback failed too (${(e as Error).message}): the host is partly changed`,
          false,
        );
      }
      for (const [j, u] of undo.entries()) {
        const ucmd = commandLine(u.action);
        log.info(ucmd, { rollback: `${j + 1}/${undo.length}`, reason: u.reason });
        try {
          await runner.run(u);
        } catch (e) {
          throw new StepFailure(
            `'${cmd}' failed: ${why}; the rollback failed too at '${ucmd}': ${(e as Error).message}: the host is partly changed`,
            false,
          );
        }
      }
      throw new StepFailure(
        `'${cmd}' failed: ${why}; rolled back (${undo.length} step(s)): the host is as it was`,
        true,
      );
    }
  }
}
