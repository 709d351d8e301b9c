#!/usr/bin/env bash
# harness.sh — the real libvirt/QEMU end-to-end harness of dismount_iso_qemu.
#
# Usage: scripts/harness.sh [-h] COMMAND
#
#   deps [build|virsh-only]
#           Install the Debian packages the harness needs; `deps build` only those that
#           building and running the tool need; `deps virsh-only` those of a build without
#           the native backend. Refuses (exit 3) when installing them would upgrade or
#           remove an installed package.
#   daemon  deps, then start the harness's own libvirtd (no guests).
#   up      deps, then: start the harness's own libvirtd, build the guest image and the ISOs
#           when their inputs changed, define and start the guests, wait until each one is
#           in its expected state, print a summary. Idempotent: with everything already up
#           it takes a few seconds.
#   down    Destroy and undefine every harness guest, then stop the harness's libvirtd and
#           everything it started. Cached downloads, the guest image and the ISOs stay.
#   purge [--packages]
#           down, then remove the harness user and $HARNESS_DIR: the machine is as it was
#           before the harness first ran, except for the Debian packages it installed,
#           which it lists (with --packages it purges them too).
#   legacy-cleanup
#           One-time cleanup after an earlier version of this harness, which used the
#           host's own libvirtd: undefines the guests it defined there and prints what it
#           had changed (qemu.conf, the default network, the worker pool) with the
#           commands that restore it. Changes nothing else.
#   status  List the harness domains, their state and whether each agent answers guest-ping.
#           Exits 1 when a domain is not in its expected state, 2 when libvirtd does not answer.
#   selftest  Check against the live guests every promise `up` makes (agent answers, disabled
#           command, not connected, timeout, paused, the discs); ends "N passed, N failed".
#   env     Print the harness's facts as shell assignments (the URI, paths, volume ids, file
#           texts), for tests and scripts: eval "$(scripts/harness.sh env)".
#   uri     Print the URI that reaches the harness's libvirtd.
#   install PKG...  Install missing packages the way deps does (for the benchmarks).
#   unpack PKG  Unpack PKG under $HARNESS_DIR/pkgs (never installed) and print where.
#
# Must run as root. Environment:
#   HARNESS_DIR           everything the harness owns (default /var/lib/dismount-iso-qemu-harness)
#   HARNESS_BOOT_TIMEOUT  seconds `up` waits for the guest agents (default 180)
#
# Isolation: the guests live in a libvirt daemon of the harness's own — the session daemon
# of a dedicated unprivileged user, diq-harness, with its configuration, sockets, state and
# logs under $HARNESS_DIR. The host's libvirtd (if any), its configuration under
# /etc/libvirt, its networks and its guests are never touched; no service is started or
# restarted. Tools reach the harness with
#   -c 'qemu+unix:///session?socket=$HARNESS_DIR/run/libvirt/libvirt-sock'
# (`env` prints it as HARNESS_URI). QEMU runs as diq-harness, under TCG, without cgroups,
# firewall rules or networks of the host's.
#
# Packages: the tool's build and the harness install with apt only what they need, named
# one by one, with --no-install-recommends. Packages whose installation would start a
# service, create a network or replace an installed package are unpacked under
# $HARNESS_DIR/pkgs with dpkg -x instead: the guest kernel, qemu-guest-agent, busybox-static,
# prometheus, and QEMU itself (qemu-system-x86 with its data, firmware and modules; installing
# it would replace a newer qemu-utils, as on machines with backported QEMU tools). What apt
# installed is recorded in $HARNESS_DIR/installed-packages for `purge`.
#
# One guest image serves every guest: a Debian kernel (downloaded, unpacked, never installed)
# and a busybox initramfs that runs qemu-ga. The kernel command line picks the persona
# (which os-release the guest has) and the agent mode. No guest has a network card; all the
# tests need goes through the agent channel and the CD-ROM.
#
#   domain        persona  agent         CD-ROM sda (SATA)        expected state
#   diq-ubuntu    ubuntu   ok            iso/harness.iso          running, agent answers
#   diq-centos    centos   ok            empty drive              running, agent answers
#   diq-debian    debian   block-osinfo  -                        running, guest-get-osinfo disabled
#   diq-noexec    alpine   block-exec    -                        running, guest-exec disabled
#   diq-noagent   alpine   none          -                        running, agent not connected
#   diq-frozen    alpine   freeze        -                        running, agent stopped (calls time out)
#   diq-paused    alpine   ok            -                        paused
#   diq-win2k22   -        -             iso/harness.iso          shut off, libosinfo win2k22, 2 GiB
#
# The media tests (tests/e2e_media.rs) change discs and drives, so they own their guests:
#   diq-media-a    alpine   ok            iso/harness.iso          running
#   diq-media-b    alpine   ok            iso/harness.iso          running
#   diq-media-off  alpine   ok            iso/harness.iso          shut off
#   diq-media-bare alpine   ok            - (no drive)             shut off
#   diq-media-scsi alpine   ok            - (no drive)             running, for a SCSI hot-add
#
# The Linux guests: type qemu (TCG), machine q35, 256 MiB, 1 vCPU, direct kernel boot, a
# virtio balloon with stats, serial console to $HARNESS_DIR/console/<name>.log (read it when a
# guest misbehaves). diq-win2k22 is q35 too, 2 GiB and 2 vCPUs, with no kernel and no disk.
# UUIDs derive from the names, so they survive down/up.
#
# up repairs what a test may have left behind: it resumes or starts guests, reboots a guest
# whose agent hangs, puts the promised disc (or empty drive) back into sda, and redefines a
# guest whose definition or image changed.
#
# The discs, under $HARNESS_DIR/iso/:
#   harness.iso           volume id DIQ_HARNESS, file HELLO.TXT:
#                         "Hello from the dismount_iso_qemu harness disc." + newline
#   "second disc é.iso"   volume id DIQ_SECOND, file SECOND.TXT:
#                         "Second disc of the dismount_iso_qemu harness." + newline
#
# Agent modes (kernel parameter diq.agent=): ok = qemu-ga as usual; none = never started;
# freeze = started, and `up` then stops it with SIGSTOP through guest-exec, so every call
# times out (after libvirt's 5 s guest-sync wait, whatever --timeout says); block-osinfo = qemu-ga --block-rpcs=guest-get-osinfo, so a tool must read
# /etc/os-release through guest-exec instead; block-exec = qemu-ga
# --block-rpcs=guest-exec,guest-exec-status, as many distributions ship it (file access works,
# running commands does not).

set -euo pipefail

readonly DOMAIN_PREFIX="diq-"
readonly HARNESS_USER="diq-harness"
# The namespace of the metadata every harness domain carries (also the legacy harness's).
readonly HARNESS_XMLNS="urn:x-dismount-iso-qemu:harness"
HARNESS_DIR="${HARNESS_DIR:-/var/lib/dismount-iso-qemu-harness}"
BOOT_TIMEOUT="${HARNESS_BOOT_TIMEOUT:-180}"
[[ "$BOOT_TIMEOUT" =~ ^[0-9]+$ ]] || { echo "harness: HARNESS_BOOT_TIMEOUT must be whole seconds" >&2; exit 2; }

# Installed with apt-get, each by name, --no-install-recommends, only when missing. None of
# them starts a service, defines a network or edits a configuration file of the host's.
readonly APT_BUILD=(
    gcc libc6-dev pkg-config # a C linker and libc for build scripts (rustup brings none)
    libvirt-dev              # the native backend links libvirt (pins libvirt0's version)
)
readonly APT_CLIENT=(libvirt-clients) # virsh: the virsh backend, the tests' second opinion
readonly APT_HARNESS=(
    libvirt-daemon libvirt-daemon-driver-qemu # libvirtd itself: no units, no config, no network
    cpio xorriso kmod gzip                    # the initramfs (depmod) and the ISOs
    osinfo-db                                 # OS names from libosinfo metadata
    socat tmux vim-tiny                       # serve's outage proxy; a real terminal and editor
)
# Unpacked under $HARNESS_DIR/pkgs with dpkg -x, never installed (see the header); so are
# qemu-guest-agent, busybox-static and prometheus (cmd_deps).
readonly UNPACK_QEMU=(qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu)

# name persona agent-mode cdrom(harness|empty|none) expected(running|frozen|paused|off)
readonly GUESTS=(
    "diq-ubuntu   ubuntu  ok           harness running"
    "diq-centos   centos  ok           empty   running"
    "diq-debian   debian  block-osinfo none    running"
    "diq-noexec   alpine  block-exec   none    running"
    "diq-noagent  alpine  none         none    running"
    "diq-frozen   alpine  freeze       none    frozen"
    "diq-paused   alpine  ok           none    paused"
    "diq-win2k22  -       -            harness off"
    "diq-media-a     alpine  ok  harness running"
    "diq-media-b     alpine  ok  harness running"
    "diq-media-off   alpine  ok  harness off"
    "diq-media-bare  alpine  ok  none    off"
    "diq-media-scsi  alpine  ok  none    running"
)

# The modules the guest needs; their dependencies come from the kernel's own modules.dep.
readonly GUEST_MODULES=(virtio_pci virtio_console virtio_balloon virtio_scsi ahci sr_mod isofs)

