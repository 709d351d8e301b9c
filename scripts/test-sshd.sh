#!/usr/bin/env bash
# test-sshd.sh — an sshd of the tests' own: the remote host of the remote-transport tests.
#
# Usage (as root):
#   scripts/test-sshd.sh start [PORT]   start one on 127.0.0.1:PORT (default: a free port);
#                                       prints its facts as shell assignments (as `env`)
#   scripts/test-sshd.sh stop DIR       stop the one whose folder is DIR and remove DIR
#   scripts/test-sshd.sh env DIR        print its facts again
#
# What it is: Debian's sshd, unpacked by `scripts/harness.sh deps` (never installed: the
# package would start the host's ssh service), run as the harness's user diq-harness with a
# configuration, host key, authorized key and client keys of its own in a fresh temporary
# folder, key authentication only, listening on the loopback interface. A non-root sshd
# logs in only its own user and needs no privilege separation. It runs the clients'
# commands with that user's login shell, which is nologin; so sshd runs in a mount
# namespace of its own where /etc/passwd is a copy that gives the user /bin/sh, and in a
# PID namespace of its own, so that stopping it ends every session it started. Nothing
# of the host changes: no service, no user, no file under /etc, no key in anyone's
# ~/.ssh; `stop` removes the folder.
#
# The remote side: libvirt's ssh transport runs virt-ssh-helper (libvirt-daemon) there;
# its sessions get XDG_RUNTIME_DIR of the harness's daemon, so `qemu:///session` on the
# "remote host" is the harness's libvirtd.
#
# The facts: SSHD_DIR, SSHD_PORT, SSHD_PID, SSHD_USER, SSHD_KEY (the authorized client key),
# SSHD_OTHER_KEY (a key sshd refuses), SSHD_SSH (an ssh that knows the host key: give it
# as the URI's command=), SSHD_SSH_UNKNOWN (an ssh whose known_hosts is empty), SSHD_LOG,
# SSHD_HOST_KEY_LINE (the known_hosts line of the host key).
set -euo pipefail

HARNESS_USER="diq-harness"
HARNESS_DIR="${HARNESS_DIR:-/var/lib/dismount-iso-qemu-harness}"
SSHD="$HARNESS_DIR/pkgs/openssh-server/usr/sbin/sshd"
RUN_DIR="$HARNESS_DIR/run"
MARK=".diq-test-sshd"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { printf 'test-sshd: error: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (sshd runs as the harness's user $HARNESS_USER)"; }

# DIR must be a folder this script made (it holds the mark).
check_dir() {
    [[ -n "${1:-}" && -d "$1" && -f "$1/$MARK" ]] || die "'${1:-}' is not a folder of test-sshd.sh"
}

free_port() {
    local p i
    for i in $(seq 1 50); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        # Refused: nobody listens there.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    die "no free port found"
}

print_env() {
    local dir="$1" kv
    for kv in \
        "SSHD_DIR=$dir" \
        "SSHD_PORT=$(<"$dir/port")" \
        "SSHD_PID=$(<"$dir/pid")" \
        "SSHD_USER=$HARNESS_USER" \
        "SSHD_KEY=$dir/client_key" \
        "SSHD_OTHER_KEY=$dir/other_key" \
        "SSHD_SSH=$dir/ssh" \
        "SSHD_SSH_UNKNOWN=$dir/ssh-unknown-host" \
        "SSHD_LOG=$dir/sshd.log" \
        "SSHD_HOST_KEY_LINE=$(<"$dir/known_hosts")"; do
        printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
}

# An ssh that reads only the given configuration: no key of root's, no agent, no
# known_hosts of anyone's. BatchMode is left to the caller (the tool must add it).
write_client() {
    local dir="$1" name="$2" known="$3"
    cat >"$dir/$name.config" <<EOF
Host *
    UserKnownHostsFile $known
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking ask
    UpdateHostKeys no
    IdentitiesOnly yes
    IdentityAgent none
    IdentityFile none
    ConnectTimeout 20
EOF
    printf '#!/bin/sh\nexec ssh -F %q "$@"\n' "$dir/$name.config" >"$dir/$name"
    chmod 0755 "$dir/$name"
}

