// The pure half of the slices' inbound policy: the sixbed4.io/allow-inbound
// parser, the nftables renderer (stable, open slices skipped, names checked)
// and reading a live table back from `nft -j` output. No kernel, no root.
import test from 'ava';
import fc from 'fast-check';
import { CommandError } from '../../agent/host/command.js';
import { InputError } from '../../lib/errors.js';
import {
  compareInbound,
  ESSENTIAL_ICMPV6,
  filteredInterfaces,
  formatRules,
  normalizeRules,
  parseAllowInbound,
  readInbound,
  renderInbound,
  renderInboundRemoval,
  type InboundEntry,
  type PortRule,
} from '../../agent/slices/inbound.js';
import { applyInbound } from '../../agent/slices/inbound-apply.js';
import { parseSlice } from '../../agent/slices/slice.js';

const A = parseSlice('2001:db8:9:10:1:1::/112');
const B = parseSlice('2001:db8:9:10:1:2::/112');
const C = parseSlice('2001:db8:9:10:1:3::/112');
const tcp = (first: number, last = first): PortRule => ({ proto: 'tcp', first, last });
const udp = (first: number, last = first): PortRule => ({ proto: 'udp', first, last });
const entry = (s: typeof A, mode: InboundEntry['mode'], rules: PortRule[] = []): InboundEntry => ({
  hostIf: s.hostIf,
  slice: s.text,
  mode,
  rules,
});

// ---------------------------------------------------------------------------
// The annotation

test('parse: the usual forms, commas and/or spaces, ranges, any case', (t) => {
  t.deepEqual(parseAllowInbound('tcp/443, udp/5353'), { rules: [tcp(443), udp(5353)], problems: [] });
  t.deepEqual(parseAllowInbound('tcp/8000-8080'), { rules: [tcp(8000, 8080)], problems: [] });
  t.deepEqual(parseAllowInbound('  udp/53 ,, tcp/443\n\tsctp/9  tcp / 8000 - 8080 , TCP/22'), {
    rules: [tcp(22), tcp(443), tcp(8000, 8080), udp(53), { proto: 'sctp', first: 9, last: 9 }],
    problems: [],
  });
  t.deepEqual(parseAllowInbound('tcp/1, tcp/65535, udp/1-65535'), {
    rules: [tcp(1), tcp(65535), udp(1, 65535)],
    problems: [],
  });
  t.deepEqual(parseAllowInbound('tcp/7-7'), { rules: [tcp(7)], problems: [] }, 'a one-port range is a port');
});

test('parse: empty and blank give nothing and no problem', (t) => {
  for (const text of ['', '   ', ',', ' , ,\n'])
    t.deepEqual(parseAllowInbound(text), { rules: [], problems: [] }, JSON.stringify(text));
});

test('parse: each unusable item is a problem a person can act on; the others still apply', (t) => {
  const cases: [string, string][] = [
    ['tcp/0', `'tcp/0': port 0 is not a port`],
    ['icmp/1', `'icmp/1': protocol must be tcp, udp or sctp`],
    ['tcp/65536', `'tcp/65536': port 65536 is not a port (1..65535)`],
    ['udp/1-70000', `'udp/1-70000': port 70000 is not a port (1..65535)`],
    ['tcp/0-80', `'tcp/0-80': port 0 is not a port`],
    ['tcp/9000-8000', `'tcp/9000-8000': the range runs backwards (write tcp/8000-9000)`],
    ['tcp', `'tcp': no port (e.g. tcp/443)`],
    ['tcp/', `'tcp/': no port (e.g. tcp/443)`],
    ['443', `'443': no protocol (e.g. tcp/443)`],
    ['tcp/https', `'tcp/https': 'https' is not a port number or range (1..65535, e.g. tcp/443 or tcp/8000-8080)`],
    ['tcp/-5', `'tcp/-5': '-5' is not a port number or range (1..65535, e.g. tcp/443 or tcp/8000-8080)`],
    ['everything', `'everything': not of the form protocol/port or protocol/first-last (e.g. tcp/443, udp/8000-8080)`],
  ];
  for (const [item, problem] of cases) {
    t.deepEqual(
      parseAllowInbound(`tcp/443, ${item}, udp/53`),
      { rules: [tcp(443), udp(53)], problems: [problem] },
      item,
    );
  }
  const long = parseAllowInbound(`tcp/${'9'.repeat(300)}`);
  t.is(long.problems.length, 1);
  t.true(long.problems[0]!.length < 120, `a long item is shortened: ${long.problems[0]}`);
});

