#!/usr/bin/env bash
# bench-fleet.sh — a fleet scan of HOSTS hosts over ssh with network latency, against the
# same hosts scanned one at a time.
#
# Usage (as root): scripts/bench-fleet.sh [HOSTS=8] [N=300] [RTT_MS=20] [RUNS=3]
#
# The hosts: the harness's libvirtd reached over ssh (the tests' own sshd, see
# test-sshd.sh) under HOSTS different names, each through a small TCP proxy of its own
# that delays every chunk by half of RTT_MS each way, so each link has RTT_MS of latency
# per round trip. N extra shut-off domains are defined in the harness (diq-bfleet-*),
# so every host has them. The frozen-agent guest is paused for the figures (its bound is
# an e2e test) and resumed at the end; every scan is warm (the OS cache primed by one
# fleet scan first).
#
# Prints the median of RUNS runs of: each single-host scan (`--hosts hK scan --json`),
# their slowest and their sum (the one-host-at-a-time way), the fleet scan
# (`--all-hosts scan --json`) with the machine's CPU per fleet scan split by process,
# and a fleet rescan within `--stats-ttl`; then, with a host added that accepts connections and never
# answers, the fleet scan's wall time against its connect timeout and deadline.
# Goals: fleet <= 1.3x the slowest single-host scan; with the hanging host, the fleet scan
# ends within its deadline + 0.5 s. All HOSTS names reach one libvirtd on this machine,
# so they also share its CPU: a real fleet's hosts each have their own.

set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS="${1:-8}"
N="${2:-300}"
RTT_MS="${3:-20}"
RUNS="${4:-3}"
PREFIX="diq-bfleet-"
CONNECT_TIMEOUT=5
PROBE_TIMEOUT=5
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
[[ -z "${PRIVATE_DAEMON:-}" ]] || { echo "bench-fleet.sh: needs the harness (its guests answer over ssh)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "bench-fleet.sh: needs python3 (the latency proxy)" >&2; exit 2; }

work="$(mktemp -d)"
sshd_dir=""
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n "$sshd_dir" ]] && scripts/test-sshd.sh stop "$sshd_dir" >/dev/null 2>&1
    undefine_domains "$PREFIX"
    if [[ "$(virsh_ domstate diq-frozen 2>/dev/null)" == paused ]]; then
        virsh_ resume diq-frozen >/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The proxy: every chunk read from one side is written to the other half an RTT later,
# in order. `hang` mode accepts and never answers (a host hanging at connect).
cat >"$work/proxy.py" <<'PY'
import asyncio, sys, time

async def pipe(reader, writer, delay):
    queue = asyncio.Queue()
    async def read():
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return
    async def write():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()
    await asyncio.gather(read(), write(), return_exceptions=True)

async def main():
    mode, listen, upstream, half_rtt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) / 1000
    async def handle(reader, writer):
        if mode == "hang":
            await reader.read()  # never answers; ends when the client gives up
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(pipe(reader, up_writer, half_rtt), pipe(up_reader, writer, half_rtt))
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
PY

define_shutoff_domains "$PREFIX" "$N" "$work"
if [[ "$(virsh_ domstate diq-frozen)" == running ]]; then
    virsh_ suspend diq-frozen >/dev/null
fi
eval "$(scripts/test-sshd.sh start)"
# shellcheck disable=SC2153 # set by the eval above
sshd_dir="$SSHD_DIR"
socket="${URI#*socket=}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Sets proxy_port (not a command substitution: its subshell would keep the pid from
# `pids`, and the proxy would outlive the benchmark).
start_proxy() { # MODE UPSTREAM
    local port
    port=$(free_port)
    python3 "$work/proxy.py" "$1" "$port" "$2" "$((RTT_MS / 2))" >"$work/proxy-$port.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do grep -q ready "$work/proxy-$port.log" 2>/dev/null && break; sleep 0.1; done
    proxy_port=$port
}

mkdir -p "$work/cfg/dismount_iso_qemu"
config="$work/cfg/dismount_iso_qemu/config.toml"
: >"$config"
for i in $(seq 1 "$HOSTS"); do
    start_proxy relay "$SSHD_PORT"
    port=$proxy_port
    # The proxy's port is another name for the same sshd: its host key is known there too.
    printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f2,3 <<<"$SSHD_HOST_KEY_LINE")" >>"$SSHD_DIR/known_hosts"
    printf '[hosts.h%s]\nuri = "qemu+ssh://%s@127.0.0.1:%s/session?keyfile=%s&command=%s&socket=%s"\n\n' \
        "$i" "$SSHD_USER" "$port" "$SSHD_KEY" "$SSHD_SSH" "$socket" >>"$config"
done
start_proxy hang 0
hang_port=$proxy_port

tool() {
    XDG_CONFIG_HOME="$work/cfg" XDG_CACHE_HOME="$work/cache" "$BIN" --probe-timeout "$PROBE_TIMEOUT" \
        --connect-timeout "$CONNECT_TIMEOUT" "$@"
}
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
time_ms() { # command...: wall ms (a failure is reported, the figure still printed)
    local t0 t1
    t0=$(now_ms)
    "$@" >/dev/null 2>"$work/stderr" || echo "bench-fleet.sh: '$*' exited $?: $(head -c 300 "$work/stderr")" >&2
    t1=$(now_ms)
    echo $((t1 - t0))
}

