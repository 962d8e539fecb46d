// SPDX-License-Identifier: BSD-2-Clause
/*
 * sixbed4 native I/O addon: readiness notification with uv_poll.
 *
 * Lifetime of a poll context (s4_poll) -- it is shared by three owners and
 * freed when the last one lets go:
 *   - the libuv handle: from uv_poll_init until its close callback;
 *   - the JS PollHandle object: from napi_wrap until its finalizer;
 *   - the environment: an async cleanup hook closes the handle when the
 *     main thread or a worker_thread shuts down, so the loop can be closed
 *     (an open handle there would abort the process in uv_loop_close).
 * While the poll is started, the PollHandle is strongly referenced so that
 * a running poll is never stopped behind the user's back by the GC.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* Consecutive error wake-ups after which we stop re-arming (see on_event). */
#define S4_MAX_ERROR_STREAK 64

#define S4_POLL_MAGIC 0x73347031u /* "s4p1": guards the private constructor */

typedef struct {
  uint32_t magic;
  uv_poll_t handle;
  napi_env env;
  napi_ref cb;   /* onReadable */
  napi_ref self; /* the PollHandle; strong while started */
  napi_async_context actx;
  napi_async_cleanup_hook_handle hook;
  unsigned error_streak;
  bool started;
  bool closing;      /* uv_close requested */
  bool closed;       /* uv close callback ran */
  bool wrapper_gone; /* PollHandle finalized */
} s4_poll;

static void on_event(uv_poll_t *handle, int status, int events);

static void set_started(s4_poll *p, bool on) {
  uint32_t rc;
  if (p->started == on) return;
  p->started = on;
  if (p->self == NULL) return;
  if (on)
    napi_reference_ref(p->env, p->self, &rc);
  else
    napi_reference_unref(p->env, p->self, &rc);
}

static void on_closed(uv_handle_t *h) {
  s4_poll *p = h->data;
  p->closed = true;
  /* Also tells Node that a shutdown waiting for this handle may proceed. */
  if (p->hook != NULL) napi_remove_async_cleanup_hook(p->hook);
  p->hook = NULL;
  if (p->wrapper_gone) free(p);
}

/* Releases the JS-side resources now and the libuv handle asynchronously. */
static void begin_close(s4_poll *p) {
  if (p->closing) return;
  uv_poll_stop(&p->handle);
  set_started(p, false);
  p->closing = true;
  if (p->cb != NULL) napi_delete_reference(p->env, p->cb);
  p->cb = NULL;
  if (p->actx != NULL) napi_async_destroy(p->env, p->actx);
  p->actx = NULL;
  uv_close((uv_handle_t *)&p->handle, on_closed);
}

static void on_env_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  /* If a close is already in flight, on_closed removes the hook. */
  begin_close(arg);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  s4_poll *p = data;
  (void)hint;
  p->wrapper_gone = true;
  if (p->self != NULL) napi_delete_reference(env, p->self);
  p->self = NULL;
  if (p->closed)
    free(p);
  else
    begin_close(p);
}

static void on_event(uv_poll_t *handle, int status, int events) {
  s4_poll *p = handle->data;
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_value fn, global;
  napi_status st;
  (void)events;

  if (p->closing) return;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, p->cb, &fn) == napi_ok &&
      napi_get_global(env, &global) == napi_ok) {
    /*
     * make_callback (not call_function): it runs the microtask and
     * nextTick queues afterwards, like any other I/O callback in Node.
     */
    st = napi_make_callback(env, p->actx, global, fn, 0, NULL, NULL);
    if (st == napi_pending_exception) {
      napi_value exc;
      /* Route it to process 'uncaughtException', as Node does for its own I/O. */
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok)
        napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);

  /*
   * On POLLERR libuv stops the watcher and reports status < 0. For a UDP
   * socket that is a transient pending error (e.g. an ICMP error), which
   * the reader has just consumed, so the poll is re-armed. An fd that stays
   * in error (e.g. a TUN device that was deleted) makes every read throw;
   * after a bounded streak of such wake-ups we stop re-arming rather than
   * spin forever. The reader has seen the errors by then.
   */
  if (status >= 0) {
    p->error_streak = 0;
  } else if (p->started && !p->closing) {
    if (++p->error_streak < S4_MAX_ERROR_STREAK &&
        uv_poll_start(&p->handle, UV_READABLE, on_event) == 0)
      return;
    set_started(p, false);
  }
}

static s4_poll *unwrap_this(napi_env env, napi_callback_info info) {
  napi_value self;
  void *data = NULL;
  size_t argc = 0;
  if (napi_get_cb_info(env, info, &argc, NULL, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, &data) != napi_ok || data == NULL ||
      ((s4_poll *)data)->magic != S4_POLL_MAGIC) {
    s4_throw_type(env, "not a PollHandle");
    return NULL;
  }
  return data;
}