test('parse: duplicates, overlaps and neighbours merge per protocol, silently', (t) => {
  t.deepEqual(parseAllowInbound('tcp/443, tcp/443, TCP/443'), { rules: [tcp(443)], problems: [] });
  t.deepEqual(parseAllowInbound('tcp/440-445, tcp/443, tcp/446, tcp/444-450, tcp/452'), {
    rules: [tcp(440, 450), tcp(452)],
    problems: [],
  });
  t.deepEqual(parseAllowInbound('tcp/53, udp/53'), { rules: [tcp(53), udp(53)], problems: [] }, 'not across protocols');
});

test('parse: a flood of bad items gives ten problems and a count', (t) => {
  const r = parseAllowInbound(Array.from({ length: 15 }, (_, i) => `icmp/${i + 1}`).join(','));
  t.is(r.problems.length, 11);
  t.is(r.problems[10], '... and 5 more item(s) that cannot be used');
});

test('parse: never throws, and what it returns is valid, sorted and merged (property)', (t) => {
  const item = fc.oneof(
    fc.string(),
    fc
      .tuple(
        fc.constantFrom('tcp', 'udp', 'sctp', 'TCP', 'icmp', ''),
        fc.integer({ min: -5, max: 70000 }),
        fc.option(fc.integer({ min: 0, max: 70000 })),
      )
      .map(([p, a, b]) => `${p}/${a}${b === null ? '' : `-${b}`}`),
  );
  fc.assert(
    fc.property(fc.array(item, { maxLength: 12 }), fc.constantFrom(', ', ' ', ',', ' ,\n'), (items, sep) => {
      const r = parseAllowInbound(items.join(sep));
      t.deepEqual(normalizeRules(r.rules), r.rules); // valid (or normalizeRules throws), sorted and merged already
      for (let i = 1; i < r.rules.length; i++) {
        const [p, q] = [r.rules[i - 1]!, r.rules[i]!];
        if (p.proto === q.proto) t.true(q.first > p.last + 1, 'no overlap or neighbour left unmerged');
      }
    }),
  );
});

test('formatRules spells rules the way the annotation does; normalizeRules refuses what is not a rule', (t) => {
  t.is(formatRules(parseAllowInbound('udp/53 tcp/8000-8080 tcp/443').rules), 'tcp/443, tcp/8000-8080, udp/53');
  t.is(formatRules([]), '');
  for (const bad of [
    tcp(0),
    tcp(1, 65536),
    tcp(9, 8),
    { proto: 'icmp', first: 1, last: 1 },
    { proto: 'tcp', first: 1.5, last: 2 },
  ]) {
    t.throws(() => normalizeRules([bad as PortRule]), { instanceOf: InputError }, JSON.stringify(bad));
  }
});

// ---------------------------------------------------------------------------
// The table

test('render: the table for one filtered slice, exactly', (t) => {
  t.is(
    renderInbound([entry(A, 'filtered', parseAllowInbound('udp/5353, tcp/8000-8080, tcp/443, sctp/9').rules)]),
    [
      `# sixbed4: inbound policy of this node's slices (generated; the table is replaced as a whole)`,
      'table ip6 sixbed4_slices {}',
      'delete table ip6 sixbed4_slices',
      'table ip6 sixbed4_slices {',
      '\tchain forward {',
      '\t\ttype filter hook forward priority filter; policy accept;',
      '\t\toifname vmap {',
      `\t\t\t"${A.hostIf}" : jump slice_${A.hostIf}`,
      '\t\t}',
      '\t}',
      '',
      `\tchain slice_${A.hostIf} {`,
      '\t\t# 2001:db8:9:10:1:1::/112: open tcp/443, tcp/8000-8080, udp/5353, sctp/9',
      '\t\tct state established,related accept',
      '\t\tct state invalid drop',
      '\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, echo-reply } accept',
      '\t\ttcp dport { 443, 8000-8080 } accept',
      '\t\tudp dport 5353 accept',
      '\t\tsctp dport 9 accept',
      '\t\tmeta l4proto tcp reject with tcp reset',
      '\t\treject with icmpv6 admin-prohibited',
      '\t}',
      '}',
      '',
    ].join('\n'),
  );
  t.deepEqual([...ESSENTIAL_ICMPV6].sort(), [
    'destination-unreachable',
    'echo-reply',
    'echo-request',
    'packet-too-big',
    'parameter-problem',
    'time-exceeded',
  ]);
});

