#!/usr/bin/env bash
# host-state.sh — proof that the test suite leaves the host's libvirt as it found it.
#
# Usage: scripts/host-state.sh record > FILE
#        scripts/host-state.sh compare BEFORE AFTER
#        scripts/host-state.sh seed DIR      (CI=true only)
#        scripts/host-state.sh unseed DIR
#
# record prints one line per fact, sorted: checksums of every file under /etc/libvirt; the
# host's libvirt daemons with their pids (or that none runs); with a running system daemon,
# its networks (state, autostart, definition), its domains (state, definition) and its admin
# settings (worker pool, client limits); the installed packages with their versions; the
# listening TCP/UDP ports and Unix sockets; the running QEMU processes; the local users.
# What belongs to the harness (its user's processes, its directory) is not host state.
#
# compare fails (exit 1) on any difference, except: packages that were not installed
# before may appear, with their files under /etc/libvirt, and the harness's own user may
# appear (scripts/harness.sh purge removes it).
#
# seed gives a running system libvirtd that has no domain, or no network named default,
# a shut-off domain and an active, autostarted default network of the check's own, so the
# comparison has something to protect; unseed removes exactly what seed added. Both do
# nothing unless CI=true, and nothing when no system libvirtd runs (connecting would
# socket-activate one on a systemd host).

set -euo pipefail

readonly HARNESS_USER="diq-harness"
readonly HARNESS_DIR="${HARNESS_DIR:-/var/lib/dismount-iso-qemu-harness}"
readonly SYS="qemu:///system"
readonly DAEMONS="libvirtd|virtqemud|virtlogd|virtlockd|virtnetworkd|virtstoraged|virtnodedevd|virtinterfaced|virtnwfilterd|virtsecretd|virtproxyd"
readonly SEED_DOMAIN="diq-hostcheck-guest"

msg() { printf 'host-state: %s\n' "$*" >&2; }
die() { printf 'host-state: error: %s\n' "$*" >&2; exit 2; }

harness_uid() { id -u "$HARNESS_USER" 2>/dev/null || echo none; }

# The system's libvirt daemons: comm, pid, uid — never the harness user's.
daemons() {
    local huid
    huid=$(harness_uid)
    ps -eo comm=,pid=,uid= | awk -v re="^($DAEMONS)\$" -v h="$huid" '$1 ~ re && $3 != h { print "daemon", $1, $2, $3 }'
}

system_daemon_runs() { ps -eo comm=,uid= | awk -v re="^(libvirtd|virtqemud)\$" '$1 ~ re && $2 == 0 { f = 1 } END { exit !f }'; }

vsys() { LC_ALL=C virsh -q -c "$SYS" "$@"; }

record_libvirt() {
    local name state auto persistent xmlsum line
    if ! system_daemon_runs || ! command -v virsh >/dev/null || ! vsys uri >/dev/null 2>&1; then
        echo "system-libvirt none"
        return 0
    fi
    echo "system-libvirt answers"
    while read -r name state auto persistent; do
        [[ -n "$name" ]] || continue
        xmlsum=$(vsys net-dumpxml --inactive "$name" 2>/dev/null | sha256sum | cut -c1-16)
        echo "network $name active=$state autostart=$auto persistent=$persistent xml=$xmlsum"
    done < <(vsys net-list --all 2>/dev/null | awk '{ print $1, $2, $3, $4 }')
    while read -r name; do
        [[ -n "$name" ]] || continue
        state=$(vsys domstate "$name" 2>/dev/null | head -n1 | tr ' ' _)
        xmlsum=$(vsys dumpxml --inactive "$name" 2>/dev/null | sha256sum | cut -c1-16)
        echo "domain $name state=$state xml=$xmlsum"
    done < <(vsys list --all --name 2>/dev/null)
    if command -v virt-admin >/dev/null; then
        for srv in libvirtd virtqemud; do
            while read -r line; do
                [[ -n "$line" ]] && echo "admin $srv $line"
            done < <(LC_ALL=C virt-admin srv-threadpool-info "$srv" 2>/dev/null |
                awk '$1 ~ /^(minWorkers|maxWorkers|prioWorkers)$/ { print $1 "=" $3 }')
            while read -r line; do
                [[ -n "$line" ]] && echo "admin $srv $line"
            done < <(LC_ALL=C virt-admin srv-clients-info "$srv" 2>/dev/null |
                awk '$1 ~ /^(nclients_max|nclients_unauth_max)$/ { print $1 "=" $3 }')
        done
    fi
}

