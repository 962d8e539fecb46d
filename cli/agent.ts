// `sixbed4 agent`: the node agent the chart's DaemonSet runs on every node: it serves each SixBed4Prefix that gives
// its node a share (agent/cluster/agent.ts).
import { InputError } from '../lib/errors.js';
import { startFields } from './version.js';
import { Kube } from '../kube/client.js';
import { startAgent } from '../agent/cluster/agent.js';
import { CNI_OPTIONS, cniPaths, pluginBinary } from './cni.js';
import {
  COMMON_FLAGS_USAGE,
  COMMON_OPTIONS,
  commandLogger,
  loadKubeConfig,
  parseFlags,
  podNamespace,
  requireNativeAddon,
  runUntilSignal,
} from './command.js';

/**
 * --metrics ':PORT' binds the node's address from SIXBED4_METRICS_ADDRESS (the DaemonSet sets it to the node's
 * InternalIP) when that is set, else every address; 'HOST:PORT' binds HOST.
 */
function metricsAddress(flag: string): string {
  const node = process.env.SIXBED4_METRICS_ADDRESS;
  if (!flag.startsWith(':') || !node) return flag;
  return `${node.includes(':') ? `[${node}]` : node}${flag}`;
}

const AGENT_USAGE = `usage: sixbed4 agent [flags]

Runs the node agent (what the chart's DaemonSet runs): serves every SixBed4Prefix that gives this node a share.

  --namespace NS        where the operator keeps the agent ConfigMaps (default $POD_NAMESPACE, else the pod's)
  --node NAME           this node (default $NODE_NAME)
  --kubeconfig F        kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)
  --state-dir D         per prefix and node host state (default /var/lib/sixbed4)
  --metrics H:P         Prometheus metrics; :PORT binds $SIXBED4_METRICS_ADDRESS when set
  --health-socket PATH  /healthz on a Unix socket (the probe's)
  --cni-socket PATH     answer the sixbed4-cni plugin there; --cni-conf-dir D --cni-bin-dir D keep it installed
  --prefix NAME         serve only this prefix; then --tun NAME names its tunnel
${COMMON_FLAGS_USAGE}`;

export async function agentCommand(args: string[]): Promise<number> {
  const { values } = parseFlags('agent', args, {
    ...COMMON_OPTIONS,
    ...CNI_OPTIONS,
    prefix: { type: 'string' },
    node: { type: 'string' },
    namespace: { type: 'string' },
    kubeconfig: { type: 'string' },
    'state-dir': { type: 'string' },
    metrics: { type: 'string' },
    tun: { type: 'string' },
    'poll-ms': { type: 'string' },
    'heartbeat-ms': { type: 'string' },
    'health-socket': { type: 'string' },
    'handover-wait-ms': { type: 'string' },
    daemonset: { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(AGENT_USAGE);
    return 0;
  }
  await requireNativeAddon();
  const prefixName = values.prefix;
  if (values.tun && !prefixName) throw new InputError('--tun needs --prefix: every prefix has its own tunnel');
  const namespace = values.namespace ?? process.env.POD_NAMESPACE ?? podNamespace();
  if (!namespace)
    throw new InputError(
      "the namespace of the agent ConfigMaps is unknown: give --namespace (the operator's namespace) or set POD_NAMESPACE",
    );
  const node = values.node ?? process.env.NODE_NAME;
  if (!node)
    throw new InputError(
      'the node name is unknown: give --node or set NODE_NAME (the DaemonSet sets it from spec.nodeName)',
    );
  const log = commandLogger(values, 'agent');
  log.info('sixbed4 build', await startFields());
  const kc = await loadKubeConfig(values.kubeconfig);
  const kube = new Kube(kc, 'sixbed4-agent');
  const options = {
    node,
    namespace,
    ...(prefixName ? { prefixName } : {}),
    // files there are per prefix and node: a directory shared by several nodes (a test machine) never mixes hosts
    stateDir: values['state-dir'] ?? '/var/lib/sixbed4',
    ...(values.metrics ? { metrics: metricsAddress(values.metrics) } : {}),
    ...(values['health-socket'] ? { healthSocket: values['health-socket'] } : {}),
    ...(values['cni-socket'] ? { cniSocket: values['cni-socket'] } : {}),
    // keeping the plugin installed needs the node's CNI directories (the DaemonSet mounts them)
    ...(values['cni-conf-dir']
      ? {
          cniInstall: {
            ...cniPaths(values),
            pluginBinary: pluginBinary(),
            ...(values.daemonset ? { daemonSet: values.daemonset } : {}),
          },
        }
      : {}),
    ...(values['handover-wait-ms'] ? { handoverWaitMs: Number(values['handover-wait-ms']) } : {}),
    ...(values.tun ? { tun: values.tun } : {}),
    ...(values['poll-ms'] ? { pollMs: Number(values['poll-ms']) } : {}),
    ...(values['heartbeat-ms'] ? { heartbeatMs: Number(values['heartbeat-ms']) } : {}),
  };
  return runUntilSignal(
    () => startAgent(kube, options, log),
    () => {},
    log,
  );
}
