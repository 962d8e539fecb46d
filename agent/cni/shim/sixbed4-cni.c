// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4-cni: the CNI plugin that container runtimes (containerd, CRI-O)
 * run for sixbed4.
 *
 * Nodes have no Node.js, and a CNI plugin must be an executable on the node,
 * so this small static program stands in for the sixbed4 agent (a
 * hostNetwork DaemonSet pod): it checks the request, forwards it over the
 * agent's Unix socket, and relays the agent's answer.  The agent does the
 * work (a pod's /112 slice).
 *
 * It decides a few things alone, so that a sixbed4 outage never blocks pods
 * that did not ask for a slice, nor pod deletion, nor the node:
 *   - VERSION is answered here;
 *   - chained after the pod network, for a pod whose annotations say it
 *     does not ask for a slice: ADD prints prevResult unchanged and CHECK
 *     succeeds, without the agent;
 *   - when the agent cannot be reached: DEL, GC and STATUS succeed (with a
 *     note on stderr); ADD/CHECK of a chained pod whose annotations the
 *     runtime did not pass fail open (prevResult passed through); ADD/CHECK
 *     of a pod that asks, or of a standalone attachment, fail with CNI code
 *     11 "try again later", which the kubelet retries.
 *
 * Protocol (one request per connection; the agent implements the other end):
 *   shim  -> {"version":1,"command":..,"containerId":..,"netns":..,"ifname":..,
 *             "args":..,"path":..,"config":<stdin, verbatim>}  then shutdown(SHUT_WR)
 *   agent -> "ok\n" or "error\n", then a JSON body up to EOF, which the shim
 *            prints unchanged (exit 0 for ok, 1 for error).
 *
 * CNI errors go to stdout as {"cniVersion","code","msg","details"} with exit
 * status 1; lines for people go to stderr, which runtimes log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

/* Network configurations are a few KiB; CNI sets no limit, so we do, and
 * refuse rather than truncate.  The agent's replies are CNI results and
 * errors, of the same order. */
#define MAX_CONFIG (1u << 20)
#define MAX_REPLY (1u << 20)
/* Each CNI_* variable: a container ID, a path, "K=V;..." pod arguments. */
#define MAX_ENV (64u << 10)
/* Kubernetes annotation keys are at most 253 + 1 + 63 bytes. */
#define MAX_ANNOTATION_KEY 512

/* Connecting to a live agent is immediate; waiting longer only delays the
 * fallbacks below.  ADD/CHECK/DEL leave the agent time for its own work on
 * the pod; STATUS and GC must not hold up the runtime. */
#define CONNECT_TIMEOUT_MS 2000
#define EXCHANGE_TIMEOUT_MS 90000
#define SHORT_EXCHANGE_TIMEOUT_MS 10000

#define DEFAULT_SOCKET "/run/sixbed4/cni.sock"
#define DEFAULT_POD_ANNOTATION "sixbed4.io/slice"
/* The capability under which containerd and CRI-O pass pod annotations in
 * runtimeConfig, when the plugin's config declares it in "capabilities". */
#define ANNOTATIONS_CAPABILITY "io.kubernetes.cri.pod-annotations"
#define LATEST_VERSION "1.1.0"

static const char *const SUPPORTED_VERSIONS[] = { "0.4.0", "1.0.0", "1.1.0" };

/* Well-known CNI error codes (CNI spec 1.1, "Error"). */
enum {
	CNI_ERR_INCOMPATIBLE_VERSION = 1,
	CNI_ERR_INVALID_ENV = 4,
	CNI_ERR_IO = 5,
	CNI_ERR_DECODE = 6,
	CNI_ERR_INVALID_CONFIG = 7,
	CNI_ERR_TRY_AGAIN_LATER = 11,
};

enum command { CMD_ADD, CMD_DEL, CMD_CHECK, CMD_GC, CMD_STATUS, CMD_VERSION };
static const char *const COMMAND_NAMES[] = { "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION" };

/* Whether the pod asks for a slice, from its annotations. */
enum wish {
	WISH_UNKNOWN,   /* the runtime passed no annotations */
	WISH_NO,        /* annotations passed, ours absent or not "true" */
	WISH_YES,       /* annotations passed, ours is "true" */
};

/* Everything about one invocation. */
struct invocation {
	enum command cmd;
	const char *version;          /* for replies: the config's, once known to be supported */
	struct json_span stdin_text;  /* the configuration as received */
	struct json_span config;      /* the top-level object inside it */
	struct json_span prev_result; /* p == NULL unless chained */
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char annotation_key[MAX_ANNOTATION_KEY + 1];
	enum wish wish;
	/* The CNI_* variables; "" when unset. */
	const char *container_id, *netns, *ifname, *args, *path;
};

/* ------------------------------------------------------------------------ */
/* Output */

static void note(const struct invocation *inv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One line on stderr, for people: runtimes pass a plugin's stderr on to their
 * own log (and libcni quotes it when a plugin fails without an error object). */
static void note(const struct invocation *inv, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	const char *cid = inv && inv->container_id && *inv->container_id ? inv->container_id : NULL;
	if (inv && cid)
		fprintf(stderr, "sixbed4-cni: %s %.12s: %s\n", COMMAND_NAMES[inv->cmd], cid, line);
	else if (inv)
		fprintf(stderr, "sixbed4-cni: %s: %s\n", COMMAND_NAMES[inv->cmd], line);
	else
		fprintf(stderr, "sixbed4-cni: %s\n", line);
}

/* Writes all of s[0..n) to fd, through partial writes and EINTR (and EAGAIN
 * when the caller gave a non-blocking descriptor: then it waits in poll). */
static bool write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				(void)poll(&pfd, 1, -1);
				continue;
			}
			return false;
		}
		s += w;
		n -= (size_t)w;
	}
	return true;
}

