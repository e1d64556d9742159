#!/bin/sh
# A soak of Berth: a server on a fresh filesystem store, `berth-bench soak`
# against it (30 minutes unless DURATION says otherwise), then `registry
# check` on the stopped store and the plot of the curves.
#
#   deploy/soak/run.sh OUT_DIR [berth-bench soak options...]
#
# BIN: where the release binaries `registry` and `berth-bench` are
# (default target/release); PORT (5077); NICE (15): the niceness of the
# server and the load; DURATION (30m) and WARMUP (5m: the summary and the
# plot judge the curves after it); RUST_LOG (warn: the request log at
# `info` writes about 1 MiB/s at this load); GRACE (5s): the grace period
# every collection the load starts asks for; SERVER_GRACE (GRACE): the one
# in the server's configuration (a node keeps each HEAD/GET confirmation
# for its configured grace period, whatever shorter grace a run asks for,
# so with 1 h, the default, the confirmations grow for the soak's first
# hour); CONFIG: more lines for
# the server's configuration file (such as "[limits]", a newline and
# "index_cache_bytes = 8388608"; not a [gc] table: SERVER_GRACE writes it).
# OUT_DIR receives the CSV, the summary, the server log, `ps` snapshots of
# the machine every minute, the check's report and soak.svg.
set -eu

OUT=${1:?usage: deploy/soak/run.sh OUT_DIR [soak options...]}
shift
BIN=${BIN:-target/release}
PORT=${PORT:-5077}
NICE=${NICE:-15}
DURATION=${DURATION:-30m}
WARMUP=${WARMUP:-5m}
GRACE=${GRACE:-5s}
SERVER_GRACE=${SERVER_GRACE:-$GRACE}
HERE=$(dirname "$0")
DATA="$OUT/data"

mkdir -p "$OUT"
rm -rf "$DATA"
# A short activity log, so that its bound is reached during warm-up and
# the index file's curve shows what else grows.
printf 'activity_retention = 5000\n%s\n[gc]\ngrace = "%s"\n' "${CONFIG:-}" "$SERVER_GRACE" \
    > "$OUT/soak.toml"

RUST_LOG=${RUST_LOG:-warn} nice -n "$NICE" "$BIN/registry" serve \
    --config "$OUT/soak.toml" --data-dir "$DATA" --addr "127.0.0.1:$PORT" \
    > "$OUT/server.out" 2> "$OUT/server.log" &
PID=$!
i=0
until curl -fs "http://127.0.0.1:$PORT/v2/" > /dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$PID" 2> /dev/null; then
        echo "the server did not start; see $OUT/server.log" >&2
        exit 2
    fi
    sleep 0.2
done

# What else the machine was doing: load and the busiest processes.
(
    while kill -0 "$PID" 2> /dev/null; do
        date -u +%FT%TZ
        cat /proc/loadavg
        ps -eo pid,ni,pcpu,rss,etime,comm --sort=-pcpu | head -12
        echo
        sleep 60
    done
) > "$OUT/machine.log" 2>&1 &
MONITOR=$!

status=0
nice -n "$NICE" "$BIN/berth-bench" soak --url "http://127.0.0.1:$PORT" \
    --server-pid "$PID" --data-dir "$DATA" --csv "$OUT/soak.csv" \
    --duration "$DURATION" --warmup "$WARMUP" --gc-grace "$GRACE" "$@" > "$OUT/summary.md" 2> "$OUT/soak.log" || status=$?

kill -TERM "$PID"
wait "$PID" || true
kill "$MONITOR" 2> /dev/null || true

check=0
"$BIN/registry" check --data-dir "$DATA" > "$OUT/check.txt" 2>&1 || check=$?
python3 "$HERE/plot.py" --warmup "$WARMUP" "$OUT/soak.csv" "$OUT/soak.svg"

cat "$OUT/summary.md"
echo
echo "registry check (exit status $check):"
cat "$OUT/check.txt"
if [ "$status" -ne 0 ] || [ "$check" -ne 0 ]; then
    exit 1
fi
