#!/usr/bin/env bash
# tenure in one minute: a 3-node cluster on a fresh temporary directory (T = 3 s, p = 300 ms),
# kill -9 of the master, and another node taking over. Cleans up on exit and on Ctrl-C.
#
#   scripts/demo.sh            # KEEP=1 scripts/demo.sh keeps the directory and logs
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=3s
P=300ms
NODES=(node-a node-b node-c)

echo "building the release binary..."
cargo build --release -p tenure --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/tenure
case $BIN in /*) ;; *) BIN=$(pwd)/$BIN ;; esac

DIR=$(mktemp -d "${TMPDIR:-/tmp}/tenure-demo.XXXXXX")
declare -A PID PORT

cleanup() {
    trap - EXIT INT TERM
    for n in "${NODES[@]}"; do
        if [ -n "${PID[$n]:-}" ]; then kill -9 "${PID[$n]}" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $DIR (store and node logs)"
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'echo; echo interrupted; exit 130' INT TERM

# A port nobody listens on: 8081..8083 if free, else the next free ones from 18081.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=8081
pick_port() { # sets PICKED (no subshell, so next_port advances)
    while port_busy "$next_port"; do
        if ((next_port < 18081)); then next_port=18081; else next_port=$((next_port + 1)); fi
    done
    PICKED=$next_port
    next_port=$((next_port + 1))
}

url() { echo "http://127.0.0.1:${PORT[$1]}"; }

# The node's state, as `tenure state` prints it (DOWN when it does not answer).
state() {
    local s
    s=$("$BIN" state --url "$(url "$1")" 2>/dev/null) || s=DOWN
    s=${s//\"/}
    echo "${s:-DOWN}"
}

# The X-HA-Epoch header of GET /v1/server/ha/state (plain bash, HTTP/1.0).
epoch() {
    local port=${PORT[$1]} line
    {
        exec 3<>"/dev/tcp/127.0.0.1/$port" || return 0
        printf 'GET /v1/server/ha/state HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        while IFS= read -r -t 2 line <&3; do
            line=${line%$'\r'}
            [ -z "$line" ] && break
            case ${line,,} in x-ha-epoch:*) echo "${line#*:}" | tr -d ' ' ;; esac
        done
        exec 3<&-
    } 2>/dev/null || true
}

show_states() {
    local out
    out=$("$BIN" states --url "$(url "$1")" 2>&1) || { echo "$out"; return; }
    if command -v python3 >/dev/null 2>&1; then
        printf '%s' "$out" | python3 -m json.tool 2>/dev/null || printf '%s\n' "$out"
    else
        printf '%s\n' "$out"
    fi
}

master_of() {
    local n
    for n in "$@"; do
        if [ "$(state "$n")" = MASTER ]; then
            echo "$n"
            return
        fi
    done
}

echo "store and logs in $DIR"
for n in "${NODES[@]}"; do
    pick_port
    PORT[$n]=$PICKED
    "$BIN" run --node-name "$n" --store "$DIR/store" \
        --bind "127.0.0.1:${PORT[$n]}" --node-uri "$(url "$n")" \
        --heartbeat-timeout "$T" --poll-period "$P" \
        >"$DIR/$n.log" 2>&1 &
    PID[$n]=$!
    echo "started $n (pid ${PID[$n]}) on $(url "$n")"
done

echo
echo "waiting for a master..."
MASTER=""
for _ in $(seq 1 80); do
    MASTER=$(master_of "${NODES[@]}")
    [ -n "$MASTER" ] && break
    sleep 0.25
done
if [ -z "$MASTER" ]; then
    echo "no master after 20 s; the last lines of each log:"
    for n in "${NODES[@]}"; do echo "--- $n"; tail -n 15 "$DIR/$n.log"; done
    exit 1
fi

for n in "${NODES[@]}"; do
    if ! kill -0 "${PID[$n]}" 2>/dev/null; then
        echo "$n is not running; its log:"
        tail -n 20 "$DIR/$n.log"
        exit 1
    fi
done

echo
for n in "${NODES[@]}"; do
    printf '  tenure state --url %s  ->  %s\n' "$(url "$n")" "$(state "$n")"
done
echo
echo "tenure states --url $(url "$MASTER"):"
show_states "$MASTER"

OLD_EPOCH=$(epoch "$MASTER")
echo
echo "kill -9 $MASTER (pid ${PID[$MASTER]}, epoch ${OLD_EPOCH:-?}) ..."
T0=$(date +%s%N)
kill -9 "${PID[$MASTER]}"
wait "${PID[$MASTER]}" 2>/dev/null || true
PID[$MASTER]=""

NEW=""
tick=0
while :; do
    now=$(date +%s%N)
    elapsed_ms=$(((now - T0) / 1000000))
    line=$(awk -v ms="$elapsed_ms" 'BEGIN { printf "  +%5.2fs ", ms / 1000 }')
    for n in "${NODES[@]}"; do
        s=$(state "$n")
        line+=" $n: $(printf '%-12s' "$s")"
        if [ "$n" != "$MASTER" ] && [ "$s" = MASTER ]; then NEW=$n; fi
    done
    echo "$line"
    [ -n "$NEW" ] && break
    if ((elapsed_ms > 30000)); then
        echo "no new master after 30 s"
        exit 1
    fi
    # Next line on the next 250 ms tick after the kill.
    tick=$((tick + 250))
    wait_ms=$((tick - ($(date +%s%N) - T0) / 1000000))
    if ((wait_ms > 0)); then sleep "$(awk -v ms="$wait_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"; fi
done

NEW_EPOCH=$(epoch "$NEW")
echo
echo "new master: $NEW, epoch ${NEW_EPOCH:-?} (was $MASTER, epoch ${OLD_EPOCH:-?});" \
    "took $(awk -v ms="$elapsed_ms" 'BEGIN{printf "%.2f", ms/1000}') s with T = $T, p = $P"
echo
echo "tenure states --url $(url "$NEW"):"
show_states "$NEW"
