#!/usr/bin/env bash
# How tenure scales with the number of nodes on one directory store: for each cluster size,
# CPU per node over a window (from /proc/<pid>/stat), the size and latency of the master's
# /v1/server/ha/states, and the crash failover (kill -9 of the master, time until another node
# answers MASTER; the killed node is started again before the next run, so the size stays).
#
#   scripts/bench-scale.sh [SIZES] [RUNS] [T] [p] [--append]
#
# Defaults: SIZES 2,8,32,64; 10 failovers per size (5 at 32 nodes and more); T = 10s, p = 1s;
# a 30 s CPU window. The observer polls every surviving node's /ha/state over kept-alive
# connections, one after the other, so the resolution of an onset is one sweep (printed).
# TENURE_BIN=/path/to/tenure skips the cargo build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
APPEND=0
ARGS=()
for a in "$@"; do
    case $a in
    --append) APPEND=1 ;;
    *) ARGS+=("$a") ;;
    esac
done
SIZES=${ARGS[0]:-2,8,32,64}
RUNS=${ARGS[1]:-10}
T=${ARGS[2]:-10s}
P=${ARGS[3]:-1s}
WINDOW=${BENCH_SCALE_WINDOW:-30}
command -v python3 >/dev/null || bash scripts/install-bench-deps.sh
if [ -z "${TENURE_BIN:-}" ]; then
    cargo build --release -q -p tenure
    TENURE_BIN=$PWD/target/release/tenure
fi
export TENURE_BIN
UPTIME_BEFORE=$(uptime | sed 's/.*load average: //')
TABLE=$(python3 - "$SIZES" "$RUNS" "$T" "$P" "$WINDOW" <<'PY'
import http.client, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

SIZES = [int(x) for x in sys.argv[1].split(",")]
RUNS, T, P, WINDOW = int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
def secs(s): return float(s[:-2]) / 1e3 if s.endswith("ms") else float(s[:-1])
TS, PS = secs(T), secs(P)
HZ = os.sysconf("SC_CLK_TCK")
STARTED = []

def free_ports(n):
    """n distinct free ports (all held open while choosing, so none is handed out twice)."""
    socks = []
    for _ in range(n):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks: s.close()
    return ports

def stop(p):
    if p.poll() is None:
        try: os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    p.wait()

class Conn:
    """A kept-alive connection to one node (reopened after an error)."""
    def __init__(self, port): self.port, self.c = port, None
    def get(self, path, timeout=1.0):
        for _ in range(2):
            try:
                if self.c is None: self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                self.c.request("GET", path); r = self.c.getresponse(); return r.read()
            except Exception:
                if self.c: self.c.close()
                self.c = None
        return None
    def state(self):
        b = self.get("/v1/server/ha/state", 0.5)
        return b.decode().strip('"') if b else None

def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)

