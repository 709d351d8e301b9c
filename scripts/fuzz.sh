#!/usr/bin/env bash
# fuzz.sh — run every fuzz target (cargo-fuzz, libFuzzer) for a set time.
#
# NOT part of CI. CI replays what fuzzing found, on stable Rust: tests/fuzz_replay.rs runs
# every file of fuzz/corpus/<target>/ and fuzz/regressions/<target>/ through the target
# functions (tests/fuzz_targets/mod.rs) plus a short proptest pass. This script is the
# long, exploring run: by hand, or on a schedule, on a machine with a nightly toolchain.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  how long each target runs (default 60)
#   TARGET...           only these targets (default: all, as listed by `cargo fuzz list`)
# Environment:
#   FUZZ_JOBS=N         run N targets at once (default 1; each uses one core)
#   FUZZ_ARGS="..."     extra libFuzzer flags for every target
#
# Needs rustup with a nightly toolchain (`rustup toolchain install nightly`) and a C/C++
# compiler. cargo-fuzz is installed on first use into target/tools/ of this repository
# (never into ~/.cargo). Works as root or as any user; nothing is installed system-wide.
#
# Per target: the seeds are fuzz/corpus/<target>/ and fuzz/regressions/<target>/ (read
# only), with fuzz/dicts/<target>.dict as libFuzzer dictionary when there is one; what libFuzzer finds goes to target/fuzz/corpus/<target>/ (kept between runs, not
# in git). A crash stops that target: its input, minimized, is copied to
# fuzz/regressions/<target>/ and named in the summary — fix the bug and commit the file,
# then tests/fuzz_replay.rs replays it in CI forever. To keep a few of the new inputs:
#   b=target/fuzz/build/<triple>/release/<target>; mkdir /tmp/m; cp fuzz/corpus/<target>/* /tmp/m
#   $b -merge=1 /tmp/m target/fuzz/corpus/<target>     # adds only inputs with new coverage
# and copy a handful of the small, telling ones into fuzz/corpus/<target>/.
#
# Exit status: 0 no crash, 1 some target crashed, 2 usage or setup error.

set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

say() { printf '==> %s\n' "$*"; }
die() { printf 'fuzz.sh: %s\n' "$*" >&2; exit 2; }

