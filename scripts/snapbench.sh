#!/bin/bash
# Load with frequent snapshots: three `ringraft serve` processes on loopback
# (snapshot every 30 000 entries), 64 clients for 6 s, then the figures.
# usage: scripts/snapbench.sh [BINARY] [DIR]   (default: target/release/ringraft, /tmp/ringraft-snapbench)
set -u
bin=${1:-target/release/ringraft}
dir=${2:-/tmp/ringraft-snapbench}
rm -rf "$dir" && mkdir -p "$dir"
peers="1=127.0.0.1:24101,2=127.0.0.1:24102,3=127.0.0.1:24103"
pids=()
for i in 1 2 3; do
  "$bin" serve --id "$i" --data-dir "$dir/n$i" --peers "$peers" --client-addr "127.0.0.1:2400$i" \
    --shards 1 --first-core $((i - 1)) --snapshot-entries 30000 >"$dir/n$i.log" 2>&1 &
  pids+=($!)
done
sleep 1.5
"$bin" bench --target 127.0.0.1:24001 --duration 6s 2>&1 | grep -E "latency|throughput"
kill "${pids[@]}" 2>/dev/null
wait "${pids[@]}" 2>/dev/null
grep -h "snapshot .* written" "$dir"/n1.log | tail -n 2
