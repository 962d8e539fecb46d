// SPDX-License-Identifier: BSD-2-Clause
/*
 * JSON scanning and writing for sixbed4-cni; see json.h for why it is this small.
 */
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* p at the opening quote; returns the byte after the closing quote, or NULL. */
static const char *scan_string(const char *p, const char *end)
{
	p++;
	while (p < end) {
		unsigned char c = (unsigned char)*p++;
		if (c == '"')
			return p;
		if (c < 0x20)
			return NULL; /* raw control characters are not allowed in JSON strings */
		if (c != '\\')
			continue;
		if (p >= end)
			return NULL;
		switch (*p++) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
			break;
		case 'u':
			for (int i = 0; i < 4; i++, p++)
				if (p >= end || hex_value(*p) < 0)
					return NULL;
			break;
		default:
			return NULL;
		}
	}
	return NULL;
}

static const char *scan_digits(const char *p, const char *end)
{
	const char *start = p;
	while (p < end && *p >= '0' && *p <= '9')
		p++;
	return p == start ? NULL : p;
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static const char *scan_number(const char *p, const char *end)
{
	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (!(p = scan_digits(p, end)))
		return NULL;
	if (p < end && *p == '.' && !(p = scan_digits(p + 1, end)))
		return NULL;
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!(p = scan_digits(p, end)))
			return NULL;
	}
	return p;
}

static const char *scan_literal(const char *p, const char *end, const char *word)
{
	size_t n = strlen(word);
	return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

static const char *scan_value(const char *p, const char *end, int depth);

/* p at '{' or '['; returns the byte after the matching close, or NULL. */
static const char *scan_container(const char *p, const char *end, int depth)
{
	const char close = *p == '{' ? '}' : ']';
	const bool object = close == '}';
	p = skip_ws(p + 1, end);
	if (p < end && *p == close)
		return p + 1;
	for (;;) {
		if (object) {
			if (p >= end || *p != '"' || !(p = scan_string(p, end)))
				return NULL;
			p = skip_ws(p, end);
			if (p >= end || *p != ':')
				return NULL;
			p = skip_ws(p + 1, end);
		}
		if (!(p = scan_value(p, end, depth + 1)))
			return NULL;
		p = skip_ws(p, end);
		if (p >= end)
			return NULL;
		if (*p == close)
			return p + 1;
		if (*p != ',')
			return NULL;
		p = skip_ws(p + 1, end);
	}
}

/* p at the first byte of a value (no leading whitespace); returns the byte after it, or NULL. */
static const char *scan_value(const char *p, const char *end, int depth)
{
	if (p >= end || depth > JSON_MAX_DEPTH)
		return NULL;
	switch (*p) {
	case '{': case '[':
		return scan_container(p, end, depth);
	case '"':
		return scan_string(p, end);
	case 't':
		return scan_literal(p, end, "true");
	case 'f':
		return scan_literal(p, end, "false");
	case 'n':
		return scan_literal(p, end, "null");
	default:
		return scan_number(p, end);
	}
}

bool json_parse(struct json_span text, struct json_span *value)
{
	const char *end = text.p + text.n;
	const char *start = skip_ws(text.p, end);
	const char *stop = scan_value(start, end, 0);
	if (!stop || skip_ws(stop, end) != end)
		return false;
	value->p = start;
	value->n = (size_t)(stop - start);
	return true;
}

enum json_kind json_kind(struct json_span v)
{
	if (!v.p || v.n == 0)
		return JSON_INVALID;
	switch (v.p[0]) {
	case '{': return JSON_OBJECT;
	case '[': return JSON_ARRAY;
	case '"': return JSON_STRING;
	case 't': return JSON_TRUE;
	case 'f': return JSON_FALSE;
	case 'n': return JSON_NULL;
	default: return JSON_NUMBER;
	}
}

static void put_utf8(char *out, size_t *n, uint32_t cp)
{
	if (cp < 0x80) {
		out[(*n)++] = (char)cp;
	} else if (cp < 0x800) {
		out[(*n)++] = (char)(0xC0 | cp >> 6);
		out[(*n)++] = (char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		out[(*n)++] = (char)(0xE0 | cp >> 12);
		out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
		out[(*n)++] = (char)(0x80 | (cp & 0x3F));
	} else {
		out[(*n)++] = (char)(0xF0 | cp >> 18);
		out[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3F));
		out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
		out[(*n)++] = (char)(0x80 | (cp & 0x3F));
	}
}

static uint32_t read_hex4(const char *p)
{
	return (uint32_t)(hex_value(p[0]) << 12 | hex_value(p[1]) << 8 | hex_value(p[2]) << 4 | hex_value(p[3]));
}

ssize_t json_string(struct json_span v, char *out, size_t cap)
{
	if (json_kind(v) != JSON_STRING || v.n < 2 || cap == 0)
		return -1;
	/* Only values json_parse accepted get here, so escapes are well-formed. */
	const char *p = v.p + 1, *end = v.p + v.n - 1;
	size_t n = 0;
	while (p < end) {
		if (*p != '\\') {
			if (cap - n < 2) /* this byte and the NUL */
				return -1;
			out[n++] = *p++;
			continue;
		}
		if (cap - n < 5) /* the longest UTF-8 sequence and the NUL */
			return -1;
		p++;
		char c = *p++;
		switch (c) {
		case 'b': out[n++] = '\b'; break;
		case 'f': out[n++] = '\f'; break;
		case 'n': out[n++] = '\n'; break;
		case 'r': out[n++] = '\r'; break;
		case 't': out[n++] = '\t'; break;
		case 'u': {
			uint32_t cp = read_hex4(p);
			p += 4;
			if (cp == 0)
				return -1;
			if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
				uint32_t lo = read_hex4(p + 2);
				if (lo >= 0xDC00 && lo < 0xE000) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					p += 6;
				}
			}
			if (cp >= 0xD800 && cp < 0xE000)
				cp = 0xFFFD; /* a lone surrogate: replaced, as Go and JavaScript decoders do */
			put_utf8(out, &n, cp);
			break;
		}
		default: /* '"', '\\', '/' */
			out[n++] = c;
		}
	}
	out[n] = '\0';
	return (ssize_t)n;
}