static int print_stdout(const struct invocation *inv, const char *s, size_t n)
{
	if (write_all(STDOUT_FILENO, s, n))
		return 0;
	note(inv, "cannot write the result to stdout: %s", strerror(errno));
	return 1;
}

static int fail(const struct invocation *inv, int code, const char *details, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Prints a CNI error object on stdout, logs it on stderr; returns the exit status (1). */
static int fail(const struct invocation *inv, int code, const char *details, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* msg may hold bytes from the environment or the config that are not
	 * UTF-8 (or a sequence cut by truncation); JSON output must be UTF-8. */
	if (!utf8_valid(msg, strlen(msg)))
		for (char *m = msg; *m; m++)
			if ((unsigned char)*m >= 0x80)
				*m = '?';
	const char *version = inv && inv->version ? inv->version : LATEST_VERSION;
	char code_text[16];
	snprintf(code_text, sizeof code_text, "%d", code);

	struct buf b;
	buf_init(&b, 16384);
	buf_puts(&b, "{\"cniVersion\":");
	buf_put_json_string(&b, version, strlen(version));
	buf_puts(&b, ",\"code\":");
	buf_puts(&b, code_text);
	buf_puts(&b, ",\"msg\":");
	buf_put_json_string(&b, msg, strlen(msg));
	if (details && *details && utf8_valid(details, strlen(details))) {
		buf_puts(&b, ",\"details\":");
		buf_put_json_string(&b, details, strlen(details));
	}
	buf_puts(&b, "}\n");
	if (details && *details)
		note(inv, "error %d: %s (%s)", code, msg, details);
	else
		note(inv, "error %d: %s", code, msg);
	if (!b.overflow)
		(void)print_stdout(inv, b.p, b.n);
	buf_free(&b);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Input */

static bool parse_command(const char *name, enum command *cmd)
{
	for (size_t i = 0; i < sizeof COMMAND_NAMES / sizeof *COMMAND_NAMES; i++) {
		if (strcmp(name, COMMAND_NAMES[i]) == 0) {
			*cmd = (enum command)i;
			return true;
		}
	}
	return false;
}

/* Reads all of stdin into buf (cap bytes); returns the length, -1 on a read
 * error (errno set), -2 when there is more than cap bytes. */
static ssize_t read_stdin(char *buf, size_t cap)
{
	size_t n = 0;
	for (;;) {
		/* Ask for one byte more than fits, to tell "exactly cap" from "too long". */
		char extra;
		char *dst = n < cap ? buf + n : &extra;
		size_t want = n < cap ? cap - n : 1;
		ssize_t r = read(STDIN_FILENO, dst, want);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EBADF) /* no stdin at all: the same as empty */
				return (ssize_t)n;
			return -1;
		}
		if (r == 0)
			return (ssize_t)n;
		if (n >= cap)
			return -2;
		n += (size_t)r;
	}
}

