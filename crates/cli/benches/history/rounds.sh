#!/bin/bash
# The full replay of docs/BENCHMARKS.md ("History host-wide"), in rounds taken in turn with the
# floor: run as
#   R=/tmp/hbench/root bash crates/cli/benches/history/rounds.sh ROUNDS BINARY...
# after gen.py made R. Each round prints the floor (`zcat -f | grep -c` over the same files), then
# for each BINARY its `--since 4d --no-follow` replay read by `wc -l` and written to /dev/null:
# wall seconds, user and system CPU seconds (of the whole pipeline through `wc -l`), peak RSS
# in KiB (of shield-watch alone into /dev/null).
set -euo pipefail
R=${R:-/tmp/hbench/root}
rounds=$1
shift
t=$(mktemp)
for _ in $(seq "$rounds"); do
  /usr/bin/time -o "$t" -f "%e %U %S" sh -c "zcat -f $R/containers/*/dnsmasq.log* | grep -c query >/dev/null"
  line="floor $(cat "$t")"
  for binary in "$@"; do
    /usr/bin/time -o "$t" -f "%e %U %S" sh -c \
      "TZ=UTC $binary --state-root $R --no-nflog --source dns --since 4d --no-follow 2>/dev/null | wc -l >/dev/null"
    through_wc=$(cat "$t")
    /usr/bin/time -o "$t" -f "%e %U %S %M" env TZ=UTC "$binary" --state-root "$R" --no-nflog \
      --source dns --since 4d --no-follow 2>/dev/null >/dev/null
    line="$line | $(basename "$binary"): | wc -l $through_wc; > /dev/null $(cat "$t")"
  done
  echo "$(date +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg) $line"
done
rm -f "$t"
