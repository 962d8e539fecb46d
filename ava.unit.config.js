// `npm run test:unit`: every test file that needs neither root nor a daemon (kube-apiserver, kubelet, Docker): pure
// planners, engines on FakeIO, memkube tables, the CLI's refusals. About 40 s, as any user. A new test file that needs
// no root belongs here too; `npm test` (as root) runs every file, these included.
import base from './package.json' with { type: 'json' };

const unit = [
  'bench/bulk', 'bench/junk', 'bench/packets', 'bench/report',
  'cli/help',
  'cluster/fastpath',
  'cni/protocol',
  'docker/dockerfile',
  'docs/session',
  'failover/plan',
  'helpers/memkube',
  'host/config', 'host/plan', 'host/restore', 'host/statefile',
  'io/fake',
  'layout',
  'ndp/responder',
  'operator/allocate', 'operator/cli', 'operator/controller-table', 'operator/plan', 'operator/queue',
  'operator/reconcile-table', 'operator/render', 'operator/slices-table', 'operator/slices', 'operator/yaml11',
  'ops/dashboard-chart', 'ops/metrics-doc', 'ops/rules',
  'peer/direct', 'peer/hooks', 'peer/lan-advert',
  'protocol/address', 'protocol/exthdr', 'protocol/ip', 'protocol/nd',
  'interop/stock-ra',
  'router/engine', 'router/live', 'router/ndp-mode', 'router/peer-engine', 'router/periodic', 'router/ratelimit', 'router/refused',
  'service/config', 'service/live', 'service/notify', 'service/run-unit', 'service/status',
  'slices/inbound-unit', 'slices/unit',
  'version',
];

export default { ...base.ava, files: unit.map((f) => `dist/test/${f}.test.js`) };