static const char *version_if_supported(struct json_span v)
{
	for (size_t i = 0; i < sizeof SUPPORTED_VERSIONS / sizeof *SUPPORTED_VERSIONS; i++)
		if (json_string_is(v, SUPPORTED_VERSIONS[i]))
			return SUPPORTED_VERSIONS[i];
	return NULL;
}

/* A CNI_* variable: "" when unset; 0 or a CNI error exit status. */
static int read_env(struct invocation *inv, const char *name, const char **out)
{
	const char *v = getenv(name);
	*out = v ? v : "";
	size_t n = strlen(*out);
	if (n > MAX_ENV)
		return fail(inv, CNI_ERR_INVALID_ENV, NULL, "%s is %zu bytes long; at most %u are accepted", name, n, MAX_ENV);
	if (!utf8_valid(*out, n))
		return fail(inv, CNI_ERR_INVALID_ENV, NULL, "%s is not valid UTF-8", name);
	return 0;
}

static int read_environment(struct invocation *inv)
{
	return read_env(inv, "CNI_CONTAINERID", &inv->container_id) ||
	       read_env(inv, "CNI_NETNS", &inv->netns) ||
	       read_env(inv, "CNI_IFNAME", &inv->ifname) ||
	       read_env(inv, "CNI_ARGS", &inv->args) ||
	       read_env(inv, "CNI_PATH", &inv->path);
}

/* What the spec requires of each command. */
static int check_environment(struct invocation *inv)
{
	const bool per_container = inv->cmd == CMD_ADD || inv->cmd == CMD_DEL || inv->cmd == CMD_CHECK;
	const bool in_netns = inv->cmd == CMD_ADD || inv->cmd == CMD_CHECK;
	if (per_container && !*inv->container_id)
		return fail(inv, CNI_ERR_INVALID_ENV, NULL, "CNI_CONTAINERID is not set (required for %s)", COMMAND_NAMES[inv->cmd]);
	if (in_netns && !*inv->netns)
		return fail(inv, CNI_ERR_INVALID_ENV, NULL, "CNI_NETNS is not set (required for %s)", COMMAND_NAMES[inv->cmd]);
	if (in_netns && !*inv->ifname)
		return fail(inv, CNI_ERR_INVALID_ENV, NULL, "CNI_IFNAME is not set (required for %s)", COMMAND_NAMES[inv->cmd]);
	return 0;
}

/* An optional string key of the config into out (default when absent); 0 or an exit status. */
static int config_string(struct invocation *inv, const char *key, const char *fallback, char *out, size_t cap)
{
	struct json_span v;
	if (!json_get(inv->config, key, &v)) {
		snprintf(out, cap, "%s", fallback);
		return 0;
	}
	ssize_t n = json_string(v, out, cap);
	if (n <= 0)
		return fail(inv, CNI_ERR_INVALID_CONFIG, NULL,
			    "\"%s\" must be a non-empty string of at most %zu bytes", key, cap - 1);
	return 0;
}

static int require_string(struct invocation *inv, const char *key)
{
	struct json_span v;
	if (!json_get(inv->config, key, &v) || json_kind(v) != JSON_STRING || v.n <= 2)
		return fail(inv, CNI_ERR_INVALID_CONFIG, NULL, "the network configuration has no \"%s\" string", key);
	return 0;
}

