// `sixbed4 cni install|uninstall`: the sixbed4-cni plugin on a node (agent/cni/install.ts). The agent DaemonSet's
// init container runs install with the node's CNI directories mounted; uninstall is for people (and for the agent
// when its DaemonSet is deleted).
import { join } from 'node:path';
import { InputError } from '../lib/errors.js';
import { DEFAULT_CHAINED_INTERFACE } from '../agent/cni/protocol.js';
import { install, PLUGIN_TYPE, uninstall, type PluginSettings } from '../agent/cni/install.js';
import { DEFAULT_POD_ANNOTATION } from '../kube/api.js';
import { packageRoot } from '../lib/build-info.js';
import { COMMON_OPTIONS, parseFlags } from './command.js';

export const DEFAULT_CNI_SOCKET = '/run/sixbed4/cni.sock';
export const pluginBinary = (): string => join(packageRoot() ?? process.cwd(), 'build', 'Release', PLUGIN_TYPE);

const CNI_USAGE = `usage: sixbed4 cni install|uninstall [flags]

The sixbed4-cni plugin on this node: install puts the binary into --cni-bin-dir and chains it into the first
*.conflist of --cni-conf-dir; uninstall takes both out again.

  --cni-bin-dir D          (default /opt/cni/bin)
  --cni-conf-dir D         (default /etc/cni/net.d)
  --cni-socket PATH        where the agent answers the plugin (default ${DEFAULT_CNI_SOCKET})
  --cni-pod-annotation K   the pod annotation that asks for a slice (default ${DEFAULT_POD_ANNOTATION})
  --cni-interface NAME     the pod's interface for the slice (default ${DEFAULT_CHAINED_INTERFACE})
`;

export interface CniPaths {
  binDir: string;
  confDir: string;
  settings: PluginSettings;
}

/** The options both the command and the agent take. */
export const CNI_OPTIONS = {
  'cni-bin-dir': { type: 'string' },
  'cni-conf-dir': { type: 'string' },
  'cni-socket': { type: 'string' },
  'cni-pod-annotation': { type: 'string' },
  'cni-interface': { type: 'string' },
} as const;

export function cniPaths(v: Record<string, string | boolean | undefined>): CniPaths {
  const s = (k: string, d: string) => (typeof v[k] === 'string' ? (v[k] as string) : d);
  const settings = {
    agentSocket: s('cni-socket', DEFAULT_CNI_SOCKET),
    podAnnotation: s('cni-pod-annotation', DEFAULT_POD_ANNOTATION),
    interface: s('cni-interface', DEFAULT_CHAINED_INTERFACE),
  };
  if (!settings.agentSocket.startsWith('/'))
    throw new InputError(`--cni-socket ${settings.agentSocket}: give an absolute path`);
  if (!/^[A-Za-z][\w-]{0,14}$/.test(settings.interface))
    throw new InputError(`--cni-interface ${settings.interface} is not an interface name`);
  return { binDir: s('cni-bin-dir', '/opt/cni/bin'), confDir: s('cni-conf-dir', '/etc/cni/net.d'), settings };
}

export async function cniCommand(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const { values } = parseFlags('cni', rest, { ...CNI_OPTIONS, help: COMMON_OPTIONS.help });
  if (values.help || verb === '--help' || verb === '-h') {
    process.stdout.write(CNI_USAGE);
    return 0;
  }
  const p = cniPaths(values);
  if (verb === 'install') {
    const r = await install({ pluginBinary: pluginBinary(), ...p });
    console.log(
      `${r.binary}${r.conflist ? `; chained into ${r.conflist}` : '; no *.conflist in ' + p.confDir + ' yet (the agent chains into it when the primary network writes one)'}${r.changed ? '' : ' (already in place)'}`,
    );
    return 0;
  }
  if (verb === 'uninstall') {
    const done = await uninstall(p);
    console.log(done.length ? done.join('\n') : 'nothing of sixbed4-cni on this node');
    return 0;
  }
  throw new InputError(`sixbed4 cni ${verb ?? ''}: use install or uninstall`);
}