def one_size(n, runs):
    d = tempfile.mkdtemp(prefix=f"tenure-scale{n}.")
    store = os.path.join(d, "store")
    # run never creates a cluster: tenure init first (it makes the directory too)
    subprocess.run([os.environ["TENURE_BIN"], "init", "--store", store, "--heartbeat-timeout", T],
                   check=True, stdout=subprocess.DEVNULL)
    ports = free_ports(n)
    procs = [None] * n
    def launch(i):
        log = open(os.path.join(d, f"n{i}.log"), "a")
        p = subprocess.Popen([os.environ["TENURE_BIN"], "run", "--node-name", f"node-{i:02}", "--store", store,
                              "--bind", f"127.0.0.1:{ports[i]}", "--heartbeat-timeout", T, "--poll-period", P],
                             stdout=log, stderr=log, env=dict(os.environ, NO_COLOR="1"))
        STARTED.append(p); procs[i] = p
    conns = [Conn(p) for p in ports]
    try:
        for i in range(n):
            launch(i)
        def master():
            for i in range(n):
                if conns[i].state() == "MASTER": return i
            return None
        def settled():
            m = master()
            if m is None: return None
            import json
            b = conns[m].get("/v1/server/ha/states")
            if not b: return None
            nodes = json.loads(b).get("nodes", {})
            live = [k for k, v in nodes.items() if v.get("status") in ("MASTER", "STANDBY")]
            return m if len(live) == n else None
        end = time.monotonic() + 3 * TS + 60
        m = None
        while time.monotonic() < end and m is None:
            # A node that could not start (its port taken meanwhile) starts on another port.
            for i in range(n):
                if procs[i].poll() is not None:
                    print(f"{n} nodes: node {i} exited ({procs[i].returncode}); restarting it", file=sys.stderr)
                    ports[i] = free_ports(1)[0]; conns[i] = Conn(ports[i]); launch(i)
            m = settled(); time.sleep(0.2)
        if m is None: raise SystemExit(f"{n} nodes: no settled cluster")
        time.sleep(2 * PS)
        # CPU per node over the window.
        t0 = {i: ticks(procs[i].pid) for i in range(n)}; w0 = time.monotonic()
        time.sleep(WINDOW)
        w = time.monotonic() - w0
        cpu = [100.0 * (ticks(procs[i].pid) - t0[i]) / HZ / w for i in range(n)]
        m = master()
        cpu_master = cpu[m]
        cpu_standby = [c for i, c in enumerate(cpu) if i != m]
        # /ha/states of the master: size and latency.
        lat = []
        size = 0
        for _ in range(50):
            a = time.perf_counter(); b = conns[m].get("/v1/server/ha/states"); lat.append(time.perf_counter() - a)
            size = len(b or b"")
        lat.sort()
        # Failovers.
        fo, sweeps = [], []
        for r in range(runs):
            m = master()
            if m is None: raise SystemExit(f"{n} nodes: no master before run {r + 1}")
            time.sleep(3 * PS)
            others = [i for i in range(n) if i != m]
            for i in others: conns[i].state()  # warm connections
            k = time.monotonic(); os.kill(procs[m].pid, signal.SIGKILL)
            got, full = None, []
            deadline = k + 3 * TS + 30
            while got is None and time.monotonic() < deadline:
                s0 = time.monotonic()
                for i in others:
                    if conns[i].state() == "MASTER":
                        got = time.monotonic(); break
                if got is None:
                    full.append(time.monotonic() - s0)  # a whole sweep of the survivors
                    time.sleep(0.002)
            if got is None: raise SystemExit(f"{n} nodes: no takeover")
            last_sweep = statistics.median(full) if full else 0.0
            fo.append(got - k); sweeps.append(last_sweep)
            procs[m].wait(); conns[m] = Conn(ports[m])
            launch(m)
            # The restarted node is a standby again before the next run.
            end = time.monotonic() + 30
            while time.monotonic() < end and conns[m].state() != "STANDBY": time.sleep(0.1)
            print(f"{n} nodes, run {r + 1}/{runs}: failover {1e3 * (got - k):.0f} ms (sweep {1e3 * last_sweep:.0f} ms)",
                  file=sys.stderr, flush=True)
        return dict(n=n, cpu_master=cpu_master, cpu_sb=statistics.mean(cpu_standby), cpu_sb_max=max(cpu_standby),
                    cpu_total=sum(cpu), size=size, lat_med=statistics.median(lat), lat_p99=lat[int(0.99 * (len(lat) - 1))],
                    fo=sorted(fo), sweep=statistics.median(sweeps))
    finally:
        for p in procs:
            if p: stop(p)
        shutil.rmtree(d, ignore_errors=True)

rows = []
try:
    for n in SIZES:
        runs = RUNS if n < 32 else max(1, RUNS // 2)
        try:
            rows.append(one_size(n, runs))
        except SystemExit as e:
            print(f"{n} nodes: {e}", file=sys.stderr)
            rows.append(dict(n=n, failed=str(e)))
            continue
        r = rows[-1]
        print(f"{n} nodes: CPU master {r['cpu_master']:.2f}%, standby mean {r['cpu_sb']:.2f}%, /ha/states {r['size']} B, "
              f"failovers {[round(1e3 * x) for x in r['fo']]} ms", file=sys.stderr, flush=True)
finally:
    for p in STARTED: stop(p)
print(f"| nodes | CPU master (% of a core) | CPU standby mean / max | CPU all nodes | /ha/states bytes | /ha/states latency median / p99 (ms) | failover − T: min / median / worst (ms) | runs | onset resolution (ms) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "failed" in r:
        print(f"| {r['n']} | failed: {r['failed']} | | | | | | | |")
        continue
    fo = [x - TS for x in r["fo"]]
    print(f"| {r['n']} | {r['cpu_master']:.2f} | {r['cpu_sb']:.2f} / {r['cpu_sb_max']:.2f} | {r['cpu_total']:.1f} | {r['size']} | "
          f"{1e3 * r['lat_med']:.2f} / {1e3 * r['lat_p99']:.2f} | {1e3 * fo[0]:.0f} / {1e3 * statistics.median(fo):.0f} / {1e3 * fo[-1]:.0f} | "
          f"{len(fo)} | {1e3 * r['sweep']:.0f} |")
PY
)
UPTIME_AFTER=$(uptime | sed 's/.*load average: //')
echo "$TABLE"
echo "load average before: $UPTIME_BEFORE; after: $UPTIME_AFTER"
if [ "$APPEND" = 1 ]; then
    {
        echo
        echo "### Scale: nodes on one directory, T = $T, p = $P ($(date -u +%Y-%m-%d))"
        echo
        echo "Machine: $(bench_machine); store on $(bench_store_fs); every node on this machine; load average (1, 5, 15 min) before: $UPTIME_BEFORE, after: $UPTIME_AFTER."
        echo "Command: \`scripts/bench-scale.sh $SIZES $RUNS $T $P --append\` (CPU over a ${WINDOW} s window of the settled cluster; /ha/states: 50 requests to the master over one kept-alive connection)."
        echo
        echo "$TABLE"
    } >>docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md"
fi