/* Reads whether the pod asks for a slice from runtimeConfig's pod annotations. */
static int read_wish(struct invocation *inv)
{
	struct json_span rc, annotations, value;
	inv->wish = WISH_UNKNOWN;
	if (!json_get(inv->config, "runtimeConfig", &rc) || json_kind(rc) == JSON_NULL)
		return 0;
	if (json_kind(rc) != JSON_OBJECT)
		return fail(inv, CNI_ERR_INVALID_CONFIG, NULL, "\"runtimeConfig\" must be an object");
	if (!json_get(rc, ANNOTATIONS_CAPABILITY, &annotations) || json_kind(annotations) == JSON_NULL)
		return 0;
	if (json_kind(annotations) != JSON_OBJECT)
		return fail(inv, CNI_ERR_INVALID_CONFIG, NULL,
			    "runtimeConfig[\"%s\"] must be an object of pod annotations", ANNOTATIONS_CAPABILITY);
	inv->wish = json_get(annotations, inv->annotation_key, &value) && json_string_is(value, "true") ? WISH_YES : WISH_NO;
	return 0;
}

/* Checks the configuration on stdin and fills inv from it; 0 or an exit status. */
static int read_config(struct invocation *inv)
{
	struct json_span v;
	if (!json_parse(inv->stdin_text, &inv->config) || json_kind(inv->config) != JSON_OBJECT)
		return fail(inv, CNI_ERR_DECODE, NULL, "the network configuration on stdin is not a JSON object");
	if (!json_get(inv->config, "cniVersion", &v) || json_kind(v) != JSON_STRING)
		return fail(inv, CNI_ERR_INVALID_CONFIG, NULL, "the network configuration has no \"cniVersion\" string");
	if (!(inv->version = version_if_supported(v))) {
		char asked[64];
		if (json_string(v, asked, sizeof asked) < 0)
			snprintf(asked, sizeof asked, "(unreadable)");
		return fail(inv, CNI_ERR_INCOMPATIBLE_VERSION, NULL,
			    "CNI version %s is not supported; sixbed4-cni supports 0.4.0, 1.0.0 and 1.1.0", asked);
	}
	int rc;
	if ((rc = require_string(inv, "name")) || (rc = require_string(inv, "type")) ||
	    (rc = config_string(inv, "agentSocket", DEFAULT_SOCKET, inv->socket_path, sizeof inv->socket_path)) ||
	    (rc = config_string(inv, "podAnnotation", DEFAULT_POD_ANNOTATION, inv->annotation_key, sizeof inv->annotation_key)))
		return rc;
	if (json_get(inv->config, "prevResult", &v) && json_kind(v) != JSON_NULL) {
		if (json_kind(v) != JSON_OBJECT)
			return fail(inv, CNI_ERR_INVALID_CONFIG, NULL, "\"prevResult\" must be an object");
		inv->prev_result = v;
	}
	return read_wish(inv);
}

/* ------------------------------------------------------------------------ */
/* The agent */

enum outcome {
	AGENT_REPLIED,     /* reply.ok and reply.body are set */
	AGENT_UNREACHABLE, /* no connection, or no answer in time, or the connection dropped */
	AGENT_MALFORMED,   /* it answered something that is not the protocol */
};