echo "hosts: $HOSTS over ssh, ${RTT_MS} ms per round trip, $(virsh_ list --all --name | grep -c .) domains each"
time_ms tool --all-hosts scan --json >/dev/null # prime the OS cache of every host

declare -A single
sum=0 slowest=0
for i in $(seq 1 "$HOSTS"); do
    single[$i]=$(for _ in $(seq "$RUNS"); do time_ms tool --hosts "h$i" scan --json; done | median)
    printf '  single host h%-3s %8s ms\n' "$i" "${single[$i]}"
    sum=$(awk -v a="$sum" -v b="${single[$i]}" 'BEGIN {print a + b}')
    slowest=$(awk -v a="$slowest" -v b="${single[$i]}" 'BEGIN {print (b > a ? b : a)}')
done
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# CPU ticks (user + system) of the given processes.
proc_ticks() { local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
# libvirtd's pid: its pid file sits beside its socket.
daemon_pid="$(cat "$(dirname "$socket")/libvirtd.pid" 2>/dev/null || true)"
[[ "$daemon_pid" =~ ^[0-9]+$ && "$(cat "/proc/$daemon_pid/comm" 2>/dev/null)" == libvirtd ]] || daemon_pid=""
# shellcheck disable=SC2086 # an empty daemon_pid is no process
cpu0=$(busy_ticks) px0=$(proc_ticks "${pids[@]}") d0=$(proc_ticks $daemon_pid)
fleet=$(for _ in $(seq "$RUNS"); do time_ms tool --all-hosts scan --json; done | median)
# shellcheck disable=SC2086
cpu1=$(busy_ticks) px1=$(proc_ticks "${pids[@]}") d1=$(proc_ticks $daemon_pid)
per_run() { awk -v a="$1" -v b="$2" -v r="$RUNS" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / t / r }'; }
fleet_cpu=$(per_run "$cpu0" "$cpu1")
proxies_cpu=$(per_run "$px0" "$px1")
daemon_cpu=$(per_run "$d0" "$d1")

printf '\n%-40s %8s ms\n' "slowest single-host scan" "$slowest"
printf '%-40s %8s ms\n' "sum of the single-host scans" "$sum"
printf '%-40s %8s ms\n' "fleet scan of $HOSTS hosts" "$fleet"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo "fleet / slowest single = $(ratio "$fleet" "$slowest")  (goal <= 1.3)"
echo "sum / fleet            = $(ratio "$sum" "$fleet")  (how much faster than one host at a time)"
floor=$(awk -v c="$fleet_cpu" -v n="$(nproc)" 'BEGIN { printf "%.0f", c / n * 1000 }')
ours=$( { /usr/bin/time -f '%U %S' env XDG_CONFIG_HOME="$work/cfg" XDG_CACHE_HOME="$work/cache" "$BIN" \
    --probe-timeout "$PROBE_TIMEOUT" --connect-timeout "$CONNECT_TIMEOUT" --all-hosts scan --json >/dev/null; } 2>&1 | tail -1 |
    awk '{ printf "%.2f", $1 + $2 }')
echo "CPU time of the whole machine per fleet scan: ${fleet_cpu} s on $(nproc) cores, so no fleet scan here can take less than ${floor} ms"
echo "  (every host is this machine: ssh, sshd, the proxies and libvirtd run here)"
echo "  of it: the tool with its ssh children ${ours} s, the latency proxies ${proxies_cpu} s, libvirtd ${daemon_cpu} s, the rest (sshd) $(awk -v a="$fleet_cpu" -v b="$ours" -v c="$proxies_cpu" -v d="$daemon_cpu" 'BEGIN { printf "%.2f", a - b - c - d }') s"
echo "fleet / max(slowest single, CPU floor) = $(ratio "$fleet" "$(( floor > ${slowest%.*} ? floor : ${slowest%.*} ))")"

# A rescan within a statistics TTL: the listing kept by the scan before it.
time_ms tool --all-hosts --stats-ttl 300 scan --json >/dev/null
kept=$(for _ in $(seq "$RUNS"); do time_ms tool --all-hosts --stats-ttl 300 scan --json; done | median)
echo "fleet rescan within --stats-ttl (each host's VM list kept): ${kept} ms ($(ratio "$kept" "$fleet")x the fresh fleet scan)"

# A host that accepts and never answers, added to the fleet.
printf '[hosts.hang]\nuri = "qemu+ssh://%s@127.0.0.1:%s/session?keyfile=%s&command=%s&socket=%s"\n' \
    "$SSHD_USER" "$hang_port" "$SSHD_KEY" "$SSHD_SSH" "$socket" >>"$config"
with_hang=$(time_ms tool --all-hosts scan --json)
deadline_ms=$(((CONNECT_TIMEOUT + PROBE_TIMEOUT + 1) * 1000))
echo
echo "fleet scan with a hanging host added: ${with_hang} ms (connect timeout ${CONNECT_TIMEOUT} s; deadline ${deadline_ms} ms; goal <= deadline + 500 ms)"
tool --all-hosts scan --json 2>&1 >/dev/null | grep -E '^error: host ' | sed 's/^/  /' || true
