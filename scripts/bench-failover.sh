#!/usr/bin/env bash
# Crash failover (kill -9) and graceful handover (SIGTERM) of real tenure processes on a local
# directory or on S3, measured by an observer sampling every node's /v1/server/ha/state every
# ~10 ms.
#
#   scripts/bench-failover.sh [RUNS] [T] [p] [--store dir|s3|seaweedfs|azure] [--append]
#
# Defaults: 30 runs at T = 2s, p = 200ms on a directory. --store s3 runs the nodes on a fresh
# bucket of a local S3 server (moto, scripts/moto.sh: installed and started if needed);
# seaweedfs on SeaweedFS (scripts/seaweedfs.sh), azure on Azurite (scripts/azurite.sh). With
# --append, the table and the machine it ran on are appended to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
APPEND=0
STORE=dir
ARGS=()
while (($#)); do
    case $1 in
        --append) APPEND=1 ;;
        --store) STORE=${2:?--store needs dir, s3, seaweedfs or azure}; shift ;;
        --store=*) STORE=${1#--store=} ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done
case $STORE in dir | s3 | seaweedfs | azure) ;; *) echo "--store is dir, s3, seaweedfs or azure, not $STORE" >&2; exit 2 ;; esac
RUNS=${ARGS[0]:-30}
T=${ARGS[1]:-2s}
P=${ARGS[2]:-200ms}

cargo build --release -q -p tenure
cargo build -q -p tenure-tests --bin bench_failover
export TENURE_BIN=$PWD/target/release/tenure
KIND=$STORE
case $STORE in
    s3)
        if [ -z "${TENURE_S3_ENDPOINT:-}" ]; then
            TENURE_S3_ENDPOINT=$(bash scripts/moto.sh start)
            export TENURE_S3_ENDPOINT
        fi ;;
    seaweedfs)
        TENURE_S3_ENDPOINT=$(bash scripts/seaweedfs.sh start)
        export TENURE_S3_ENDPOINT TENURE_S3_SERVER=seaweedfs
        KIND=s3 ;;
    azure)
        TENURE_AZURITE_ENDPOINT=$(bash scripts/azurite.sh start)
        export TENURE_AZURITE_ENDPOINT ;;
esac
TABLE=$(target/debug/bench_failover "$RUNS" "$T" "$P" "$KIND")
echo "$TABLE"

if [ "$APPEND" = 1 ]; then
    {
        echo
        if [ "$STORE" = s3 ]; then
            WHAT="S3 store (moto $(sed -n 's/^MOTO_VERSION=//p' scripts/moto.sh) on 127.0.0.1)"
            WHERE="store: a bucket on moto, a Python S3 server on the same machine (storage timeout = p)"
        elif [ "$STORE" = seaweedfs ]; then
            WHAT="S3 store (SeaweedFS $(sed -n 's/^SEAWEEDFS_VERSION=//p' scripts/seaweedfs.sh) on 127.0.0.1)"
            WHERE="store: a bucket on one weed server (master, volume, filer, S3 gateway) on the same machine (storage timeout = p)"
        elif [ "$STORE" = azure ]; then
            WHAT="Azure store (Azurite $(sed -n 's/^AZURITE_VERSION=//p' scripts/azurite.sh) on 127.0.0.1)"
            WHERE="store: a container on Azurite, Microsoft's emulator, on the same machine (storage timeout = p)"
        else
            WHAT="directory store"
            WHERE="store on $(bench_store_fs)"
        fi
        echo "### Failover and handover, $WHAT, T = $T, p = $P ($(date -u +%Y-%m-%d))"
        echo
        echo "Machine: $(bench_machine); $WHERE."
        echo "Command: \`scripts/bench-failover.sh $RUNS $T $P --store $STORE --append\`"
        echo
        echo "$TABLE"
    } >> docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md"
fi
