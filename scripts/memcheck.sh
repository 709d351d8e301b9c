#!/usr/bin/env bash
# memcheck.sh — memory figures of a scan, printed, outside CI (valgrind takes minutes).
#
# Usage (as root): scripts/memcheck.sh [N=1000]
#
# 1. valgrind memcheck of one cold scan of the harness (every guest, the frozen one
#    included, both backends): prints the leak summary; goal: 0 bytes definitely lost.
# 2. Peak RSS of one cold scan with N extra shut-off domains defined in the harness's
#    own libvirtd (native backend, release build); goal: at most 30 MB at N=1000.
# The extra domains (diq-memcheck-*) are undefined at the end. SKIP_VALGRIND=1 skips 1.

set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-1000}"
PREFIX="diq-memcheck-"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
command -v valgrind >/dev/null || scripts/harness.sh install valgrind

work="$(mktemp -d)"
cleanup() {
    undefine_domains "$PREFIX"
    rm -rf "$work"
}
trap cleanup EXIT

# A release build with debug info, so valgrind names what it finds.
echo "building a release binary with debug info for valgrind..."
CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --quiet --target-dir target/memcheck
VG_BIN="target/memcheck/release/dismount_iso_qemu"

for backend in $([[ -n "${SKIP_VALGRIND:-}" ]] || echo native virsh); do
    echo
    echo "== valgrind memcheck: one cold scan of the harness ($backend backend)"
    XDG_CACHE_HOME="$work/cache-$backend" valgrind --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --log-file="$work/vg-$backend.log" \
        "$VG_BIN" -c "$URI" --backend "$backend" --probe-timeout 5 scan --no-cache >/dev/null 2>&1 || true
    grep -E "definitely lost|indirectly lost|ERROR SUMMARY" "$work/vg-$backend.log" | sed 's/^==[0-9]*== */  /'
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
