#!/usr/bin/env node
// The sixbed4 command line: one binary for the router, the peer, the lab, host networking, the operator and the node
// agent. The only place that joins agent/ and operator/ (README: Architecture); what the commands share is command.ts.
import {
  COMMON_FLAGS_USAGE,
  COMMON_OPTIONS,
  commandLogger,
  parseFlags,
  requireNativeAddon,
  runUntilSignal,
  wholeNumber as int,
} from './command.js';
import { InputError } from '../lib/errors.js';
import { routerConfig, startRouter } from '../agent/router/router.js';
import { peerConfig, startPeer } from '../agent/peer/peer.js';
// The lab, the agent and the operator load on demand: the router and peer start without the Kubernetes client.

/** Each command's part of the overview, which is also what `sixbed4 COMMAND --help` prints. */
const ROUTER_HELP = `  router   run a 6bed4 router: UDP/IPv4 peers <-> a TUN interface routed to a native /64
           -c, --config FILE    the single host as a service (docs/host.md): FILE (YAML or JSON, e.g.
                                /etc/sixbed4/router.yaml) holds SixBed4Prefix.spec's fields; applies the host
                                part, runs the router, re-reads FILE on SIGHUP, reverts the host on stop
               --keep-host      with --config: leave the host configured on stop
           -L, --prefix P       the /64 served (required), e.g. 2001:db8:9:10::/64
           -l, --listen IPV4    this host's public IPv4 to listen on (required)
               --port N         UDP port (default 25790)
           -R, --route P        extra prefix announced in RAs (repeatable)
               --tun NAME       tunnel interface (default 6bed4)
               --metrics H:P    serve Prometheus metrics, e.g. 127.0.0.1:9464
               --bind ADDR      the local IPv4 to bind when peers reach this host at --listen through a
                                1:1 NAT (a cloud's public IP in front of its private one)
               --advertise IPV4[:PORT]  the address peers send to, when a DNAT in front of this host
                                forwards it to --listen:--port; addresses (the router's own too) embed it
               --batch N        packets per batch (1..256, default 64)
               --workers N      forwarding threads, each with its own TUN queue and socket (default 1)
               --ndp-proxy IF   answer neighbour solicitations on uplink IF for live peers
                                (for upstreams that treat the /64 as on-link)
               --ndp-proxy-mode Always|WhenOnLink  WhenOnLink: only once such solicitations are
                                seen (default Always; the old on|auto still work)
               --stats-interval S  log rates, live peers and drops every S seconds while traffic flows (60)
               --sockets N      SO_REUSEPORT sockets per worker (1..64, default 8): a flooding source
                                fills only the one its flow hashes to; the others keep their share
               --refuse-private  never relay or send to private IPv4 ranges (10/8, 100.64/10, 172.16/12,
                                192.0.0/24, 192.168/16, 198.18/15): for routers on a public address
                                (addresses of this host, 127/8, 169.254/16, multicast and broadcast
                                are always refused)
               --fast-path auto|on|off  forward peers' packets to the kernel in the kernel (a BPF program
                                on the ingress of the interface holding the bind address; Linux 6.6+,
                                CAP_BPF); on: fail when it cannot run; auto (the default): say why
                                once and go on without; off: every packet through the router
               --fast-path-direct  with the fast path, peers' packets the kernel would forward go
                                straight to their egress, past the host's netfilter prerouting and
                                forward hooks: for hosts without a forward firewall (docs/router.md)
               --fast-path-xdp auto|off  with the fast path, decapsulate peers' datagrams at the uplink
                                driver's XDP hook, before GRO, where the driver has one (auto: TCP
                                uploads merged; docs/router.md); off (the default): at tc only
               --tun-offload auto|off  read TCP super-packets from the TUN (TSO) and send their
                                datagrams with UDP_SEGMENT; auto (the default): where the kernel
                                takes it (else said once); off: one packet per read and send
`;
const PEER_HELP = `  peer     run a 6bed4 peer (client) that gets its IPv6 address from a router
               --router IPV4[:PORT]  the router (required; port default 25790)
               --listen IPV4    local IPv4 to send from (default any)
               --port N         local UDP port (default a random even one): with a port forward on
                                the NAT to it, the 6bed4 address stays the same across restarts
               --hook SCRIPT    run SCRIPT add|remove ADDRESS PREFIX/114 and route-add|route-remove P
                                as the address and routes come and go (see docs/router.md)
               --hook-timeout S kill a hook still running after S seconds (default 10)
               --no-direct      never probe or send straight to other peers of the /64 (all through
                                the router), and accept datagrams from the router only
               --lanip N        last 14 bits of our address (default 1)
               --lan IF         serve the /114's other lanips on interface IF: forwarding on, Router
                                Advertisements there (hosts take a static lanip; see docs/router.md)
               --tun NAME       tunnel interface (default 6bed4peer)
               --default-route  route all IPv6 through the tunnel
               --keepalive S    seconds between keepalives (default 30)
               --tun-offload auto|off  read TCP super-packets from the TUN (TSO) and send their
                                datagrams with UDP_SEGMENT; auto (the default): where the kernel
                                takes it (else said once); off: one packet per read and send
`;
const LAB_HELP = `  lab      build a throwaway network of namespaces (ISP, router, two NATs, three peers), run
           the router and peers in it, ping in every direction, say which peers went direct,
           print a summary, clean up
               --keep S         keep the lab running S seconds before teardown (default 0)
               --fast-path      the router with its in-kernel fast path (the counters say what it took)

`;