test('render: open slices get no chain; a filtered slice with no port opened still gets its ICMPv6 and rejects', (t) => {
  const s = renderInbound([entry(A, 'open', [tcp(22)]), entry(B, 'filtered'), entry(C, 'open')]);
  t.regex(s, new RegExp(`"${B.hostIf}" : jump slice_${B.hostIf}\n`));
  t.notRegex(s, new RegExp(A.hostIf));
  t.notRegex(s, new RegExp(C.hostIf));
  t.notRegex(s, /dport/, 'no port open');
  t.regex(s, /# 2001:db8:9:10:1:2::\/112: no port open\n/);
  t.regex(
    s,
    /icmpv6 type \{[^}]*\} accept\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject with icmpv6 admin-prohibited\n/,
  );
});

test('render: an empty list, or only open slices, removes the table', (t) => {
  const removal = renderInboundRemoval();
  t.is(
    removal,
    `# sixbed4: inbound policy of this node's slices (generated; the table is replaced as a whole)\ntable ip6 sixbed4_slices {}\ndelete table ip6 sixbed4_slices\n`,
  );
  t.is(renderInbound([]), removal);
  t.is(renderInbound([entry(A, 'open'), entry(B, 'open', [tcp(1)])]), removal);
});

test('render: stable whatever the order of entries, rules and spellings', (t) => {
  const one = renderInbound([
    entry(A, 'filtered', [tcp(443), udp(53)]),
    entry(B, 'filtered', [tcp(80)]),
    entry(C, 'open'),
  ]);
  const two = renderInbound([
    entry(C, 'open'),
    {
      hostIf: B.hostIf,
      slice: '2001:0db8:0009:0010:0001:0002:0000:0000/112',
      mode: 'filtered',
      rules: [tcp(80), tcp(80)],
    },
    entry(A, 'filtered', [udp(53), tcp(443)]),
  ]);
  t.is(one, two);
  t.true(one.indexOf(`"${B.hostIf}"`) > one.indexOf(`"${A.hostIf}"`) === B.hostIf > A.hostIf, 'sorted by link name');
  t.is(
    renderInbound([entry(A, 'filtered', [tcp(1)]), entry(A, 'filtered', [tcp(1)])]),
    renderInbound([entry(A, 'filtered', [tcp(1)])]),
    'an identical repeat is one',
  );
});

test('render: refuses link names that are not slice links, a link not of its slice, bad rules, one link with two policies', (t) => {
  const bad = (e: Partial<InboundEntry>, re: RegExp) =>
    t.throws(
      () => renderInbound([entry(B, 'filtered'), { ...entry(A, 'filtered'), ...e }]),
      { instanceOf: InputError, message: re },
      JSON.stringify(e),
    );
  bad({ hostIf: 'eth0' }, /'eth0' is not a sixbed4 slice link name/);
  bad({ hostIf: 's4"; flush ruleset' }, /is not a sixbed4 slice link name/);
  bad({ hostIf: `${A.hostIf}\n` }, /is not a sixbed4 slice link name/);
  bad({ hostIf: A.hostIf.toUpperCase() }, /is not a sixbed4 slice link name/);
  bad({ hostIf: `${A.hostIf}0` }, /is not a sixbed4 slice link name/);
  bad(
    { hostIf: C.hostIf },
    new RegExp(`${C.hostIf} is not the link of slice 2001:db8:9:10:1:1::/112 \\(that is ${A.hostIf}\\)`),
  );
  bad({ slice: '2001:db8:9:10:1:1::/120' }, /is a \/120; slices are \/112/);
  bad({ mode: 'closed' as InboundEntry['mode'] }, /inbound mode 'closed' is neither filtered nor open/);
  bad({ rules: [tcp(0)] }, /is not a protocol/);
  t.throws(() => renderInbound([entry(A, 'filtered', [tcp(1)]), entry(A, 'open')]), {
    instanceOf: InputError,
    message: /given twice with different policies/,
  });
  t.throws(() => renderInbound([entry(A, 'filtered', [tcp(1)]), entry(A, 'filtered', [tcp(2)])]), {
    instanceOf: InputError,
    message: /given twice/,
  });
});