readonly HELLO_TEXT="Hello from the dismount_iso_qemu harness disc."
readonly SECOND_TEXT="Second disc of the dismount_iso_qemu harness."
readonly SECOND_ISO_NAME="second disc é.iso"

# A fixed literal: guest-exec a shell that stops qemu-ga after the reply has left.
# shellcheck disable=SC2016 # the $(...) is for the guest's shell, not ours
readonly FREEZE_JSON='{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","sleep 2; kill -STOP $(pidof qemu-ga)"]}}'
readonly PING_JSON='{"execute":"guest-ping"}'

msg() { printf 'harness: %s\n' "$*" >&2; }
die() { printf 'harness: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

TMP=""
cleanup() { if [[ -n "$TMP" ]]; then rm -rf -- "$TMP"; fi; }
trap cleanup EXIT
new_tmp() { [[ -n "$TMP" ]] || TMP=$(mktemp -d); }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (the harness installs packages and runs a libvirtd of its own as user $HARNESS_USER)"
}

# The daemon's files live under $HARNESS_DIR; QEMU's monitor socket path (under cfg/) must
# stay below the 107 bytes a Unix socket path may have, hence the length limit.
check_harness_dir() {
    [[ "$HARNESS_DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] ||
        die "HARNESS_DIR must be an absolute path of letters, digits and ._/- (got '$HARNESS_DIR')"
    HARNESS_DIR="${HARNESS_DIR%/}"
    ((${#HARNESS_DIR} <= 48)) || die "HARNESS_DIR must be at most 48 characters (Unix socket paths under it must fit 107 bytes)"
    [[ "$HARNESS_DIR" != / && "$HARNESS_DIR" != /var && "$HARNESS_DIR" != /var/lib ]] ||
        die "HARNESS_DIR must be a directory of the harness's own, not $HARNESS_DIR"
}

set_paths() {
    check_harness_dir
    CFG_DIR="$HARNESS_DIR/cfg"     # XDG_CONFIG_HOME: libvirtd.conf, qemu.conf, domain state
    CACHE_DIR="$HARNESS_DIR/cache" # XDG_CACHE_HOME: QEMU logs, capabilities cache
    RUN_DIR="$HARNESS_DIR/run"     # XDG_RUNTIME_DIR: sockets, pid files
    HOME_DIR="$HARNESS_DIR/home"
    LOG_DIR="$HARNESS_DIR/log"
    PKG_DIR="$HARNESS_DIR/pkgs"
    QEMU_ROOT="$PKG_DIR/qemu"
    EMULATOR="$QEMU_ROOT/usr/bin/qemu-system-x86_64"
    BIN_DIR="$HARNESS_DIR/bin" # links to the unpacked tools tests run (prometheus, promtool)
    SOCKET="$RUN_DIR/libvirt/libvirt-sock"
    PIDFILE="$RUN_DIR/libvirt/libvirtd.pid"
    URI="qemu+unix:///session?socket=$SOCKET"
}
set_paths

# C.UTF-8, not C: in the C locale virsh prints every non-ASCII byte of a table cell as \xff.
vsh() { LC_ALL=C.UTF-8 virsh -q -c "$URI" "$@"; }

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
elapsed_ms() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

# ---------------------------------------------------------------------------------- packages

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true)" == ii* ]]
}

lists_present() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }

apt_update() {
    msg "deps: refreshing the package lists ($1)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
}

# Installs the named packages that are missing — or refuses, exit 3, when apt would upgrade,
# downgrade or remove any installed package to do it: that would change the host's software
# under whatever runs on it (libvirt-dev, for one, pins libvirt0 to its own version).
install_packages() {
    local missing=() pkg sim changes before after
    for pkg in "$@"; do pkg_installed "$pkg" || missing+=("$pkg"); done
    ((${#missing[@]})) || return 0
    lists_present || apt_update "none yet"
    if ! sim=$(LC_ALL=C apt-get install -s --no-install-recommends "${missing[@]}" 2>&1); then
        apt_update "apt-get could not plan the install"
        sim=$(LC_ALL=C apt-get install -s --no-install-recommends "${missing[@]}" 2>&1) ||
            die "apt-get cannot install ${missing[*]}: $(tail -n 3 <<<"$sim" | tr '\n' ' ')"
    fi
    # "Inst pkg [old] (new …)" replaces an installed version; "Remv pkg" removes one.
    changes=$(awk '$1 == "Remv" { print "remove " $2 " " $3 } $1 == "Inst" && $3 ~ /^\[/ { print "replace " $2 " " $3 " with " $4 }' <<<"$sim" | tr -d '[](' | paste -sd ';' -)
    if [[ -n "$changes" ]]; then
        msg "deps: installing ${missing[*]} would change installed packages: ${changes//;/; }"
        msg "deps: refusing; the host's packages stay as they are (install them yourself if that is acceptable)"
        exit 3
    fi
    msg "deps: installing ${missing[*]}"
    before=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
    after=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort)
    mkdir -p "$HARNESS_DIR"
    comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") >>"$HARNESS_DIR/installed-packages"
    msg "deps: installed $(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | wc -l) package(s); recorded in $HARNESS_DIR/installed-packages"
}

# fetch_deb PKG DIR: the .deb of PKG's candidate version in DIR (downloaded once); prints its path.
fetch_deb() {
    local pkg="$1" dir="$2" deb version file
    version=$(LC_ALL=C apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
    if [[ -z "$version" || "$version" == "(none)" ]]; then
        apt_update "apt-cache knows no $pkg"
        version=$(LC_ALL=C apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
        [[ -n "$version" && "$version" != "(none)" ]] || die "no Debian package $pkg in the configured archives"
    fi
    # apt-get download names the file PKG_VERSION_ARCH.deb, with an epoch's ':' as %3a.
    file="${pkg}_${version/:/%3a}_"
    deb=$(compgen -G "$dir/${file}*.deb" | head -n1 || true)
    if [[ -z "$deb" ]]; then
        mkdir -p "$dir"
        msg "deps: downloading $pkg $version"
        if ! (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2); then
            # Stale lists name a version the archive has replaced: ask again after an update.
            apt_update "apt-get download $pkg failed"
            version=$(LC_ALL=C apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
            file="${pkg}_${version/:/%3a}_"
            (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2) ||
                die "apt-get download $pkg failed"
        fi
        deb=$(compgen -G "$dir/${file}*.deb" | head -n1 || true)
        [[ -n "$deb" ]] || die "apt-get download $pkg left no .deb in $dir"
    fi
    printf '%s\n' "$deb"
}

# The packages a .deb depends on (first alternatives, versions dropped), minus those in $2…
deb_depends() {
    local deb="$1"
    shift
    dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' |
        grep -v '^$' | grep -vxF -f <(printf '%s\n' "$@") || true
}

# unpack_into ROOT LIBS_OF PKG...: unpacks the PKGs into ROOT and installs what package
# LIBS_OF depends on ("-": nothing, for static binaries). Once unpacked, they stay (like the
# kernel): a harness that works is not changed by an archive update; `purge` starts over.
unpack_into() {
    local root="$1" libs_of="$2" pkg deb debs=() libs=() stamp=""
    shift 2
    [[ -r "$root/.unpacked" ]] && return 0
    for pkg in "$@"; do
        deb=$(fetch_deb "$pkg" "$PKG_DIR/debs")
        debs+=("$deb")
        stamp+="$(basename "$deb")"$'\n'
        if [[ "$pkg" == "$libs_of" ]]; then
            mapfile -t libs < <(deb_depends "$deb" "$@")
        fi
    done
    ((${#libs[@]} == 0)) || install_packages "${libs[@]}"
    msg "deps: unpacking $* into $root"
    rm -rf "$root"
    mkdir -p "$root"
    for deb in "${debs[@]}"; do dpkg -x "$deb" "$root"; done
    chmod -R a+rX "$root"
    printf '%s' "$stamp" >"$root/.unpacked"
}

cmd_deps() {
    need_root
    case "${1:-}" in
    "") ;;
    build) install_packages "${APT_BUILD[@]}" "${APT_CLIENT[@]}"; return 0 ;;
    # Without libvirt-dev, for a build without the native backend (cargo --no-default-features).
    virsh-only) install_packages gcc libc6-dev "${APT_CLIENT[@]}"; return 0 ;;
    *) die "deps takes nothing, 'build' or 'virsh-only'" ;;
    esac
    install_packages "${APT_BUILD[@]}" "${APT_CLIENT[@]}"
    install_packages "${APT_HARNESS[@]}"
    # QEMU finds its firmware and modules relative to its own binary (a relocatable build).
    # Only the emulator's own libraries are installed: qemu-system-common's cover display,
    # audio and USB modules the guests never load.
    unpack_into "$QEMU_ROOT" qemu-system-x86 "${UNPACK_QEMU[@]}"
    unpack_into "$PKG_DIR/qemu-guest-agent" qemu-guest-agent qemu-guest-agent
    unpack_into "$PKG_DIR/busybox-static" - busybox-static
    unpack_into "$PKG_DIR/prometheus" - prometheus # a static Go binary; its web UI is unused
    mkdir -p "$BIN_DIR"
    ln -sfn "$PKG_DIR/prometheus/usr/bin/prometheus" "$BIN_DIR/prometheus"
    ln -sfn "$PKG_DIR/prometheus/usr/bin/promtool" "$BIN_DIR/promtool"
    "$EMULATOR" -accel help 2>/dev/null | grep -qx tcg || die "the unpacked QEMU ($EMULATOR) does not run or lacks TCG"
    msg "deps: ready"
}

# -------------------------------------------------------------------------- the harness's user

harness_uid() { id -u "$HARNESS_USER" 2>/dev/null; }

ensure_user() {
    if ! harness_uid >/dev/null; then
        msg "creating the system user $HARNESS_USER (its libvirtd and QEMU run as it; 'purge' removes it)"
        useradd --system --user-group --home-dir "$HOME_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "dismount_iso_qemu test harness" "$HARNESS_USER" ||
            die "useradd $HARNESS_USER failed"
    fi
}

# The harness's directories: root's where QEMU only reads, the user's where the daemon writes.
ensure_dirs() {
    local d
    install -d -m 0755 "$HARNESS_DIR" "$HARNESS_DIR/image" "$HARNESS_DIR/iso" "$HARNESS_DIR/domains" "$HARNESS_DIR/state"
    for d in "$CFG_DIR" "$CACHE_DIR" "$HOME_DIR" "$LOG_DIR" "$HARNESS_DIR/console"; do
        install -d -m 0700 -o "$HARNESS_USER" -g "$HARNESS_USER" "$d"
    done
    # An earlier harness wrote console logs as root; QEMU now writes them as the user.
    chown -R "$HARNESS_USER:$HARNESS_USER" "$HARNESS_DIR/console"
    chmod 0711 "$HARNESS_DIR/console" # root's tests read the logs; QEMU opens them by path
    install -d -m 0700 -o "$HARNESS_USER" -g "$HARNESS_USER" "$RUN_DIR" "$RUN_DIR/agent" "$CFG_DIR/libvirt"
}

# Runs a command as the harness user, with the environment its session daemon expects.
as_harness() {
    setpriv --reuid="$HARNESS_USER" --regid="$HARNESS_USER" --clear-groups -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME_DIR" USER="$HARNESS_USER" \
        LOGNAME="$HARNESS_USER" XDG_CONFIG_HOME="$CFG_DIR" XDG_CACHE_HOME="$CACHE_DIR" \
        XDG_RUNTIME_DIR="$RUN_DIR" LC_ALL=C.UTF-8 "$@"
}

# --------------------------------------------------------------------------------- the daemon

daemon_pid() {
    local pid
    [[ -r "$PIDFILE" ]] || return 1
    pid=$(<"$PIDFILE")
    [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == libvirtd ]] || return 1
    [[ "$(stat -c %u "/proc/$pid")" == "$(harness_uid)" ]] || return 1
    printf '%s\n' "$pid"
}

write_daemon_config() {
    # Every agent call to the frozen guest holds a worker for 5-30 s, and the suite runs many
    # processes that each ask it once; libvirt's default of 20 workers would then make even a
    # plain dumpxml wait 30 s (measured). This daemon is the harness's, so its pool is sized
    # for the suite here, not by changing anybody else's daemon.
    cat >"$CFG_DIR/libvirt/libvirtd.conf" <<EOF
# The dismount_iso_qemu harness's own session daemon (scripts/harness.sh writes this file).
max_workers = 100
log_outputs = "3:file:$LOG_DIR/libvirtd.log"
EOF
    # QEMU's output goes to its log file directly: no virtlogd to start and stop.
    cat >"$CFG_DIR/libvirt/qemu.conf" <<EOF
# The dismount_iso_qemu harness's own session daemon (scripts/harness.sh writes this file).
stdio_handler = "file"
EOF
    chown "$HARNESS_USER:$HARNESS_USER" "$CFG_DIR/libvirt/libvirtd.conf" "$CFG_DIR/libvirt/qemu.conf"
}

ensure_daemon() {
    local i
    command -v libvirtd >/dev/null || die "libvirtd missing (run: $0 deps)"
    ensure_user
    ensure_dirs
    write_daemon_config
    if ! daemon_pid >/dev/null; then
        msg "starting the harness's libvirtd as $HARNESS_USER (log: $LOG_DIR/libvirtd.log)"
        # 9>&- keeps the harness lock out of the daemon, which outlives this run.
        as_harness libvirtd --daemon </dev/null >/dev/null 2>&1 9>&- ||
            die "libvirtd --daemon failed as $HARNESS_USER; see $LOG_DIR/libvirtd.log"
    fi
    for ((i = 0; i < 300; i++)); do
        vsh uri >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "the harness's libvirtd does not answer on $URI after 30 s; see $LOG_DIR/libvirtd.log"
}

# Stops the harness's libvirtd and every process of the harness user (QEMU, helpers).
stop_daemon() {
    local pid i uid
    uid=$(harness_uid) || return 0
    if pid=$(daemon_pid); then
        msg "stopping the harness's libvirtd (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [[ -d "/proc/$pid" ]] || break
            sleep 0.1
        done
    fi
    if pgrep -u "$uid" >/dev/null; then
        pkill -TERM -u "$uid" || true
        for ((i = 0; i < 50; i++)); do
            pgrep -u "$uid" >/dev/null || break
            sleep 0.1
        done
        pkill -KILL -u "$uid" 2>/dev/null || true
    fi
    for ((i = 0; i < 50; i++)); do
        pgrep -u "$uid" >/dev/null || return 0
        sleep 0.1
    done
    die "processes of $HARNESS_USER are still running: $(pgrep -a -u "$uid" | tr '\n' ';')"
}


KERNEL_ROOT=""
KERNEL_VERSION=""

# The kernel package linux-image-amd64 points at (e.g. linux-image-6.1.0-56-amd64).
resolve_kernel_package() {
    LC_ALL=C apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Downloads kernel package $2 into $1; prints the .deb's path.
download_kernel() {
    local dir="$1" pkg="$2" deb
    deb=$(compgen -G "$dir/${pkg}_*.deb" | head -n1 || true)
    if [[ -z "$deb" ]]; then
        msg "kernel: downloading $pkg"
        (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) || return 1
        deb=$(compgen -G "$dir/${pkg}_*.deb" | head -n1 || true)
        [[ -n "$deb" ]] || return 1
    fi
    printf '%s\n' "$deb"
}

# Sets KERNEL_ROOT (the unpacked package) and KERNEL_VERSION. Once unpacked, a kernel stays
# the harness's kernel on this machine, so a kernel update never rebuilds the image by surprise.
ensure_kernel() {
    local dir="$HARNESS_DIR/kernel" pkg="" root deb
    mkdir -p "$dir"
    if [[ -r "$dir/current" ]]; then
        pkg=$(<"$dir/current")
        [[ -f "$dir/$pkg/.unpacked" ]] || pkg=""
    fi
    if [[ -z "$pkg" ]]; then
        pkg=$(resolve_kernel_package)
        if [[ -z "$pkg" ]]; then
            apt_update "apt-cache knows no linux-image-amd64"
            pkg=$(resolve_kernel_package)
        fi
        [[ -n "$pkg" ]] || die "cannot resolve the kernel package behind linux-image-amd64"
    fi
    root="$dir/$pkg"
    if [[ ! -f "$root/.unpacked" ]]; then
        if ! deb=$(download_kernel "$dir" "$pkg"); then
            # Stale lists name a kernel the archive has replaced: ask again after an update.
            apt_update "apt-get download $pkg failed"
            pkg=$(resolve_kernel_package)
            [[ -n "$pkg" ]] || die "cannot resolve the kernel package behind linux-image-amd64"
            root="$dir/$pkg"
            deb=$(download_kernel "$dir" "$pkg") || die "apt-get download $pkg failed"
        fi
        msg "kernel: unpacking $(basename "$deb")"
        rm -rf "$root"
        dpkg -x "$deb" "$root"
        KERNEL_VERSION=$(ls "$root/lib/modules")
        # The package ships no modules.dep (depmod runs at install time): make it here.
        depmod -b "$root" "$KERNEL_VERSION"
        touch "$root/.unpacked"
    fi
    printf '%s\n' "$pkg" >"$dir/current"
    KERNEL_ROOT="$root"
    KERNEL_VERSION=$(ls "$KERNEL_ROOT/lib/modules")
    [[ -f "$KERNEL_ROOT/boot/vmlinuz-$KERNEL_VERSION" ]] || die "no vmlinuz in $KERNEL_ROOT/boot"
}

# Prints module paths (relative to the modules dir) in load order: dependencies first.
module_load_order() {
    local moddir="$KERNEL_ROOT/lib/modules/$KERNEL_VERSION"
    awk -v wanted="${GUEST_MODULES[*]}" '
        {
            key = $1; sub(/:$/, "", key)
            name = key; sub(/.*\//, "", name); sub(/\.ko(\.[a-z]+)?$/, "", name)
            path[name] = key
            deps[name] = ""
            for (i = NF; i >= 2; i--) deps[name] = deps[name] " " $i   # modprobe loads them last-first
        }
        function emit(p,    n, list, k, dn) {
            n = p; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n)
            if (n in done) return
            k = split(deps[n], list, " ")
            for (i2 = 1; i2 <= k; i2++) { dn = list[i2]; sub(/.*\//, "", dn); sub(/\.ko(\.[a-z]+)?$/, "", dn); if (!(dn in done)) { done[dn] = 1; print path[dn] } }
            done[n] = 1; print p
        }
        END {
            c = split(wanted, w, " ")
            for (j = 1; j <= c; j++) {
                if (!(w[j] in path)) { print "missing module " w[j] > "/dev/stderr"; exit 1 }
                emit(path[w[j]])
            }
        }' "$moddir/modules.dep"
}

# ------------------------------------------------------------------------------------ personas

persona_os_release() {
    case "$1" in
    ubuntu)
        cat <<'EOF'
NAME="Ubuntu"
VERSION="18.04.6 LTS (Bionic Beaver)"
ID=ubuntu
ID_LIKE=debian
PRETTY_NAME="Ubuntu 18.04.6 LTS"
VERSION_ID="18.04"
VERSION_CODENAME=bionic
UBUNTU_CODENAME=bionic
EOF
        ;;
    centos)
        cat <<'EOF'
NAME="CentOS Stream"
VERSION="10 (Coughlan)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="10"
PLATFORM_ID="platform:el10"
PRETTY_NAME="CentOS Stream 10 (Coughlan)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:centos:centos:10"
VENDOR_NAME="CentOS"
EOF
        ;;
    debian)
        cat <<'EOF'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
EOF
        ;;
    alpine)
        cat <<'EOF'
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.20.3
VERSION="3.20.3"
PRETTY_NAME="Alpine Linux v3.20"
EOF
        ;;
    *) die "unknown persona $1" ;;
    esac
}
readonly PERSONAS=(ubuntu centos debian alpine)

# ---------------------------------------------------------------------------------------- init

write_guest_init() {
    cat <<'EOF'
#!/bin/sh
# PID 1 of the harness guest: load modules, become a persona, run qemu-ga per diq.agent.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
/bin/busybox --install -s
log() { echo "diq-init: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /mnt /media
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
chmod 1777 /tmp
exec </dev/console >/dev/console 2>&1

persona=""
agent="ok"
name="diq-guest"
for word in $(cat /proc/cmdline); do
    case "$word" in
    diq.persona=*) persona="${word#diq.persona=}" ;;
    diq.agent=*) agent="${word#diq.agent=}" ;;
    diq.hostname=*) name="${word#diq.hostname=}" ;;
    esac
done
log "persona=$persona agent=$agent hostname=$name"
hostname "$name"
echo "$name" >/etc/hostname

while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$mod" || log "insmod $mod failed"
done </etc/diq/modules

if [ -n "$persona" ] && [ -f "/etc/diq/personas/$persona" ]; then
    cp "/etc/diq/personas/$persona" /etc/os-release
    cp "/etc/diq/personas/$persona" /usr/lib/os-release
else
    log "no persona '$persona': leaving /etc/os-release out"
fi

find_agent_port() {
    for f in /sys/class/virtio-ports/*/name; do
        [ -r "$f" ] || continue
        if [ "$(cat "$f")" = "org.qemu.guest_agent.0" ]; then
            d="${f%/name}"
            echo "/dev/${d##*/}"
            return 0
        fi
    done
    return 1
}

start_agent() {
    port=""
    i=0
    while [ $i -lt 100 ]; do
        port="$(find_agent_port)" && [ -c "$port" ] && break
        port=""
        usleep 100000
        i=$((i + 1))
    done
    if [ -z "$port" ]; then
        log "no virtio port named org.qemu.guest_agent.0: qemu-ga not started"
        return 0
    fi
    log "starting qemu-ga on $port $*"
    mkdir -p /run/qemu-ga
    qemu-ga -m virtio-serial -p "$port" -t /run/qemu-ga -f /run/qemu-ga.pid "$@" &
    log "qemu-ga pid $!"
}

case "$agent" in
ok | freeze) start_agent ;;
block-osinfo) start_agent --block-rpcs=guest-get-osinfo ;;
block-exec) start_agent --block-rpcs=guest-exec,guest-exec-status ;;
none) log "agent mode none: qemu-ga stays off" ;;
*) log "unknown agent mode '$agent': qemu-ga stays off" ;;
esac

