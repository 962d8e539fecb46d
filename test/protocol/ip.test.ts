import test from 'ava';
import { formatIPv4, formatIPv6, inPrefix, parseIPv4, parseIPv6, parsePrefix, parsePrefix64 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';

test('prefix parsing: canonical text and bytes', (t) => {
  const p = parsePrefix64('2001:0db8:9:10:0::/64');
  t.is(p.text, '2001:db8:9:10::/64');
  t.is(p.length, 64);
  t.true(inPrefix(p, parseIPv6('2001:db8:9:10:c433:640a:f8e6:8001')));
  t.false(inPrefix(p, parseIPv6('2001:db8:9:11::1')));
});

test('prefix errors say what is wrong and what to do', (t) => {
  t.regex(
    t.throws(() => parsePrefix64('2001:db8:9::/48'), { instanceOf: InputError }).message,
    /is a \/48; a 6bed4 router serves exactly one \/64/,
  );
  t.regex(
    t.throws(() => parsePrefix64('2001:db8:9:10::11/64'), { instanceOf: InputError }).message,
    /host bits set after \/64; did you mean 2001:db8:9:10::\/64\?/,
  );
  t.regex(t.throws(() => parsePrefix64('2001:db8:9:10::'), { instanceOf: InputError }).message, /has no length/);
  t.regex(t.throws(() => parsePrefix64('2001:db8:9:10::/129'), { instanceOf: InputError }).message, /bad length/);
  t.regex(t.throws(() => parsePrefix64('198.51.100.0/24'), { instanceOf: InputError }).message, /not an IPv6 address/);
});

test('prefixes of other lengths mask correctly', (t) => {
  const p = parsePrefix('2001:db8:8000::/33');
  t.true(inPrefix(p, parseIPv6('2001:db8:ffff::1')));
  t.false(inPrefix(p, parseIPv6('2001:db8:7fff::1')));
  t.throws(() => parsePrefix('2001:db8:c000::/33'), { instanceOf: InputError });
});

test('IPv4 text forms', (t) => {
  t.is(parseIPv4('198.51.100.1'), 0xc6336401);
  t.is(formatIPv4(0xc6336401), '198.51.100.1');
  t.throws(() => parseIPv4('198.51.100'), { instanceOf: InputError });
  t.throws(() => parseIPv4('198.51.100.256'), { instanceOf: InputError });
  t.throws(() => parseIPv4('0xc6.1.1.1'), { instanceOf: InputError });
  t.is(formatIPv6(parseIPv6('2001:db8:0:0:1:0:0:1')), '2001:db8::1:0:0:1');
});