test('parse then render is deterministic and independent of the order of items and slices (property)', (t) => {
  const item = fc
    .tuple(
      fc.constantFrom('tcp', 'udp', 'sctp', 'icmp'),
      fc.integer({ min: 0, max: 65536 }),
      fc.option(fc.integer({ min: 1, max: 65535 })),
    )
    .map(([p, a, b]) => `${p}/${a}${b === null ? '' : `-${b}`}`);
  const slices = [A, B, C];
  const policy = fc.record({
    mode: fc.constantFrom('filtered' as const, 'open' as const),
    items: fc.array(item, { maxLength: 8 }),
  });
  fc.assert(
    fc.property(
      fc.tuple(policy, policy, policy),
      fc.integer({ min: 0, max: 5 }),
      fc.integer(),
      (policies, perm, seed) => {
        const texts = policies.map((p) => p.items.join(', '));
        const entries = policies.map((p, i) => entry(slices[i]!, p.mode, parseAllowInbound(texts[i]!).rules));
        const script = renderInbound(entries);
        t.is(renderInbound(entries), script, 'the same input, the same text');
        // The slices in another order, each annotation's items shuffled.
        const order = [
          [0, 1, 2],
          [0, 2, 1],
          [1, 0, 2],
          [1, 2, 0],
          [2, 0, 1],
          [2, 1, 0],
        ][perm]!;
        const shuffled = order.map((i) => {
          const items = [...policies[i]!.items];
          for (let k = items.length - 1, s = seed; k > 0; k--, s = (s * 1103515245 + 12345) | 0) {
            const j = Math.abs(s) % (k + 1);
            [items[k], items[j]] = [items[j]!, items[k]!];
          }
          return entry(slices[i]!, policies[i]!.mode, parseAllowInbound(items.join(' ')).rules);
        });
        t.is(renderInbound(shuffled), script);
        t.is(
          script === renderInboundRemoval(),
          policies.every((p) => p.mode === 'open'),
        );
      },
    ),
  );
});

// ---------------------------------------------------------------------------
// Reading the live table back

