// SPDX-License-Identifier: BSD-2-Clause
/*
 * The bpf(2) commands the fast path needs (agent/bpf/): create maps, load a
 * program, read, write and delete map entries (also in batches), count what is attached to a device, run a program on a test packet
 * (BPF_PROG_TEST_RUN) and attach it with a link. Raw system calls rather than
 * libbpf, so the runtime needs no library the image does not already carry;
 * the object file is read and relocated in TypeScript (agent/bpf/elf.ts).
 *
 * Every fd bpf(2) returns is close-on-exec. A link fd is the attachment: the
 * program stays attached exactly as long as some process holds it, so a
 * crashed router leaves nothing attached behind.
 */
#include "common.h"

#include <errno.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sys_bpf(int cmd, union bpf_attr *attr) {
  int r;
  do {
    r = (int)syscall(__NR_bpf, cmd, attr, sizeof *attr);
  } while (r < 0 && errno == EINTR);
  return r;
}

/* A Uint8Array (or Buffer) argument: its bytes and length. */
static int arg_bytes(napi_env env, napi_value v, const char *what, void **data, size_t *len) {
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  char msg[96];
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) != napi_ok || type != napi_uint8_array) {
    snprintf(msg, sizeof msg, "%s must be a Uint8Array", what);
    s4_throw_type(env, msg);
    return -1;
  }
  return 0;
}

static napi_value make_bool(napi_env env, bool v) {
  napi_value r;
  napi_get_boolean(env, v, &r);
  return r;
}

static napi_value make_int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

/* A bpf(2) command whose result is an fd or a count: that number, or a thrown error naming the command. */
static napi_value bpf_number(napi_env env, int cmd, union bpf_attr *a, const char *what) {
  int r = sys_bpf(cmd, a);
  if (r < 0) {
    s4_throw_errno(env, errno, what);
    return NULL;
  }
  return make_int(env, r);
}

/* Possible CPUs (per-CPU map values have one slot each): the highest in /sys/devices/system/cpu/possible, + 1. */
static uint32_t possible_cpus(void) {
  FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
  char buf[128];
  uint32_t max = 0;
  if (f == NULL) return 0;
  if (fgets(buf, sizeof buf, f) != NULL) {
    for (char *p = buf; *p;) { /* "0-3,8-11": the last number is the highest */
      char *end;
      unsigned long v = strtoul(p, &end, 10);
      if (end == p) { p++; continue; }
      if (v + 1 > max) max = (uint32_t)(v + 1);
      p = end;
    }
  }
  fclose(f);
  return max;
}

/* The map's type and sizes (BPF_OBJ_GET_INFO_BY_FD); throws and returns -1 when the kernel refuses. */
static int map_info(napi_env env, int fd, struct bpf_map_info *mi) {
  union bpf_attr a;
  memset(mi, 0, sizeof *mi);
  memset(&a, 0, sizeof a);
  a.info.bpf_fd = (uint32_t)fd;
  a.info.info_len = sizeof *mi;
  a.info.info = (uint64_t)(uintptr_t)mi;
  if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a) < 0) {
    s4_throw_errno(env, errno, "bpf(BPF_OBJ_GET_INFO_BY_FD)");
    return -1;
  }
  return 0;
}

/*
 * The kernel reads key_size bytes of key and reads or writes value_size bytes
 * of value (times the CPUs, rounded to 8, for per-CPU maps): buffers shorter
 * than the map's would let it touch memory past them, so they are checked.
 */
static int check_sizes(napi_env env, int fd, size_t klen, size_t vlen) {
  struct bpf_map_info mi;
  if (map_info(env, fd, &mi)) return -1;
  size_t need = mi.value_size;
  if (mi.type == BPF_MAP_TYPE_PERCPU_ARRAY || mi.type == BPF_MAP_TYPE_PERCPU_HASH || mi.type == BPF_MAP_TYPE_LRU_PERCPU_HASH) {
    uint32_t cpus = possible_cpus();
    if (cpus == 0) {
      s4_throw_errno(env, errno ? errno : EIO, "reading /sys/devices/system/cpu/possible");
      return -1;
    }
    need = (size_t)((mi.value_size + 7) & ~7u) * cpus;
  }
  if (klen < mi.key_size || vlen < need) {
    char msg[128];
    snprintf(msg, sizeof msg, "map entry buffers too short: key %zu < %u or value %zu < %zu bytes", klen, mi.key_size, vlen, need);
    s4_throw_range(env, msg);
    return -1;
  }
  return 0;
}

