{
  "targets": [
    {
      "target_name": "sixbed4_native",
      "sources": [
        "agent/native/addon.c",
        "agent/native/common.c",
        "agent/native/lock.c",
        "agent/native/poll.c",
        "agent/native/tun.c",
        "agent/native/udp.c"
      ],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
