#!/usr/bin/env bash
# demo.sh — the quick start: install what is missing, build, and open the menu on a real
# local hypervisor. When qemu:///system has no VMs, the project's own small demo guests
# (the e2e harness) are brought up first, so there is something to look at.
#
# Usage: sudo scripts/demo.sh [dismount_iso_qemu arguments...]   (default: the menu)

set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "demo.sh: run as root (it installs packages and starts libvirtd): sudo $0" >&2
    exit 2
fi
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [[ -x "$d/cargo" ]] && PATH="$d:$PATH"
done
if ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: no Rust toolchain found: install one with rustup (Rust >= 1.80), then rerun" >&2
    exit 2
fi

uri="${LIBVIRT_URI:-qemu:///system}"
scripts/harness.sh daemons
if [[ -z "$(virsh -c "$uri" list --all --name 2>/dev/null | tr -d '[:space:]')" ]]; then
    echo "demo.sh: no VMs on $uri yet: bringing up the demo guests"
    scripts/harness.sh up
fi
cargo build --release --quiet
exec target/release/dismount_iso_qemu -c "$uri" "$@"