log "ready"
while :; do
    sleep 3600
done
EOF
}

write_guest_shutdown() {
    # qemu-ga's guest-shutdown runs /sbin/shutdown; busybox has no such applet.
    cat <<'EOF'
#!/bin/sh
case "$*" in
*-r*) exec reboot -f ;;
*) exec poweroff -f ;;
esac
EOF
}

# ------------------------------------------------------------------------------------- initrd

IMAGE_HASH=""

# Copies program $1 to path $3 in the staging root $2, with every library ldd says it needs.
copy_with_libs() {
    local bin="$1" stage="$2" dest="$3" lib
    install -D -m 0755 "$bin" "$stage$dest"
    while read -r lib; do
        [[ -n "$lib" ]] || continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done < <(ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }')
}

ensure_image() {
    local imgdir="$HARNESS_DIR/image" stage hash old="" mod name p
    mkdir -p "$imgdir"
    local qga="$PKG_DIR/qemu-guest-agent/usr/sbin/qemu-ga" busybox="$PKG_DIR/busybox-static/bin/busybox"
    [[ -x "$qga" ]] || die "$qga missing (run: $0 deps)"
    [[ -x "$busybox" ]] || die "$busybox missing (run: $0 deps)"
    stage="$TMP/initrd"
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/lib,etc/diq/personas,lib/modules,proc,sys,dev,run,tmp,mnt,var}
    ln -s ../run "$stage/var/run"

    cp "$busybox" "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh" # the other applets: busybox --install -s, first thing in /init
    copy_with_libs "$qga" "$stage" /usr/sbin/qemu-ga

    : >"$stage/etc/diq/modules"
    while read -r mod; do
        name=$(basename "$mod")
        case "$name" in
        *.ko) cp "$KERNEL_ROOT/lib/modules/$KERNEL_VERSION/$mod" "$stage/lib/modules/$name" ;;
        *.ko.xz) command -v xz >/dev/null || die "compressed modules need xz (apt-get install xz-utils)"
            xz -dc "$KERNEL_ROOT/lib/modules/$KERNEL_VERSION/$mod" >"$stage/lib/modules/${name%.xz}"; name="${name%.xz}" ;;
        *.ko.zst) command -v zstd >/dev/null || die "compressed modules need zstd (apt-get install zstd)"
            zstd -qdc "$KERNEL_ROOT/lib/modules/$KERNEL_VERSION/$mod" >"$stage/lib/modules/${name%.zst}"; name="${name%.zst}" ;;
        *) die "unexpected module file $mod" ;;
        esac
        printf '%s\n' "$name" >>"$stage/etc/diq/modules"
    done < <(module_load_order)

    for p in "${PERSONAS[@]}"; do
        persona_os_release "$p" >"$stage/etc/diq/personas/$p"
    done
    write_guest_init >"$stage/init"
    chmod 0755 "$stage/init"
    write_guest_shutdown >"$stage/sbin/shutdown"
    chmod 0755 "$stage/sbin/shutdown"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
    printf 'root:x:0:\n' >"$stage/etc/group"

    # The inputs' hash: every staged path with its type, mode and link target, every file's
    # content, and the kernel version (vmlinuz is not staged).
    hash=$(cd "$stage" && {
        find . -printf '%y %m %p %l\n' | LC_ALL=C sort
        find . -type f -print0 | xargs -0 sha256sum | LC_ALL=C sort -k2
        printf 'kernel %s\n' "$KERNEL_VERSION"
    } | sha256sum | cut -c1-64)
    [[ -r "$imgdir/inputs.sha256" ]] && old=$(<"$imgdir/inputs.sha256")
    if [[ "$hash" != "$old" || ! -s "$imgdir/initrd.img" || ! -s "$imgdir/vmlinuz" ]]; then
        msg "image: building the initramfs (inputs ${hash:0:12})"
        (cd "$stage" && find . -print0 | LC_ALL=C sort -z |
            cpio --null -o -H newc --reproducible -R 0:0 --quiet) | gzip -n -6 >"$imgdir/initrd.img.tmp"
        cp "$KERNEL_ROOT/boot/vmlinuz-$KERNEL_VERSION" "$imgdir/vmlinuz.tmp"
        mv -f "$imgdir/vmlinuz.tmp" "$imgdir/vmlinuz"
        mv -f "$imgdir/initrd.img.tmp" "$imgdir/initrd.img"
        printf '%s\n' "$hash" >"$imgdir/inputs.sha256"
    fi
    IMAGE_HASH="$hash"
    rm -rf "$stage"
}