const USAGE = `usage: sixbed4 <command> [flags]

commands:
${ROUTER_HELP}${PEER_HELP}${LAB_HELP}  host     configure this host for a native /64 (the seed's steps, make-before-break):
           plan | apply | revert  --config FILE | --prefix P --local ADDR ... (see sixbed4 host --help)
  operator run the Kubernetes operator: SixBed4Prefix resources -> allocations and agent configs
               --kubeconfig F --namespace NS --agent-daemonset NAME --leader-elect --metrics H:P
  agent    run the node agent: serves every SixBed4Prefix of its node (what the chart's DaemonSet runs)
               --namespace NS   where the operator keeps the agent ConfigMaps (default $POD_NAMESPACE)
               --node NAME (default $NODE_NAME); --state-dir D (default /var/lib/sixbed4); --metrics H:P
               --health-socket PATH; --cni-socket PATH (answer the sixbed4-cni plugin)
               --prefix NAME (serve only this one; then --tun NAME)

  cni      install|uninstall  the sixbed4-cni plugin on this node: the binary into --cni-bin-dir (/opt/cni/bin),
               chained into the first *.conflist of --cni-conf-dir (/etc/cni/net.d); --cni-socket PATH
               (/run/sixbed4/cni.sock) --cni-pod-annotation KEY (sixbed4.io/slice) --cni-interface NAME (eth6)

  status   summary of the running router from its metrics: uptime, live peers, packets and bytes per
           direction, top drop reasons
               --config FILE    read metricsAddress and metricsPort there (default /etc/sixbed4/router.yaml)
               --metrics H:P    or ask this address (default 127.0.0.1:9475)

  version  print the version, git revision, Node.js version and whether the native addon loads (also --version)

${COMMON_FLAGS_USAGE}`;

