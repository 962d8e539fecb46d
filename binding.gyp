{
  "targets": [
    {
      "target_name": "sixbed4_native",
      "sources": [
        "agent/native/addon.c",
        "agent/native/bpf.c",
        "agent/native/coalesce.c",
        "agent/native/common.c",
        "agent/native/gso.c",
        "agent/native/lock.c",
        "agent/native/notify.c",
        "agent/native/packet.c",
        "agent/native/poll.c",
        "agent/native/routes.c",
        "agent/native/steer.c",
        "agent/native/tun.c",
        "agent/native/udp.c"
      ],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    },
    {
      "target_name": "sixbed4-cni",
      "type": "executable",
      "sources": [
        "agent/cni/shim/sixbed4-cni.c",
        "agent/cni/shim/json.c"
      ],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "cflags!": ["-O3", "-fPIC"],
      "ldflags": ["-static"],
      "ldflags!": ["-rdynamic"]
    }
  ]
}