# ---------------------------------------------------------------------------------------- ISOs

# build_iso FILE VOLID NAME TEXT: builds FILE holding NAME with TEXT, when that changed.
build_iso() {
    local iso="$1" volid="$2" name="$3" text="$4" src hash old=""
    hash=$(printf '%s\n' "$volid" "$name" "$text" | sha256sum | cut -c1-64)
    [[ -r "$iso.inputs" ]] && old=$(<"$iso.inputs")
    [[ "$hash" == "$old" && -s "$iso" ]] && return 0
    msg "iso: building $(basename "$iso") (volume $volid)"
    src="$TMP/iso-src"
    rm -rf "$src"
    mkdir -p "$src"
    printf '%s\n' "$text" >"$src/$name"
    xorriso -as mkisofs -quiet -V "$volid" -J -R -o "$iso.tmp" "$src" 2>"$TMP/xorriso.err" ||
        { cat "$TMP/xorriso.err" >&2; die "xorriso failed for $iso"; }
    mv -f "$iso.tmp" "$iso"
    printf '%s\n' "$hash" >"$iso.inputs"
    rm -rf "$src"
}

ensure_isos() {
    mkdir -p "$HARNESS_DIR/iso"
    build_iso "$HARNESS_DIR/iso/harness.iso" DIQ_HARNESS HELLO.TXT "$HELLO_TEXT"
    build_iso "$HARNESS_DIR/iso/$SECOND_ISO_NAME" DIQ_SECOND SECOND.TXT "$SECOND_TEXT"
}

