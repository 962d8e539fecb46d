// `sixbed4 agent`: the node agent the chart's DaemonSet runs on every node: it serves each SixBed4Prefix that gives
// its node a share (agent/cluster/agent.ts).
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger, type LogFormat } from '../lib/log.js';
import { InputError } from '../lib/errors.js';
import { startFields } from './version.js';
import { Kube } from '../kube/client.js';
import { startAgent } from '../agent/cluster/agent.js';
import { CNI_OPTIONS, cniPaths, pluginBinary } from './cni.js';

/**
 * --metrics ':PORT' binds the node's address from SIXBED4_METRICS_ADDRESS (the DaemonSet sets it to the node's
 * InternalIP) when that is set, else every address; 'HOST:PORT' binds HOST.
 */
function metricsAddress(flag: string): string {
  const node = process.env.SIXBED4_METRICS_ADDRESS;
  if (!flag.startsWith(':') || !node) return flag;
  return `${node.includes(':') ? `[${node}]` : node}${flag}`;
}

const IN_CLUSTER_NS = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export async function agentCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args, strict: true, allowPositionals: false, options: {
        prefix: { type: 'string' }, node: { type: 'string' }, namespace: { type: 'string' }, kubeconfig: { type: 'string' },
        'state-dir': { type: 'string' }, metrics: { type: 'string' }, tun: { type: 'string' }, 'poll-ms': { type: 'string' },
        'heartbeat-ms': { type: 'string' }, 'log-level': { type: 'string' }, 'log-format': { type: 'string' },
        'health-socket': { type: 'string' }, 'handover-wait-ms': { type: 'string' }, 'daemonset': { type: 'string' }, ...CNI_OPTIONS,
      },
    }));
  } catch (err) {
    throw new InputError(`${(err as Error).message.replace(/\. To specify.*$/s, '')} (see sixbed4 --help)`);
  }
  const prefixName = values.prefix;
  if (values.tun && !prefixName) throw new InputError('--tun needs --prefix: every prefix has its own tunnel');
  const namespace = values.namespace ?? process.env.POD_NAMESPACE ?? (existsSync(IN_CLUSTER_NS) ? readFileSync(IN_CLUSTER_NS, 'utf8').trim() : undefined);
  if (!namespace) throw new InputError('the namespace of the agent ConfigMaps is unknown: give --namespace (the operator\'s namespace) or set POD_NAMESPACE');
  const node = values.node ?? process.env.NODE_NAME;
  if (!node) throw new InputError('the node name is unknown: give --node or set NODE_NAME (the DaemonSet sets it from spec.nodeName)');
  const log = createLogger({ component: 'agent', format: (values['log-format'] ?? 'auto') as LogFormat, ...(values['log-level'] ? { level: values['log-level'] } : {}) });
  log.info('sixbed4 build', await startFields());
  const kc = new KubeConfig();
  try {
    if (values.kubeconfig) kc.loadFromFile(values.kubeconfig); else kc.loadFromDefault();
  } catch (err) {
    throw new InputError(`cannot load the kubeconfig: ${(err as Error).message}`);
  }
  const agent = await startAgent(new Kube(kc, 'sixbed4-agent'), {
    node, namespace, ...(prefixName ? { prefixName } : {}),
    // files there are per prefix and node: a directory shared by several nodes (a test machine) never mixes hosts
    stateDir: values['state-dir'] ?? '/var/lib/sixbed4',
    ...(values.metrics ? { metrics: metricsAddress(values.metrics) } : {}),
    ...(values['health-socket'] ? { healthSocket: values['health-socket'] } : {}),
    ...(values['cni-socket'] ? { cniSocket: values['cni-socket'] } : {}),
    // keeping the plugin installed needs the node's CNI directories (the DaemonSet mounts them)
    ...(values['cni-conf-dir'] ? { cniInstall: { ...cniPaths(values), pluginBinary: pluginBinary(), ...(values.daemonset ? { daemonSet: values.daemonset } : {}) } } : {}),
    ...(values['handover-wait-ms'] ? { handoverWaitMs: Number(values['handover-wait-ms']) } : {}),
    ...(values.tun ? { tun: values.tun } : {}),
    ...(values['poll-ms'] ? { pollMs: Number(values['poll-ms']) } : {}),
    ...(values['heartbeat-ms'] ? { heartbeatMs: Number(values['heartbeat-ms']) } : {}),
  }, log);
  return new Promise((resolve) => {
    const onSignal = () => {
      process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal);
      agent.stop().then(() => resolve(0), (err: Error) => { log.error(`stopping: ${err.message}`); resolve(1); });
    };
    process.on('SIGINT', onSignal); process.on('SIGTERM', onSignal);
  });
}
