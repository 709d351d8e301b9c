#!/usr/bin/env bash
# memcheck.sh — memory figures of a scan, printed, outside CI (valgrind takes minutes).
#
# Usage (as root): scripts/memcheck.sh [N=1000]
#
# 1. valgrind memcheck of one cold scan of the harness (every guest, the frozen one
#    included, both backends): prints the leak summary; goal: 0 bytes definitely lost.
# 2. valgrind memcheck of `serve` on the harness through three scans with every metric
#    family on — each scan one bulk statistics call (virConnectGetAllDomainStats through
#    our wrapper on the native backend, `virsh domstats` on the other) — then SIGTERM;
#    same goal.
# 3. Peak RSS of one cold scan with N extra shut-off domains defined in the harness's
#    own libvirtd (native backend, release build); goal: at most 30 MB at N=1000.
# The extra domains (diq-memcheck-*) are undefined at the end. SKIP_VALGRIND=1 skips 1
# and 2. PRIVATE_DAEMON=1 defines the extra domains of 3 in a libvirtd of the script's own
# (see bench-lib.sh) and leaves the harness as it is; 1 and 2 read the harness.

set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-1000}"
PREFIX="diq-memcheck-"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
command -v valgrind >/dev/null || scripts/harness.sh install valgrind

work="$(mktemp -d)"
serve_pid=""
cleanup() {
    [[ -n "$serve_pid" ]] && kill "$serve_pid" 2>/dev/null
    undefine_domains "$PREFIX"
    stop_private_daemon
    rm -rf "$work"
}
trap cleanup EXIT
# The guests valgrind watches: the harness's, also when the extra domains go elsewhere.
HARNESS_URI="$(scripts/harness.sh uri)"

# A release build with debug info, so valgrind names what it finds.
echo "building a release binary with debug info for valgrind..."
CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --quiet --target-dir target/memcheck
VG_BIN="target/memcheck/release/dismount_iso_qemu"

for backend in $([[ -n "${SKIP_VALGRIND:-}" ]] || echo native virsh); do
    echo
    echo "== valgrind memcheck: one cold scan of the harness ($backend backend)"
    XDG_CACHE_HOME="$work/cache-$backend" valgrind --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --log-file="$work/vg-$backend.log" \
        "$VG_BIN" -c "$HARNESS_URI" --backend "$backend" --probe-timeout 5 scan --no-cache >/dev/null 2>&1 || true
    grep -E "definitely lost|indirectly lost|ERROR SUMMARY" "$work/vg-$backend.log" | sed 's/^==[0-9]*== */  /'
done

# The number of finished scans `serve` at 127.0.0.1:$1 reports (0 while it starts).
scans_done() {
    curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk '$1 == "dismount_iso_qemu_scans_total" { print int($2) }' | grep . || echo 0
}
for backend in $([[ -n "${SKIP_VALGRIND:-}" ]] || echo native virsh); do
    echo
    echo "== valgrind memcheck: serve, three scans with every metric family, then SIGTERM ($backend backend)"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    XDG_CACHE_HOME="$work/cache-serve-$backend" valgrind --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --log-file="$work/vg-serve-$backend.log" \
        "$VG_BIN" -c "$HARNESS_URI" --backend "$backend" --probe-timeout 5 \
        serve --listen "127.0.0.1:$port" --interval 2 --collect all >/dev/null 2>&1 &
    serve_pid=$!
    end=$((SECONDS + 600))
    until (($(scans_done "$port") >= 3)); do
        ((SECONDS < end)) || { echo "  serve under valgrind did not finish 3 scans in 600 s"; break; }
        sleep 1
    done
    echo "  scans: $(scans_done "$port"), families: $(curl -fs "http://127.0.0.1:$port/metrics" | grep -c '^# TYPE libvirt_domain_\(block\|interface\|memory\|vcpu\)_')"
    kill -TERM "$serve_pid"
    wait "$serve_pid" || true
    serve_pid=""
    grep -E "definitely lost|indirectly lost|ERROR SUMMARY" "$work/vg-serve-$backend.log" | sed 's/^==[0-9]*== */  /'
done

echo
define_shutoff_domains "$PREFIX" "$N" "$work"
total=$(virsh_ list --all --name | grep -c .)
echo "== peak RSS of one cold scan, $total domains on the harness's libvirtd (release build, native)"
for run in 1 2 3; do
    python3 - "$BIN" "$URI" "$work/cache-rss-$run" <<'PY'
import os, resource, subprocess, sys
binary, uri, cache = sys.argv[1:4]
env = dict(os.environ, XDG_CACHE_HOME=cache)
subprocess.run([binary, "-c", uri, "scan", "--no-cache", "--json"], env=env,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"  peak RSS: {peak_kb / 1024:.1f} MB (goal: at most 30 MB)")
PY
done