# ------------------------------------------------------------------------------------- domains

# A UUID derived from the name: the same guest keeps its UUID across down and up.
domain_uuid() {
    local h
    h=$(printf 'dismount-iso-qemu-harness:%s' "$1" | md5sum | cut -c1-32)
    printf '%s-%s-%s-%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:12:4}" "${h:16:4}" "${h:20:12}"
}

# domain_xml NAME PERSONA AGENT CDROM: prints the domain definition.
domain_xml() {
    local name="$1" persona="$2" agent="$3" cdrom="$4" disk="" memory=256 vcpus=1 os metadata hotplug
    # q35 gets only the PCIe root ports its devices use: without a SCSI controller in place,
    # hot-adding a SCSI CD-ROM fails with "No more available PCI slots".
    hotplug="<controller type='scsi' index='0' model='virtio-scsi'/>"
    case "$cdrom" in
    harness)
        disk="<disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='$HARNESS_DIR/iso/harness.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>" ;;
    empty)
        disk="<disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>" ;;
    none) ;;
    *) die "bad cdrom kind $cdrom" ;;
    esac
    metadata="<diq:harness xmlns:diq='urn:x-dismount-iso-qemu:harness'>
      <diq:image>$IMAGE_HASH</diq:image>
      <diq:persona>$persona</diq:persona>
      <diq:agent>$agent</diq:agent>
    </diq:harness>"
    if [[ "$persona" == "-" ]]; then
        # A Windows VM that is only ever defined: what a scan sees of a shut-off guest.
        memory=2048
        vcpus=2
        metadata="<libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>
      <libosinfo:os id='http://microsoft.com/win/2k22'/>
    </libosinfo:libosinfo>
    <diq:harness xmlns:diq='urn:x-dismount-iso-qemu:harness'>
      <diq:image>none</diq:image>
    </diq:harness>"
        os="<type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='cdrom'/>"
    else
        os="<type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$HARNESS_DIR/image/vmlinuz</kernel>
    <initrd>$HARNESS_DIR/image/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 diq.persona=$persona diq.agent=$agent diq.hostname=$name</cmdline>"
    fi
    cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <uuid>$(domain_uuid "$name")</uuid>
  <metadata>
    $metadata
  </metadata>
  <memory unit='MiB'>$memory</memory>
  <currentMemory unit='MiB'>$memory</currentMemory>
  <vcpu placement='static'>$vcpus</vcpu>
  <os>
    $os
  </os>
  <features>
    <acpi/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$EMULATOR</emulator>
    $disk
    <controller type='usb' model='none'/>
    $hotplug
    <serial type='file'>
      <source path='$HARNESS_DIR/console/$name.log'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path='$RUN_DIR/agent/$name.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='virtio'>
      <stats period='5'/>
    </memballoon>
  </devices>
</domain>
EOF
}

dom_exists() { vsh domuuid "$1" >/dev/null 2>&1; }
dom_state() { vsh domstate "$1" 2>/dev/null | head -n1 || true; }

# QEMU's pid and its start time: changes whenever the guest is started anew.
qemu_instance() {
    local pidfile="$RUN_DIR/libvirt/qemu/run/$1.pid" pid
    [[ -r "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ -r "/proc/$pid/stat" ]] || return 1
    printf '%s:%s\n' "$pid" "$(awk '{ print $22 }' "/proc/$pid/stat")"
}

# Defines NAME from its XML when missing or when the XML changed (then restarts it if active).
ensure_defined() {
    local name="$1" xml="$2" stored="$HARNESS_DIR/domains/$1.xml"
    mkdir -p "$HARNESS_DIR/domains" "$HARNESS_DIR/console"
    if dom_exists "$name" && [[ -r "$stored" ]] && [[ "$(<"$stored")" == "$xml" ]]; then
        return 0
    fi
    if dom_exists "$name"; then
        msg "$name: definition changed, redefining"
        if [[ "$(dom_state "$name")" != "shut off" ]]; then
            vsh destroy "$name" >/dev/null
        fi
        # define over a domain made by an older harness could clash on its UUID.
        vsh undefine "$name" >/dev/null
    else
        msg "$name: defining"
    fi
    printf '%s\n' "$xml" >"$TMP/$name.xml"
    vsh define "$TMP/$name.xml" >/dev/null || die "virsh define $name failed"
    printf '%s\n' "$xml" >"$stored"
    rm -f "$HARNESS_DIR/state/$name.frozen"
}

# The medium in NAME's drive sda, from the live (or with --inactive, the stored) definition:
# a path, "-" for an empty drive, nothing when there is no sda.
drive_medium() {
    vsh domblklist --details "$@" 2>/dev/null |
        sed -nE 's/^[[:space:]]*[a-z]+[[:space:]]+cdrom[[:space:]]+sda[[:space:]]+(.*[^[:space:]])[[:space:]]*$/\1/p'
}

# Puts back the disc (or the empty drive) that `up` promises, in case a test left sda changed.
ensure_media() {
    local name="$1" kind="$2" want have scope flags
    case "$kind" in harness) want="$HARNESS_DIR/iso/harness.iso" ;; empty) want="-" ;; *) return 0 ;; esac
    for scope in live config; do
        if [[ "$scope" == live ]]; then
            [[ "$(dom_state "$name")" == "shut off" ]] && continue
            have=$(drive_medium "$name")
            flags=(--live)
        else
            have=$(drive_medium --inactive "$name")
            flags=(--config)
        fi
        [[ "$have" == "$want" ]] && continue
        if [[ -z "$have" ]]; then
            die "$name has no drive sda ($scope); a SATA drive cannot come back while it runs: run '$0 down' then '$0 up'"
        fi
        msg "$name: sda holds '$have' ($scope), putting back '$want'"
        if [[ "$want" == "-" ]]; then
            vsh change-media "$name" sda --eject --force "${flags[@]}" >/dev/null
        else
            vsh change-media "$name" sda "$want" --update --force "${flags[@]}" >/dev/null
        fi
    done
}

# ---------------------------------------------------------------------------------- agent calls

AGENT_OUT=""
AGENT_ERR=""

# agent_call NAME TIMEOUT JSON: sets AGENT_OUT/AGENT_ERR; returns virsh's status.
agent_call() {
    local rc=0
    AGENT_OUT=$(vsh qemu-agent-command --timeout "$2" "$1" "$3" 2>"$TMP/agent.err") || rc=$?
    AGENT_ERR=$(sed 's/^error: //' "$TMP/agent.err" | tr '\n' ' ' | sed 's/ *$//')
    return "$rc"
}

PING_CLASS=""

# ping_check NAME [TIMEOUT]: sets PING_CLASS to ok | not-connected | timeout | not-running |
# error (AGENT_ERR keeps libvirt's text). No subshell, so the caller sees both.
ping_check() {
    if agent_call "$1" "${2:-3}" "$PING_JSON"; then
        PING_CLASS=ok
    elif [[ "$AGENT_ERR" == *"not connected"* ]]; then
        PING_CLASS=not-connected
    elif [[ "$AGENT_ERR" == *"not running"* ]]; then
        PING_CLASS=not-running
    elif [[ "$AGENT_ERR" == *"not responding"* || "$AGENT_ERR" == *"not available"* || "$AGENT_ERR" == *"timed out"* ]]; then
        PING_CLASS=timeout
    else
        PING_CLASS=error
    fi
}

logs_hint() {
    printf 'console log: %s/console/%s.log, QEMU log: %s/libvirt/qemu/log/%s.log' "$HARNESS_DIR" "$1" "$CACHE_DIR" "$1"
}

# ------------------------------------------------------------------------------------------ up

declare -A STARTED_AT=() FIRST_PING=() LAST_ERR=()

start_guest() {
    local name="$1"
    msg "$name: starting"
    STARTED_AT[$name]=$(now)
    vsh start "$name" >/dev/null 2>"$TMP/start.err" ||
        die "$name: virsh start failed: $(tr '\n' ' ' <"$TMP/start.err") ($(logs_hint "$name"))"
}

# A guest found running in a bad state gets one reboot per run (STARTED_AT marks it).
restart_guest() {
    msg "$1: restarting: $2"
    vsh destroy "$1" >/dev/null 2>&1 || true
    rm -f "$HARNESS_DIR/state/$1.frozen"
    start_guest "$1"
}

# Seconds since NAME's QEMU process started (0 when unknown).
qemu_age() {
    local pidfile="$RUN_DIR/libvirt/qemu/run/$1.pid" pid start
    pid=$(cat "$pidfile" 2>/dev/null || true)
    start=$(awk '{ print $22 }' "/proc/$pid/stat" 2>/dev/null || true)
    if [[ -z "$pid" || -z "$start" ]]; then
        echo 0
        return 0
    fi
    awk -v s="$start" -v hz="$(getconf CLK_TCK)" '{ printf "%d\n", $1 - s / hz }' /proc/uptime
}

