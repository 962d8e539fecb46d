{
  "targets": [
    {
      "target_name": "sixbed4_native",
      "sources": ["agent/native/addon.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
