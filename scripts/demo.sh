#!/usr/bin/env bash
# demo.sh — the README's run command: build the tool and open its menu.
#
# Usage (as root): scripts/demo.sh [dismount_iso_qemu arguments...]   (default: the menu)
#
# Which VMs the menu shows:
#   - a URI you chose (-c/--connect URI among the arguments, LIBVIRT_URI,
#     LIBVIRT_DEFAULT_URI, or `uri` in the tool's config file): those VMs;
#   - else, when this host's libvirtd runs and has VMs: qemu:///system. Nothing of that
#     libvirt is changed — no configuration, no daemon, no network, no VM;
#   - else (a machine without VMs): the project's demo guests, in a libvirt daemon of the
#     harness's own (scripts/harness.sh up: user diq-harness, everything under
#     /var/lib/dismount-iso-qemu-harness). `scripts/harness.sh purge` removes all of it.
#
# Installs only missing Debian packages, by name, --no-install-recommends, and never one that
# would upgrade or remove an installed package: when libvirt-dev would upgrade the host's
# libvirt, the tool is built without the native backend (it then drives virsh).

set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'demo.sh: %s\n' "$*" >&2; }

if [[ $EUID -ne 0 ]]; then
    say "run as root: it installs missing packages, and on a machine without VMs starts the harness's own libvirtd"
    exit 2
fi
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    if [[ -x "$d/cargo" ]] && ! command -v cargo >/dev/null 2>&1; then PATH="$d:$PATH"; fi
done
if ! command -v cargo >/dev/null 2>&1; then
    say "no Rust toolchain found: install one with rustup (Rust >= 1.88), then rerun"
    exit 2
fi

chosen_uri=""
for arg in "$@"; do
    case "$arg" in -c | --connect | --connect=* | -c?*) chosen_uri="(from the arguments)" ;; esac
done
[[ -n "$chosen_uri" ]] || chosen_uri="${LIBVIRT_URI:-${LIBVIRT_DEFAULT_URI:-}}"
config="${DISMOUNT_ISO_QEMU_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/dismount_iso_qemu/config.toml}"
if [[ -z "$chosen_uri" && -r "$config" ]] && grep -Eq '^[[:space:]]*uri[[:space:]]*=' "$config"; then
    chosen_uri="(from $config)"
fi

features=()
rc=0
scripts/harness.sh deps build || rc=$?
if ((rc == 3)); then
    say "building without the native backend instead (it uses virsh; no package is changed)"
    scripts/harness.sh deps virsh-only
    features=(--no-default-features)
elif ((rc != 0)); then
    exit "$rc"
fi

cargo build --release --quiet "${features[@]}"

connect=()
if [[ -n "$chosen_uri" ]]; then
    say "opening the URI you chose $chosen_uri"
elif [[ -n "$(LC_ALL=C virsh -q -c qemu:///system list --all --name 2>/dev/null | tr -d '[:space:]')" ]]; then
    say "this host's libvirtd has VMs: opening qemu:///system (nothing of it is changed)"
    connect=(-c qemu:///system)
else
    say "no VMs on this host: bringing up the demo guests in the harness's own libvirtd"
    say "(remove everything it makes with: scripts/harness.sh purge)"
    scripts/harness.sh up >&2
    connect=(-c "$(scripts/harness.sh uri)")
    say "afterwards: scripts/harness.sh down stops the guests; scripts/harness.sh purge removes everything"
fi
exec target/release/dismount_iso_qemu "${connect[@]}" "$@"