/** `sixbed4 COMMAND --help`: that command's part only. */
const commandHelp = (command: string, part: string): string =>
  `usage: sixbed4 ${command} [flags]\n\n${part}\n${COMMON_FLAGS_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version' || command === 'version') {
    process.stdout.write(await (await import('./version.js')).versionText());
    return 0;
  }
  switch (command) {
    case 'router':
      return routerCommand(rest);
    case 'peer':
      return peerCommand(rest);
    case 'lab':
      return labCommand(rest);
    case 'status':
      return (await import('./status.js')).statusCommand(rest);
    case 'host':
      return (await import('./host.js')).hostCommand(rest);
    case 'agent':
      return (await import('./agent.js')).agentCommand(rest);
    case 'cni':
      return (await import('./cni.js')).cniCommand(rest);
    case 'operator':
      return (await import('./operator.js')).operatorCommand(rest);
    default:
      throw new InputError(`unknown command '${command}' (try: sixbed4 --help)`);
  }
}

async function routerCommand(args: string[]): Promise<number> {
  const { values } = parseFlags('router', args, {
    ...COMMON_OPTIONS,
    prefix: { type: 'string', short: 'L' },
    listen: { type: 'string', short: 'l' },
    port: { type: 'string' },
    route: { type: 'string', short: 'R', multiple: true },
    tun: { type: 'string' },
    metrics: { type: 'string' },
    batch: { type: 'string' },
    workers: { type: 'string' },
    'ndp-proxy': { type: 'string' },
    'ndp-proxy-mode': { type: 'string' },
    'stats-interval': { type: 'string' },
    'refuse-private': { type: 'boolean' },
    sockets: { type: 'string' },
    bind: { type: 'string' },
    advertise: { type: 'string' },
    config: { type: 'string', short: 'c' },
    'keep-host': { type: 'boolean' },
    'fast-path': { type: 'string' },
    'fast-path-direct': { type: 'boolean' },
    'fast-path-xdp': { type: 'string' },
    'tun-offload': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(commandHelp('router', ROUTER_HELP));
    return 0;
  }
  await requireNativeAddon();
  const log = commandLogger(values, 'router');
  if (values.config !== undefined) {
    const flags = Object.keys(values).filter((k) => !['config', 'keep-host', 'log-level', 'log-format'].includes(k));
    if (flags.length)
      throw new InputError(
        `--${flags[0]} with --config: set it in ${values.config} instead (one source of truth; see docs/host.md)`,
      );
    return (await import('./service.js')).serviceCommand(values.config, !!values['keep-host'], log);
  }
  if (values['keep-host'])
    throw new InputError('--keep-host goes with --config (without it the router does not touch the host)');
  const port = int(values.port, '--port'),
    batch = int(values.batch, '--batch'),
    workers = int(values.workers, '--workers');
  const stats = int(values['stats-interval'], '--stats-interval');
  const sockets = int(values.sockets, '--sockets');
  if (values.bind && values.advertise)
    throw new InputError(
      '--bind and --advertise: use one (--listen PUBLIC --bind LOCAL, or --listen LOCAL --advertise PUBLIC[:PORT])',
    );
  if (stats === 0) throw new InputError('--stats-interval 0: use seconds, 1 or more');
  const offload = values['tun-offload'];
  if (offload !== undefined && offload !== 'auto' && offload !== 'off')
    throw new InputError(`--tun-offload ${offload}: use auto or off`);
  const xdp = values['fast-path-xdp'];
  if (xdp !== undefined && xdp !== 'auto' && xdp !== 'off')
    throw new InputError(`--fast-path-xdp ${xdp}: use auto or off`);
  const cfg = routerConfig({
    prefix: values.prefix ?? '',
    listen: values.listen ?? '',
    routes: values.route ?? [],
    ...(values.bind ? { bind: values.bind } : {}),
    ...(values.advertise ? { advertise: values.advertise } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(batch !== undefined ? { batch } : {}),
    ...(workers !== undefined ? { workers } : {}),
    ...(values.tun ? { tun: values.tun } : {}),
    ...(values.metrics ? { metrics: values.metrics } : {}),
    ...(stats !== undefined ? { statsIntervalMs: stats * 1000 } : {}),
    ...(values['refuse-private'] ? { refusePrivate: true } : {}),
    ...(sockets !== undefined ? { sockets } : {}),
    ...(values['fast-path'] !== undefined ? { fastPath: values['fast-path'] } : {}),
    ...(values['fast-path-direct'] ? { fastPathDirect: true } : {}),
    ...(xdp === 'auto' ? { fastPathXdp: true } : {}),
    ...(offload === 'off' ? { tunOffload: false } : {}),
    ...(values['ndp-proxy']
      ? { ndpProxy: { uplink: values['ndp-proxy'], mode: values['ndp-proxy-mode'] ?? 'Always' } }
      : {}),
  });
  if (values['ndp-proxy-mode'] && !values['ndp-proxy'])
    throw new InputError('--ndp-proxy-mode needs --ndp-proxy UPLINK');
  return runUntilSignal(() => startRouter(cfg, log));
}

async function peerCommand(args: string[]): Promise<number> {
  const { values } = parseFlags('peer', args, {
    ...COMMON_OPTIONS,
    router: { type: 'string' },
    listen: { type: 'string' },
    lanip: { type: 'string' },
    tun: { type: 'string' },
    'default-route': { type: 'boolean' },
    keepalive: { type: 'string' },
    port: { type: 'string' },
    hook: { type: 'string' },
    'hook-timeout': { type: 'string' },
    'no-direct': { type: 'boolean' },
    lan: { type: 'string' },
    'tun-offload': { type: 'string' },
  });
  if (values.help) {
    process.stdout.write(commandHelp('peer', PEER_HELP));
    return 0;
  }
  await requireNativeAddon();
  const log = commandLogger(values, 'peer');
  const lanip = int(values.lanip, '--lanip'),
    port = int(values.port, '--port');
  const keepalive = values.keepalive === undefined ? undefined : Number(values.keepalive);
  const hookTimeout = values['hook-timeout'] === undefined ? undefined : Number(values['hook-timeout']);
  const offload = values['tun-offload'];
  if (offload !== undefined && offload !== 'auto' && offload !== 'off')
    throw new InputError(`--tun-offload ${offload}: use auto or off`);
  const cfg = peerConfig({
    router: values.router ?? '',
    defaultRoute: !!values['default-route'],
    ...(values.listen ? { listen: values.listen } : {}),
    ...(lanip !== undefined ? { lanip } : {}),
    ...(values.tun ? { tun: values.tun } : {}),
    ...(keepalive !== undefined ? { keepalive } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(values.hook !== undefined ? { hook: values.hook } : {}),
    ...(hookTimeout !== undefined ? { hookTimeout } : {}),
    ...(values['no-direct'] ? { direct: false } : {}),
    ...(values.lan !== undefined ? { lan: values.lan } : {}),
    ...(offload === 'off' ? { tunOffload: false } : {}),
  });
  return runUntilSignal(
    () => startPeer(cfg, log),
    (peer) => {
      // Under systemd (sixbed4-peer@.service, Type=notify): ready once the router gave us an address.
      if (process.env.NOTIFY_SOCKET) {
        void peer.ready.then(async (address) =>
          (await import('../agent/service/notify.js')).sdNotify(
            { READY: 1, STATUS: `address ${address}`, MAINPID: process.pid },
            log,
          ),
        );
      }
    },
  );
}

async function labCommand(args: string[]): Promise<number> {
  const { values } = parseFlags('lab', args, {
    ...COMMON_OPTIONS,
    keep: { type: 'string' },
    'fast-path': { type: 'boolean' },
  });
  if (values.help) {
    process.stdout.write(commandHelp('lab', LAB_HELP));
    return 0;
  }
  await requireNativeAddon();
  const log = commandLogger(values, 'lab');
  const { runLab } = await import('../lab/lab.js');
  return runLab({ keepSeconds: int(values.keep, '--keep') ?? 0, fastPath: values['fast-path'] === true }, log);
}

// A failure noted on the way (process.exitCode set before a clean stop) is not overwritten by that stop's 0.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code || process.exitCode || 0;
  },
  (err: Error) => {
    if (err instanceof InputError) {
      process.stderr.write(`sixbed4: ${err.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`sixbed4: ${err.message}\n`);
      if (process.env.SIXBED4_DEBUG) process.stderr.write(`${err.stack}\n`);
      process.exitCode = 1;
    }
  },
);
