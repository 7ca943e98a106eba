#!/usr/bin/env bash
# Runs the BENCHMARKS.md measurements: every run on a fresh release server (fresh data dir),
# results as JSON in OUT (default /tmp/missive-bench-results), then a median table.
#
#   tools/load/bench.sh [OUT] [SCENARIO...]    SCENARIO: connect chat offline fanout (default all)
#
# Binaries: $BIN/missived and $BIN/missive-load (default $CARGO_TARGET_DIR/release, else
# target/release). RUNS (default 3) runs per configuration. Loopback only; every run stops by
# itself. CHAT_MODES (default "sync async") and CHAT_RATES (default "500 2000 5000 8000")
# choose the chat configurations.
set -u
OUT=${1:-/tmp/missive-bench-results}
shift || true
SCENARIOS=${*:-connect chat offline fanout}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
RUNS=${RUNS:-3}
DATA=/tmp/bench-data
SECRET=bench-secret-0123456789
LISTEN=127.0.0.1:9443
mkdir -p "$OUT"

start_server() { # durability [extra flags...]
    rm -rf "$DATA"
    local durability=$1
    shift
    "$BIN/missived" --listen "$LISTEN" --data-dir "$DATA" --secret "$SECRET" \
        --durability "$durability" --log warn "$@" >"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        ss -ltn | grep -q " ${LISTEN} " && return 0
        sleep 0.1
    done
    echo "server did not start" >&2
    cat "$OUT/server.log" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
}

load() { # name scenario [args...]
    local name=$1
    shift
    echo "== $name: missive-load $* --addr $LISTEN --secret ... --json" >&2
    "$BIN/missive-load" "$@" --addr "$LISTEN" --secret "$SECRET" --json \
        >"$OUT/$name.json" 2>"$OUT/$name.log"
    echo "   exit $? $(jq -c '{ok, failures}' "$OUT/$name.json" 2>/dev/null)" >&2
}

for scenario in $SCENARIOS; do
    case $scenario in
    connect)
        for run in $(seq "$RUNS"); do
            start_server sync --heartbeat-secs 10
            load "connect-8000-r$run" connect -n 8000 --rate 1000 --duration 30 \
                --server-pid "$SERVER_PID"
            stop_server
            sleep 5
        done
        ;;
    chat)
        for durability in ${CHAT_MODES:-sync async}; do
            for rate in ${CHAT_RATES:-500 2000 5000 8000}; do
                for run in $(seq "$RUNS"); do
                    start_server "$durability"
                    load "chat-$durability-$rate-r$run" chat --users 200 --rate "$rate" \
                        --duration 20 --grace 15 --server-pid "$SERVER_PID"
                    stop_server
                done
            done
        done
        ;;
    offline)
        for durability in sync async; do
            for run in $(seq "$RUNS"); do
                start_server "$durability"
                load "offline-$durability-r$run" offline --messages 10000
                stop_server
            done
        done
        ;;
    fanout)
        # 50 members: write fan-out; 150 (above fanout_threshold 100): read fan-out.
        for members in 50 150; do
            for run in $(seq "$RUNS"); do
                start_server sync
                load "fanout-sync-$members-r$run" fanout --members "$members" --rate 20 \
                    --duration 20
                stop_server
            done
        done
        ;;
    esac
done

# Medians over the runs of each configuration.
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
col() { # glob jq-expression
    for f in $1; do jq -r "$2" "$f"; done | median
}
{
    echo "configuration | runs | figures (medians)"
    for cfg in $(ls "$OUT" | sed -n 's/-r[0-9]*\.json$//p' | sort -u); do
        files="$OUT/$cfg-r*.json"
        n=$(ls $files | wc -l)
        case $cfg in
        connect*)
            echo "$cfg | $n | rate $(col "$files" '."connect rate achieved"') conn/s," \
                "login p99 $(col "$files" '."connect+login".p99_ms') ms," \
                "per conn $(col "$files" '."server memory per connection"') B," \
                "failures $(col "$files" '."login failures" + ."connect failures"')"
            ;;
        chat*)
            echo "$cfg | $n | acked/s $(col "$files" '."ack throughput"')," \
                "delivered/s $(col "$files" '."delivery throughput"')," \
                "p50 $(col "$files" '."delivery latency".p50_ms')" \
                "p90 $(col "$files" '."delivery latency".p90_ms')" \
                "p99 $(col "$files" '."delivery latency".p99_ms')" \
                "p99.9 $(col "$files" '."delivery latency"."p99.9_ms"')" \
                "max $(col "$files" '."delivery latency".max_ms') ms," \
                "lost $(col "$files" '."lost (acked, never delivered)"')" \
                "dup $(col "$files" '."duplicated deliveries"')" \
                "unanswered $(col "$files" '."unanswered at end"')," \
                "CPU server $(col "$files" '."server CPU while sending"')%" \
                "harness $(col "$files" '."harness CPU while sending"')%"
            ;;
        offline*)
            echo "$cfg | $n | queue $(col "$files" '."queue time"') s," \
                "login->synced $(col "$files" '."login to last message synced"') ms," \
                "round trips $(col "$files" '."sync round trips"')," \
                "missing $(col "$files" '.missing') dup $(col "$files" '.duplicated')"
            ;;
        fanout*)
            echo "$cfg | $n | mode $(jq -r '."fanout mode"' $OUT/$cfg-r1.json)," \
                "deliveries/s $(col "$files" '."deliveries/s"')," \
                "p50 $(col "$files" '."delivery latency".p50_ms')" \
                "p99 $(col "$files" '."delivery latency".p99_ms')" \
                "max $(col "$files" '."delivery latency".max_ms') ms," \
                "lost $(col "$files" '."lost deliveries"') dup $(col "$files" '."duplicated deliveries"')"
            ;;
        *)
            echo "$cfg | $n | see $OUT/$cfg-r1.json"
            ;;
        esac
    done
} | tee "$OUT/summary.txt"
