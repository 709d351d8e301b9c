#!/usr/bin/env bash
# bench.sh — scan speed against the real harness plus N extra shut-off domains.
#
# Usage: sudo scripts/bench.sh [N=300] [RUNS=5]
#
# Prints medians of RUNS runs of: our cold scan (--no-cache), our warm scan, one bulk
# `virsh domstats --raw` on the same host, and a seed-style sequential scan (one
# `virsh dominfo` per VM and one `guest-get-osinfo` per running VM), then the ratios.
# The frozen-agent guest is paused for these figures (its bound is an e2e test) and
# resumed at the end; the extra domains (diq-bench-*) are undefined at the end (KEEP=1
# keeps them and the pause, for profiling).
# Targets: cold <= 2x domstats, warm <= 1x domstats, seed-style >= 50x our cold scan.

set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-300}"
RUNS="${2:-5}"
URI="qemu:///system"
export LC_ALL=C
virsh_() { virsh -q -c "$URI" "$@"; }

[[ $EUID -eq 0 ]] || { echo "bench.sh: run as root" >&2; exit 2; }
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do [[ -x "$d/cargo" ]] && PATH="$d:$PATH"; done
scripts/harness.sh up >/dev/null
cargo build --release --quiet
BIN="$PWD/target/release/dismount_iso_qemu"

work="$(mktemp -d)"
cleanup() {
    [[ -n "${KEEP:-}" ]] && return
    virsh_ list --all --name | grep '^diq-bench-' | sed 's/^/undefine /' | virsh -q -c "$URI" >/dev/null 2>&1 || true
    [[ "$(virsh_ domstate diq-frozen 2>/dev/null)" == paused ]] && virsh_ resume diq-frozen >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "defining $N shut-off domains..."
for i in $(seq -w 1 "$N"); do
    cat > "$work/d$i.xml" <<XML
<domain type='qemu'>
  <name>diq-bench-$i</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
  </devices>
</domain>
XML
    echo "define $work/d$i.xml"
done | virsh -q -c "$URI" >/dev/null
[[ "$(virsh_ domstate diq-frozen)" == running ]] && virsh_ suspend diq-frozen >/dev/null
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
bench "ours cold (--no-cache, native)" ours --no-cache
ours >/dev/null 2>&1
bench "ours warm (native)" ours
bench "ours cold (--no-cache, virsh)" ours --backend virsh --no-cache
bench "ours warm (virsh)" ours --backend virsh
bench "virsh domstats --raw" virsh -c "$URI" domstats --raw
RUNS=1 bench "seed-style sequential (1 run)" seed_style

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo
echo "cold / domstats      = $(ratio "${R[ours cold (--no-cache, native)]}" "${R[virsh domstats --raw]}")  (target <= 2)"
echo "warm / domstats      = $(ratio "${R[ours warm (native)]}" "${R[virsh domstats --raw]}")  (target <= 1)"
echo "seed-style / cold    = $(ratio "${R[seed-style sequential (1 run)]}" "${R[ours cold (--no-cache, native)]}")  (target >= 50)"