freeze_agent() {
    local name="$1" i marker="$HARNESS_DIR/state/$1.frozen"
    msg "$name: stopping its agent with SIGSTOP (guest-exec)"
    agent_call "$name" 10 "$FREEZE_JSON" || die "$name: guest-exec of the freeze failed: $AGENT_ERR"
    msg "$name: guest-exec answered $AGENT_OUT"
    sleep 2.5
    for ((i = 0; i < 5; i++)); do
        ping_check "$name" 3
        if [[ "$PING_CLASS" == timeout ]]; then
            mkdir -p "$HARNESS_DIR/state"
            qemu_instance "$name" >"$marker" || true
            msg "$name: agent frozen (guest-ping times out)"
            return 0
        fi
        sleep 1
    done
    die "$name: guest-ping still gives '$PING_CLASS' after the freeze, not a timeout; $(logs_hint "$name")"
}

# One up or down at a time: two runs would start, freeze or destroy the same guests.
take_lock() {
    mkdir -p "$HARNESS_DIR"
    exec 9>"$HARNESS_DIR/.lock"
    if ! flock -n 9; then
        msg "another harness up/down runs; waiting for it (at most 10 minutes)"
        flock -w 600 9 || die "the harness lock $HARNESS_DIR/.lock stayed taken for 10 minutes"
    fi
}

cmd_up() {
    need_root
    take_lock
    local t0 line name persona agent cdrom expect state xml pending=() still i last_note
    t0=$(now)
    cmd_deps
    new_tmp
    ensure_daemon
    ensure_kernel
    ensure_image
    ensure_isos

    declare -A EXPECT=() NEEDS_FREEZE=()
    for line in "${GUESTS[@]}"; do
        read -r name persona agent cdrom expect <<<"$line"
        EXPECT[$name]=$expect
        xml=$(domain_xml "$name" "$persona" "$agent" "$cdrom")
        ensure_defined "$name" "$xml"
        state=$(dom_state "$name")
        case "$expect" in
        off)
            if [[ "$state" != "shut off" ]]; then
                msg "$name: is $state, must stay shut off: destroying"
                vsh destroy "$name" >/dev/null
            fi
            ;;
        running | frozen)
            case "$state" in
            "shut off" | crashed) start_guest "$name" ;;
            paused) msg "$name: resuming"; vsh resume "$name" >/dev/null ;;
            running) ;;
            *) restart_guest "$name" "it is $state" ;;
            esac
            if [[ "$agent" != none ]]; then pending+=("$name"); fi
            ;;
        paused)
            case "$state" in
            "shut off" | crashed) start_guest "$name"; pending+=("$name") ;;
            running) pending+=("$name") ;;
            paused) ;;
            *) restart_guest "$name" "it is $state"; pending+=("$name") ;;
            esac
            ;;
        esac
        ensure_media "$name" "$cdrom"
    done

    # A frozen guest whose QEMU instance is the one we froze needs no ping: every call to a
    # frozen agent costs libvirt's 5 s guest-sync timeout.
    still=()
    for name in "${pending[@]}"; do
        if [[ "${EXPECT[$name]}" == frozen && -r "$HARNESS_DIR/state/$name.frozen" ]] &&
            [[ "$(qemu_instance "$name" || true)" == "$(<"$HARNESS_DIR/state/$name.frozen")" ]]; then
            continue
        fi
        still+=("$name")
    done
    pending=("${still[@]}")

    # Wait for the agents, all guests at once.
    local deadline wait_start age
    wait_start=$(now)
    deadline=$(($(date +%s) + BOOT_TIMEOUT))
    last_note=$(date +%s)
    while ((${#pending[@]} > 0)); do
        still=()
        for name in "${pending[@]}"; do
            ping_check "$name" 2
            LAST_ERR[$name]="$AGENT_ERR"
            case "$PING_CLASS" in
            ok)
                if [[ -n "${STARTED_AT[$name]:-}" ]]; then
                    FIRST_PING[$name]=$(elapsed "${STARTED_AT[$name]}")
                    msg "$name: agent answers (${FIRST_PING[$name]} s after start)"
                fi
                [[ "${EXPECT[$name]}" == frozen ]] && NEEDS_FREEZE[$name]=1
                ;;
            timeout)
                if [[ "${EXPECT[$name]}" == frozen && -z "${STARTED_AT[$name]:-}" ]]; then
                    msg "$name: agent already frozen (guest-ping times out)"
                    mkdir -p "$HARNESS_DIR/state"
                    qemu_instance "$name" >"$HARNESS_DIR/state/$name.frozen" || true
                elif [[ -z "${STARTED_AT[$name]:-}" ]]; then
                    # Found running with a hung agent (a test may have stopped it): reboot it.
                    restart_guest "$name" "its agent does not answer (${LAST_ERR[$name]})"
                    still+=("$name")
                else
                    still+=("$name")
                fi
                ;;
            not-connected)
                age=$(qemu_age "$name")
                if [[ -z "${STARTED_AT[$name]:-}" ]] && ((age > 60)); then
                    restart_guest "$name" "it has run for ${age} s and its agent never connected"
                fi
                still+=("$name")
                ;;
            *) still+=("$name") ;;
            esac
        done
        pending=("${still[@]}")
        ((${#pending[@]} > 0)) || break
        if (($(date +%s) >= deadline)); then
            for name in "${pending[@]}"; do
                msg "$name: agent did not answer guest-ping within ${BOOT_TIMEOUT} s (last answer: ${LAST_ERR[$name]:-none}); $(logs_hint "$name")"
            done
            die "guests not ready: ${pending[*]}"
        fi
        if (($(date +%s) - last_note >= 10)); then
            msg "waiting for agents ($(elapsed "$wait_start") s): ${pending[*]}"
            last_note=$(date +%s)
        fi
        sleep 1
    done

    for name in "${!NEEDS_FREEZE[@]}"; do
        freeze_agent "$name"
    done
    for line in "${GUESTS[@]}"; do
        read -r name persona agent cdrom expect <<<"$line"
        if [[ "$expect" == paused && "$(dom_state "$name")" == running ]]; then
            msg "$name: suspending"
            vsh suspend "$name" >/dev/null
        fi
    done

    print_summary
    msg "up: done in $(elapsed "$t0") s"
}

print_summary() {
    local line name persona agent cdrom expect state media note
    printf '%-12s %-9s %-8s %-13s %-22s %s\n' DOMAIN STATE PERSONA AGENT CDROM NOTE
    for line in "${GUESTS[@]}"; do
        read -r name persona agent cdrom expect <<<"$line"
        state=$(dom_state "$name")
        case "$cdrom" in harness) media="sda: harness.iso" ;; empty) media="sda: empty" ;; *) media="-" ;; esac
        note=""
        if [[ -n "${FIRST_PING[$name]:-}" ]]; then note="agent up ${FIRST_PING[$name]} s after start"; fi
        [[ "$expect" == frozen ]] && note="${note:+$note; }agent frozen"
        printf '%-12s %-9s %-8s %-13s %-22s %s\n' "$name" "${state// /-}" "$persona" "$agent" "$media" "$note"
    done
}

# ---------------------------------------------------------------------------------------- down

harness_domains() {
    vsh list --all --name 2>/dev/null | awk -v p="$DOMAIN_PREFIX" 'index($0, p) == 1'
}

cmd_down() {
    need_root
    take_lock
    new_tmp
    local name names=() n=0
    if harness_uid >/dev/null && command -v virsh >/dev/null && daemon_pid >/dev/null; then
        mapfile -t names < <(harness_domains)
    fi
    # QEMU takes about 2 s to exit after libvirt's SIGTERM: destroy all guests at once.
    for name in "${names[@]}"; do
        [[ -n "$name" ]] || continue
        if [[ "$(dom_state "$name")" != "shut off" ]]; then
            vsh destroy "$name" >/dev/null 2>"$TMP/$name.destroy.err" &
        fi
    done
    wait || true
    for name in "${names[@]}"; do
        [[ -n "$name" ]] || continue
        if [[ "$(dom_state "$name")" != "shut off" ]]; then
            msg "down: $name is still $(dom_state "$name") after destroy: $(tr '\n' ' ' <"$TMP/$name.destroy.err" 2>/dev/null || true)"
        fi
        vsh undefine "$name" >/dev/null || msg "down: undefine $name failed"
        rm -f "$HARNESS_DIR/domains/$name.xml" "$HARNESS_DIR/state/$name.frozen"
        n=$((n + 1))
    done
    local was_running=0
    daemon_pid >/dev/null && was_running=1
    stop_daemon
    if ((was_running)); then
        msg "down: $n guest(s) removed, the harness's libvirtd stopped; caches kept in $HARNESS_DIR"
    else
        msg "down: the harness's libvirtd was not running; nothing else runs as $HARNESS_USER"
    fi
}

