# shellcheck shell=bash
# bench-lib.sh — what the benchmark scripts share; sourced, not run.
#
# Sets URI (the harness's own libvirtd: the extra domains never go to the host's), BIN (the
# release binary) and LC_ALL=C, checks root, brings up the harness and builds the release
# binary. Provides virsh_, define_shutoff_domains and undefine_domains.

export LC_ALL=C
[[ $EUID -eq 0 ]] || { echo "$(basename "$0"): run as root" >&2; exit 2; }
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do [[ -x "$d/cargo" ]] && PATH="$d:$PATH"; done
scripts/harness.sh up >/dev/null
URI="$(scripts/harness.sh uri)"
# The harness's unpacked QEMU: its daemon has no emulator on PATH.
EMULATOR="$(eval "$(scripts/harness.sh env)"; printf '%s' "$HARNESS_DIR/pkgs/qemu/usr/bin/qemu-system-x86_64")"
virsh_() { virsh -q -c "$URI" "$@"; }
cargo build --release --quiet
# shellcheck disable=SC2034 # used by the scripts that source this file
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/dismount_iso_qemu"

# define_shutoff_domains PREFIX N DIR: N small shut-off domains PREFIX001… with an empty
# SATA CD-ROM, defined through one virsh process.
define_shutoff_domains() {
    local prefix=$1 n=$2 dir=$3 i
    echo "defining $n shut-off domains..."
    for i in $(seq -w 1 "$n"); do
        cat > "$dir/d$i.xml" <<XML
<domain type='qemu'>
  <name>$prefix$i</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <emulator>$EMULATOR</emulator>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
  </devices>
</domain>
XML
        echo "define $dir/d$i.xml"
    done | virsh -q -c "$URI" >/dev/null
}

# undefine_domains PREFIX: every domain whose name starts with PREFIX, in one virsh process.
undefine_domains() {
    virsh_ list --all --name | grep "^$1" | sed 's/^/undefine /' | virsh -q -c "$URI" >/dev/null 2>&1 || true
}
