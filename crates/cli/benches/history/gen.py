#!/usr/bin/env python3
# Generates the host-wide history of docs/BENCHMARKS.md ("History host-wide"): run as
#   TZ=UTC python3 crates/cli/benches/history/gen.py ROOT
# 100 containers x 10 dnsmasq.log files of 2 MB of lines each before compression (oldest .9 .. .1,
# then the live file): 2.0 GB, 26.7 M lines a second apart spanning ~74 hours up to now; .5-.9
# gzip-compressed (logrotate's compress).
import os, sys, time, gzip, datetime
root = sys.argv[1]
now = time.time()
# Lines are 74-76 bytes: 2 MB a file.
line_len = 75
per_file = 2_000_000 // line_len
files = 10
total = per_file * files
for c in range(100):
    d = os.path.join(root, "containers", f"c{c:03}")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "dns.tier"), "w").write("dnsmasq-static\n")
    open(os.path.join(d, "profile.domains"), "w").write("allowed.example\n")
    t0 = now - total * 1.0 - 60
    k = 0
    for f in range(files):
        idx = files - 1 - f  # 9..0
        name = "dnsmasq.log" if idx == 0 else f"dnsmasq.log.{idx}"
        lines = []
        for i in range(per_file):
            t = t0 + k; k += 1
            st = datetime.datetime.fromtimestamp(t).strftime("%b %e %H:%M:%S")
            lines.append(f"{st} dnsmasq[7]: query[A] h{k % 1000}.blocked{c}.example from 10.0.2.100\n")
        data = "".join(lines).encode()
        p = os.path.join(d, name)
        if idx >= 5:
            with gzip.open(p + ".gz", "wb", compresslevel=1) as g: g.write(data)
            os.utime(p + ".gz", (t, t))
        else:
            open(p, "wb").write(data)
            os.utime(p, (t, t))