/* bpfMapCreate(type, keySize, valueSize, maxEntries, name, flags) -> fd (flags: BPF_F_NO_PREALLOC for an LPM trie) */
static napi_value map_create(napi_env env, napi_callback_info info) {
  S4_ARGS(6);
  uint32_t type, key, value, max, flags;
  char name[BPF_OBJ_NAME_LEN];
  if (s4_arg_u32(env, argv[0], "type", UINT32_MAX, &type) || s4_arg_u32(env, argv[1], "keySize", UINT32_MAX, &key) ||
      s4_arg_u32(env, argv[2], "valueSize", UINT32_MAX, &value) || s4_arg_u32(env, argv[3], "maxEntries", UINT32_MAX, &max) ||
      s4_arg_str(env, argv[4], "name", name, sizeof name) || s4_arg_u32(env, argv[5], "flags", UINT32_MAX, &flags))
    return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = type;
  a.map_flags = flags;
  a.key_size = key;
  a.value_size = value;
  a.max_entries = max;
  memcpy(a.map_name, name, strlen(name));
  return bpf_number(env, BPF_MAP_CREATE, &a, "bpf(BPF_MAP_CREATE)");
}

/* bpfProgLoad(type, insns, license, name) -> fd; a refusal throws with the verifier's log in the message. */
static napi_value prog_load(napi_env env, napi_callback_info info) {
  S4_ARGS(4);
  uint32_t type;
  void *insns;
  size_t len;
  char license[32], name[BPF_OBJ_NAME_LEN];
  if (s4_arg_u32(env, argv[0], "type", UINT32_MAX, &type) || arg_bytes(env, argv[1], "insns", &insns, &len) ||
      s4_arg_str(env, argv[2], "license", license, sizeof license) || s4_arg_str(env, argv[3], "name", name, sizeof name))
    return NULL;
  if (len == 0 || len % sizeof(struct bpf_insn)) {
    s4_throw_range(env, "insns must be a non-empty multiple of 8 bytes");
    return NULL;
  }
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = type;
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = (uint32_t)(len / sizeof(struct bpf_insn));
  a.license = (uint64_t)(uintptr_t)license;
  memcpy(a.prog_name, name, strlen(name));
  int fd = sys_bpf(BPF_PROG_LOAD, &a);
  if (fd >= 0) return make_int(env, fd);
  /* Again with the verifier's log, which says why (only on failure: a log costs load time). */
  int err = errno;
  size_t log_size = 1 << 20;
  char *log = calloc(1, log_size);
  if (log != NULL) {
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = (uint32_t)log_size;
    a.log_level = 1;
    fd = sys_bpf(BPF_PROG_LOAD, &a);
    if (fd >= 0) { /* loaded this time: keep it */
      free(log);
      return make_int(env, fd);
    }
    err = errno == ENOSPC ? err : errno;
    /* The end of the log holds the reason. */
    size_t n = strlen(log);
    const char *tail = n > 3000 ? log + n - 3000 : log;
    char *msg = malloc(strlen(tail) + 96);
    if (msg != NULL) {
      sprintf(msg, "bpf(BPF_PROG_LOAD) %s: %s", strerror(err), tail);
      napi_value m, e, code;
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
      napi_create_error(env, NULL, m, &e);
      napi_create_int32(env, -err, &code);
      napi_set_named_property(env, e, "errno", code);
      napi_throw(env, e);
      free(msg);
      free(log);
      return NULL;
    }
    free(log);
  }
  s4_throw_errno(env, err, "bpf(BPF_PROG_LOAD)");
  return NULL;
}

/* One entry of a map: BPF_MAP_UPDATE_ELEM (BPF_ANY) or BPF_MAP_LOOKUP_ELEM, (fd, key, value) from JS. */
static napi_value map_elem(napi_env env, napi_callback_info info, int cmd, const char *syscall) {
  S4_ARGS(3);
  int fd;
  void *key, *value;
  size_t klen, vlen;
  if (s4_arg_fd(env, argv[0], &fd) || arg_bytes(env, argv[1], "key", &key, &klen) || arg_bytes(env, argv[2], "value", &value, &vlen) ||
      check_sizes(env, fd, klen, vlen))
    return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = (uint32_t)fd;
  a.key = (uint64_t)(uintptr_t)key;
  a.value = (uint64_t)(uintptr_t)value;
  a.flags = BPF_ANY; /* 0: also what a lookup wants */
  if (sys_bpf(cmd, &a) < 0) s4_throw_errno(env, errno, syscall);
  return NULL;
}

/* bpfMapUpdate(fd, key, value) */
static napi_value map_update(napi_env env, napi_callback_info info) {
  return map_elem(env, info, BPF_MAP_UPDATE_ELEM, "bpf(BPF_MAP_UPDATE_ELEM)");
}

