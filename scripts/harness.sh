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
# firewall rules or networks of the host's. The daemon runs in a network and a mount
# namespace of its own (it needs no network: clients reach it over its socket; the mount
# namespace only gives it a /dev/net/tun it may open), where one tap device,
# diq-tap0, owned by diq-harness, is the NIC of the data guest (diq-centos, which also has a
# 16 MiB data disk): serve's interface statistics need a host-side device, which neither an
# unprivileged daemon can make nor user-mode networking has. The namespace, and the tap in
# it, go away with the daemon; the host's network never sees either.
#
# Packages: the tool's build and the harness install with apt only what they need, named
# one by one, with --no-install-recommends. Packages whose installation would start a
# service, create a network or replace an installed package are unpacked under
# $HARNESS_DIR/pkgs with dpkg -x instead: the guest kernel, qemu-guest-agent, busybox-static,
# prometheus, openssh-server (only its sshd runs) and QEMU itself (qemu-system-x86 with its data, firmware and modules; installing
# it would replace a newer qemu-utils, as on machines with backported QEMU tools). What apt
# installed is recorded in $HARNESS_DIR/installed-packages for `purge`.
#
# Division of labour: this script does what shell does well — packages, the harness's
# user and daemon, the kernel, the initramfs and the guest's init, the ISOs. The logic of
# the guests themselves (their definitions and promised states, repairing what tests left
# behind, waiting for the agents, status, selftest) is Rust: `xtask harness …`
# (xtask/src/), which talks to the daemon through the tool's own port and agent client.
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
#   diq-hostile   alpine   hostile       iso/harness.iso          running, our lying agent, mode honest
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
# running commands does not); hostile = diq-hostile-agent instead of qemu-ga (below).
#
# The hostile guest. diq-hostile runs diq-hostile-agent (tools/hostile-agent, built with
# `cargo build --release -p hostile-agent` and copied into the initramfs with its
# libraries, like qemu-ga; a changed agent changes the image's inputs, so the image is
# rebuilt and every guest redefined). It speaks QGA on org.qemu.guest_agent.0 like qemu-ga
# and lies as told while it runs, so one guest serves every mode without a reboot. Its
# domain has a second virtio-serial channel, org.dismount-iso-qemu.control.0, whose host
# side is the unix socket $HARNESS_DIR/run/agent/diq-hostile.control.sock (`env` prints it
# as HARNESS_HOSTILE_CONTROL): write a line "MODE" or "MODE ARG", read back "ok MODE"
# ("error TEXT" for a line it does not take; "status" says the mode). The modes:
#   honest                  a normal Linux agent: real files, real programs (killed after
#                           300 s), fsinfo from /proc/self/mounts with sysfs bus addresses
#   escapes                 ~100 KB strings of terminal escapes, bidi overrides, CR/LF (and a
#                           final NUL, where libvirt cuts them) in every string field: osinfo,
#                           host name, guest-info version, fsinfo names and mount points,
#                           exec stdout/stderr, error descs
#   endless-read            guest-file-read gives 1 byte, eof false, forever
#   count-lies [more|less]  guest-file-read/write counts disagree with the data (+4096, /2)
#   exec-never-exits        guest-exec-status says exited false forever
#   many-mounts [N]         fsinfo (and cat /proc/mounts) report N (5000) mounts of /dev/sr0
#   slow N                  every reply but guest-sync's comes N seconds late
#   bad-json [syntax|utf8|truncated|not-object|unknown]
#                           replies libvirt cannot parse, or JSON strings that are not UTF-8
#   windows [no-osinfo]     a Windows agent: mswindows, "Windows 10 Pro", build 22631 (or
#                           guest-get-osinfo disabled), cmd.exe /c ver, C:\ and D:\ (paths
#                           mapped onto a scratch dir)
# A reply libvirt rejects marks its agent connection broken until the guest reopens the
# port, so after one the next switch reopens it and answers once libvirt is back. `up`
# switches it back to honest. Details: tools/hostile-agent/src/main.rs.

set -euo pipefail