/** What `nft -j list table ip6 sixbed4_slices` printed (nftables 1.0.6) for A (tcp/443, 8000-8080, udp/5353) and B (nothing open). */
function liveListing(a = A.hostIf, b = B.hostIf) {
  const rule = (chain: string, expr: unknown[]) => ({
    rule: { family: 'ip6', table: 'sixbed4_slices', chain, handle: 9, expr },
  });
  const ct = (right: unknown, verdict: string) => [
    { match: { op: 'in', left: { ct: { key: 'state' } }, right } },
    { [verdict]: null },
  ];
  const dport = (protocol: string, right: unknown) => [
    { match: { op: '==', left: { payload: { protocol, field: 'dport' } }, right } },
    { accept: null },
  ];
  const common = (chain: string) => [
    rule(chain, ct(['established', 'related'], 'accept')),
    rule(chain, ct('invalid', 'drop')),
    rule(chain, [
      {
        match: {
          op: '==',
          left: { payload: { protocol: 'icmpv6', field: 'type' } },
          right: { set: [...ESSENTIAL_ICMPV6] },
        },
      },
      { accept: null },
    ]),
  ];
  const rejects = (chain: string) => [
    rule(chain, [{ reject: { type: 'tcp reset' } }]),
    rule(chain, [{ reject: { type: 'icmpv6', expr: 'admin-prohibited' } }]),
  ];
  return {
    nftables: [
      { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
      { table: { family: 'ip6', name: 'sixbed4_slices', handle: 3 } },
      {
        chain: {
          family: 'ip6',
          table: 'sixbed4_slices',
          name: 'forward',
          handle: 1,
          type: 'filter',
          hook: 'forward',
          prio: 0,
          policy: 'accept',
        },
      },
      { chain: { family: 'ip6', table: 'sixbed4_slices', name: `slice_${a}`, handle: 2 } },
      { chain: { family: 'ip6', table: 'sixbed4_slices', name: `slice_${b}`, handle: 3 } },
      rule('forward', [
        {
          vmap: {
            key: { meta: { key: 'oifname' } },
            data: {
              set: [
                [a, { jump: { target: `slice_${a}` } }],
                [b, { jump: { target: `slice_${b}` } }],
              ],
            },
          },
        },
      ]),
      ...common(`slice_${a}`),
      rule(`slice_${a}`, dport('tcp', { set: [443, { range: [8000, 8080] }] })),
      rule(`slice_${a}`, dport('udp', 5353)),
      ...rejects(`slice_${a}`),
      ...common(`slice_${b}`),
      ...rejects(`slice_${b}`),
    ],
  };
}

test('readInbound: the filtered links and their ports, from nft -j output', (t) => {
  const live = readInbound(liveListing());
  t.true(live.present);
  t.deepEqual(live.oddities, []);
  t.deepEqual(
    live.filtered,
    [
      { hostIf: A.hostIf, rules: [tcp(443), tcp(8000, 8080), udp(5353)] },
      { hostIf: B.hostIf, rules: [] },
    ].sort((x, y) => (x.hostIf < y.hostIf ? -1 : 1)),
  );
  t.deepEqual(filteredInterfaces(liveListing()), [A.hostIf, B.hostIf].sort());
  t.deepEqual(
    compareInbound(
      [
        entry(A, 'filtered', parseAllowInbound('tcp/443 tcp/8000-8080 udp/5353').rules),
        entry(B, 'filtered'),
        entry(C, 'open'),
      ],
      live,
    ),
    [],
  );
});

test('readInbound: no table, another table, garbage read as not present', (t) => {
  for (const listing of [
    null,
    undefined,
    'text',
    {},
    { nftables: [] },
    { nftables: [{ table: { family: 'inet', name: 'sixbed4_slices' } }] },
  ]) {
    t.deepEqual(readInbound(listing), { present: false, filtered: [], oddities: [] }, JSON.stringify(listing));
  }
});

test('readInbound: a chain that no longer rejects does not filter; a missing chain is an oddity', (t) => {
  const listing = liveListing();
  // Someone deleted B's last rule (its ICMPv6 reject) and A's chain.
  const items = listing.nftables.filter((i) => {
    const r = (i as { rule?: { chain: string; expr: unknown[] } }).rule;
    const c = (i as { chain?: { name: string } }).chain;
    if (c?.name === `slice_${A.hostIf}` || r?.chain === `slice_${A.hostIf}`) return false;
    return !(r?.chain === `slice_${B.hostIf}` && JSON.stringify(r.expr).includes('admin-prohibited'));
  });
  // Without the ICMPv6 reject, B's chain still ends in the TCP reset: filtered. Drop that too.
  const noReject = items.filter((i) => !JSON.stringify(i).includes('tcp reset'));
  const live = readInbound({ nftables: noReject });
  t.deepEqual(live.filtered, []);
  t.true(
    live.oddities.some((o) => o.includes(`slice_${A.hostIf}, which is missing`)),
    live.oddities.join('; '),
  );
  t.true(
    live.oddities.some((o) => o.includes(`(${B.hostIf}) does not end in a reject or drop`)),
    live.oddities.join('; '),
  );
  const diff = compareInbound([entry(A, 'filtered'), entry(B, 'filtered')], live);
  t.true(diff.includes(`${A.hostIf} (${A.text}) should be filtered but is not`), diff.join('; '));
  t.true(diff.includes(`${B.hostIf} (${B.text}) should be filtered but is not`), diff.join('; '));
});

test('compareInbound: says in words how the live table differs', (t) => {
  const live = readInbound(liveListing());
  t.deepEqual(
    compareInbound([entry(A, 'filtered', [tcp(443)]), entry(B, 'open')], live),
    [
      `${A.hostIf} (${A.text}) opens tcp/443, tcp/8000-8080, udp/5353 instead of tcp/443`,
      `${B.hostIf} (${B.text}) should be open but is filtered`,
    ].sort(),
    'one sentence a link, in link order',
  );
  t.deepEqual(compareInbound([entry(A, 'filtered', [tcp(443), tcp(8000, 8080), udp(5353)])], live), [
    `${B.hostIf} is filtered, but no slice of this node has that link`,
  ]);
  t.deepEqual(compareInbound([entry(C, 'filtered')], readInbound(null)), [
    `${C.hostIf} (${C.text}) should be filtered but is not`,
  ]);
});

// ---------------------------------------------------------------------------
// The kernel side's checks that need no kernel

test('applyInbound: bad entries are refused before nft runs; a missing nft is a CommandError saying so', async (t) => {
  // /bin/false would fail any run: an InputError proves nft never ran.
  await t.throwsAsync(applyInbound([{ ...entry(A, 'filtered'), hostIf: 'eth0' }], { nft: '/bin/false' }), {
    instanceOf: InputError,
  });
  await t.throwsAsync(applyInbound([entry(A, 'filtered')], { nft: '/nonexistent/nft' }), {
    instanceOf: CommandError,
    message: /\/nonexistent\/nft/,
  });
  const err = await t.throwsAsync(applyInbound([], { nft: '/bin/false' }), { instanceOf: CommandError });
  t.is(err?.code, 1);
});