/* bpfMapLookup(fd, key, value): fills value (the caller sizes it: per-CPU maps give one slot per possible CPU). */
static napi_value map_lookup(napi_env env, napi_callback_info info) {
  return map_elem(env, info, BPF_MAP_LOOKUP_ELEM, "bpf(BPF_MAP_LOOKUP_ELEM)");
}

/* bpfMapDelete(fd, key) -> whether there was such an entry */
static napi_value map_delete(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  int fd;
  void *key;
  size_t klen;
  if (s4_arg_fd(env, argv[0], &fd) || arg_bytes(env, argv[1], "key", &key, &klen) || check_sizes(env, fd, klen, SIZE_MAX /* no value */))
    return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = (uint32_t)fd;
  a.key = (uint64_t)(uintptr_t)key;
  if (sys_bpf(BPF_MAP_DELETE_ELEM, &a) == 0) return make_bool(env, true);
  if (errno == ENOENT) return make_bool(env, false);
  s4_throw_errno(env, errno, "bpf(BPF_MAP_DELETE_ELEM)");
  return NULL;
}

/* bpfProgTestRun(fd, dataIn, dataOut) -> { retval, size }: the program on one packet, in the kernel, nothing sent. */
static napi_value prog_test_run(napi_env env, napi_callback_info info) {
  S4_ARGS(3);
  int fd;
  void *in, *out;
  size_t in_len, out_len;
  if (s4_arg_fd(env, argv[0], &fd) || arg_bytes(env, argv[1], "dataIn", &in, &in_len) ||
      arg_bytes(env, argv[2], "dataOut", &out, &out_len))
    return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.test.prog_fd = (uint32_t)fd;
  a.test.data_in = (uint64_t)(uintptr_t)in;
  a.test.data_size_in = (uint32_t)in_len;
  a.test.data_out = (uint64_t)(uintptr_t)out;
  a.test.data_size_out = (uint32_t)out_len;
  a.test.repeat = 1;
  if (sys_bpf(BPF_PROG_TEST_RUN, &a) < 0) {
    s4_throw_errno(env, errno, "bpf(BPF_PROG_TEST_RUN)");
    return NULL;
  }
  napi_value r;
  napi_create_object(env, &r);
  napi_set_named_property(env, r, "retval", make_int(env, (int32_t)a.test.retval));
  napi_set_named_property(env, r, "size", make_int(env, a.test.data_size_out));
  return r;
}

/*
 * bpfLinkCreate(progFd, ifindex, attachType, flags) -> link fd (tcx, XDP: the attachment lives as long as the fd).
 * flags: XDP's mode (XDP_FLAGS_DRV_MODE: the driver's own hook, before GRO, or a refusal); 0 for tcx.
 */
static napi_value link_create(napi_env env, napi_callback_info info) {
  S4_ARGS(4);
  int fd;
  uint32_t ifindex, type, flags;
  if (s4_arg_fd(env, argv[0], &fd) || s4_arg_u32(env, argv[1], "ifindex", UINT32_MAX, &ifindex) ||
      s4_arg_u32(env, argv[2], "attachType", UINT32_MAX, &type) || s4_arg_u32(env, argv[3], "flags", UINT32_MAX, &flags))
    return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.link_create.prog_fd = (uint32_t)fd;
  a.link_create.target_fd = ifindex; /* target_ifindex in newer headers: the same field */
  a.link_create.attach_type = type;
  a.link_create.flags = flags;
  return bpf_number(env, BPF_LINK_CREATE, &a, "bpf(BPF_LINK_CREATE)");
}

/*
 * bpfMapDrain(fd, keys, values) -> { count, status }: takes entries out of a
 * hash map (BPF_MAP_LOOKUP_AND_DELETE_BATCH), their keys and values into the
 * buffers, from the start of the map. The kernel walks a hash map bucket by
 * bucket and copies a bucket whole or not at all (kernel/bpf/hashtab.c,
 * __htab_map_lookup_and_delete_batch); what it copied is returned with every
 * status but EFAULT, so nothing taken out of the map is lost:
 *  - "end": the walk reached the last bucket (ENOENT): the map held no more
 *    than this (programs may have added more meanwhile);
 *  - "full": the buffers are full, or the next bucket does not fit in what is
 *    left of them (ENOSPC after some entries): call again for the rest;
 *  - "grow": the next bucket alone holds more entries than the buffers
 *    (ENOSPC with none copied): call again with bigger buffers;
 *  - "again": the bucket was busy (EBUSY, EAGAIN: a program on this CPU held its
 *    lock), or another error came after some entries: call again later.
 * Anything else (EFAULT, EINVAL, EPERM, EBADF, ENOTSUPP ...) is a mistake in
 * the call or an unsupported map, and throws (with entries in hand: "again").
 */
