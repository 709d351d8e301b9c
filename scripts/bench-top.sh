#!/usr/bin/env bash
# bench-top.sh — what `top -d 1` costs against a `virsh domstats --raw` loop, once per
# second each, for SECS seconds, on the harness plus N extra shut-off domains.
#
# Usage (as root): scripts/bench-top.sh [N=300] [SECS=60]
#
# `top -d 1` runs in a tmux pane of 200x50 (a real terminal: it draws as a person sees
# it) and is quit with `q`; the loop runs `virsh domstats --raw` then `sleep 1`. For each
# it prints the CPU time (user+system, children included: the loop's virsh processes) and
# the peak RSS (of the largest process), and libvirtd's CPU time during the run (from its
# /proc stat). Goal: ours <= the loop's, libvirtd included. The extra domains (diq-btop-*)
# are undefined at the end. PRIVATE_DAEMON=1 measures in a libvirtd of the script's own
# (see bench-lib.sh); its figures have no running guests.

set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-300}"
SECS="${2:-60}"
PREFIX="diq-btop-"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
command -v tmux >/dev/null || { echo "bench-top.sh: needs tmux" >&2; exit 2; }

work="$(mktemp -d)"
session="diq-bench-top-$$"
cleanup() {
    tmux kill-session -t "$session" 2>/dev/null || true
    undefine_domains "$PREFIX"
    stop_private_daemon
    rm -rf "$work"
}
trap cleanup EXIT

define_shutoff_domains "$PREFIX" "$N" "$work"
echo "domains on $URI: $(virsh_ list --all --name | grep -c .)"

# libvirtd's pid: its pid file sits beside its socket.
socket="${URI#*socket=}"
pidfile="$(dirname "$socket")/libvirtd.pid"
daemon_pid="$(cat "$pidfile" 2>/dev/null || true)"
[[ "$daemon_pid" =~ ^[0-9]+$ && "$(cat "/proc/$daemon_pid/comm" 2>/dev/null)" == libvirtd ]] ||
    { echo "bench-top.sh: no libvirtd pid in $pidfile" >&2; exit 2; }
tick="$(getconf CLK_TCK)"
daemon_cpu() { awk -v t="$tick" '{printf "%.2f\n", ($14 + $15) / t}' "/proc/$daemon_pid/stat"; }

# run_measured OUT CMD...: CMD's CPU time (user+system, children included) and peak RSS.
measure='import resource, subprocess, sys
subprocess.run(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.2f %.2f %d\n" % (r.ru_utime, r.ru_stime, r.ru_maxrss))'

report() { # NAME FILE DAEMON_SECONDS
    read -r user sys rss <"$2"
    printf '%-28s cpu %6.2f s (user %.2f, system %.2f)  peak RSS %6d KiB  libvirtd cpu %6.2f s\n' \
        "$1" "$(echo "$user + $sys" | bc)" "$user" "$sys" "$rss" "$3"
}

# 1. top -d 1 in a terminal.
cache="$work/cache"
d0="$(daemon_cpu)"
tmux new-session -d -s "$session" -x 200 -y 50 \
    "env XDG_CACHE_HOME='$cache' python3 -c '$measure' '$work/top' '$BIN' -c '$URI' top -d 1; sleep 600"
sleep "$SECS"
tmux send-keys -t "$session" q
for _ in $(seq 100); do [[ -s "$work/top" ]] && break; sleep 0.1; done
d1="$(daemon_cpu)"
tmux kill-session -t "$session"
[[ -s "$work/top" ]] || { echo "bench-top.sh: top did not quit" >&2; exit 1; }

# 2. The domstats loop, as long.
loop="for _ in \$(seq $SECS); do virsh -q -c '$URI' domstats --raw >/dev/null; sleep 1; done"
d2="$(daemon_cpu)"
python3 -c "$measure" "$work/loop" bash -c "$loop"
d3="$(daemon_cpu)"

echo "over ${SECS} s, one sample a second:"
report "top -d 1" "$work/top" "$(echo "$d1 - $d0" | bc)"
report "virsh domstats --raw loop" "$work/loop" "$(echo "$d3 - $d2" | bc)"
