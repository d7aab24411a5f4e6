#!/usr/bin/env bash
# tenure's crash failover beside two peers on the same machine, with the same timeout, runs
# interleaved (tenure, etcd, Sentinel, tenure, …) so all three see the same load:
#
#   tenure          two nodes on a local directory, --heartbeat-timeout T, --poll-period p;
#                   kill -9 of the master, time until the other answers MASTER on
#                   /v1/server/ha/state (sampled every ~5 ms).
#   etcd lock       one etcd server (loopback); two `etcdctl lock --ttl T` contenders on a fresh
#                   lock name; kill -9 of the holder, time until the other prints its lock key
#                   (it does so the moment it holds the lock).
#   Redis Sentinel  a master and one replica (redis-server) and one Sentinel (quorum 1,
#                   down-after-milliseconds T); kill -9 of the master, time until
#                   `SENTINEL get-master-addr-by-name` names the replica (sampled every ~5 ms).
#
#   scripts/bench-peers.sh [RUNS] [T] [p] [--only tenure,etcd,sentinel] [--append]
#
# Defaults: 30 runs, T = 2s, p = 200ms. Loopback only; every process is started by this script
# and killed by its pid. Needs etcd-server, etcd-client, redis-server, redis-sentinel
# (scripts/install-bench-deps.sh). TENURE_BIN=/path/to/tenure skips the cargo build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
APPEND=0
ONLY=tenure,etcd,sentinel
ARGS=()
while (($#)); do
    case $1 in
    --append) APPEND=1 ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    *) ARGS+=("$1") ;;
    esac
    shift
done
RUNS=${ARGS[0]:-30}
T=${ARGS[1]:-2s}
P=${ARGS[2]:-200ms}
for c in etcd etcdctl redis-server redis-sentinel python3; do
    command -v "$c" >/dev/null || bash scripts/install-bench-deps.sh
    command -v "$c" >/dev/null || { echo "bench-peers: $c missing after scripts/install-bench-deps.sh" >&2; exit 1; }
done
if [ -z "${TENURE_BIN:-}" ]; then
    cargo build --release -q -p tenure
    TENURE_BIN=$PWD/target/release/tenure
