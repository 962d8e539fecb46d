// What the peer's hook script hears (hooks.ts runs it): its address and routes coming and going, each with the
// environment the script reads. Without --hook nothing runs.
import { formatIPv4, parseIPv6 } from '../../lib/ip.js';
import type { Logger } from '../../lib/log.js';
import { addressIPv4, addressPort } from '../protocol/address.js';
import { HookRunner } from './hooks.js';
import type { PeerConfig } from './config.js';

export class HookEvents {
  private readonly runner: HookRunner | undefined;

  constructor(cfg: PeerConfig, routerText: string, log: Logger) {
    this.runner = cfg.hook
      ? new HookRunner(
          cfg.hook,
          cfg.hookTimeoutMs,
          { SIXBED4_TUN: cfg.tun, SIXBED4_ROUTER: routerText, SIXBED4_PID: String(process.pid) },
          log,
        )
      : undefined;
  }

  /** The address (in its /114) came or went; SIXBED4_MAPPING is the NAT mapping it embeds. */
  address(event: 'add' | 'remove', address: string, prefix: string): void {
    const a = parseIPv6(address);
    void this.runner?.run(event, [address, prefix], {
      SIXBED4_ADDRESS: address,
      SIXBED4_PREFIX: prefix,
      SIXBED4_MAPPING: `${formatIPv4(addressIPv4(a, 0))}:${addressPort(a, 0)}`,
    });
  }

  route(event: 'route-add' | 'route-remove', route: string): void {
    void this.runner?.run(event, [route], { SIXBED4_ROUTE: route });
  }

  /** Resolves once no hook runs (at stop: the last ones finish before the process goes). */
  async idle(): Promise<void> {
    await this.runner?.idle();
  }
}
