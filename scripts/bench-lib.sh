# Sourced by scripts/bench-*.sh: how they describe the machine beside a table in
# docs/BENCHMARKS.md, so every table names it the same way.

# "2 cores (AMD EPYC), 23 GiB, Linux 6.18.44".
bench_machine() {
    local cpu
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
    echo "$(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)"
}

# The file system under /tmp, where the benchmarks' directory stores live.
bench_store_fs() {
    df -T /tmp | awk 'NR==2 {print $2}'
}
