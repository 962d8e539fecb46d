// `sixbed4 operator`: the Kubernetes operator that turns SixBed4Prefix objects
// into per-node agent DaemonSets (see operator/).
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger, type LogFormat } from '../lib/log.js';
import { startMetricsServer, type MetricsServer } from '../lib/metrics-server.js';
import { InputError } from '../lib/errors.js';
import { startFields } from './version.js';
import { startOperator } from '../operator/controller.js';
import { OperatorMetrics } from '../operator/metrics.js';

export const OPERATOR_USAGE = `usage: sixbed4 operator [flags]

Runs the Kubernetes operator: allocates each SixBed4Prefix's /64s to the nodes
it selects, renders each node's share into the prefix's agent ConfigMap (the
node agents, one DaemonSet for the cluster, follow it), reports status.

  --kubeconfig F           kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)
  --namespace NS           namespace of the agent ConfigMaps, the agents' DaemonSet and the Lease
                           (default: the pod's namespace in a cluster, else sixbed4-system)
  --agent-daemonset NAME   the agents' DaemonSet, whose rollout each prefix's Progressing follows
                           (default sixbed4-agent)
  --leader-elect           hold a Lease so that only one replica acts
  --lease-name NAME        the Lease (default sixbed4-operator)
  --lease-duration S       seconds (default 15); --renew-deadline S (10); --retry-period S (2)
  --cleanup-timeout S      how long a deleted prefix waits for agents to revert hosts (default 300)
  --agent-stale-after S    an agent report older than this does not count as ready (default 120)
  --resync S               reconcile every prefix this often anyway (default 600)
  --metrics H:P            serve Prometheus metrics and /healthz, e.g. 0.0.0.0:9464
  --log-level LEVEL        (info)   --log-format text|json|auto (auto: json in a cluster)
`;

function seconds(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt * 1000;
  if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) throw new InputError(`${flag} '${v}' is not a positive number of seconds`);
  return Number(v) * 1000;
}

const IN_CLUSTER_NS = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export async function operatorCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      allowPositionals: false,
      strict: true,
      options: {
        kubeconfig: { type: 'string' }, namespace: { type: 'string' }, 'agent-daemonset': { type: 'string' },
        'leader-elect': { type: 'boolean' }, 'lease-name': { type: 'string' }, 'lease-duration': { type: 'string' },
        'renew-deadline': { type: 'string' }, 'retry-period': { type: 'string' }, 'cleanup-timeout': { type: 'string' },
        'agent-stale-after': { type: 'string' }, resync: { type: 'string' }, metrics: { type: 'string' },
        identity: { type: 'string' },
        'log-level': { type: 'string' }, 'log-format': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new InputError(`${(err as Error).message.replace(/\. To specify.*$/s, '')} (see sixbed4 operator --help)`);
  }
  if (values.help) { process.stdout.write(OPERATOR_USAGE); return 0; }

  const format = (values['log-format'] ?? 'auto') as LogFormat;
  if (!['text', 'json', 'auto'].includes(format)) throw new InputError(`--log-format ${format}: use text, json or auto`);
  const agentDaemonSet = values['agent-daemonset'] ?? 'sixbed4-agent';
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(agentDaemonSet)) throw new InputError(`--agent-daemonset '${agentDaemonSet}' is not a DaemonSet name`);
  const leaseDurationMs = seconds(values['lease-duration'], '--lease-duration', 15);
  const renewDeadlineMs = seconds(values['renew-deadline'], '--renew-deadline', 10);
  const retryPeriodMs = seconds(values['retry-period'], '--retry-period', 2);
  if (values['leader-elect'] && !(retryPeriodMs < renewDeadlineMs && renewDeadlineMs < leaseDurationMs)) {
    throw new InputError('leader election needs --retry-period < --renew-deadline < --lease-duration');
  }
  const cleanupTimeoutMs = seconds(values['cleanup-timeout'], '--cleanup-timeout', 300);
  const staleAfterMs = seconds(values['agent-stale-after'], '--agent-stale-after', 120);
  const resyncMs = seconds(values.resync, '--resync', 600);
  const namespace = values.namespace ?? (existsSync(IN_CLUSTER_NS) ? readFileSync(IN_CLUSTER_NS, 'utf8').trim() : 'sixbed4-system');
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) throw new InputError(`--namespace '${namespace}' is not a namespace name`);

  const kc = new KubeConfig();
  try {
    if (values.kubeconfig) kc.loadFromFile(values.kubeconfig);
    else kc.loadFromDefault();
  } catch (e) {
    throw new InputError(`cannot load the kubeconfig${values.kubeconfig ? ` ${values.kubeconfig}` : ''}: ${(e as Error).message}`);
  }
  if (!kc.getCurrentCluster()) throw new InputError('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a pod');

  const log = createLogger({ component: 'operator', format, ...(values['log-level'] ? { level: values['log-level'] } : {}) });
  log.info('sixbed4 build', await startFields());
  const metrics = new OperatorMetrics();
  let server: MetricsServer | undefined;
  if (values.metrics) server = await startMetricsServer(values.metrics, metrics.registry, log);

  const op = startOperator({
    kubeConfig: kc,
    namespace,
    agentDaemonSet,
    ...(values['leader-elect'] ? { leaderElection: { leaseName: values['lease-name'] ?? 'sixbed4-operator', leaseDurationMs, renewDeadlineMs, retryPeriodMs } } : {}),
    ...(values.identity ? { identity: values.identity } : {}),
    cleanupTimeoutMs, staleAfterMs, resyncMs, log, metrics,
  });
  log.info('operator starting', { namespace, identity: op.identity, leaderElection: !!values['leader-elect'], server: kc.getCurrentCluster()?.server });

  return new Promise<number>((resolve) => {
    let finishing = false;
    const finish = async (code: number) => {
      if (finishing) return;
      finishing = true;
      process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal);
      try {
        await op.stop();
      } catch (err) {
        log.error(`stopping: ${(err as Error).message}`);
        code = code || 1;
      }
      await server?.close().catch(() => undefined);
      log.info('operator stopped');
      resolve(code);
    };
    const onSignal = (sig: NodeJS.Signals) => { log.info(`${sig}: shutting down`); void finish(0); };
    process.on('SIGINT', onSignal); process.on('SIGTERM', onSignal);
    op.done.then((outcome) => {
      if (outcome === 'lost') { log.error('lost leadership; exiting so that a fresh process can stand for election'); void finish(1); }
    }, (e: Error) => { log.error(`operator failed: ${e.message}`); void finish(1); });
  });
}
