// A router started as the node agent starts one (handover: true), for tests of
// a handover between two routers: `node handover-router.js '<RouterOptions
// as JSON>'`. It logs as `sixbed4 router` does (text). On SIGTERM it stops as
// an agent being replaced does, waiting up to 10 s for a successor to claim
// the tunnel; on SIGINT at once. Either way it exits 0 once stopped.
import { routerConfig, startRouter, type RouterOptions } from '../../agent/router/router.js';
import { createLogger } from '../../lib/log.js';

const opts = JSON.parse(process.argv[2] ?? '{}') as RouterOptions;
const log = createLogger({ component: 'router', format: 'text' });
const router = await startRouter(routerConfig({ ...opts, handover: true }), log);
const stop = (waitForSuccessorMs: number) => () => {
  void router.stop({ waitForSuccessorMs }).then(
    () => process.exit(0),
    (err: Error) => {
      log.error(err.message);
      process.exit(1);
    },
  );
};
process.once('SIGTERM', stop(10_000));
process.once('SIGINT', stop(0));