struct reply {
	bool ok;
	struct json_span body;
	char why[512]; /* for anything but AGENT_REPLIED */
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for `events` until deadline; false on timeout. */
static bool wait_fd(int fd, short events, long long deadline)
{
	for (;;) {
		long long left = deadline - now_ms();
		if (left <= 0)
			return false;
		struct pollfd pfd = { .fd = fd, .events = events };
		int r = poll(&pfd, 1, (int)left);
		if (r > 0)
			return true; /* ready, or an error/hangup that the next read/write reports */
		if (r < 0 && errno != EINTR)
			return false;
	}
}

static int connect_agent(const char *path, char *why, size_t why_cap)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, why_cap, "socket: %s", strerror(errno));
		return -1;
	}
	/* A blocking connect on a Unix socket waits while the listener's backlog
	 * is full; SO_SNDTIMEO bounds that wait (the kernel returns EAGAIN). */
	struct timeval tv = { .tv_sec = CONNECT_TIMEOUT_MS / 1000, .tv_usec = CONNECT_TIMEOUT_MS % 1000 * 1000 };
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1); /* length checked when the config was read */
	int r;
	do
		r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno != EISCONN) {
		if (errno == EAGAIN)
			snprintf(why, why_cap, "no connection within %d s (the agent is not accepting)", CONNECT_TIMEOUT_MS / 1000);
		else
			snprintf(why, why_cap, "%s", strerror(errno));
		close(fd);
		return -1;
	}
	/* From here on every wait is a poll with the exchange's deadline. */
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* The request: one JSON object, the config embedded verbatim. */
static void build_request(const struct invocation *inv, struct buf *b)
{
	const char *fields[][2] = {
		{ "containerId", inv->container_id }, { "netns", inv->netns }, { "ifname", inv->ifname },
		{ "args", inv->args }, { "path", inv->path },
	};
	buf_puts(b, "{\"version\":1,\"command\":\"");
	buf_puts(b, COMMAND_NAMES[inv->cmd]);
	buf_puts(b, "\"");
	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
		buf_puts(b, ",\"");
		buf_puts(b, fields[i][0]);
		buf_puts(b, "\":");
		buf_put_json_string(b, fields[i][1], strlen(fields[i][1]));
	}
	buf_puts(b, ",\"config\":");
	buf_put(b, inv->stdin_text.p, inv->stdin_text.n);
	buf_puts(b, "}\n");
}

/* Sends the request; false (why set) when the agent went away or the deadline passed. */
static bool send_request(int fd, const struct buf *req, long long deadline, char *why, size_t why_cap)
{
	const char *p = req->p;
	size_t n = req->n;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w >= 0) {
			p += w;
			n -= (size_t)w;
		} else if (errno == EAGAIN) {
			if (!wait_fd(fd, POLLOUT, deadline)) {
				snprintf(why, why_cap, "the agent did not read the request within the time limit");
				return false;
			}
		} else if (errno != EINTR) {
			/* EPIPE (SIGPIPE is ignored) or ECONNRESET: the agent may still
			 * have answered before closing, so the caller reads anyway. */
			snprintf(why, why_cap, "sending the request: %s", strerror(errno));
			return false;
		}
	}
	(void)shutdown(fd, SHUT_WR); /* tells the agent the request is complete */
	return true;
}

enum received { RECEIVED, RECEIVE_TIMEOUT, RECEIVE_TOO_LARGE, RECEIVE_ERROR };

/* Reads the reply until EOF into b. */
static enum received read_reply(int fd, struct buf *b, long long deadline)
{
	char chunk[16384];
	for (;;) {
		ssize_t r = read(fd, chunk, sizeof chunk);
		if (r > 0) {
			buf_put(b, chunk, (size_t)r);
			if (b->overflow)
				return RECEIVE_TOO_LARGE;
		} else if (r == 0) {
			return RECEIVED;
		} else if (errno == EAGAIN) {
			if (!wait_fd(fd, POLLIN, deadline))
				return RECEIVE_TIMEOUT;
		} else if (errno != EINTR) {
			return RECEIVE_ERROR; /* ECONNRESET: the agent went away */
		}
	}
}

