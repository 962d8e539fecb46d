// `host plan`, `host apply` and `host revert` as operations on this host: read
// the state, plan, save what revert needs, execute with rollback.
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import type { HostConfig } from './config.js';
import { executeSteps, kernelRunner, StepFailure } from './execute.js';
import { planApply, type ApplyPlan } from './plan.js';
import { mergeSaved, planRestore, snapshotOf, type Snapshot } from './snapshot.js';
import { readHostState, findLink } from './state.js';
import { defaultStatePath, readSavedState, removeSavedState, withStateLock, writeSavedState } from './statefile.js';
import { resolveUplink } from './plan.js';
import type { Plan } from './steps.js';

export async function planHost(cfg: HostConfig): Promise<ApplyPlan> {
  return planApply(cfg, await readHostState({ probeDummy: cfg.localAddressMode === 'dummy112' }));
}

export interface ApplyResult {
  readonly plan: ApplyPlan;
  readonly statePath: string;
}

export async function applyHost(cfg: HostConfig, opts: { log: Logger; statePath?: string }): Promise<ApplyResult> {
  // The lock is named by the state file, which by default is named by the uplink.
  const path = opts.statePath ?? defaultStatePath(resolveUplink(cfg, await readHostState()));
  return withStateLock(
    path,
    () => applyLocked(cfg, { ...opts, statePath: path }),
    () => waiting(opts.log, path),
  );
}

function waiting(log: Logger, path: string): void {
  log.warn(`another sixbed4 host apply or revert is running (it holds ${path}.lock): waiting for it`);
}

async function applyLocked(cfg: HostConfig, opts: { log: Logger; statePath?: string }): Promise<ApplyResult> {
  const state = await readHostState({ probeDummy: cfg.localAddressMode === 'dummy112' });
  const plan = planApply(cfg, state);
  const statePath = opts.statePath ?? defaultStatePath(plan.uplink);
  if (plan.steps.length === 0) return { plan, statePath };

  const before = snapshotOf(state, {
    uplink: plan.uplink,
    prefix: cfg.prefix.text,
    tunnel: cfg.tunnel,
    dummy: cfg.dummyInterface,
  });
  const old = await readSavedState(statePath);
  if (
    old &&
    (old.prefix !== before.prefix ||
      old.uplink !== before.uplink ||
      old.tunnel !== before.tunnel ||
      old.dummy !== before.dummy)
  ) {
    throw new InputError(
      `${statePath} holds the state from before an apply of ${old.prefix} on ${old.uplink} (tunnel ${old.tunnel}, dummy ${old.dummy}): ` +
        `revert that first (sixbed4 host revert --state ${statePath}) or give another --state`,
    );
  }
  // Saved before the first change, so that a crash half-way still leaves revert what it needs.
  await writeSavedState(
    statePath,
    mergeSaved(
      old,
      before,
      cfg.localAddresses.map((a) => a.text),
      plan.creates,
      new Date(),
    ),
  );
  opts.log.info(`saved the state before the change in ${statePath}`);
  try {
    await executeSteps(plan.steps, opts.log, kernelRunner, () => rollbackTo(before));
  } catch (err) {
    if (err instanceof StepFailure && err.rolledBack) {
      if (old) await writeSavedState(statePath, old);
      else await removeSavedState(statePath);
    }
    throw err;
  }
  return { plan, statePath };
}

export interface RevertResult {
  readonly plan: Plan;
  readonly statePath: string;
}

export async function revertHost(opts: { log: Logger; statePath: string }): Promise<RevertResult> {
  return withStateLock(
    opts.statePath,
    () => revertLocked(opts),
    () => waiting(opts.log, opts.statePath),
  );
}

async function revertLocked(opts: { log: Logger; statePath: string }): Promise<RevertResult> {
  const saved = await readSavedState(opts.statePath);
  if (!saved) {
    throw new InputError(
      `no saved state in ${opts.statePath}: nothing to revert (apply saves it there; give revert the same --state as apply)`,
    );
  }
  const state = await readHostState();
  if (!findLink(state, saved.uplink))
    throw new InputError(`uplink '${saved.uplink}' of the saved state no longer exists: cannot restore its addresses`);
  const plan = planRestore(saved, state, {
    deleteDummy: saved.added.dummy,
    deleteTunnelRoute: saved.added.tunnelRoute,
  });
  if (plan.steps.length > 0) {
    const before = snapshotOf(state, {
      uplink: saved.uplink,
      prefix: saved.prefix,
      tunnel: saved.tunnel,
      dummy: saved.dummy,
    });
    await executeSteps(plan.steps, opts.log, kernelRunner, () => rollbackTo(before));
  }
  await removeSavedState(opts.statePath);
  return { plan, statePath: opts.statePath };
}

/** Undo = restore the snapshot taken just before; whatever did not exist then was created now and may go. */
async function rollbackTo(before: Snapshot) {
  const now = await readHostState();
  return planRestore(before, now, { deleteDummy: !before.dummyExists, deleteTunnelRoute: !before.tunnelRoute }).steps;
}