# Everything the harness made goes: its guests and daemon, its user, $HARNESS_DIR. The
# packages apt installed are listed, and purged with --packages.
cmd_purge() {
    need_root
    local purge_pkgs=0 pkgs=() pkg sim extra
    [[ "${1:-}" == --packages ]] && purge_pkgs=1
    [[ -z "${1:-}" || "$1" == --packages ]] || die "purge takes only --packages"
    cmd_down
    if [[ -r "$HARNESS_DIR/installed-packages" ]]; then
        while read -r pkg; do
            [[ -n "$pkg" ]] && pkg_installed "$pkg" && pkgs+=("$pkg")
        done < <(sort -u "$HARNESS_DIR/installed-packages")
    fi
    if harness_uid >/dev/null; then
        userdel "$HARNESS_USER" || die "userdel $HARNESS_USER failed"
        getent group "$HARNESS_USER" >/dev/null && groupdel "$HARNESS_USER"
        msg "purge: removed the user $HARNESS_USER"
    fi
    if ((${#pkgs[@]})); then
        if ((purge_pkgs)); then
            # Only what the harness installed: refuse when apt would take anything else along.
            sim=$(LC_ALL=C apt-get purge -s "${pkgs[@]}" 2>&1) || die "apt-get cannot purge: $(tail -n 2 <<<"$sim" | tr '\n' ' ')"
            extra=$(awk '$1 == "Purg" || $1 == "Remv" { print $2 }' <<<"$sim" | grep -vxF -f <(printf '%s\n' "${pkgs[@]}") | paste -sd ' ' - || true)
            [[ -z "$extra" ]] || die "purging the harness's packages would also remove $extra, which depend on them; nothing purged"
            DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "${pkgs[@]}" >&2 || die "apt-get purge failed"
            msg "purge: purged ${#pkgs[@]} package(s) the harness had installed"
        else
            msg "purge: the harness installed these packages, which stay: ${pkgs[*]}"
            msg "purge: to remove them too: $0 purge --packages   (or: apt-get purge ${pkgs[*]})"
        fi
    fi
    rm -rf -- "$HARNESS_DIR"
    msg "purge: removed $HARNESS_DIR"
}

# An earlier harness used the host's own libvirtd. This removes what it defined there and
# tells what it changed, with the commands to restore each; it changes nothing else.
cmd_legacy_cleanup() {
    need_root
    local sys="qemu:///system" name names=() n=0 info max
    if command -v virsh >/dev/null && LC_ALL=C virsh -c "$sys" uri >/dev/null 2>&1; then
        mapfile -t names < <(LC_ALL=C virsh -q -c "$sys" list --all --name 2>/dev/null)
        for name in "${names[@]}"; do
            [[ -n "$name" ]] || continue
            # Only domains that carry the harness's metadata, whatever their names.
            LC_ALL=C virsh -c "$sys" dumpxml --inactive "$name" 2>/dev/null | grep -qF "$HARNESS_XMLNS" || continue
            if [[ "$(LC_ALL=C virsh -q -c "$sys" domstate "$name" 2>/dev/null | head -n1)" != "shut off" ]]; then
                LC_ALL=C virsh -q -c "$sys" destroy "$name" >/dev/null 2>&1 || true
            fi
            if LC_ALL=C virsh -q -c "$sys" undefine "$name" >/dev/null; then
                printf 'removed the earlier harness guest %s from %s\n' "$name" "$sys"
                n=$((n + 1))
            else
                printf 'could not undefine %s on %s: remove it with: virsh -c %s undefine %s\n' "$name" "$sys" "$sys" "$name"
            fi
        done
        printf '%d earlier harness guest(s) removed from %s\n' "$n" "$sys"
        info=$(LC_ALL=C virsh -c "$sys" net-info default 2>/dev/null || true)
        if grep -Eq '^Active:[[:space:]]+no' <<<"$info"; then
            printf "libvirt's default network is stopped (the earlier harness stopped it, unless you did): to restore: virsh -c %s net-start default\n" "$sys"
        fi
        if grep -Eq '^Autostart:[[:space:]]+no' <<<"$info"; then
            printf "libvirt's default network does not autostart (the earlier harness turned it off, unless you did): to restore: virsh -c %s net-autostart default\n" "$sys"
        fi
        max=$(virt-admin srv-threadpool-info libvirtd 2>/dev/null | awk '$1 == "maxWorkers" { print $3 }' || true)
        if [[ "$max" == 100 ]]; then
            printf "libvirtd's worker pool allows 100 workers (the earlier harness raised it from 20 until libvirtd restarts): to restore now: virt-admin srv-threadpool-set libvirtd --max-workers 20\n"
        fi
    else
        printf 'no libvirtd answers on %s: no earlier harness guests to remove there\n' "$sys"
    fi
    if [[ -r /etc/libvirt/qemu.conf ]] && grep -Eq '^[[:space:]]*(user|group)[[:space:]]*=[[:space:]]*"root"' /etc/libvirt/qemu.conf; then
        printf '/etc/libvirt/qemu.conf runs QEMU as root (the earlier harness set these lines, unless you did):\n'
        grep -En '^[[:space:]]*(user|group)[[:space:]]*=[[:space:]]*"root"' /etc/libvirt/qemu.conf | sed 's/^/    line /'
        printf '  to restore libvirt'"'"'s default, delete those lines, then restart libvirtd when it suits your guests (they keep running)\n'
    fi
    if [[ -r /run/libvirtd.pid ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]] &&
        ! systemctl is-active --quiet libvirtd.service 2>/dev/null; then
        printf 'libvirtd (pid %s) runs outside systemd (the earlier harness started it with libvirtd -d): when it suits your guests, stop it and run: systemctl start libvirtd\n' "$(cat /run/libvirtd.pid)"
    fi
    printf 'nothing else was changed by this cleanup\n'
}

# -------------------------------------------------------------------------------------- status

cmd_status() {
    need_root
    command -v virsh >/dev/null || die "virsh not installed (run: $0 up)"
    vsh list >/dev/null 2>&1 || { printf "the harness's libvirtd does not answer on %s (run: %s up)\n" "$URI" "$0"; exit 2; }
    TMP=$(mktemp -d)
    local line name persona agent cdrom expect state ping verdict bad=0 names=() start
    declare -A EXPECT=()
    for line in "${GUESTS[@]}"; do
        read -r name persona agent cdrom expect <<<"$line"
        EXPECT[$name]=$expect
        names+=("$name")
    done
    # Domains with the harness prefix that the table does not know (left by a test, say).
    while read -r name; do
        [[ -n "$name" && -z "${EXPECT[$name]:-}" ]] && names+=("$name")
    done < <(harness_domains)

    # Ping every running guest at once: a frozen agent costs libvirt's 5 s sync timeout.
    for name in "${names[@]}"; do
        if ! dom_exists "$name"; then
            printf 'missing\n' >"$TMP/$name.state"
            printf -- '-\n' >"$TMP/$name.ping"
            continue
        fi
        state=$(dom_state "$name")
        printf '%s\n' "$state" >"$TMP/$name.state"
        if [[ "$state" == running ]]; then
            (
                start=$(now)
                if vsh qemu-agent-command --timeout 3 "$name" "$PING_JSON" >/dev/null 2>"$TMP/$name.err"; then
                    printf 'answers (%s ms)\n' "$(elapsed_ms "$start")" >"$TMP/$name.ping"
                else
                    printf 'no: %s\n' "$(sed 's/^error: //' "$TMP/$name.err" | tr '\n' ' ' | sed 's/ *$//')" >"$TMP/$name.ping"
                fi
            ) &
        else
            printf -- '-\n' >"$TMP/$name.ping"
        fi
    done
    wait
    printf '%-12s %-9s %-8s %-4s %s\n' DOMAIN STATE EXPECTED OK GUEST-PING
    for name in "${names[@]}"; do
        state=$(<"$TMP/$name.state")
        ping=$(<"$TMP/$name.ping")
        expect="${EXPECT[$name]:-extra}"
        verdict=yes
        case "$expect" in
        running)
            [[ "$state" == running ]] || verdict=no
            if [[ "$name" == diq-noagent ]]; then
                [[ "$ping" == *"not connected"* ]] || verdict=no
            else
                [[ "$ping" == answers* ]] || verdict=no
            fi
            ;;
        frozen) [[ "$state" == running && "$ping" == *"not available"* ]] || verdict=no ;;
        paused) [[ "$state" == paused ]] || verdict=no ;;
        off) [[ "$state" == "shut off" ]] || verdict=no ;;
        extra) verdict=- ;;
        esac
        [[ "$verdict" != no ]] || bad=1
        printf '%-12s %-9s %-8s %-4s %s\n' "$name" "${state// /-}" "$expect" "$verdict" "$ping"
    done
    if ((bad)); then
        msg "status: some domains are not as 'up' leaves them (run: $0 up)"
        return 1
    fi
}

# ------------------------------------------------------------------------------------ selftest

EXEC_EXIT=""
EXEC_OUT=""
EXEC_ERR=""