/* Splits "ok\n<body>" / "error\n<body>" and checks the body is what the runtime expects. */
static enum outcome parse_reply(const struct invocation *inv, const struct buf *b, struct reply *r)
{
	static const char OK[] = "ok\n", ERROR[] = "error\n";
	struct json_span body, value;
	if (b->n == 0) {
		snprintf(r->why, sizeof r->why, "the agent closed the connection without a reply");
		return AGENT_UNREACHABLE;
	}
	if (b->n >= sizeof OK - 1 && memcmp(b->p, OK, sizeof OK - 1) == 0) {
		r->ok = true;
		body = (struct json_span){ b->p + sizeof OK - 1, b->n - (sizeof OK - 1) };
	} else if (b->n >= sizeof ERROR - 1 && memcmp(b->p, ERROR, sizeof ERROR - 1) == 0) {
		r->ok = false;
		body = (struct json_span){ b->p + sizeof ERROR - 1, b->n - (sizeof ERROR - 1) };
	} else {
		snprintf(r->why, sizeof r->why, "the agent's reply does not start with \"ok\" or \"error\"");
		return AGENT_MALFORMED;
	}
	r->body = body;
	/* An ok for CHECK/DEL/GC/STATUS may be empty; an ADD result and an error
	 * are JSON objects, since the runtime parses them. */
	const bool empty = body.n == 0;
	if (empty && r->ok && inv->cmd != CMD_ADD)
		return AGENT_REPLIED;
	if (empty || !json_parse(body, &value) || json_kind(value) != JSON_OBJECT) {
		snprintf(r->why, sizeof r->why, "the agent's %s reply is not a JSON object", r->ok ? "ok" : "error");
		return AGENT_MALFORMED;
	}
	return AGENT_REPLIED;
}

/* One request, one reply.  b holds the reply's bytes (r->body points into it). */
static enum outcome ask_agent(const struct invocation *inv, struct buf *b, struct reply *r)
{
	const int limit_ms = inv->cmd == CMD_GC || inv->cmd == CMD_STATUS ? SHORT_EXCHANGE_TIMEOUT_MS : EXCHANGE_TIMEOUT_MS;
	const long long deadline = now_ms() + limit_ms;
	char why[256];
	int fd = connect_agent(inv->socket_path, why, sizeof why);
	if (fd < 0) {
		snprintf(r->why, sizeof r->why, "cannot connect to %s: %s", inv->socket_path, why);
		return AGENT_UNREACHABLE;
	}
	struct buf req;
	/* Cannot overflow: the cap covers the config and five escaped variables
	 * (at most 6 bytes out per byte in); checked all the same. */
	buf_init(&req, MAX_CONFIG + 5 * 6 * MAX_ENV + 1024);
	build_request(inv, &req);
	if (req.overflow)
		snprintf(why, sizeof why, "the request is too large");
	bool sent = !req.overflow && send_request(fd, &req, deadline, why, sizeof why);
	buf_free(&req);
	enum received got = read_reply(fd, b, deadline);
	close(fd);
	switch (got) {
	case RECEIVE_TOO_LARGE:
		snprintf(r->why, sizeof r->why, "the reply from %s is larger than %u bytes", inv->socket_path, MAX_REPLY);
		return AGENT_MALFORMED;
	case RECEIVE_TIMEOUT:
		snprintf(r->why, sizeof r->why, "no complete reply from %s within %d s", inv->socket_path, limit_ms / 1000);
		return AGENT_UNREACHABLE;
	case RECEIVE_ERROR:
		snprintf(r->why, sizeof r->why, "reading the reply from %s: %s", inv->socket_path, strerror(errno));
		return AGENT_UNREACHABLE;
	case RECEIVED:
		break;
	}
	enum outcome o = parse_reply(inv, b, r);
	if (o == AGENT_UNREACHABLE && !sent) /* closed without a reply: say why the request did not get through */
		snprintf(r->why, sizeof r->why, "%s: %s", inv->socket_path, why);
	return o;
}

/* ------------------------------------------------------------------------ */
/* Decisions */

static int print_version(struct json_span text)
{
	/* Answered even for a configuration we could not use: VERSION is how
	 * runtimes find out what we support, and they may send a newer cniVersion. */
	struct json_span config, v;
	const char *version = LATEST_VERSION;
	if (json_parse(text, &config) && json_get(config, "cniVersion", &v) && version_if_supported(v))
		version = version_if_supported(v);
	char out[256];
	int n = snprintf(out, sizeof out, "{\"cniVersion\":\"%s\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n", version);
	return print_stdout(NULL, out, (size_t)n);
}