bool json_string_is(struct json_span v, const char *s)
{
	char tmp[1024];
	size_t len = strlen(s);
	if (len >= sizeof tmp)
		return false;
	ssize_t n = json_string(v, tmp, sizeof tmp);
	return n >= 0 && (size_t)n == len && memcmp(tmp, s, len) == 0;
}

bool json_get(struct json_span object, const char *key, struct json_span *value)
{
	if (json_kind(object) != JSON_OBJECT)
		return false;
	const char *end = object.p + object.n;
	const char *p = skip_ws(object.p + 1, end);
	bool found = false;
	while (p < end && *p == '"') {
		struct json_span k = { p, 0 };
		p = scan_string(p, end);
		k.n = (size_t)(p - k.p);
		p = skip_ws(p, end);              /* at ':' */
		const char *v = skip_ws(p + 1, end);
		p = scan_value(v, end, 0);
		if (json_string_is(k, key)) {
			value->p = v;
			value->n = (size_t)(p - v);
			found = true;             /* keep going: the last duplicate wins */
		}
		p = skip_ws(p, end);              /* at ',' or '}' */
		if (*p != ',')
			break;
		p = skip_ws(p + 1, end);
	}
	return found;
}

bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		unsigned char c = *p++;
		if (c < 0x80)
			continue;
		int more;
		uint32_t cp, min;
		if ((c & 0xE0) == 0xC0) {
			more = 1, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			more = 2, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			more = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (end - p < more)
			return false;
		for (int i = 0; i < more; i++) {
			if ((p[i] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (p[i] & 0x3F);
		}
		p += more;
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
			return false;
	}
	return true;
}

void buf_init(struct buf *b, size_t max)
{
	*b = (struct buf){ .max = max };
}

void buf_free(struct buf *b)
{
	free(b->p);
	*b = (struct buf){ 0 };
}

void buf_put(struct buf *b, const void *s, size_t n)
{
	if (b->overflow)
		return;
	if (n > b->max - b->n) {
		b->overflow = true;
		return;
	}
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		if (cap > b->max)
			cap = b->max;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->overflow = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}

void buf_puts(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

void buf_put_json_string(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	buf_put(b, "\"", 1);
	size_t run = 0; /* bytes copied as they are, flushed in one go */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			run++;
			continue;
		}
		buf_put(b, s + i - run, run);
		run = 0;
		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };
			buf_put(b, esc, 2);
		} else {
			char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			buf_put(b, esc, 6);
		}
	}
	buf_put(b, s + n - run, run);
	buf_put(b, "\"", 1);
}
