// A plan is a list of steps, each something a person could type: an `ip`
// command or a sysctl write, with the reason for it. `host plan` prints them
// as shell commands; `host apply` executes the very same objects.
import { sysctlKey, type ConfKey } from './sysctl.js';

export type Action =
  | { readonly kind: 'ip'; readonly args: readonly string[] }
  | { readonly kind: 'sysctl'; readonly key: ConfKey; readonly value: string };

/** One step of a host plan (a slice delivery has its own kind: DeliveryStep in slices/deliver.ts). */
export interface PlanStep {
  readonly action: Action;
  /** Why, in words a person checking the plan understands. */
  readonly reason: string;
  /**
   * After adding an address on a real interface: wait until duplicate address
   * detection is over, because a tentative address receives nothing, and the
   * next step may remove the copy that is still answering.
   */
  readonly settle?: { readonly dev: string; readonly address: string };
}

export interface Plan {
  readonly steps: readonly PlanStep[];
  /** Things worth knowing that are not steps (errata of the seed, what the router will do). */
  readonly notes: readonly string[];
}

export function ipStep(args: string[], reason: string, settle?: PlanStep['settle']): PlanStep {
  return settle ? { action: { kind: 'ip', args }, reason, settle } : { action: { kind: 'ip', args }, reason };
}

export function sysctlStep(key: ConfKey, value: string, reason: string): PlanStep {
  return { action: { kind: 'sysctl', key, value }, reason };
}

/**
 * One word for a POSIX shell: left as it is when it holds only characters no
 * shell treats specially, otherwise in single quotes (a quote inside becomes
 * '\''). Interface names and addresses come from the host and its config;
 * the printed plan must run as exactly the arguments apply would use.
 */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Comment text on one line: a newline in a name must not end the comment and start a command. */
function comment(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what this removes
  return text.replace(/[\r\n\u0000-\u001f\u007f]/g, '?');
}

/** The step as a shell command line. */
export function commandLine(a: Action): string {
  return a.kind === 'ip'
    ? ['ip', ...a.args].map(shellQuote).join(' ')
    : `sysctl -w ${shellQuote(`${sysctlKey(a.key)}=${a.value}`)}`;
}

/** The whole plan as a commented shell script. */
export function renderPlan(plan: Plan, header: string): string {
  const lines = [`# ${comment(header)}`];
  if (plan.steps.length === 0) lines.push('# nothing to do: the host already matches the configuration');
  for (const s of plan.steps) {
    lines.push(`# ${comment(s.reason)}`, commandLine(s.action));
    if (s.settle)
      lines.push(
        comment(
          `#   (then wait until ${s.settle.address} on ${s.settle.dev} has finished duplicate address detection)`,
        ),
      );
  }
  for (const n of plan.notes) lines.push(`# note: ${comment(n)}`);
  return lines.join('\n') + '\n';
}
