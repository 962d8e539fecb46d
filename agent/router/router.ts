// The router's entry point, as the CLI, the service, the node agent and the tests import it: its configuration
// (config.ts), and startRouter, which starts a Router (running.ts) on the real parts (parts.ts). A test without
// root starts Router.start(cfg, log, parts) with FakeIO and a stand-in for `ip` instead.
import type { Logger } from '../../lib/log.js';
import type { RouterConfig } from './config.js';
import { realRouterParts } from './parts.js';
import { Router, type RunningRouter } from './running.js';

export { routerConfig, type LiveReconfig, type RouterConfig, type RouterOptions } from './config.js';
export { AddressNotLocalError } from './sockets.js';
export { realRouterParts, type RouterParts } from './parts.js';
export { Router, type RunningRouter } from './running.js';

/** A router on this host: the addon's sockets and TUN, the real `ip`, the kernel's fast path and proxy. */
export function startRouter(cfg: RouterConfig, log: Logger): Promise<RunningRouter> {
  return Router.start(cfg, log, realRouterParts);
}