static napi_value map_drain(napi_env env, napi_callback_info info) {
  S4_ARGS(3);
  int fd;
  void *keys, *values;
  size_t klen, vlen;
  if (s4_arg_fd(env, argv[0], &fd) || arg_bytes(env, argv[1], "keys", &keys, &klen) || arg_bytes(env, argv[2], "values", &values, &vlen))
    return NULL;
  struct bpf_map_info mi;
  union bpf_attr a;
  if (map_info(env, fd, &mi)) return NULL;
  size_t cap = klen / mi.key_size;
  if (vlen / mi.value_size < cap) cap = vlen / mi.value_size;
  uint64_t token = 0; /* the kernel's position: a bucket index for hash maps */
  size_t n = 0;
  bool first = true;
  const char *status = "full";
  while (n < cap) {
    memset(&a, 0, sizeof a);
    a.batch.map_fd = (uint32_t)fd;
    a.batch.in_batch = first ? 0 : (uint64_t)(uintptr_t)&token;
    a.batch.out_batch = (uint64_t)(uintptr_t)&token;
    a.batch.keys = (uint64_t)(uintptr_t)((char *)keys + n * mi.key_size);
    a.batch.values = (uint64_t)(uintptr_t)((char *)values + n * mi.value_size);
    a.batch.count = (uint32_t)(cap - n);
    int r = sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &a);
    int err = r < 0 ? errno : 0;
    /* The hash map's walk writes back what it copied with these; errors from before the walk (EINVAL, ENOTSUPP,
     * EPERM, EBADF) leave the count as it was sent, and EFAULT may have failed to write it. */
    if (!err || err == ENOENT || err == ENOSPC || err == EBUSY || err == EAGAIN) n += a.batch.count;
    if (err == ENOENT) { status = "end"; break; }
    if (err == ENOSPC) { status = n > 0 ? "full" : "grow"; break; }
    if (err == EBUSY || err == EAGAIN) { status = "again"; break; }
    if (err) {
      /* Hand over what was taken; the next call meets the error again with nothing to lose, and throws. */
      if (n > 0) { status = "again"; break; }
      s4_throw_errno(env, err, "bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH)");
      return NULL;
    }
    first = false;
  }
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "count", make_int(env, (int64_t)n));
  napi_value st;
  napi_create_string_utf8(env, status, NAPI_AUTO_LENGTH, &st);
  napi_set_named_property(env, out, "status", st);
  return out;
}

/* bpfProgQuery(ifindex, attachType) -> how many programs are attached there (tcx: the device's ingress or egress). */
static napi_value prog_query(napi_env env, napi_callback_info info) {
  S4_ARGS(2);
  uint32_t ifindex, type;
  if (s4_arg_u32(env, argv[0], "ifindex", UINT32_MAX, &ifindex) || s4_arg_u32(env, argv[1], "attachType", UINT32_MAX, &type))
    return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.query.target_fd = ifindex; /* target_ifindex in newer headers: the same field */
  a.query.attach_type = type;
  if (sys_bpf(BPF_PROG_QUERY, &a) < 0) {
    s4_throw_errno(env, errno, "bpf(BPF_PROG_QUERY)");
    return NULL;
  }
  return make_int(env, a.query.prog_cnt);
}

napi_status s4_init_bpf(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = s4_export_fn(env, exports, "bpfMapCreate", map_create)) != napi_ok) return s;
  if ((s = s4_export_fn(env, exports, "bpfProgLoad", prog_load)) != napi_ok) return s;
  if ((s = s4_export_fn(env, exports, "bpfMapUpdate", map_update)) != napi_ok) return s;
  if ((s = s4_export_fn(env, exports, "bpfMapLookup", map_lookup)) != napi_ok) return s;
  if ((s = s4_export_fn(env, exports, "bpfMapDelete", map_delete)) != napi_ok) return s;
  if ((s = s4_export_fn(env, exports, "bpfProgQuery", prog_query)) != napi_ok) return s;
  if ((s = s4_export_fn(env, exports, "bpfMapDrain", map_drain)) != napi_ok) return s;
  if ((s = s4_export_fn(env, exports, "bpfProgTestRun", prog_test_run)) != napi_ok) return s;
  return s4_export_fn(env, exports, "bpfLinkCreate", link_create);
}
