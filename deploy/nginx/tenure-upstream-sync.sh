#!/bin/sh
# Keeps an nginx upstream file pointing at the tenure master's application.
#
#   tenure-upstream-sync.sh UPSTREAM_FILE TENURE_URL=APP_ADDRESS [TENURE_URL=APP_ADDRESS ...]
#   e.g. tenure-upstream-sync.sh /etc/nginx/tenure-upstream.conf \
#            http://10.0.0.1:8081=10.0.0.1:8080 http://10.0.0.2:8081=10.0.0.2:8080
#
# Every INTERVAL seconds (default 1) it asks each node GET /v1/server/ha/master (200 on the
# master, 503 elsewhere; with --users, start tenure with --public-state). When exactly one node
# answers 200 and it is not the one in the file, it writes `server APP_ADDRESS;` to the file
# (atomically, by rename) and runs RELOAD (default `nginx -s reload`). After FALL (default 2)
# rounds in a row without exactly one master it writes a server marked `down`, so nginx answers
# 502 rather than sending requests to an application whose tenure is no longer MASTER.
# Environment: INTERVAL, FALL, RELOAD, CURL_TIMEOUT (seconds per request, default 1).
set -u
[ $# -ge 2 ] || { echo "usage: $0 UPSTREAM_FILE TENURE_URL=APP_ADDRESS..." >&2; exit 2; }
upstream=$1
shift
interval=${INTERVAL:-1}
reload=${RELOAD:-nginx -s reload}
timeout=${CURL_TIMEOUT:-1}
fall=${FALL:-2}
# nginx wants at least one server in an upstream: this one is never used.
none="127.0.0.1:9 down"
misses=0

current=$(sed -n 's/^server \([^;]*\);.*/\1/p' "$upstream" 2>/dev/null | head -n 1)
while :; do
    master=""
    count=0
    for pair in "$@"; do
        url=${pair%%=*}
        app=${pair#*=}
        code=$(curl -s -o /dev/null -m "$timeout" -w '%{http_code}' "$url/v1/server/ha/master")
        if [ "$code" = 200 ]; then
            master=$app
            count=$((count + 1))
        fi
    done
    want=$current
    if [ "$count" = 1 ]; then
        misses=0
        want=$master
    else
        misses=$((misses + 1))
        [ "$misses" -ge "$fall" ] && want=$none
    fi
    if [ "$want" != "$current" ]; then
        printf 'server %s;\n' "$want" > "$upstream.tmp" && mv "$upstream.tmp" "$upstream"
        if sh -c "$reload"; then
            echo "tenure-upstream-sync: upstream is now $want" >&2
            current=$want
        fi
    fi
    sleep "$interval"
done
