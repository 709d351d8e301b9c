# shellcheck shell=bash
# bench-lib.sh — what the benchmark scripts share; sourced, not run.
#
# Sets URI (the harness's own libvirtd: the extra domains never go to the host's), BIN (the
# release binary) and LC_ALL=C, checks root, brings up the harness and builds the release
# binary. Provides virsh_, define_shutoff_domains and undefine_domains.
#
# PRIVATE_DAEMON=1: measure in a throwaway libvirtd of the benchmark's own instead (a
# session daemon of the harness user with its folders under a temporary directory, stopped
# and removed by stop_private_daemon): the harness is neither brought up nor changed, so
# tests running on it meanwhile see none of the extra domains. It has no running guests.

export LC_ALL=C
[[ $EUID -eq 0 ]] || { echo "$(basename "$0"): run as root" >&2; exit 2; }
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do [[ -x "$d/cargo" ]] && PATH="$d:$PATH"; done
# The harness's unpacked QEMU: its daemon has no emulator on PATH.
EMULATOR="$(eval "$(scripts/harness.sh env)"; printf '%s' "$HARNESS_DIR/pkgs/qemu/usr/bin/qemu-system-x86_64")"
PRIVATE_DIR=""
if [[ -n "${PRIVATE_DAEMON:-}" ]]; then
    [[ -x "$EMULATOR" ]] || { echo "$(basename "$0"): no QEMU at $EMULATOR (run scripts/harness.sh deps)" >&2; exit 2; }
    HARNESS_USER="$(eval "$(scripts/harness.sh env)"; printf '%s' "$HARNESS_USER")"
    PRIVATE_DIR="$(mktemp -d /tmp/diq-bench-daemon.XXXXXX)"
    install -d -m 0700 -o "$HARNESS_USER" -g "$HARNESS_USER" \
        "$PRIVATE_DIR/cfg" "$PRIVATE_DIR/cfg/libvirt" "$PRIVATE_DIR/cache" "$PRIVATE_DIR/run" "$PRIVATE_DIR/home"
    chown "$HARNESS_USER:$HARNESS_USER" "$PRIVATE_DIR"
    printf 'log_outputs = "3:file:%s/libvirtd.log"\n' "$PRIVATE_DIR/home" >"$PRIVATE_DIR/cfg/libvirt/libvirtd.conf"
    setpriv --reuid="$HARNESS_USER" --regid="$HARNESS_USER" --clear-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$PRIVATE_DIR/home" USER="$HARNESS_USER" \
        XDG_CONFIG_HOME="$PRIVATE_DIR/cfg" XDG_CACHE_HOME="$PRIVATE_DIR/cache" \
        XDG_RUNTIME_DIR="$PRIVATE_DIR/run" LC_ALL=C.UTF-8 libvirtd --daemon </dev/null >/dev/null 2>&1
    URI="qemu+unix:///session?socket=$PRIVATE_DIR/run/libvirt/libvirt-sock"
    for _ in $(seq 300); do virsh -q -c "$URI" uri >/dev/null 2>&1 && break; sleep 0.1; done
    virsh -q -c "$URI" uri >/dev/null || { echo "$(basename "$0"): the private libvirtd did not start; see $PRIVATE_DIR/home/libvirtd.log" >&2; exit 2; }
else
    scripts/harness.sh up >/dev/null
    URI="$(scripts/harness.sh uri)"
fi
virsh_() { virsh -q -c "$URI" "$@"; }

# stop_private_daemon: with PRIVATE_DAEMON, stop the daemon this script started (by its pid
# file, checked to be a libvirtd of the harness user) and remove its folders.
stop_private_daemon() {
    [[ -n "$PRIVATE_DIR" && -d "$PRIVATE_DIR" ]] || return 0
    local pidfile="$PRIVATE_DIR/run/libvirt/libvirtd.pid" pid
    if [[ -r "$pidfile" ]]; then
        pid="$(<"$pidfile")"
        if [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == libvirtd ]]; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
        fi
    fi
    rm -rf "$PRIVATE_DIR"
}
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
