#!/usr/bin/env bash
# bench.sh — scan speed against the real harness plus N extra shut-off domains.
#
# Usage (as root): scripts/bench.sh [N=300 | N1,N2] [RUNS=5]
#
# Prints medians of RUNS runs of: our first scan (no cache file: every XML is read), our
# cold scan (--no-cache: every agent asked again), our warm scan, one bulk
# `virsh domstats --raw` on the same host, and a seed-style sequential scan (one
# `virsh dominfo` per VM and one `guest-get-osinfo` per running VM), then the ratios.
# The frozen-agent guest is paused for these figures (its bound is an e2e test) and
# resumed at the end; the extra domains (diq-bench-*) are undefined at the end (KEEP=1
# keeps them and the pause, for profiling). PRIVATE_DAEMON=1 measures in a libvirtd of
# the benchmark's own instead (see bench-lib.sh): the harness is left alone, so tests may
# run on it meanwhile; its figures have no running guests.
# Targets: cold <= 1.0x and warm <= 0.9x one domstats at N=300 (at N=1000 at most 10 %
# above those ratios), seed-style >= 50x our cold scan.

set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-300}"
RUNS="${2:-5}"

# Two sizes, e.g. `scripts/bench.sh 300,1000`: each measured as above, then how the ratios
# grew and what one more domain costs each side (the growth target's intent: our scan's
# cost grows no faster than the bulk call's).
if [[ "$N" == *,* ]]; then
    IFS=, read -r small large <<<"$N"
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
    "$0" "$small" "$RUNS" | tee "$out/small"
    "$0" "$large" "$RUNS" | tee "$out/large"
    fig() { grep -F "$2" "$out/$1" | grep -oE '[0-9.]+ ms$' | grep -oE '^[0-9.]+'; }
    rat() { grep -E "^$2 / domstats" "$out/$1" | awk '{print $4}'; }
    echo
    echo "growth from $small to $large extra domains:"
    for kind in cold warm; do
        a=$(rat small "$kind") b=$(rat large "$kind")
        awk -v k="$kind" -v a="$a" -v b="$b" 'BEGIN { printf "  %s ratio %.2f -> %.2f: %+.0f %% (target <= +10 %%)\n", k, a, b, (b / a - 1) * 100 }'
    done
    for label in "ours first scan (empty cache)" "ours cold (--no-cache, native)" "ours warm (native)" "virsh domstats --raw"; do
        awk -v l="$label" -v a="$(fig small "$label")" -v b="$(fig large "$label")" -v n="$((large - small))" \
            'BEGIN { printf "  %-32s %6.3f ms per added domain\n", l, (b - a) / n }'
    done
    exit 0
fi
PREFIX="diq-bench-"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

work="$(mktemp -d)"
cleanup() {
    [[ -n "${KEEP:-}" ]] && return
    undefine_domains "$PREFIX"
    if [[ -z "${PRIVATE_DAEMON:-}" && "$(virsh_ domstate diq-frozen 2>/dev/null)" == paused ]]; then
        virsh_ resume diq-frozen >/dev/null || true
    fi
    stop_private_daemon
    rm -rf "$work"
}
trap cleanup EXIT

define_shutoff_domains "$PREFIX" "$N" "$work"
if [[ -z "${PRIVATE_DAEMON:-}" && "$(virsh_ domstate diq-frozen)" == running ]]; then
    virsh_ suspend diq-frozen >/dev/null
fi
total=$(virsh_ list --all --name | grep -c .)
echo "domains on $URI: $total"

now_ms() { date +%s%3N; }
# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
time_ms() {
    local t0 t1
    t0=$(now_ms)
    "$@" >/dev/null 2>"$work/stderr" || { echo "bench.sh: '$*' failed: $(head -c 300 "$work/stderr")" >&2; exit 1; }
    t1=$(now_ms)
    echo $((t1 - t0))
}

cache="$work/cache"
ours() { XDG_CACHE_HOME="$cache" "$BIN" -c "$URI" scan --json "$@"; }
seed_style() {
    local name info
    for name in $(virsh_ list --all --name); do
        info=$(virsh_ dominfo "$name")
        if grep -Eq '^State:[[:space:]]+running' <<<"$info"; then
            virsh_ qemu-agent-command --timeout 5 "$name" '{"execute":"guest-get-osinfo"}' >/dev/null 2>&1 || true
        fi
    done
}

declare -A R
bench() { # label, command...
    local label=$1; shift
    R[$label]=$(for _ in $(seq "$RUNS"); do time_ms "$@"; done | median)
    printf '%-34s %8s ms\n' "$label" "${R[$label]}"
}
# A first scan ever: no cache file at all, so every domain's XML is read (libvirt has no
# bulk call for definitions: one round trip per domain). Later scans reuse the XML facts of
# shut-off domains whose definition tag (from the bulk statistics) is unchanged.
first_scan() { XDG_CACHE_HOME="$(mktemp -d -p "$work")" "$BIN" -c "$URI" scan --json --no-cache; }
bench "ours first scan (empty cache)" first_scan
bench "ours cold (--no-cache, native)" ours --no-cache
ours --backend native >/dev/null 2>&1 # fill the cache for the warm runs
bench "ours warm (native)" ours
bench "ours cold (--no-cache, virsh)" ours --backend virsh --no-cache
bench "ours warm (virsh)" ours --backend virsh
bench "virsh domstats --raw" virsh -c "$URI" domstats --raw
RUNS=1 bench "seed-style sequential (1 run)" seed_style

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo
echo "first / domstats     = $(ratio "${R[ours first scan (empty cache)]}" "${R[virsh domstats --raw]}")  (no target: one XML read per domain)"
echo "cold / domstats      = $(ratio "${R[ours cold (--no-cache, native)]}" "${R[virsh domstats --raw]}")  (target at 300 <= 1.0)"
echo "warm / domstats      = $(ratio "${R[ours warm (native)]}" "${R[virsh domstats --raw]}")  (target at 300 <= 0.9)"
echo "seed-style / cold    = $(ratio "${R[seed-style sequential (1 run)]}" "${R[ours cold (--no-cache, native)]}")  (target >= 50)"
