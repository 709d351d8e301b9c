#!/usr/bin/env bash
# test-all.sh — install what is missing, bring up the real harness, run every check.
#
# Usage: sudo scripts/test-all.sh
#
# Steps: Debian packages (scripts/harness.sh deps), the harness guests on qemu:///system
# (scripts/harness.sh up), then cargo fmt --check, cargo clippy -D warnings (with and without
# the native feature), and cargo test
# (unit, contract, fake-virsh and end-to-end tests). With CI=true the end-to-end tests
# refuse to skip. Needs root (libvirtd, QEMU) and a Rust toolchain >= 1.80 (rustup).

set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [[ $EUID -ne 0 ]]; then
    echo "test-all.sh: run as root (it installs packages and starts libvirtd): sudo $0" >&2
    exit 2
fi
if ! command -v cargo >/dev/null 2>&1; then
    for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
        [[ -x "$d/cargo" ]] && PATH="$d:$PATH"
    done
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test-all.sh: no Rust toolchain found: install one with rustup (Rust >= 1.80), then rerun" >&2
    exit 2
fi

step "system packages"
scripts/harness.sh deps

step "harness: libvirtd and the test guests"
scripts/harness.sh up

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo clippy --no-default-features (the build without the native libvirt backend)"
cargo clippy --no-default-features --all-targets -- -D warnings

step "cargo test (unit, contract, fake virsh, end-to-end)"
# The e2e binaries share one libvirtd; each file serialises its own state changes.
cargo test --all-targets --no-fail-fast -- --test-threads=4
