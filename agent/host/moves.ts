// Changing the form of one address without a moment in which the host does not
// have it (linux-ipv6-facts.md §1-2): an address exists at most once per
// interface, so a new prefix length on the same interface means delete, then
// add — and in between a temporary /128 on lo keeps delivering it locally.
// Where the new form lives on another interface, it is simply added first and
// the old one removed after.
import type { AddressForm, KeptFlag } from './state.js';
import { ipStep, type PlanStep } from './steps.js';

export interface WantedForm {
  readonly dev: string;
  readonly prefixLen: number;
  /** Undefined: any flags will do (apply); a list: exactly these (revert). */
  readonly flags?: readonly KeptFlag[];
  /** Why this form (goes into the step's reason). */
  readonly why: string;
}

const BRIDGE_DEV = 'lo';

export function addArgs(address: string, prefixLen: number, dev: string, flags: readonly KeptFlag[] = []): string[] {
  const extra = flags.flatMap((f) => (f === 'deprecated' ? ['preferred_lft', '0'] : [f]));
  return ['-6', 'addr', 'add', `${address}/${prefixLen}`, 'dev', dev, ...extra];
}

export function delArgs(f: { address: string; prefixLen: number; dev: string }): string[] {
  return ['-6', 'addr', 'del', `${f.address}/${f.prefixLen}`, 'dev', f.dev];
}

function matches(have: AddressForm, want: WantedForm): boolean {
  return (
    have.dev === want.dev &&
    have.prefixLen === want.prefixLen &&
    (want.flags === undefined ||
      (have.flags.length === want.flags.length && want.flags.every((f) => have.flags.includes(f))))
  );
}

/**
 * Steps that take `address` from the forms it has on the interfaces in scope
 * (`current`) to `wanted`, make-before-break. `elsewhere` are its forms on
 * interfaces out of scope: they stay, and keep the address alive meanwhile.
 * `dropWhy` says why forms that are not wanted go.
 */
export function moveAddress(
  address: string,
  current: readonly AddressForm[],
  wanted: readonly WantedForm[],
  elsewhere: readonly AddressForm[],
  dropWhy: string,
): PlanStep[] {
  const kept = current.filter((c) => wanted.some((w) => matches(c, w)));
  const toAdd = wanted.filter((w) => !current.some((c) => matches(c, w)));
  const toDel = current.filter((c) => !kept.includes(c));
  if (toAdd.length === 0 && toDel.length === 0) return [];

  const steps: PlanStep[] = [];
  const add = (w: WantedForm) => {
    const flags = w.flags ?? [];
    const dad = w.dev !== BRIDGE_DEV && !flags.includes('nodad');
    steps.push(
      ipStep(
        addArgs(address, w.prefixLen, w.dev, flags),
        `${address}/${w.prefixLen} on ${w.dev}: ${w.why}`,
        dad ? { dev: w.dev, address } : undefined,
      ),
    );
  };
  // Same interface, other form: the old one has to go before the new one can come.
  const blocking = toDel.filter((d) => toAdd.some((w) => w.dev === d.dev));
  const freeAdds = toAdd.filter((w) => !blocking.some((d) => d.dev === w.dev));
  for (const w of freeAdds) add(w);

  if (blocking.length > 0) {
    const alive = [...kept, ...elsewhere, ...freeAdds];
    const bridgeBusy = [...current, ...elsewhere, ...toAdd].some((f) => f.dev === BRIDGE_DEV);
    const bridge = alive.length === 0 && !bridgeBusy;
    if (bridge) {
      steps.push(
        ipStep(
          addArgs(address, 128, BRIDGE_DEV),
          `temporary copy of ${address} on ${BRIDGE_DEV}: keeps it delivered locally while it changes form on ${blocking.map((d) => d.dev).join(', ')} (an address exists once per interface)`,
        ),
      );
    }
    for (const d of blocking) {
      steps.push(
        ipStep(
          delArgs(d),
          `remove ${address}/${d.prefixLen} from ${d.dev} to make room for its new form${bridge ? ' (the copy on lo answers meanwhile)' : ''}`,
        ),
      );
      for (const w of toAdd.filter((x) => x.dev === d.dev)) add(w);
    }
    if (bridge)
      steps.push(
        ipStep(
          delArgs({ address, prefixLen: 128, dev: BRIDGE_DEV }),
          `remove the temporary copy of ${address} from ${BRIDGE_DEV}`,
        ),
      );
  }
  for (const d of toDel.filter((x) => !blocking.includes(x))) {
    steps.push(ipStep(delArgs(d), `remove ${address}/${d.prefixLen} from ${d.dev}: ${dropWhy}`));
  }
  return steps;
}
