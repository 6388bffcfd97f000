#!/usr/bin/env bash
# The README's headline figures, each beside its reference measured in the
# same round, over several rounds; prints every round and the medians.
#
#   scripts/figures.sh [ROUNDS] [DURATION]      (default 5 rounds of 10s)
#
# A round runs, in this order:
#   1. durable Redis: redis-server --appendonly yes --appendfsync always on
#      /var/tmp, driven by redis-benchmark -t set -c 64 -d 128 (the issue's
#      command: every SET writes one key), then the same with -r 100000
#      (100 000 keys, the key space of ringraft bench)
#      and GETs of 100 000 keys by `ringraft bench --target --workload get`
#      (after its prefill; redis-benchmark's keys are named differently)
#   2. ringraft bench (3-node durable cluster, 64 clients, 128 B SETs over
#      100 000 keys), then the same with --keys 1, then --workload get
#   3. fio 4 KiB dsync qd1 + 64 B loopback TCP ping-pong (../shared/tools/reference.sh)
#   4. ringraft bench --clients 1
#   5. ringraft bench --in-process (heap allocations per request, RSS)
# Needs redis-server, redis-benchmark, fio, gcc, python3; builds the release binary.
set -euo pipefail
rounds=${1:-5}
duration=${2:-10s}
here=$(cd "$(dirname "$0")/.." && pwd)
reference=${REFERENCE:-$here/../shared/tools/reference.sh}
cargo build --release -q -p ringraft-tools --manifest-path "$here/Cargo.toml"
ringraft=$here/target/release/ringraft
out=$(mktemp -d /var/tmp/ringraft-figures.XXXXXX)
trap 'redis-cli -p "${port:-0}" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
secs=${duration%s}

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

for round in $(seq 1 "$rounds"); do
  r=$out/$round; mkdir -p "$r/redis"
  redis-server --port "$port" --dir "$r/redis" --appendonly yes --appendfsync always \
    --save '' --daemonize yes --logfile "$r/redis.log" >/dev/null
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  # Run for about as long as ringraft bench does: -n from a short probe.
  probe=$(redis-benchmark -p "$port" -t set -c 64 -d 128 -n 20000 -q --csv | tail -1 | cut -d, -f2 | tr -d '"')
  n=$(python3 -c "print(max(20000, int(float('$probe') * $secs)))")
  redis-benchmark -p "$port" -t set -c 64 -d 128 -n "$n" --csv > "$r/redis.csv"
  redis-benchmark -p "$port" -t set -c 64 -d 128 -n "$n" -r 100000 --csv > "$r/redis_keys.csv"
  "$ringraft" bench --target "127.0.0.1:$port" --workload get --duration "$duration" --json "$r/redis_get.json" >/dev/null 2>&1
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  "$ringraft" bench --duration "$duration" --json "$r/c64.json" >/dev/null 2>&1
  "$ringraft" bench --keys 1 --duration "$duration" --json "$r/c64k1.json" >/dev/null 2>&1
  "$ringraft" bench --workload get --duration "$duration" --json "$r/get.json" >/dev/null 2>&1
  "$reference" disk /var/tmp > "$r/disk.txt"
  "$reference" net > "$r/net.txt"
  "$ringraft" bench --clients 1 --duration "$duration" --json "$r/c1.json" >/dev/null 2>&1
  "$ringraft" bench --in-process --duration "$duration" --json "$r/inproc.json" >/dev/null 2>&1
  redis_ops=$(tail -1 "$r/redis.csv" | cut -d, -f2 | tr -d '"')
  redis_p99=$(tail -1 "$r/redis.csv" | cut -d, -f7 | tr -d '"')
  redis_keys_ops=$(tail -1 "$r/redis_keys.csv" | cut -d, -f2 | tr -d '"')
  dsync_p50=$(awk '$1=="fio_dsync_4k_qd1_p50_us"{print $2}' "$r/disk.txt")
  rtt_p50=$(awk '$1=="tcp_pingpong_64b_p50_us"{print $2}' "$r/net.txt")
  printf '%s\n' "$round $redis_ops $redis_p99 $(json "$r/c64.json" 'd["ops_per_sec"], d["latency_us"]["p99"]' | tr -d ',') \
$dsync_p50 $rtt_p50 $(json "$r/c1.json" 'd["latency_us"]["p50"]') \
$(json "$r/inproc.json" 'd["ops_per_sec"], d["heap_allocs_per_op"], d["rss_bytes_max"]' | tr -d ',') \
$redis_keys_ops $(json "$r/c64k1.json" 'd["ops_per_sec"]') \
$(json "$r/redis_get.json" 'd["ops_per_sec"]') $(json "$r/get.json" 'd["ops_per_sec"]')" >> "$out/rows"
  tail -1 "$out/rows"
done

python3 - "$out/rows" <<'EOF'
import statistics as st, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
cols = list(zip(*rows))
m = [st.median(c) for c in cols]
names = ["redis_ops", "redis_p99_ms", "ringraft_ops_64", "ringraft_p99_us_64", "dsync4k_p50_us",
         "rtt64_p50_us", "ringraft_p50_us_1", "inproc_ops", "inproc_allocs_per_op", "inproc_rss_bytes",
         "redis_ops_100k_keys", "ringraft_ops_64_1_key", "redis_get_ops", "ringraft_get_ops"]
print("medians over %d rounds:" % len(rows))
for n, v in zip(names, m):
    print("  %-22s %.3f" % (n, v))
ratio64 = [r[2] / r[0] for r in rows]
ratio64_keys = [r[2] / r[10] for r in rows]
ratio64_one = [r[11] / r[0] for r in rows]
ratio1 = [r[6] / (r[4] + r[5]) for r in rows]
ratio_get = [r[13] / r[12] for r in rows]
print("  ringraft/redis ops at 64 clients (per round %s): median %.2fx"
      % (" ".join("%.2f" % x for x in ratio64), st.median(ratio64)))
print("  same 100 000 keys (Redis -r 100000) (per round %s): median %.2fx"
      % (" ".join("%.2f" % x for x in ratio64_keys), st.median(ratio64_keys)))
print("  same one key (ringraft --keys 1) (per round %s): median %.2fx"
      % (" ".join("%.2f" % x for x in ratio64_one), st.median(ratio64_one)))
print("  1-client p50 / (dsync 4k p50 + RTT p50) (per round %s): median %.2fx"
      % (" ".join("%.2f" % x for x in ratio1), st.median(ratio1)))
print("  GET ops, ringraft/redis, same generator (per round %s): median %.2fx"
      % (" ".join("%.2f" % x for x in ratio_get), st.median(ratio_get)))
EOF