cmd_record() {
    local f
    {
        if [[ -d /etc/libvirt ]]; then
            while IFS= read -r -d '' f; do
                if [[ -L "$f" ]]; then
                    echo "etc-libvirt link $(readlink "$f") $f"
                else
                    echo "etc-libvirt file $(sha256sum <"$f" | cut -c1-16) $f"
                fi
            done < <(find /etc/libvirt \( -type f -o -type l \) -print0)
        else
            echo "etc-libvirt absent"
        fi
        daemons
        daemons | grep -q . || echo "daemon none"
        record_libvirt
        dpkg-query -W -f='${db:Status-Abbrev} ${Package}:${Architecture} ${Version}\n' |
            awk '$1 == "ii" { print "package", $2, $3 }'
        # Listening sockets with their program, minus the harness's own (under its directory).
        ss -H -ltnup 2>/dev/null | awk '{ p = $7; sub(/^users:\(\("/, "", p); sub(/".*/, "", p); print "listen", $1, $5, p }'
        ss -H -lx 2>/dev/null | awk -v h="$HARNESS_DIR/" '$5 ~ /^\// && index($5, h) != 1 { print "listen unix", $5 }'
        ps -eo pid=,uid=,comm= | awk -v h="$(harness_uid)" '$3 ~ /^qemu-system/ && $2 != h { print "qemu", $1, $3 }'
        getent passwd | cut -d: -f1 | sed 's/^/user /'
    } | LC_ALL=C sort -u
}

cmd_compare() {
    local before="$1" after="$2" bad=0 line kind rest new_pkgs owner
    [[ -r "$before" && -r "$after" ]] || die "compare needs two files written by 'record'"
    new_pkgs=$(comm -13 <(awk '$1 == "package" { print $2 }' "$before" | sort -u) \
        <(awk '$1 == "package" { print $2 }' "$after" | sort -u) | sed 's/:.*//')
    # Gone or changed: every fact of before must still hold, word for word.
    while IFS= read -r line; do
        read -r kind rest <<<"$line"
        # A new package may create /etc/libvirt; its files are checked with the new facts.
        [[ "$line" == "etc-libvirt absent" ]] && continue
        case "$kind" in
        package) msg "package changed or removed: ${rest} -> $(awk -v p="${rest%% *}" '$1 == "package" && $2 == p { print $3 }' "$after" | head -n1)" ;;
        *) msg "no longer true: $line" ;;
        esac
        bad=1
    done < <(comm -23 "$before" "$after")
    # New facts: only new packages, their /etc/libvirt files, and the harness user.
    while IFS= read -r line; do
        read -r kind rest <<<"$line"
        case "$kind" in
        package)
            grep -qx "package ${rest%% *} .*" "$before" && continue # reported above as a change
            ;;
        etc-libvirt)
            if [[ "$(awk '{ print $1, $2 }' <<<"$line")" == "etc-libvirt absent" ]]; then
                msg "new: $line"
                bad=1
                continue
            fi
            grep -qF " ${line##* }" <(grep '^etc-libvirt ' "$before") && continue # changed: reported above
            owner=$(dpkg-query -S "${line##* }" 2>/dev/null | cut -d: -f1 | tr -d ' ' || true)
            if [[ -n "$owner" ]] && grep -qxF "$owner" <<<"$new_pkgs"; then
                continue
            fi
            msg "new file under /etc/libvirt not from a newly installed package: ${line##* }"
            bad=1
            ;;
        user)
            [[ "$rest" == "$HARNESS_USER" ]] && continue
            msg "new user: $rest"
            bad=1
            ;;
        *)
            msg "new: $line"
            bad=1
            ;;
        esac
    done < <(comm -13 "$before" "$after")
    if ((bad)); then
        msg "the host changed during the run (above)"
        return 1
    fi
    msg "the host is as it was: $(grep -c . "$before") facts compared; new packages: $(grep -c . <<<"$new_pkgs" || true)"
}