readonly HARNESS_USER="diq-harness"
# The namespace of the metadata every harness domain carries (also the legacy harness's).
readonly HARNESS_XMLNS="urn:x-dismount-iso-qemu:harness"
HARNESS_DIR="${HARNESS_DIR:-/var/lib/dismount-iso-qemu-harness}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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
    iproute2                                  # the tap device in the daemon's namespace
    osinfo-db                                 # OS names from libosinfo metadata
    socat tmux vim-tiny                       # serve's outage proxy; a real terminal and editor
    openssh-client netcat-openbsd libwrap0    # the remote-host tests: ssh, nc on the "remote" side, a library of sshd
)
# Unpacked under $HARNESS_DIR/pkgs with dpkg -x, never installed (see the header); so are
# qemu-guest-agent, busybox-static, prometheus and openssh-server (cmd_deps; installing it
# would start the host's sshd — the tests run one of their own, scripts/test-sshd.sh).
readonly UNPACK_QEMU=(qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu)

# The modules the guest needs; their dependencies come from the kernel's own modules.dep.
readonly GUEST_MODULES=(virtio_pci virtio_console virtio_balloon virtio_scsi ahci sr_mod isofs)

readonly HELLO_TEXT="Hello from the dismount_iso_qemu harness disc."
readonly SECOND_TEXT="Second disc of the dismount_iso_qemu harness."
readonly SECOND_ISO_NAME="second disc é.iso"

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
    # Only sshd's binary is used; its package's other dependencies (sftp server, runit
    # helper, a newer ssh client) are not, and installing them could replace the host's.
    unpack_into "$PKG_DIR/openssh-server" - openssh-server
    if LC_ALL=C ldd "$PKG_DIR/openssh-server/usr/sbin/sshd" | grep -q 'not found'; then
        die "the unpacked sshd lacks libraries: $(LC_ALL=C ldd "$PKG_DIR/openssh-server/usr/sbin/sshd" | awk '/not found/ { print $1 }' | paste -sd ' ' -)"
    fi
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
    install -d -m 0700 -o "$HARNESS_USER" -g "$HARNESS_USER" "$HARNESS_DIR/disks" # xtask makes the data disk
}

# Runs a command as the harness user, with the environment its session daemon expects.
# `as_harness --own-netns CMD…` runs it in a network and mount namespace of its own: the
# tap device of the data guest lives in the first; in the second, /dev/net/tun is a node
# of a private tmpfs that the harness user may open (hosts often keep theirs 0600 root:
# libvirt opens it to attach QEMU to the tap). Mounts of the host still propagate in.
as_harness() {
    local own_ns=0
    if [[ "${1:-}" == --own-netns ]]; then
        own_ns=1
        shift
    fi
    local cmd=(setpriv --reuid="$HARNESS_USER" --regid="$HARNESS_USER" --clear-groups --
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME_DIR" USER="$HARNESS_USER"
        LOGNAME="$HARNESS_USER" XDG_CONFIG_HOME="$CFG_DIR" XDG_CACHE_HOME="$CACHE_DIR"
        XDG_RUNTIME_DIR="$RUN_DIR" LC_ALL=C.UTF-8 "$@")
    if ((own_ns)); then
        install -d -m 0755 "$HARNESS_DIR/tun"
        # shellcheck disable=SC2016 # expanded by the inner shell
        unshare --net --mount --propagation slave -- sh -ec '
            mount -t tmpfs -o mode=0755,size=16k diq-harness-tun "$1"
            mknod -m 0666 "$1/tun" c 10 200
            mount --bind "$1/tun" /dev/net/tun
            shift
            exec "$@"' sh "$HARNESS_DIR/tun" "${cmd[@]}"
    else
        "${cmd[@]}"
    fi
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
        as_harness --own-netns libvirtd --daemon </dev/null >/dev/null 2>&1 9>&- ||
            die "libvirtd --daemon failed as $HARNESS_USER; see $LOG_DIR/libvirtd.log"
    fi
    for ((i = 0; i < 300; i++)); do
        if vsh uri >/dev/null 2>&1; then
            ensure_tap
            return 0
        fi
        sleep 0.1
    done
    die "the harness's libvirtd does not answer on $URI after 30 s; see $LOG_DIR/libvirtd.log"
}