static int pass_through(const struct invocation *inv)
{
	return print_stdout(inv, inv->prev_result.p, inv->prev_result.n);
}

/* What to do when the agent gave no usable answer. */
static int without_agent(const struct invocation *inv, enum outcome o, const char *why)
{
	switch (inv->cmd) {
	case CMD_DEL:
	case CMD_GC:
		/* Never block pod deletion: the agent cleans up when it is back. */
		note(inv, "the sixbed4 agent did not answer (%s); nothing done here, the agent cleans up when it runs again", why);
		return 0;
	case CMD_STATUS:
		/* A failing STATUS stops every pod on the node; a chained add-on must never cause that. */
		note(inv, "the sixbed4 agent did not answer (%s); reporting ready so other pods are not held up", why);
		return 0;
	default:
		break;
	}
	if (o == AGENT_MALFORMED)
		return fail(inv, CNI_ERR_IO, why, "the sixbed4 agent's reply could not be used");
	if (inv->prev_result.p && inv->wish == WISH_UNKNOWN) {
		/* Fail open: the runtime passed no pod annotations, so we cannot tell
		 * whether this pod wants a slice; other pods are never blocked, and
		 * the agent's repair pass delivers the slice later if it does. */
		note(inv, "the sixbed4 agent did not answer (%s) and the runtime passed no pod annotations "
			   "(declare the \"%s\" capability): passing the previous result through",
		      why, ANNOTATIONS_CAPABILITY);
		return inv->cmd == CMD_ADD ? pass_through(inv) : 0;
	}
	return fail(inv, CNI_ERR_TRY_AGAIN_LATER, why,
		    "the sixbed4 agent on this node is not running (no answer on %s); try again later", inv->socket_path);
}

int main(void)
{
	/* A vanished agent must show up as EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);

	struct invocation inv = { 0 };
	const char *name = getenv("CNI_COMMAND");
	if (!name || !*name)
		return fail(NULL, CNI_ERR_INVALID_ENV, NULL,
			    "CNI_COMMAND is not set: sixbed4-cni is a CNI plugin, run by the container runtime");
	if (!parse_command(name, &inv.cmd)) {
		/* name comes from the environment: keep the message short and printable. */
		return fail(NULL, CNI_ERR_INVALID_ENV, NULL,
			    "unknown CNI_COMMAND %.32s (expected ADD, DEL, CHECK, GC, STATUS or VERSION)", name);
	}

	static char input[MAX_CONFIG];
	ssize_t n = read_stdin(input, sizeof input);
	if (n == -1)
		return fail(&inv, CNI_ERR_IO, strerror(errno), "cannot read the network configuration from stdin");
	if (n == -2)
		return fail(&inv, CNI_ERR_DECODE, NULL, "the network configuration is larger than %u bytes", MAX_CONFIG);
	inv.stdin_text = (struct json_span){ input, (size_t)n };

	if (inv.cmd == CMD_VERSION)
		return print_version(inv.stdin_text);

	/* The environment first, so that log lines carry the container ID. */
	int rc;
	if ((rc = read_environment(&inv)) || (rc = read_config(&inv)) || (rc = check_environment(&inv)))
		return rc;

	/* Chained after the pod network and the pod did not ask: nothing for us. */
	if (inv.prev_result.p && inv.wish == WISH_NO) {
		if (inv.cmd == CMD_ADD)
			return pass_through(&inv);
		if (inv.cmd == CMD_CHECK)
			return 0;
	}

	struct buf reply;
	struct reply r = { 0 };
	buf_init(&reply, MAX_REPLY + sizeof "error\n");
	enum outcome o = ask_agent(&inv, &reply, &r);
	if (o == AGENT_REPLIED)
		rc = print_stdout(&inv, r.body.p, r.body.n) || !r.ok;
	else
		rc = without_agent(&inv, o, r.why);
	buf_free(&reply);
	return rc;
}