# guest_exec NAME PATH ARG...: runs a program in the guest through the agent, waits for it;
# sets EXEC_EXIT, EXEC_OUT and EXEC_ERR (its decoded stdout and stderr). Arguments must need no JSON escaping.
guest_exec() {
    local name="$1" path="$2" args="" a pid i
    shift 2
    for a in "$@"; do args+="${args:+,}\"$a\""; done
    agent_call "$name" 10 "{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"$path\",\"arg\":[$args],\"capture-output\":true}}" ||
        return 1
    pid=$(sed -nE 's/.*"pid":([0-9]+).*/\1/p' <<<"$AGENT_OUT")
    [[ -n "$pid" ]] || return 1
    for ((i = 0; i < 100; i++)); do
        agent_call "$name" 10 "{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":$pid}}" || return 1
        if [[ "$AGENT_OUT" == *'"exited":true'* ]]; then
            EXEC_EXIT=$(sed -nE 's/.*"exitcode":(-?[0-9]+).*/\1/p' <<<"$AGENT_OUT")
            EXEC_OUT=$(sed -nE 's/.*"out-data":"([^"]*)".*/\1/p' <<<"$AGENT_OUT" | base64 -d)
            EXEC_ERR=$(sed -nE 's/.*"err-data":"([^"]*)".*/\1/p' <<<"$AGENT_OUT" | base64 -d)
            return 0
        fi
        sleep 0.1
    done
    return 1
}

SELFTEST_PASSED=0
SELFTEST_FAILED=0
check() {
    local what="$1"
    shift
    if "$@"; then
        printf 'ok    %s\n' "$what"
        SELFTEST_PASSED=$((SELFTEST_PASSED + 1))
    else
        printf 'FAIL  %s%s\n' "$what" "${CHECK_WHY:+ ($CHECK_WHY)}"
        SELFTEST_FAILED=$((SELFTEST_FAILED + 1))
    fi
    CHECK_WHY=""
}
CHECK_WHY=""

osinfo_says() {
    agent_call "$1" 5 '{"execute":"guest-get-osinfo"}' || { CHECK_WHY="$AGENT_ERR"; return 1; }
    [[ "$AGENT_OUT" == *"\"pretty-name\":\"$2\""* ]] || { CHECK_WHY="$AGENT_OUT"; return 1; }
}
osinfo_disabled() {
    if agent_call "$1" 5 '{"execute":"guest-get-osinfo"}'; then CHECK_WHY="it answered"; return 1; fi
    [[ "$AGENT_ERR" == *"has been disabled"* ]] || { CHECK_WHY="$AGENT_ERR"; return 1; }
    printf '      %s: "%s"\n' "$1" "$AGENT_ERR"
}
os_release_by_exec() {
    guest_exec "$1" cat /etc/os-release || { CHECK_WHY="$AGENT_ERR"; return 1; }
    [[ "$EXEC_EXIT" == 0 && "$EXEC_OUT" == "$(persona_os_release "$2")" ]] || { CHECK_WHY="exit $EXEC_EXIT: $EXEC_OUT"; return 1; }
}
ping_fails_with() {
    local start ms
    start=$(now)
    ping_check "$1" 3
    ms=$(elapsed_ms "$start")
    [[ "$PING_CLASS" == "$2" ]] || { CHECK_WHY="got $PING_CLASS: $AGENT_ERR"; return 1; }
    CHECK_WHY=""
    printf '      %s: "%s" after %s ms\n' "$1" "$AGENT_ERR" "$ms"
}
state_is() {
    local state
    state=$(dom_state "$1")
    [[ "$state" == "$2" ]] || { CHECK_WHY="state $state"; return 1; }
}
disc_readable() {
    # Right after a disc goes in, the guest's first mount fails (EINVAL: the drive reports the
    # medium change as an I/O error); a later one works, so the guest retries for 5 s.
    guest_exec "$1" /bin/sh -c "i=0; until mount -t iso9660 -o ro /dev/sr0 /mnt 2>/dev/null; do i=\$((i+1)); [ \$i -lt 20 ] || exit 9; sleep 0.25; done; cat /mnt/$2; rc=\$?; umount /mnt; exit \$rc" ||
        { CHECK_WHY="$AGENT_ERR"; return 1; }
    [[ "$EXEC_EXIT" == 0 && "$EXEC_OUT" == "$3" ]] || { CHECK_WHY="exit $EXEC_EXIT: $EXEC_OUT $EXEC_ERR"; return 1; }
}
drive_holds() {
    local have
    have=$(drive_medium "$1")
    [[ "$have" == "$2" ]] || { CHECK_WHY="sda holds '$have'"; return 1; }
}
# Inserts the second disc into NAME's empty drive, reads it in the guest, ejects it again.
second_disc_readable() {
    local name="$1" ok=0
    vsh change-media "$name" sda "$HARNESS_DIR/iso/$SECOND_ISO_NAME" --insert --live >/dev/null 2>"$TMP/media.err" ||
        { CHECK_WHY="insert: $(tr '\n' ' ' <"$TMP/media.err")"; return 1; }
    disc_readable "$name" SECOND.TXT "$SECOND_TEXT" && ok=1
    vsh change-media "$name" sda --eject --live --force >/dev/null 2>&1 || CHECK_WHY+=" (eject failed: run $0 up)"
    ((ok))
}

windows_defined() {
    local xml
    xml=$(vsh dumpxml --inactive "$1") || return 1
    [[ "$xml" == *'http://microsoft.com/win/2k22'* ]] || { CHECK_WHY="no libosinfo win2k22"; return 1; }
    [[ "$xml" == *"<memory unit='KiB'>2097152</memory>"* ]] || { CHECK_WHY="max memory is not 2 GiB"; return 1; }
}

# Checks, against the live guests, every promise `up` makes; ends with "N passed, N failed".
cmd_selftest() {
    need_root
    vsh list >/dev/null 2>&1 || { printf "the harness's libvirtd does not answer on %s (run: %s up)\n" "$URI" "$0"; exit 2; }
    TMP=$(mktemp -d)
    check "diq-ubuntu: guest-get-osinfo says Ubuntu 18.04.6 LTS" osinfo_says diq-ubuntu "Ubuntu 18.04.6 LTS"
    check "diq-centos: guest-get-osinfo says CentOS Stream 10 (Coughlan)" osinfo_says diq-centos "CentOS Stream 10 (Coughlan)"
    check "diq-debian: guest-get-osinfo is disabled" osinfo_disabled diq-debian
    check "diq-debian: guest-exec cat /etc/os-release gives Debian's" os_release_by_exec diq-debian debian
    check "diq-noagent: guest-ping fails, agent not connected" ping_fails_with diq-noagent not-connected
    check "diq-frozen: guest-ping times out" ping_fails_with diq-frozen timeout
    check "diq-paused: paused" state_is diq-paused paused
    check "diq-paused: guest-ping fails, domain not running" ping_fails_with diq-paused not-running
    check "diq-win2k22: shut off" state_is diq-win2k22 "shut off"
    check "diq-win2k22: libosinfo win2k22, 2 GiB" windows_defined diq-win2k22
    check "diq-ubuntu: sda holds harness.iso" drive_holds diq-ubuntu "$HARNESS_DIR/iso/harness.iso"
    check "diq-ubuntu: mount /dev/sr0, read HELLO.TXT, umount" disc_readable diq-ubuntu HELLO.TXT "$HELLO_TEXT"
    check "diq-centos: sda is empty" drive_holds diq-centos "-"
    check "diq-centos: insert the second disc, read SECOND.TXT, eject" second_disc_readable diq-centos
    check "diq-centos: sda is empty again" drive_holds diq-centos "-"
    printf '%d passed, %d failed\n' "$SELFTEST_PASSED" "$SELFTEST_FAILED"
    ((SELFTEST_FAILED == 0))
}

# ----------------------------------------------------------------------------------------- env

cmd_env() {
    local kv
    for kv in \
        "HARNESS_URI=$URI" \
        "HARNESS_SOCKET=$SOCKET" \
        "HARNESS_DIR=$HARNESS_DIR" \
        "HARNESS_BIN=$BIN_DIR" \
        "HARNESS_USER=$HARNESS_USER" \
        "HARNESS_ISO=$HARNESS_DIR/iso/harness.iso" \
        "HARNESS_ISO_VOLUME=DIQ_HARNESS" \
        "HARNESS_ISO_FILE=HELLO.TXT" \
        "HARNESS_ISO_TEXT=$HELLO_TEXT" \
        "HARNESS_SECOND_ISO=$HARNESS_DIR/iso/$SECOND_ISO_NAME" \
        "HARNESS_SECOND_ISO_VOLUME=DIQ_SECOND" \
        "HARNESS_SECOND_ISO_FILE=SECOND.TXT" \
        "HARNESS_SECOND_ISO_TEXT=$SECOND_TEXT" \
        "HARNESS_CONSOLE_DIR=$HARNESS_DIR/console"; do
        printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
}

# ---------------------------------------------------------------------------------------- main

main() {
    case "${1:-}" in
    deps) shift; cmd_deps "$@" ;;
    daemon) need_root; take_lock; cmd_deps; ensure_daemon ;;
    up) cmd_up ;;
    down) cmd_down ;;
    purge) shift; cmd_purge "$@" ;;
    legacy-cleanup) cmd_legacy_cleanup ;;
    status) cmd_status ;;
    env) cmd_env ;;
    uri) printf '%s\n' "$URI" ;;
    install) shift; need_root; install_packages "$@" ;;
    unpack) shift; need_root; [[ $# -eq 1 ]] || die "unpack takes one package"
        unpack_into "$PKG_DIR/$1" "$1" "$1"; printf '%s\n' "$PKG_DIR/$1" ;;
    selftest) cmd_selftest ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) msg "unknown command '$1'"; usage >&2; exit 2 ;;
    esac
}

main "$@"