# The data guest's NIC (xtask/src/guests.rs, DATA_TAP): a tap device in the daemon's
# network namespace (as_harness --own-netns), owned by the harness user, up, so the
# namespace's side sends it a little IPv6 neighbour discovery once QEMU opens it.
readonly DATA_TAP=diq-tap0
ensure_tap() {
    local pid netns
    pid=$(daemon_pid) || die "the harness's libvirtd has no pid file"
    netns="/proc/$pid/ns/net"
    if [[ "$(readlink "$netns")" == "$(readlink /proc/$$/ns/net)" ]]; then
        die "the harness's libvirtd runs in the host's network namespace (an earlier harness started it): run '$0 down', then '$0 up'"
    fi
    command -v ip >/dev/null || die "ip missing (run: $0 deps)"
    nsenter --net="$netns" -- ip link set lo up
    if ! nsenter --net="$netns" -- ip link show "$DATA_TAP" >/dev/null 2>&1; then
        nsenter --net="$netns" -- ip tuntap add dev "$DATA_TAP" mode tap \
            user "$(harness_uid)" group "$(id -g "$HARNESS_USER")"
    fi
    nsenter --net="$netns" -- ip link set "$DATA_TAP" up
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
# PID 1 of the harness guest: load modules, become a persona, run qemu-ga (or, with
# diq.agent=hostile, diq-hostile-agent) per diq.agent.
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

# The device of the virtio port named $1 (/dev/vportNpM), waiting up to 10 s for it.
find_port() {
    i=0
    while [ $i -lt 100 ]; do
        for f in /sys/class/virtio-ports/*/name; do
            [ -r "$f" ] || continue
            if [ "$(cat "$f")" = "$1" ]; then
                d="${f%/name}"
                [ -c "/dev/${d##*/}" ] || continue
                echo "/dev/${d##*/}"
                return 0
            fi
        done
        usleep 100000
        i=$((i + 1))
    done
    return 1
}

start_agent() {
    if ! port="$(find_port org.qemu.guest_agent.0)"; then
        log "no virtio port named org.qemu.guest_agent.0: qemu-ga not started"
        return 0
    fi
    log "starting qemu-ga on $port $*"
    mkdir -p /run/qemu-ga
    qemu-ga -m virtio-serial -p "$port" -t /run/qemu-ga -f /run/qemu-ga.pid "$@" &
    log "qemu-ga pid $!"
}

# Our lying agent on the agent port; its modes are switched over the control port.
start_hostile_agent() {
    if ! port="$(find_port org.qemu.guest_agent.0)"; then
        log "no virtio port named org.qemu.guest_agent.0: diq-hostile-agent not started"
        return 0
    fi
    if control="$(find_port org.dismount-iso-qemu.control.0)"; then
        log "starting diq-hostile-agent on $port, control port $control"
        diq-hostile-agent --agent-port "$port" --control-port "$control" --scratch /run/diq-hostile &
    else
        log "no virtio port named org.dismount-iso-qemu.control.0: its modes cannot be switched"
        diq-hostile-agent --agent-port "$port" --scratch /run/diq-hostile &
    fi
    log "diq-hostile-agent pid $!"
}

case "$agent" in
ok | freeze) start_agent ;;
block-osinfo) start_agent --block-rpcs=guest-get-osinfo ;;
block-exec) start_agent --block-rpcs=guest-exec,guest-exec-status ;;
hostile) start_hostile_agent ;;
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

# Prints the path of cargo (PATH, then rustup's usual homes), or dies.
find_cargo() {
    local cargo d
    cargo=$(command -v cargo || true)
    for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
        [[ -n "$cargo" || ! -x "$d/cargo" ]] || cargo="$d/cargo"
    done
    [[ -n "$cargo" ]] || die "no cargo found: install a Rust toolchain with rustup"
    printf '%s\n' "$cargo"
}

