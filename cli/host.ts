// `sixbed4 host plan|apply|revert`: the seed's manual steps for a host with a
// native /64, done safely and undoably. Plans go to stdout, logs to stderr.
import { InputError } from '../lib/errors.js';
import { hostConfig, readHostConfigFile, type HostConfig } from '../agent/host/config.js';
import { localAddressModeName } from '../kube/modes.js';
import { applyHost, planHost, revertHost } from '../agent/host/apply.js';
import { resolveUplink } from '../agent/host/plan.js';
import { readHostState } from '../agent/host/state.js';
import { defaultStatePath } from '../agent/host/statefile.js';
import { renderPlan } from '../agent/host/steps.js';
import { hasNetAdmin } from '../agent/host/privilege.js';
import { COMMON_OPTIONS, commandLogger, parseFlagsAndOperands } from './command.js';

export const HOST_USAGE = `usage: sixbed4 host plan|apply|revert [flags]

  plan     print the steps apply would take, as ip/sysctl commands, from the host's current state
  apply    make the host match the config, make-before-break; saves the state before the first change
  revert   restore the state saved by apply exactly, then remove the state file

flags (each overrides the config file's field):
  -c, --config FILE     host config, YAML or JSON: prefix, uplink, localAddresses,
                        localAddressMode, dummyInterface, tunnel, ndpProxy
  -L, --prefix P        the native /64 routed to this host, e.g. 2001:db8:9:10::/64
      --uplink IF       interface towards the provider (default: that of the IPv6 default route)
      --local ADDR      a server address of this host inside the /64 (repeatable; replaces localAddresses)
      --mode M          Uplink (each address as a /128 on the uplink, default) or
                        DummyInterface (as /112s on a dummy interface); uplink128, dummy112 still work
      --dummy IF        the dummy interface for DummyInterface (default dumbo0)
      --tunnel IF       the router's tunnel interface (default 6bed4)
      --ndp-proxy M     Disabled (default), Always, or WhenOnLink (once the provider is seen
                        treating the prefix as on-link); off, on, auto still work
      --state FILE      where apply saves and revert reads the state (default /var/lib/sixbed4/host-<uplink>.json)
      --log-level L, --log-format text|json|auto
`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  config: { type: 'string', short: 'c' },
  prefix: { type: 'string', short: 'L' },
  uplink: { type: 'string' },
  local: { type: 'string', multiple: true },
  mode: { type: 'string' },
  dummy: { type: 'string' },
  tunnel: { type: 'string' },
  'ndp-proxy': { type: 'string' },
  state: { type: 'string' },
} as const;

type Values = ReturnType<typeof parseFlagsAndOperands<typeof OPTIONS>>['values'];

export async function hostCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlagsAndOperands('host', args, OPTIONS);
  const [sub, ...extra] = positionals;
  if (values.help || sub === 'help') {
    process.stdout.write(HOST_USAGE);
    return 0;
  }
  if (!sub) throw new InputError('say what to do: sixbed4 host plan|apply|revert (see sixbed4 host --help)');
  if (extra.length > 0) throw new InputError(`unexpected argument '${extra[0]}' (see sixbed4 host --help)`);
  const log = commandLogger(values, 'host');

  switch (sub) {
    case 'plan': {
      const cfg = await config(values);
      const plan = await planHost(cfg);
      process.stdout.write(
        renderPlan(
          plan,
          `sixbed4 host plan: prefix ${cfg.prefix.text}, uplink ${plan.uplink}, local addresses as ${localAddressModeName(cfg.localAddressMode)}`,
        ),
      );
      return 0;
    }
    case 'apply': {
      const cfg = await config(values);
      requirePrivilege('apply');
      const { plan, statePath } = await applyHost(cfg, { log, ...(values.state ? { statePath: values.state } : {}) });
      if (plan.steps.length === 0) {
        process.stdout.write('nothing to do: the host already matches the configuration\n');
      } else {
        process.stdout.write(
          `applied ${plan.steps.length} step(s); the state before is saved in ${statePath} (undo: sixbed4 host revert --state ${statePath})\n`,
        );
        for (const n of plan.notes) process.stdout.write(`note: ${n}\n`);
      }
      return 0;
    }
    case 'revert': {
      requirePrivilege('revert');
      const statePath = values.state ?? defaultStatePath(await revertUplink(values));
      const { plan } = await revertHost({ log, statePath });
      process.stdout.write(
        plan.steps.length === 0
          ? `nothing to do: the host already matches the saved state; removed ${statePath}\n`
          : `reverted ${plan.steps.length} step(s); removed ${statePath}\n`,
      );
      for (const n of plan.notes) process.stdout.write(`note: ${n}\n`);
      return 0;
    }
    default:
      throw new InputError(`unknown host command '${sub}': use plan, apply or revert`);
  }
}

/** The config file (if any) with the flags laid over it. */
async function config(values: Values): Promise<HostConfig> {
  const raw = values.config ? await readHostConfigFile(values.config) : {};
  const set = (field: string, v: unknown) => {
    if (v !== undefined) raw[field] = v;
  };
  set('prefix', values.prefix);
  set('uplink', values.uplink);
  set('localAddresses', values.local);
  set('localAddressMode', values.mode);
  set('dummyInterface', values.dummy);
  set('tunnel', values.tunnel);
  set('ndpProxy', values['ndp-proxy']);
  return hostConfig(raw);
}

/** revert needs only the uplink, to find the state file: flag, config, else the default route's interface. */
async function revertUplink(values: Values): Promise<string> {
  if (values.uplink) return values.uplink;
  if (values.config) {
    const raw = await readHostConfigFile(values.config);
    if (typeof raw.uplink === 'string') return raw.uplink;
  }
  return resolveUplink({}, await readHostState());
}

function requirePrivilege(what: string): void {
  if (!hasNetAdmin())
    throw new InputError(`sixbed4 host ${what} changes addresses and sysctls: run it as root (or with CAP_NET_ADMIN)`);
}