cmd_seed() {
    local dir="$1"
    mkdir -p "$dir"
    [[ "${CI:-}" == true ]] || { msg "seed: only with CI=true"; return 0; }
    if ! system_daemon_runs || ! command -v virsh >/dev/null || ! vsys uri >/dev/null 2>&1; then
        msg "seed: no system libvirtd runs; comparing the rest"
        return 0
    fi
    if [[ -z "$(vsys list --all --name | tr -d '[:space:]')" ]]; then
        # The daemon's own QEMU, else the harness's unpacked one (libvirt needs an emulator).
        local emulator=""
        [[ -x /usr/bin/qemu-system-x86_64 ]] || emulator="$HARNESS_DIR/pkgs/qemu/usr/bin/qemu-system-x86_64"
        [[ -z "$emulator" || -x "$emulator" ]] || emulator=""
        vsys define /dev/stdin >/dev/null 2>"$dir/define.err" <<EOF ||
<domain type='qemu'>
  <name>$SEED_DOMAIN</name>
  <metadata><chk:host-check xmlns:chk='urn:x-dismount-iso-qemu:host-check'/></metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>${emulator:+<emulator>$emulator</emulator>}</devices>
</domain>
EOF
            msg "seed: could not define a domain ($(tr '\n' ' ' <"$dir/define.err")); comparing the rest"
        if vsys domuuid "$SEED_DOMAIN" >/dev/null 2>&1; then
            echo "$SEED_DOMAIN" >"$dir/seeded-domain"
            msg "seed: defined $SEED_DOMAIN on $SYS, so the check has a domain to protect"
        fi
    fi
    if ! vsys net-info default >/dev/null 2>&1; then
        # Isolated (no forward, no address): no dnsmasq, no firewall rules.
        vsys net-define /dev/stdin >/dev/null <<EOF || { msg "seed: could not define a network"; return 0; }
<network>
  <name>default</name>
  <bridge name='virbr-diqchk' stp='on' delay='0'/>
</network>
EOF
        echo default >"$dir/seeded-network"
        vsys net-start default >/dev/null || msg "seed: the seeded default network did not start"
        vsys net-autostart default >/dev/null || true
        msg "seed: defined an active, autostarted network 'default' on $SYS"
    fi
}

cmd_unseed() {
    local dir="$1"
    if [[ -r "$dir/seeded-domain" ]]; then
        vsys undefine "$(<"$dir/seeded-domain")" >/dev/null || msg "unseed: undefine $(<"$dir/seeded-domain") failed"
    fi
    if [[ -r "$dir/seeded-network" ]]; then
        vsys net-destroy default >/dev/null 2>&1 || true
        vsys net-undefine default >/dev/null || msg "unseed: net-undefine default failed"
    fi
    return 0
}

case "${1:-}" in
record) cmd_record ;;
compare) shift; [[ $# -eq 2 ]] || die "usage: $0 compare BEFORE AFTER"; cmd_compare "$@" ;;
seed) shift; [[ $# -eq 1 ]] || die "usage: $0 seed DIR"; cmd_seed "$1" ;;
unseed) shift; [[ $# -eq 1 ]] || die "usage: $0 unseed DIR"; cmd_unseed "$1" ;;
*) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
