// The agent's readiness and liveness probe, run by the kubelet as an exec probe:
//   node /app/dist/cli/probe.js [SOCKET]
// asks GET /healthz on the agent's Unix socket (default /tmp/sixbed4-agent.sock, in the pod's own /tmp) and
// exits 0 on 200. An HTTP probe on the metrics port would not do: on the host network, while a new agent Pod
// starts beside the old one, that port is the old agent's, and the new Pod would be called ready for it.
// Kept apart from main.ts so that a probe loads nothing but node:http.
import http from 'node:http';

export const AGENT_HEALTH_SOCKET = '/tmp/sixbed4-agent.sock';

const isMain = import.meta.url === `file://${process.argv[1]}`;
if (isMain) {
  const socketPath = process.argv[2] ?? AGENT_HEALTH_SOCKET;
  const req = http.get({ socketPath, path: '/healthz', timeout: 3000 }, (res) => {
    res.resume();
    process.exitCode = res.statusCode === 200 ? 0 : 1;
    if (res.statusCode !== 200) process.stderr.write(`sixbed4 probe: /healthz answered ${res.statusCode}\n`);
  });
  req.on('timeout', () => req.destroy(new Error('no answer within 3 s')));
  req.on('error', (e) => {
    process.stderr.write(`sixbed4 probe: ${socketPath}: ${e.message}\n`);
    process.exitCode = 1;
  });
}