static napi_value m_start(napi_env env, napi_callback_info info) {
  s4_poll *p = unwrap_this(env, info);
  int err;
  if (p == NULL) return NULL;
  if (p->closing) {
    napi_throw_error(env, "ERR_POLL_CLOSED", "poll handle is closed");
    return NULL;
  }
  if (p->started && uv_is_active((uv_handle_t *)&p->handle)) return NULL;
  err = uv_poll_start(&p->handle, UV_READABLE, on_event);
  if (err != 0) {
    s4_throw_errno(env, -err, "uv_poll_start");
    return NULL;
  }
  p->error_streak = 0;
  set_started(p, true);
  return NULL;
}

static napi_value m_stop(napi_env env, napi_callback_info info) {
  s4_poll *p = unwrap_this(env, info);
  if (p == NULL || p->closing) return NULL;
  uv_poll_stop(&p->handle);
  set_started(p, false);
  return NULL;
}

static napi_value m_close(napi_env env, napi_callback_info info) {
  s4_poll *p = unwrap_this(env, info);
  if (p != NULL) begin_close(p);
  return NULL;
}

/* Private constructor: only poll() can supply the external it expects. */
static napi_value ctor(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  napi_valuetype t;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL ||
      ((s4_poll *)data)->magic != S4_POLL_MAGIC) {
    s4_throw_type(env, "PollHandle cannot be constructed directly; use poll()");
    return NULL;
  }
  if (napi_wrap(env, self, data, on_finalize, NULL, NULL) != napi_ok) return NULL;
  /* From now on the finalizer, not on_closed, has the last word on p. */
  ((s4_poll *)data)->wrapper_gone = false;
  return self;
}

/* poll(fd, onReadable): PollHandle, already started */
static napi_value poll_fn(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  s4_instance *inst;
  napi_valuetype t;
  uv_loop_t *loop;
  s4_poll *p;
  napi_value ext, obj, ctor_v, name;
  int fd, err;

  if (s4_arg_fd(env, argv[0], &fd) != 0) return NULL;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
    s4_throw_type(env, "onReadable must be a function");
    return NULL;
  }
  if (napi_get_instance_data(env, (void **)&inst) != napi_ok || inst == NULL ||
      napi_get_reference_value(env, inst->poll_ctor, &ctor_v) != napi_ok ||
      napi_get_uv_event_loop(env, &loop) != napi_ok)
    return NULL;

  p = calloc(1, sizeof *p);
  if (p == NULL) {
    s4_throw_errno(env, ENOMEM, "poll");
    return NULL;
  }
  p->magic = S4_POLL_MAGIC;
  p->env = env;
  err = uv_poll_init(loop, &p->handle, fd);
  if (err != 0) {
    /* The handle was never registered with the loop, so plain free is fine. */
    free(p);
    s4_throw_errno(env, -err, "uv_poll_init");
    return NULL;
  }
  p->handle.data = p;

  /*
   * From here on the handle is live, so every failure path goes through
   * begin_close for libuv to release it. Until the constructor has wrapped
   * p nobody else owns it, hence wrapper_gone: on_closed then frees it.
   */
  p->wrapper_gone = true;
  if (napi_add_async_cleanup_hook(env, on_env_teardown, p, &p->hook) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &p->cb) != napi_ok ||
      napi_create_string_utf8(env, "sixbed4.poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->actx) != napi_ok ||
      napi_create_external(env, p, NULL, NULL, &ext) != napi_ok ||
      napi_new_instance(env, ctor_v, 1, &ext, &obj) != napi_ok) {
    begin_close(p);
    return NULL;
  }
  /* The wrapper co-owns p now; on failure its finalizer completes the release. */
  if (napi_create_reference(env, obj, 0, &p->self) != napi_ok) {
    begin_close(p);
    return NULL;
  }
  err = uv_poll_start(&p->handle, UV_READABLE, on_event);
  if (err != 0) {
    begin_close(p);
    s4_throw_errno(env, -err, "uv_poll_start");
    return NULL;
  }
  set_started(p, true);
  return obj;
}

static void instance_finalize(napi_env env, void *data, void *hint) {
  s4_instance *inst = data;
  (void)hint;
  if (inst->poll_ctor) napi_delete_reference(env, inst->poll_ctor);
  free(inst);
}

napi_status s4_init_poll(napi_env env, napi_value exports, s4_instance *inst) {
  napi_property_descriptor methods[] = {
      {"start", NULL, m_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, m_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, m_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  napi_status st;

  st = napi_define_class(env, "PollHandle", NAPI_AUTO_LENGTH, ctor, NULL,
                         sizeof methods / sizeof methods[0], methods, &cls);
  if (st != napi_ok) return st;
  if ((st = napi_create_reference(env, cls, 1, &inst->poll_ctor)) != napi_ok) return st;
  if ((st = napi_set_instance_data(env, inst, instance_finalize, NULL)) != napi_ok) return st;
  return s4_export_fn(env, exports, "poll", poll_fn);
}