cmd_start() {
    need_root
    local port="${1:-}" dir passwd_line
    [[ -z "$port" ]] && port=$(free_port)
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "PORT must be a TCP port number"
    fi
    id -u "$HARNESS_USER" >/dev/null 2>&1 || die "no user $HARNESS_USER: run scripts/harness.sh up first"
    [[ -x "$SSHD" ]] || "$REPO/scripts/harness.sh" deps >&2
    [[ -x "$SSHD" ]] || die "$SSHD missing after scripts/harness.sh deps"
    command -v ssh-keygen >/dev/null || die "ssh-keygen missing (scripts/harness.sh deps installs openssh-client)"

    dir=$(mktemp -d "${TMPDIR:-/tmp}/diq-test-sshd.XXXXXX")
    chmod 0755 "$dir"
    : >"$dir/$MARK"
    printf '%s\n' "$port" >"$dir/port"
    ssh-keygen -q -t ed25519 -N '' -C diq-test-sshd-host -f "$dir/host_key"
    ssh-keygen -q -t ed25519 -N '' -C diq-test-sshd-client -f "$dir/client_key"
    ssh-keygen -q -t ed25519 -N '' -C diq-test-sshd-refused -f "$dir/other_key"
    chown "$HARNESS_USER:$HARNESS_USER" "$dir/host_key" "$dir/host_key.pub"
    install -m 0644 "$dir/client_key.pub" "$dir/authorized_keys"
    printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$dir/known_hosts"
    : >"$dir/empty_known_hosts"
    write_client "$dir" ssh "$dir/known_hosts"
    write_client "$dir" ssh-unknown-host "$dir/empty_known_hosts"
    install -m 0644 -o "$HARNESS_USER" -g "$HARNESS_USER" /dev/null "$dir/sshd.log"

    # The user's entry with a shell that runs commands; everything else as the host has it.
    passwd_line=$(getent passwd "$HARNESS_USER")
    awk -F: -v OFS=: -v u="$HARNESS_USER" '$1 == u { $7 = "/bin/sh" } { print }' /etc/passwd >"$dir/passwd"
    grep -q "^$HARNESS_USER:" "$dir/passwd" || printf '%s\n' "${passwd_line%:*}:/bin/sh" >>"$dir/passwd"
    chmod 0644 "$dir/passwd"

    cat >"$dir/sshd_config" <<EOF
# The tests' own sshd (scripts/test-sshd.sh): loopback only, keys only, one user.
ListenAddress 127.0.0.1:$port
HostKey $dir/host_key
PidFile none
UsePAM no
# The folder is under a world-writable /tmp; the files are the script's own.
StrictModes no
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
# Offered but never able to succeed (a non-root sshd cannot read shadow): a client that
# may prompt would ask for a password here, which is what the tests prove never happens.
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
AllowUsers $HARNESS_USER
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PermitUserEnvironment no
Subsystem sftp /bin/false
SetEnv XDG_RUNTIME_DIR=$RUN_DIR LC_ALL=C.UTF-8
MaxStartups 100
MaxSessions 100
LoginGraceTime 30
LogLevel VERBOSE
EOF

    # The PID namespace's first process is sshd itself: when it ends, so does every
    # session it started (see cmd_stop).
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid unshare --mount --propagation private --pid --fork --mount-proc -- sh -ec '
        mount --bind "$1" /etc/passwd
        shift
        exec "$@"' sh "$dir/passwd" \
        setpriv --reuid="$HARNESS_USER" --regid="$HARNESS_USER" --clear-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HARNESS_DIR/home" USER="$HARNESS_USER" \
        LOGNAME="$HARNESS_USER" LC_ALL=C.UTF-8 \
        "$SSHD" -D -f "$dir/sshd_config" -E "$dir/sshd.log" \
        </dev/null >/dev/null 2>>"$dir/start.log" &
    printf '%s\n' "$!" >"$dir/pid"

    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            print_env "$dir"
            return 0
        fi
        if ! kill -0 "$(<"$dir/pid")" 2>/dev/null; then break; fi
        sleep 0.05
    done
    printf 'test-sshd: sshd did not come up: %s %s\n' "$(tail -n 5 "$dir/start.log" 2>/dev/null | tr '\n' ' ')" \
        "$(tail -n 5 "$dir/sshd.log" 2>/dev/null | tr '\n' ' ')" >&2
    cmd_stop "$dir"
    exit 1
}

cmd_stop() {
    need_root
    local dir="${1:-}" pid init i
    check_dir "$dir"
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == unshare ]]; then
        # unshare ignores SIGTERM while it waits, and the uid change cleared its child's
        # parent-death signal: stop sshd, the first process of the PID namespace, whose
        # end takes every other process of the namespace with it; unshare then exits.
        init=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
        for i in $init; do
            if [[ "$i" =~ ^[0-9]+$ ]]; then kill -TERM "$i" 2>/dev/null || true; fi
        done
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            for i in $init; do
                if [[ "$i" =~ ^[0-9]+$ ]]; then kill -KILL "$i" 2>/dev/null || true; fi
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf -- "$dir"
}

case "${1:-}" in
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
env) shift; check_dir "${1:-}"; print_env "$1" ;;
*) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