fi
export TENURE_BIN
UPTIME_BEFORE=$(uptime | sed 's/.*load average: //')
TABLE=$(python3 - "$RUNS" "$T" "$P" "$ONLY" <<'PY'
import os, signal, socket, subprocess, sys, tempfile, time, shutil, statistics, urllib.request

RUNS, T, P, ONLY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(",")

def secs(s):
    return float(s[:-2]) / 1e3 if s.endswith("ms") else float(s[:-1])

TS, PS = secs(T), secs(P)
TMP = tempfile.mkdtemp(prefix="tenure-peers.")
STARTED = []  # every Popen this script started, killed by pid at the end

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def start(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    STARTED.append(p)
    return p

def stop(p, sig=signal.SIGKILL):
    if p.poll() is None:
        try: os.kill(p.pid, sig)
        except ProcessLookupError: pass
    try: p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL); p.wait()

def wait_for(pred, timeout, step=0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v: return v
        time.sleep(step)
    return None

# ---- tenure ----
def tenure_state(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/server/ha/state", timeout=0.5) as r:
            return r.read().decode().strip('"')
    except Exception:
        return None

def run_tenure(i):
    d = os.path.join(TMP, f"tenure{i}"); os.makedirs(d)
    # run never creates a cluster: tenure init first (it makes the directory too)
    subprocess.run([os.environ["TENURE_BIN"], "init", "--store", os.path.join(d, "store"), "--heartbeat-timeout", T],
                   check=True, stdout=subprocess.DEVNULL)
    ports, procs = [free_port(), free_port()], []
    for n, port in zip("ab", ports):
        log = open(os.path.join(d, f"{n}.log"), "w")
        procs.append(start([os.environ["TENURE_BIN"], "run", "--node-name", f"node-{n}", "--store", os.path.join(d, "store"),
                            "--bind", f"127.0.0.1:{port}", "--heartbeat-timeout", T, "--poll-period", P],
                           stdout=log, stderr=log, env=dict(os.environ, NO_COLOR="1")))
    # k + 1: wait_for stops on a true value.
    m = wait_for(lambda: next((k + 1 for k in (0, 1) if tenure_state(ports[k]) == "MASTER"), None), 3 * TS + 10, 0.02)
    if m is None: raise SystemExit("tenure: no master")
    m -= 1
    o = 1 - m
    # The standby has read the master's lease a few times.
    wait_for(lambda: tenure_state(ports[o]) == "STANDBY", 3 * TS + 10, 0.02)
    time.sleep(3 * PS)
    t0 = time.monotonic(); os.kill(procs[m].pid, signal.SIGKILL)
    got = wait_for(lambda: tenure_state(ports[o]) == "MASTER", 3 * TS + 10)
    t1 = time.monotonic()
    for p in procs: stop(p)
    shutil.rmtree(d, ignore_errors=True)
    if not got: raise SystemExit("tenure: no takeover")
    return t1 - t0

# ---- etcd ----
ETCD = None
ETCD_EP = None
def etcd_up():
    global ETCD, ETCD_EP
    d = os.path.join(TMP, "etcd"); cport, pport = free_port(), free_port()
    ETCD_EP = f"http://127.0.0.1:{cport}"
    ETCD = start(["etcd", "--name", "bench", "--data-dir", os.path.join(d, "data"),
                  "--listen-client-urls", ETCD_EP, "--advertise-client-urls", ETCD_EP,
                  "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                  "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                  "--initial-cluster", f"bench=http://127.0.0.1:{pport}",
                  "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}"],
                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(TMP, "etcd.log"), "w"))
    ok = wait_for(lambda: subprocess.run(["etcdctl", "--endpoints", ETCD_EP, "endpoint", "health"],
                                         capture_output=True).returncode == 0, 20, 0.2)
    if not ok: raise SystemExit("etcd did not start")

def etcd_lock(name, ttl):
    return start(["etcdctl", "--endpoints", ETCD_EP, "lock", "--ttl", str(ttl), name],
                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

def run_etcd(i):
    ttl = max(1, round(TS))
    name = f"bench-{i}-{os.getpid()}"
    a = etcd_lock(name, ttl)
    if not a.stdout.readline(): raise SystemExit("etcd: first contender got no lock")
    b = etcd_lock(name, ttl)
    time.sleep(max(0.5, 3 * PS))  # b is waiting on the lock
    t0 = time.monotonic(); os.kill(a.pid, signal.SIGKILL)
    line = b.stdout.readline()
    t1 = time.monotonic()
    stop(a); stop(b, signal.SIGTERM)
    if not line: raise SystemExit("etcd: second contender got no lock")
    return t1 - t0

# ---- Redis Sentinel ----
def resp(port, *args, timeout=0.5):
    """One command over RESP; returns the reply as str / list / None."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join([f"*{len(args)}\r\n".encode()] + [f"${len(a)}\r\n{a}\r\n".encode() for a in map(str, args)]))
        f = s.makefile("rb")
        def read():
            line = f.readline().rstrip(b"\r\n"); t, rest = line[:1], line[1:].decode()
            if t in (b"+", b"-", b":"): return rest
            if t == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode()
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise ValueError(line)
        return read()

def safe(f, *a):
    try: return f(*a)
    except Exception: return None

def run_sentinel(i):
    d = os.path.join(TMP, f"sentinel{i}"); os.makedirs(d)
    mport, rport, sport = free_port(), free_port(), free_port()
    base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d, "--protected-mode", "no"]
    m = start(["redis-server", "--port", str(mport)] + base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = start(["redis-server", "--port", str(rport), "--replicaof", "127.0.0.1", str(mport)] + base,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = os.path.join(d, "sentinel.conf")
    with open(conf, "w") as f:
        f.write(f"port {sport}\nbind 127.0.0.1\nprotected-mode no\ndir {d}\n"
                f"sentinel monitor bench 127.0.0.1 {mport} 1\n"
                f"sentinel down-after-milliseconds bench {int(TS * 1000)}\n"
                f"sentinel failover-timeout bench 60000\n"
                f"sentinel parallel-syncs bench 1\n")
    s = start(["redis-sentinel", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "sentinel.log"), "w"))
    def ready():
        info = safe(resp, rport, "INFO", "replication") or ""
        if "master_link_status:up" not in info: return False
        reps = safe(resp, sport, "SENTINEL", "REPLICAS", "bench") or []
        for rep in reps:
            kv = dict(zip(rep[::2], rep[1::2]))
            if kv.get("port") == str(rport) and kv.get("flags") == "slave" and kv.get("master-link-status") == "ok":
                return True
        return False
    if not wait_for(ready, 30, 0.05): raise SystemExit("sentinel: replica not seen")
    time.sleep(1.0)
    t0 = time.monotonic(); os.kill(m.pid, signal.SIGKILL)
    got = wait_for(lambda: (safe(resp, sport, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "bench") or [None, None])[1] == str(rport),
                   10 * TS + 30)
    t1 = time.monotonic()
    for p in (s, r, m): stop(p)
    shutil.rmtree(d, ignore_errors=True)
    if not got: raise SystemExit("sentinel: no promotion")
    return t1 - t0

KINDS = {"tenure": run_tenure, "etcd": run_etcd, "sentinel": run_sentinel}
res = {k: [] for k in ONLY}
try:
    if "etcd" in ONLY: etcd_up()
    for i in range(1, RUNS + 1):
        line = []
        for k in ONLY:
            v = KINDS[k](i); res[k].append(v); line.append(f"{k} {v*1e3:.0f} ms")
        print(f"run {i}/{RUNS}: " + ", ".join(line), file=sys.stderr, flush=True)
finally:
    for p in STARTED: stop(p)
    shutil.rmtree(TMP, ignore_errors=True)

def ver(argv):
    try: return subprocess.run(argv, capture_output=True, text=True).stdout.split("\n")[0].strip()
    except Exception: return "?"
what = {"tenure": f"tenure, 2 nodes, directory store, --heartbeat-timeout {T} --poll-period {P}",
        "etcd": f"etcdctl lock --ttl {max(1, round(TS))} ({ver(['etcd', '--version'])}, 1 member)",
        "sentinel": f"Redis Sentinel, down-after-milliseconds {int(TS*1000)}, quorum 1 ({ver(['redis-server', '--version']).split(' sha')[0]})"}
base = statistics.median(res["tenure"]) if "tenure" in res else None
print("| system (timeout 2 s) | runs | kill -9 → other holds: min / median / worst (ms) | median / tenure's |".replace("2 s", T))
print("|---|---|---|---|")
for k in ONLY:
    v = sorted(res[k]); med = statistics.median(v)
    ratio = f"{med / base:.2f}" if base else "–"
    print(f"| {what[k]} | {len(v)} | {v[0]*1e3:.0f} / {med*1e3:.0f} / {v[-1]*1e3:.0f} | {ratio} |")
PY
)
UPTIME_AFTER=$(uptime | sed 's/.*load average: //')
echo "$TABLE"
echo "load average before: $UPTIME_BEFORE; after: $UPTIME_AFTER"
if [ "$APPEND" = 1 ]; then
    {
        echo
        echo "### Crash failover beside etcd and Redis Sentinel, timeout $T ($(date -u +%Y-%m-%d))"
        echo
        echo "Machine: $(bench_machine); store on $(bench_store_fs); load average (1, 5, 15 min) before: $UPTIME_BEFORE, after: $UPTIME_AFTER."
        echo "Command: \`scripts/bench-peers.sh $RUNS $T $P --only $ONLY --append\` (runs interleaved: one of each system in turn)."
        echo
        echo "$TABLE"
    } >>docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md"
fi