seconds="${1:-60}"
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || die "SECONDS_PER_TARGET must be a positive number, got '$seconds'"
shift $(( $# > 0 ? 1 : 0 ))
jobs="${FUZZ_JOBS:-1}"
[[ "$jobs" =~ ^[0-9]+$ && "$jobs" -gt 0 ]] || die "FUZZ_JOBS must be a positive number, got '$jobs'"

if [[ "${CI:-}" == "true" ]]; then
    die "not meant for CI (it runs for minutes and explores at random); CI runs tests/fuzz_replay.rs"
fi
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    if [[ -x "$d/rustup" ]] && ! command -v rustup >/dev/null 2>&1; then PATH="$d:$PATH"; fi
done
command -v rustup >/dev/null 2>&1 || die "rustup not found: cargo-fuzz needs a nightly toolchain managed by rustup"
rustup run nightly rustc --version >/dev/null 2>&1 \
    || die "no nightly toolchain: rustup toolchain install nightly --profile minimal"

# cargo-fuzz, project-local.
tools="$root/target/tools"
export PATH="$tools/bin:$PATH"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz into $tools (once)"
    cargo +nightly install cargo-fuzz --locked --root "$tools"
fi

work="$root/target/fuzz"
build="$work/build"
mkdir -p "$work/corpus" "$work/artifacts" "$work/logs"

all_targets=()
while IFS= read -r t; do all_targets+=("$t"); done < <(cargo +nightly fuzz list)
if [[ $# -gt 0 ]]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        printf '%s\n' "${all_targets[@]}" | grep -qx -- "$t" || die "no fuzz target '$t' (have: ${all_targets[*]})"
    done
else
    targets=("${all_targets[@]}")
fi

say "building ${#targets[@]} fuzz targets (nightly, AddressSanitizer, debug assertions)"
cargo +nightly fuzz build --debug-assertions --target-dir "$build"
triple="$(rustup run nightly rustc -vV | sed -n 's/^host: //p')"
bindir="$build/$triple/release"

# Run one target; leaves its figures in $work/logs/<target>.result.
run_target() {
    local t="$1"
    local corpus="$work/corpus/$t" art="$work/artifacts/$t/" log="$work/logs/$t.log"
    local regress="$root/fuzz/regressions/$t"
    mkdir -p "$corpus" "$art" "$regress"
    rm -f "$art"crash-* "$art"oom-* "$art"timeout-* "$art"leak-*
    local before after rc=0
    before="$(find "$corpus" -type f | wc -l)"
    local dict=()
    [[ -f "$root/fuzz/dicts/$t.dict" ]] && dict=(-dict="$root/fuzz/dicts/$t.dict")
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "$bindir/$t" "$corpus" "$root/fuzz/corpus/$t" "$regress" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -max_len=16384 -artifact_prefix="$art" "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
    after="$(find "$corpus" -type f | wc -l)"
    local runs
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
    [[ -n "$runs" ]] || runs="$(grep -oE '^#[0-9]+' "$log" | tail -n1 | tr -d '#')"
    local crashes=0 kept=()
    local a
    for a in "$art"crash-* "$art"oom-* "$art"timeout-* "$art"leak-*; do
        [[ -e "$a" ]] || continue
        crashes=$((crashes + 1))
        local name dest
        name="$(basename "$a")"
        dest="$regress/$name"
        # Smaller is easier to read and to fix; keep the original when minimizing fails.
        if ! "$bindir/$t" -minimize_crash=1 -max_total_time=30 -runs=100000 \
                -exact_artifact_path="$dest" "$a" >"$work/logs/$t.minimize.log" 2>&1 \
            || [[ ! -s "$dest" ]]; then
            cp "$a" "$dest"
        fi
        rm -f "$regress/.gitkeep"
        kept+=("fuzz/regressions/$t/$name")
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${runs:-?}" "$((after - before))" "$crashes" "$rc" \
        "${kept[*]:-}" >"$work/logs/$t.result"
}

say "fuzzing ${#targets[@]} targets for ${seconds} s each, $jobs at a time (logs: target/fuzz/logs/)"
running=0
for t in "${targets[@]}"; do
    rm -f "$work/logs/$t.result"
    if [[ "$jobs" -gt 1 ]]; then
        run_target "$t" &
        running=$((running + 1))
        if [[ "$running" -ge "$jobs" ]]; then wait -n || true; running=$((running - 1)); fi
    else
        printf '    %s ... ' "$t"
        run_target "$t"
        cut -f2,4 "$work/logs/$t.result" | awk -F'\t' '{ printf "%s runs, %s crash(es)\n", $1, $2 }'
    fi
done
wait

printf '\n%-24s %12s %12s %8s\n' "target" "runs" "new inputs" "crashes"
status=0
crash_lines=()
for t in "${targets[@]}"; do
    if [[ ! -f "$work/logs/$t.result" ]]; then
        printf '%-24s %12s %12s %8s\n' "$t" "?" "?" "?"
        status=1
        continue
    fi
    IFS=$'\t' read -r _ runs new crashes rc kept <"$work/logs/$t.result"
    printf '%-24s %12s %12s %8s\n' "$t" "$runs" "$new" "$crashes"
    if [[ "$crashes" -gt 0 ]]; then
        status=1
        crash_lines+=("$t: kept ${kept} (log: target/fuzz/logs/$t.log)")
    elif [[ "$rc" -ne 0 ]]; then
        status=1
        crash_lines+=("$t: libFuzzer exited $rc without an artifact (log: target/fuzz/logs/$t.log)")
    fi
done
if [[ ${#crash_lines[@]} -gt 0 ]]; then
    printf '\nCrashes (each input is now a regression test of tests/fuzz_replay.rs; fix, then commit it):\n'
    printf '  %s\n' "${crash_lines[@]}"
else
    printf '\nNo crash. New inputs are in target/fuzz/corpus/<target>/ (see the header to keep a few).\n'
fi
exit "$status"
