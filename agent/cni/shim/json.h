// SPDX-License-Identifier: BSD-2-Clause
/*
 * A small JSON scanner and writer for sixbed4-cni.
 *
 * The shim needs very little of JSON: check that the network configuration
 * is one well-formed value, find a handful of top-level keys, read a few
 * string values, and write escaped strings into the request it sends to the
 * agent.  So no tree is built: a value is a span of the input, and spans the
 * shim forwards (the whole configuration, prevResult) are copied byte for
 * byte, never re-encoded.  Everything is bounded: nesting depth, buffer
 * sizes; nothing here allocates except the output buffer, which has a cap.
 */
#ifndef SIXBED4_CNI_JSON_H
#define SIXBED4_CNI_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A slice of the input text; p == NULL means "absent". */
struct json_span {
	const char *p;
	size_t n;
};

enum json_kind { JSON_INVALID, JSON_OBJECT, JSON_ARRAY, JSON_STRING, JSON_NUMBER, JSON_TRUE, JSON_FALSE, JSON_NULL };

/* Deeper nesting is refused: the validator recurses, and a hostile input must
 * not be able to exhaust the stack.  Real CNI configurations nest < 10 deep. */
#define JSON_MAX_DEPTH 128

/* True when `text` is exactly one JSON value with optional whitespace around
 * it (RFC 8259 grammar); *value is then that value without the whitespace. */
bool json_parse(struct json_span text, struct json_span *value);

/* The kind of a value found by json_parse or json_get (from its first byte). */
enum json_kind json_kind(struct json_span value);

/* Looks up `key` among the members of `object`, which must be a value that
 * json_parse accepted (or part of one).  When the key appears more than once
 * the last one wins, as with Go's encoding/json, which libcni and the
 * reference plugins use.  Returns false when absent or `object` is not an object. */
bool json_get(struct json_span object, const char *key, struct json_span *value);

/* Decodes a JSON string value into out (NUL-terminated, UTF-8).  Returns its
 * length, or -1 when the value is not a string, does not fit in cap bytes
 * (NUL included), or contains \u0000 (which a C string cannot carry). */
ssize_t json_string(struct json_span value, char *out, size_t cap);

/* True when the value is a string equal to s. */
bool json_string_is(struct json_span value, const char *s);

/* True when s[0..n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool utf8_valid(const char *s, size_t n);

/* A growable output buffer with a hard cap.  Appends past the cap set
 * `overflow` and are dropped, so callers check once at the end. */
struct buf {
	char *p;
	size_t n, cap, max;
	bool overflow;
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_put(struct buf *b, const void *s, size_t n);
void buf_puts(struct buf *b, const char *s);
/* Appends s[0..n) as a JSON string literal, quotes included.  s must be
 * valid UTF-8 (see utf8_valid); control characters are escaped. */
void buf_put_json_string(struct buf *b, const char *s, size_t n);

#endif
