#!/usr/bin/env bash
# tenure in one minute: a 3-node cluster on a fresh temporary directory (T = 3 s, p = 300 ms),
# kill -9 of the master, and another node taking over. Cleans up on exit and on Ctrl-C.
#
#   scripts/demo.sh                          # builds the release binary first (see below)
#   TENURE_BIN=target/debug/tenure scripts/demo.sh   # uses that binary, builds nothing
#   KEEP=1 scripts/demo.sh                   # keeps the directory (store and node logs)
#
# Without TENURE_BIN it runs `cargo build --release -p tenure` first: the first build takes
# 3 to 6 minutes on 2 cores (about 200 crates, then fat LTO in one codegen unit; cargo shows
# its progress), later runs a second. After the build the demo takes about 5 s (under 10 s).
set -euo pipefail

# TENURE_BIN relative to where the script was started from, or a command on PATH.
if [ -n "${TENURE_BIN:-}" ]; then
    case $TENURE_BIN in
    /*) ;;
    */*) TENURE_BIN=$PWD/$TENURE_BIN ;;
    *) TENURE_BIN=$(command -v "$TENURE_BIN" || echo "$PWD/$TENURE_BIN") ;;
    esac
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=3s
P=300ms
NODES=(node-a node-b node-c)

if [ -n "${TENURE_BIN:-}" ]; then
    BIN=$TENURE_BIN
    if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then
        echo "TENURE_BIN=$BIN is not an executable file" >&2
        exit 1
    fi
    echo "using $BIN"
else
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust (https://rustup.rs), or set TENURE_BIN=/path/to/tenure" >&2
        exit 1
    fi
    echo "building the release binary (cargo build --release -p tenure): the first build takes"
    echo "3 to 6 minutes on 2 cores, later ones a second; TENURE_BIN=/path/to/tenure skips it"
    cargo build --release -p tenure
    BIN=${CARGO_TARGET_DIR:-target}/release/tenure
    case $BIN in /*) ;; *) BIN=$(pwd)/$BIN ;; esac
fi
START_NS=$(date +%s%N)

DIR=$(mktemp -d "${TMPDIR:-/tmp}/tenure-demo.XXXXXX")
declare -A PID PORT

# kill -9 node $1 and wait until it is gone. Disowned first: bash would otherwise print a
# "Killed" notice for it later (even after `wait PID`), in the middle of the output.
kill_node() {
    local pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    disown "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 250); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    PID[$1]=""
}

cleanup() {
    trap - EXIT INT TERM
    for n in "${NODES[@]}"; do kill_node "$n"; done
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

# True when the states view of node $1 lists every node (each name as a key of "nodes"). A
# node lists the store's nodes/ only every few polls, so right after start-up it may know only
# itself.
lists_all() {
    local out n
    out=$("$BIN" states --url "$(url "$1")" 2>/dev/null) || return 1
    for n in "${NODES[@]}"; do
        [[ $out =~ \"$n\"[[:space:]]*: ]] || return 1
    done
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

# Exits, with its log, if a node is no longer running.
all_running() {
    local n
    for n in "${NODES[@]}"; do
        if ! kill -0 "${PID[$n]}" 2>/dev/null; then
            echo "$n is not running; its log:"
            tail -n 20 "$DIR/$n.log"
            exit 1
        fi
    done
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# A cluster is created once, explicitly: `tenure run` never turns an empty or missing
# directory into one (a typo or a missing mount must not become a second cluster).
echo "store and logs in $DIR"
echo "\$ tenure init --store $DIR/store --heartbeat-timeout $T"
"$BIN" init --store "$DIR/store" --heartbeat-timeout "$T" | sed 's/^/  /'

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
# Every wait below is bounded by time, and gives up at once when a node has exited.
DEADLINE=$(($(now_ms) + 20000))
MASTER=""
while :; do
    all_running
    MASTER=$(master_of "${NODES[@]}")
    [ -n "$MASTER" ] && break
    if (($(now_ms) > DEADLINE)); then
        echo "no master after 20 s; the last lines of each log:"
        for n in "${NODES[@]}"; do echo "--- $n"; tail -n 15 "$DIR/$n.log"; done
        exit 1
    fi
    sleep 0.1
done

# Show the cluster once the master's view lists all three nodes (at most 10 s more).
DEADLINE=$(($(now_ms) + 10000))
until lists_all "$MASTER"; do
    all_running
    if (($(now_ms) > DEADLINE)); then
        echo "(after 10 s, $MASTER still does not list all of ${NODES[*]})"
        break
    fi
    sleep 0.1
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
kill_node "$MASTER"

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
echo
echo "done in $(awk -v ms="$((($(date +%s%N) - START_NS) / 1000000))" 'BEGIN{printf "%.1f", ms/1000}') s (after the build)"
