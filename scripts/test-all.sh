#!/usr/bin/env bash
# test-all.sh — the README's test command: every check, against a real libvirtd, QEMU and
# qemu-ga that belong to the tests alone.
#
# Usage (as root): scripts/test-all.sh
#
# Steps: the Debian packages that are missing (scripts/harness.sh deps: named one by one,
# --no-install-recommends, refusing to upgrade or remove anything installed), the harness
# (its own libvirtd, run as the user diq-harness, with the test guests), then cargo fmt
# --check, cargo clippy -D warnings (with and without the native feature), cargo test
# (unit, contract, fake-virsh and end-to-end tests) and the Debian package's check
# (scripts/deb-check.sh: built, then installed, used and purged in a throwaway chroot —
# never on this host — with VM names completed from the harness; it installs mmdebstrap,
# dpkg-dev and binutils the way deps does). At the end the harness is taken down
# again; KEEP_HARNESS=1 leaves it up for the next run. The host's own libvirtd, its
# configuration, networks and guests are never touched; `scripts/harness.sh purge` removes
# everything the harness made. With CI=true the end-to-end tests refuse to skip.

set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [[ $EUID -ne 0 ]]; then
    echo "test-all.sh: run as root: it installs missing packages and runs the harness's own libvirtd as user diq-harness" >&2
    exit 2
fi
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    if [[ -x "$d/cargo" ]] && ! command -v cargo >/dev/null 2>&1; then PATH="$d:$PATH"; fi
done
if ! command -v cargo >/dev/null 2>&1; then
    echo "test-all.sh: no Rust toolchain found: install one with rustup (Rust >= 1.88), then rerun" >&2
    exit 2
fi

step "system packages (only the missing ones)"
scripts/harness.sh deps

# rustup's minimal profile has neither rustfmt nor clippy.
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || { echo "test-all.sh: cargo ${component/rustfmt/fmt} is missing and there is no rustup to add it" >&2; exit 2; }
        step "rustup component add $component"
        rustup component add "$component"
    fi
done

step "harness: its own libvirtd and the test guests"
if [[ -z "${KEEP_HARNESS:-}" ]]; then
    trap 'step "harness down"; scripts/harness.sh down || true' EXIT
fi
scripts/harness.sh up
set -a
eval "$(scripts/harness.sh env)"
set +a
PATH="$HARNESS_BIN:$PATH" # prometheus and promtool, unpacked by the harness

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo clippy --no-default-features (the build without the native libvirt backend)"
cargo clippy --no-default-features --all-targets -- -D warnings

step "cargo test (unit, contract, fake virsh, end-to-end)"
# The e2e binaries share one libvirtd; each file serialises its own state changes.
cargo test --workspace --all-targets --no-fail-fast -- --test-threads=4

# While the harness is up: bash completion in the chroot lists its VMs.
step "Debian package: built, installed, used and purged in a throwaway chroot (scripts/deb-check.sh)"
scripts/deb-check.sh
