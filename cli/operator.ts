// `sixbed4 operator`: the Kubernetes operator that turns SixBed4Prefix objects
// into per-node agent DaemonSets (see operator/).
import { startMetricsServer, type MetricsServer } from '../lib/metrics-server.js';
import { InputError } from '../lib/errors.js';
import { startFields } from './version.js';
import {
  COMMON_OPTIONS,
  commandLogger,
  loadKubeConfig,
  parseFlags,
  podNamespace,
  secondsFlag,
  untilSignal,
} from './command.js';
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

export async function operatorCommand(args: string[]): Promise<number> {
  const { values } = parseFlags('operator', args, {
    ...COMMON_OPTIONS,
    kubeconfig: { type: 'string' },
    namespace: { type: 'string' },
    'agent-daemonset': { type: 'string' },
    'leader-elect': { type: 'boolean' },
    'lease-name': { type: 'string' },
    'lease-duration': { type: 'string' },
    'renew-deadline': { type: 'string' },
    'retry-period': { type: 'string' },
    'cleanup-timeout': { type: 'string' },
    'agent-stale-after': { type: 'string' },
    resync: { type: 'string' },
    metrics: { type: 'string' },
    identity: { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(OPERATOR_USAGE);
    return 0;
  }

  const log = commandLogger(values, 'operator');
  const agentDaemonSet = values['agent-daemonset'] ?? 'sixbed4-agent';
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(agentDaemonSet))
    throw new InputError(`--agent-daemonset '${agentDaemonSet}' is not a DaemonSet name`);
  const leaseDurationMs = secondsFlag(values['lease-duration'], '--lease-duration', 15);
  const renewDeadlineMs = secondsFlag(values['renew-deadline'], '--renew-deadline', 10);
  const retryPeriodMs = secondsFlag(values['retry-period'], '--retry-period', 2);
  if (values['leader-elect'] && !(retryPeriodMs < renewDeadlineMs && renewDeadlineMs < leaseDurationMs)) {
    throw new InputError('leader election needs --retry-period < --renew-deadline < --lease-duration');
  }
  const cleanupTimeoutMs = secondsFlag(values['cleanup-timeout'], '--cleanup-timeout', 300);
  const staleAfterMs = secondsFlag(values['agent-stale-after'], '--agent-stale-after', 120);
  const resyncMs = secondsFlag(values.resync, '--resync', 600);
  const namespace = values.namespace ?? podNamespace() ?? 'sixbed4-system';
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace))
    throw new InputError(`--namespace '${namespace}' is not a namespace name`);

  const kc = await loadKubeConfig(values.kubeconfig);

  log.info('sixbed4 build', await startFields());
  const metrics = new OperatorMetrics();
  let server: MetricsServer | undefined;
  if (values.metrics) server = await startMetricsServer(values.metrics, metrics.registry, log);

  const signals = untilSignal({ log });
  const op = startOperator({
    kubeConfig: kc,
    namespace,
    agentDaemonSet,
    ...(values['leader-elect']
      ? {
          leaderElection: {
            leaseName: values['lease-name'] ?? 'sixbed4-operator',
            leaseDurationMs,
            renewDeadlineMs,
            retryPeriodMs,
          },
        }
      : {}),
    ...(values.identity ? { identity: values.identity } : {}),
    cleanupTimeoutMs,
    staleAfterMs,
    resyncMs,
    log,
    metrics,
  });
  log.info('operator starting', {
    namespace,
    identity: op.identity,
    leaderElection: !!values['leader-elect'],
    server: kc.getCurrentCluster()?.server,
  });

  // A replica that lost its Lease exits (1) so that a fresh process stands for election; a stop ends done as well.
  const ended = op.done.then(
    (outcome) => {
      if (outcome !== 'lost') return new Promise<number>(() => {});
      log.error('lost leadership; exiting so that a fresh process can stand for election');
      return 1;
    },
    (e: Error) => {
      log.error(`operator failed: ${e.message}`);
      return 1;
    },
  );
  return signals.started(
    async () => {
      try {
        await op.stop();
      } finally {
        await server?.close().catch(() => undefined);
        log.info('operator stopped');
      }
    },
    { ended },
  );
}
