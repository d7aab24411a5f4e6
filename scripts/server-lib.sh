# Shared by the scripts that run a local test server (moto.sh, seaweedfs.sh, azurite.sh);
# sourced, not run.

# stop_pid PID NAME: stop the server we started, PID, but only while its command line still
# names NAME (a PID file can outlive its process and the number be reused): SIGTERM, then
# SIGKILL if it is still there after 5 s.
stop_pid() {
    local pid=$1 name=$2 i
    grep -q "$name" "/proc/$pid/cmdline" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
}