# Builds the hostile guest's agent (tools/hostile-agent) and prints the binary's path.
build_hostile_agent() {
    local cargo target
    cargo=$(find_cargo)
    target="${CARGO_TARGET_DIR:-$REPO/target}"
    [[ "$target" == /* ]] || target="$REPO/$target"
    (cd "$REPO" && "$cargo" build --release --quiet -p hostile-agent --target-dir "$target" >&2) ||
        die "building tools/hostile-agent failed"
    [[ -x "$target/release/diq-hostile-agent" ]] || die "no $target/release/diq-hostile-agent after the build"
    printf '%s\n' "$target/release/diq-hostile-agent"
}

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
    local imgdir="$HARNESS_DIR/image" stage hash old="" mod name p hostile
    mkdir -p "$imgdir"
    local qga="$PKG_DIR/qemu-guest-agent/usr/sbin/qemu-ga" busybox="$PKG_DIR/busybox-static/bin/busybox"
    [[ -x "$qga" ]] || die "$qga missing (run: $0 deps)"
    [[ -x "$busybox" ]] || die "$busybox missing (run: $0 deps)"
    hostile=$(build_hostile_agent)
    stage="$TMP/initrd"
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/lib,etc/diq/personas,lib/modules,proc,sys,dev,run,tmp,mnt,var}
    ln -s ../run "$stage/var/run"

    cp "$busybox" "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh" # the other applets: busybox --install -s, first thing in /init
    copy_with_libs "$qga" "$stage" /usr/sbin/qemu-ga
    copy_with_libs "$hostile" "$stage" /usr/sbin/diq-hostile-agent

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

    install -d -m 0755 "$imgdir/personas"
    for p in "${PERSONAS[@]}"; do
        persona_os_release "$p" >"$stage/etc/diq/personas/$p"
        persona_os_release "$p" >"$imgdir/personas/$p" # selftest compares with these
    done
    write_guest_init >"$stage/init"
    chmod 0755 "$stage/init"
    write_guest_shutdown >"$stage/sbin/shutdown"
    chmod 0755 "$stage/sbin/shutdown"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
    printf 'root:x:0:\n' >"$stage/etc/group"

    # The inputs' hash: every staged path with its type, mode and link target, every file's
    # content (qemu-ga, diq-hostile-agent and their libraries among them: a rebuilt agent
    # that changed is a new image), and the kernel version (vmlinuz is not staged).
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

# One up or down at a time: two runs would start, freeze or destroy the same guests.
take_lock() {
    mkdir -p "$HARNESS_DIR"
    exec 9>"$HARNESS_DIR/.lock"
    if ! flock -n 9; then
        msg "another harness up/down runs; waiting for it (at most 10 minutes)"
        flock -w 600 9 || die "the harness lock $HARNESS_DIR/.lock stayed taken for 10 minutes"
    fi
}

# Runs the harness's guest logic (xtask, in Rust: guest definitions, repair, status,
# selftest) against the harness's daemon.
xtask() {
    local cargo
    cargo=$(find_cargo)
    local sub="$1"
    shift
    (cd "$REPO" && "$cargo" run --quiet -p xtask -- harness "$sub" --dir "$HARNESS_DIR" --uri "$URI" "$@")
}

cmd_up() {
    need_root
    take_lock
    local t0
    t0=$(now)
    cmd_deps
    new_tmp
    ensure_daemon
    ensure_kernel
    ensure_image
    ensure_isos
    install -d -m 0755 "$HARNESS_DIR/domains" "$HARNESS_DIR/state"
    xtask up --emulator "$EMULATOR" --image-hash "$IMAGE_HASH" --boot-timeout "$BOOT_TIMEOUT" ||
        die "up failed (scripts/harness.sh status shows where the guests are)"
    msg "up: done in $(elapsed "$t0") s"
}

# ---------------------------------------------------------------------------------------- down

cmd_down() {
    need_root
    take_lock
    local was_running=0
    if harness_uid >/dev/null && daemon_pid >/dev/null; then
        was_running=1
        xtask down || msg "down: removing the guests failed; stopping the daemon anyway"
    fi
    stop_daemon
    if ((was_running)); then
        msg "down: the harness's libvirtd stopped; caches kept in $HARNESS_DIR"
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

# --------------------------------------------------------------------------- status, selftest

cmd_status() {
    need_root
    daemon_pid >/dev/null || { printf "the harness's libvirtd is not running (run: %s up)\n" "$0"; exit 2; }
    xtask status
}

cmd_selftest() {
    need_root
    daemon_pid >/dev/null || { printf "the harness's libvirtd is not running (run: %s up)\n" "$0"; exit 2; }
    xtask selftest
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
        "HARNESS_CONSOLE_DIR=$HARNESS_DIR/console" \
        "HARNESS_HOSTILE_CONTROL=$RUN_DIR/agent/diq-hostile.control.sock"; do
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
