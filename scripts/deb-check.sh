#!/usr/bin/env bash
# deb-check.sh — the Debian package, installed, used and purged in a throwaway root.
#
# Usage (as root): scripts/deb-check.sh [PACKAGE.deb]
#
# Builds the package (scripts/deb.sh) unless one is given, then, in a chroot of this host's
# own release (never on the host, where it would replace an operator's real install):
#   1. apt-get install ./dismount-iso-qemu_….deb: its dependencies come from the archive,
#      so the chroot has only what Depends brings; the binary runs and says its commit;
#   2. the man pages: `man dismount_iso_qemu` finds the page, and every page renders
#      without a warning from groff;
#   3. bash completion, loaded the way an interactive shell loads it (bash-completion's
#      loader finds the installed file): subcommands complete, and a VM name completes from
#      the harness's libvirtd (its URI passed with -c) within the 2 s bound;
#   4. `systemd-analyze verify` accepts the installed unit, which is neither enabled nor
#      started; the service's user and group exist, the user is in the group libvirt
#      (made first, as libvirt-daemon-system would), and its state directory (the unit's
#      CacheDirectory=, /var/cache/dismount_iso_qemu) is theirs;
#   5. apt-get purge, then apt-get autoremove --purge: every file, user and group the
#      package (or the service: an OS answer cache is written into the state directory
#      first, as the service's user) brought is gone — file lists, users, groups and
#      installed packages are compared with before.
#
# The chroot: mmdebstrap (Debian's package, installed the way scripts/harness.sh installs
# packages) makes a base of the host's release from the host's own Debian/Ubuntu archives
# (variant apt, plus systemd, man-db, bash-completion and adduser), cached as a tarball
# under target/deb-check/ for a week; mmdebstrap builds it in a mount and PID namespace of
# its own, in the background while the package builds, and is killed with everything it
# started when the script stops early (its temporary files are under target/deb-check/
# too). Each run unpacks the base into a fresh directory and works there in a mount and
# PID namespace of its own: a new /proc, /dev and /run (tmpfs), and one bind mount of the
# host's — the harness's socket folder, read-only. Everything is unmounted on the way out,
# failure or not (a trap; leaving the namespace drops whatever a kill left), then the
# directory is removed (and a run's directory that a SIGKILL left, an hour later). No
# service starts (policy-rc.d, no systemd in the chroot); no process outlives the check
# (the PID namespaces). Outside target/ only two things change: mmdebstrap is installed
# when missing (recorded as scripts/harness.sh records its packages), and cargo's download
# cache.
#
# Prints the wall time of each step. Exit 0 when every check passed, 1 when one failed,
# 2 on a setup error. With CI=true the VM name check cannot be skipped (the harness must
# be up: scripts/test-all.sh runs this before taking it down).

set -euo pipefail

readonly PKG=dismount-iso-qemu
readonly BIN=dismount_iso_qemu
readonly UNIT=dismount_iso_qemu.service
readonly BASE_PACKAGES="systemd,man-db,bash-completion,adduser"
readonly BASE_MAX_AGE_DAYS=7

say() { printf '\n==> deb-check: %s\n' "$*" >&2; }
msg() { printf 'deb-check: %s\n' "$*" >&2; }
die() { printf 'deb-check: error: %s\n' "$*" >&2; exit 2; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

# ============================================================== inside the namespace
# `deb-check.sh --inside RUN DEB ARCHIVES SOCKDIR URI` runs in a mount and PID namespace
# of its own (unshare, below) on the chroot RUN/root: it mounts, checks, and unmounts again
# on any exit. ARCHIVES keeps the .debs apt downloaded, for the next run.

FAILED=0
MOUNTS=() # what inside() mounted, in order
fail() { printf 'deb-check: FAIL: %s\n' "$*" >&2; FAILED=1; }

inside() {
    local run="$1" deb="$2" archives="$3" sockdir="$4" uri="$5"
    local root="$run/root" log="$run/apt.log"
    teardown() {
        local i
        for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
            umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true
        done
        MOUNTS=()
    }
    trap teardown EXIT
    trap 'exit 130' INT TERM

    mount -t proc -o nosuid,nodev,noexec proc "$root/proc" && MOUNTS+=("$root/proc")
    mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev" && MOUNTS+=("$root/dev")
    local node
    for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
        IFS=: read -r n major minor <<<"$node"
        mknod -m 0666 "$root/dev/$n" c "$major" "$minor"
    done
    ln -s /proc/self/fd "$root/dev/fd"
    mkdir -m 0755 "$root/dev/pts" "$root/dev/shm"
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run" && MOUNTS+=("$root/run")
    mkdir -p "$root/run/lock"
    if [[ -n "$sockdir" ]]; then
        mkdir -p "$root$sockdir"
        mount --bind "$sockdir" "$root$sockdir" && MOUNTS+=("$root$sockdir")
        mount -o remount,bind,ro "$root$sockdir"
    fi

    in_root() {
        chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"
    }

    # No maintainer script may start a service here.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    # ldconfig's cache, which any library's installation writes: there before, as on a
    # real system (mmdebstrap leaves it out of the base).
    in_root ldconfig
    # The group libvirt-daemon-system makes on a libvirt host: the postinst puts the
    # service's user in it (the unit's SupplementaryGroups=), the purge takes it out again.
    in_root groupadd --system libvirt

    local before="$run/before" after="$run/after" t
    snapshot "$root" >"$before"

    say "apt-get install ./$(basename "$deb")"
    t=$(now)
    install -m 0644 "$deb" "$root/tmp/"
    if compgen -G "$archives/*.deb" >/dev/null; then cp -p "$archives"/*.deb "$root/var/cache/apt/archives/"; fi
    if ! in_root apt-get install -y -q --no-install-recommends "/tmp/$(basename "$deb")" >"$log" 2>&1; then
        msg "install failed; refreshing the chroot's package lists and trying again"
        in_root apt-get update -q >>"$log" 2>&1 || true
        if ! in_root apt-get install -y -q --no-install-recommends "/tmp/$(basename "$deb")" >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            fail "apt-get install ./$(basename "$deb") failed"
            return 1
        fi
    fi
    # The next run's download cache: what apt fetched or reused here, less what the
    # archive no longer offers (apt-get autoclean), so it does not grow with every update.
    in_root apt-get autoclean -q >>"$log" 2>&1 || true
    local cached
    for cached in "$archives"/*.deb; do
        if [[ -e "$cached" && ! -e "$root/var/cache/apt/archives/${cached##*/}" ]]; then rm -f -- "$cached"; fi
    done
    cp -pn "$root/var/cache/apt/archives/"*.deb "$archives/" 2>/dev/null || true
    msg "installed with $(grep -c '^Setting up ' "$log") package(s) ($(since "$t"))"
    local version
    version=$(in_root "$BIN" --version) || fail "$BIN --version failed in the chroot"
    msg "$version"
    [[ "$version" =~ ^$BIN\ [0-9.]+\ \(commit\ (unknown|[0-9a-f]+),\ backends:\ native\ virsh\)$ ]] ||
        fail "--version does not say version, commit and backends: $version"

    say "man pages"
    t=$(now)
    local page pages=0 err text
    [[ "$(in_root man -w "$BIN")" == "/usr/share/man/man1/$BIN.1.gz" ]] || fail "man -w $BIN does not find the installed page"
    # Whole pages into variables: `man | grep -q` fails under pipefail when grep stops
    # reading before man has written everything.
    text=$(in_root env MANWIDTH=80 man "$BIN" 2>/dev/null) || fail "man $BIN failed"
    grep -q '^SYNOPSIS' <<<"$text" || fail "man $BIN renders no SYNOPSIS"
    while IFS= read -r page; do
        err=$(in_root env MANWIDTH=80 man --warnings=w -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed"
        [[ -z "$err" ]] || fail "man -l $page: $err"
        pages=$((pages + 1))
    done < <(in_root dpkg -L "$PKG" | grep '^/usr/share/man/man1/.*\.1\.gz$')
    ((pages >= 2)) || fail "the package has $pages man page(s)"
    text=$(in_root env MANWIDTH=80 man "$BIN-serve" 2>/dev/null) || fail "man $BIN-serve failed"
    grep -q -- '--listen' <<<"$text" || fail "man $BIN-serve shows no serve options"
    msg "$pages pages render without a warning ($(since "$t"))"

    say "bash completion"
    t=$(now)
    local words
    words=$(complete_in "$root" "$BIN" "")
    for want in scan mount eject edit serve completions manpage; do
        grep -qx "$want" <<<"$words" || fail "Tab after '$BIN ' does not offer $want (got: $(tr '\n' ' ' <<<"$words"))"
    done
    [[ "$(complete_in "$root" "$BIN" sc)" == scan ]] || fail "'$BIN sc' does not complete to scan"
    if [[ -n "$uri" ]]; then
        local t_vm vm_words
        t_vm=$(now)
        vm_words=$(complete_in "$root" "$BIN" -c "$uri" mount diq-u)
        msg "'$BIN -c HARNESS_URI mount diq-u<Tab>' -> $(tr '\n' ' ' <<<"$vm_words")($(since "$t_vm"))"
        grep -qx diq-ubuntu <<<"$vm_words" || fail "no harness VM name completes from the harness's libvirtd"
    fi
    msg "done ($(since "$t"))"

    say "the unit and the service's user"
    t=$(now)
    local unit_file="/usr/lib/systemd/system/$UNIT" out state
    [[ -f "$root$unit_file" ]] || fail "$unit_file is not installed"
    out=$(in_root systemd-analyze verify "$unit_file" 2>&1) || fail "systemd-analyze verify rejects $UNIT: $out"
    [[ -z "$out" ]] || fail "systemd-analyze verify warns about $UNIT: $out"
    grep -q "^ExecStart=/usr/bin/$BIN .*serve" "$root$unit_file" || fail "$UNIT does not run /usr/bin/$BIN serve"
    state=$(in_root systemctl is-enabled "$UNIT" 2>&1 || true)
    [[ "$state" == disabled ]] || fail "$UNIT is '$state' after installation, not disabled"
    if compgen -G "$root/etc/systemd/system/*.wants/$UNIT" >/dev/null; then fail "$UNIT is enabled"; fi
    local pw
    pw=$(in_root getent passwd "$PKG") || fail "no user $PKG"
    [[ "$pw" == *":/nonexistent:/usr/sbin/nologin" ]] || fail "user $PKG is not a system user without home and shell: $pw"
    in_root getent group "$PKG" >/dev/null || fail "no group $PKG"
    [[ " $(in_root id -Gn "$PKG") " == *" libvirt "* ]] || fail "user $PKG is not in the group libvirt"
    local dir_state
    dir_state=$(in_root stat -c "%U:%G %a" "/var/cache/$BIN" 2>&1) || dir_state="missing"
    [[ "$dir_state" == "$PKG:$PKG 700" ]] || fail "the state directory /var/cache/$BIN is not the service user's, mode 0700: $dir_state"
    msg "systemd-analyze verify: clean; $UNIT disabled; $pw; /var/cache/$BIN $dir_state ($(since "$t"))"

    # What the running service would have left there: its OS answer cache.
    in_root setpriv --reuid="$PKG" --regid="$PKG" --clear-groups \
        sh -c "echo '{}' >/var/cache/$BIN/os-cache.json" || fail "the service user cannot write its state directory"

    say "apt-get purge $PKG, then apt-get autoremove --purge"
    t=$(now)
    in_root apt-get purge -y -q "$PKG" >>"$log" 2>&1 || fail "apt-get purge $PKG failed"
    in_root apt-get autoremove -y -q --purge >>"$log" 2>&1 || fail "apt-get autoremove --purge failed"
    snapshot "$root" >"$after"
    if ! diff -u "$before" "$after" >"$run/left.diff"; then
        fail "the purge left the chroot changed:"
        grep -E '^[-+][^-+]' "$run/left.diff" | head -n 40 >&2
    else
        msg "nothing left: $(grep -c '^file ' "$before") files, users, groups and $(grep -c '^package ' "$before") packages as before ($(since "$t"))"
    fi

    teardown
    return "$FAILED"
}

# The chroot's state, one fact a line: its files (what apt's and dpkg's own bookkeeping,
# logs and caches hold aside), its users and groups, its installed packages.
# Not below the mount points: a bind mount of the same file system (the harness's socket
# folder, whose files come and go with the tests' guests) is no border for find -xdev.
snapshot() {
    local root="$1" mnt skip=()
    for mnt in "${MOUNTS[@]}"; do skip+=(-o -path ".${mnt#"$root"}"); done
    (
        cd "$root"
        find . -xdev \( -path ./proc -o -path ./dev -o -path ./run -o -path ./tmp \
            -o -path ./var/log -o -path ./var/cache/apt -o -path ./var/lib/apt \
            -o -path ./var/cache/man -o -path ./var/cache/debconf -o -path ./var/lib/dpkg \
            "${skip[@]}" \) -prune -o -print | sed 's/^/file /'
        for db in passwd group shadow gshadow; do
            sed "s/^/$db /" "etc/$db"
        done
    ) | LC_ALL=C sort
    # shellcheck disable=SC2016 # dpkg-query's own ${fields}
    chroot "$root" dpkg-query -W -f='package ${Package} ${Version} ${db:Status-Abbrev}\n' | LC_ALL=C sort
}

# complete_in ROOT WORD… — what bash completion offers for the last word, the way an
# interactive bash in the chroot would: bash-completion's loader (_comp_load, or
# __load_completion before bash-completion 2.12) finds the package's file,
# and the function gets the words as readline splits the line — at COMP_WORDBREAKS, so
# `-c qemu+unix:///session?socket=/x` arrives as five words (':' and '=' words of their
# own), as it does at a real prompt. (The words here hold no quotes, blanks or other
# breaking characters.)
complete_in() {
    local root="$1"
    shift
    # shellcheck disable=SC2016 # expanded by the chroot's bash
    timeout 10 chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LC_ALL=C.UTF-8 TERM=dumb bash --norc --noprofile -c '
        . /usr/share/bash-completion/bash_completion
        if declare -F _comp_load >/dev/null; then load=_comp_load; else load=__load_completion; fi
        "$load" "$1" || { echo "no completion for $1" >&2; exit 1; }
        spec=$(complete -p "$1") || exit 1
        fn=${spec##*-F }; fn=${fn%% *}
        COMP_WORDS=()
        for arg in "$@"; do
            rest=$arg
            while [[ $rest =~ ^([^:=]*)([:=]+)(.*)$ ]]; do
                [[ -z ${BASH_REMATCH[1]} ]] || COMP_WORDS+=("${BASH_REMATCH[1]}")
                COMP_WORDS+=("${BASH_REMATCH[2]}")
                rest=${BASH_REMATCH[3]}
            done
            [[ -z $rest && -n $arg ]] || COMP_WORDS+=("$rest")
        done
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9; COMPREPLY=()
        "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf "%s\n" "${COMPREPLY[@]}"' complete "$@"
}

if [[ "${1:-}" == --inside ]]; then
    shift
    inside "$@"
    exit $?
fi

# ======================================================================== on the host

cd "$(dirname "$0")/.."
repo="$PWD"
self="$repo/scripts/deb-check.sh"
[[ $EUID -eq 0 ]] || die "run as root: the check builds a chroot (mount, chroot, unshare)"
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    if [[ -x "$d/cargo" ]] && ! command -v cargo >/dev/null 2>&1; then PATH="$d:$PATH"; fi
done

start=$(now)
work="$repo/target/deb-check"
mkdir -p "$work/archives"
rm -f -- "$work/apt.log" # a failed run's

# Whatever this run started goes on the way out, failure, Ctrl-C or kill (TERM) alike: the
# base's mmdebstrap when it is still running (with everything in its PID namespace) and
# its temporary files, and the chroot once nothing is mounted under it.
base_pid="" base_tmp="$work/mmdebstrap.tmp" base="" run="" root=""
cleanup() {
    # A second Ctrl-C or TERM must not cut the cleanup short.
    trap '' INT TERM
    if [[ -n "$base_pid" ]]; then
        # KILL, since unshare blocks INT and TERM while it waits: with --kill-child its
        # death kills mmdebstrap, PID 1 of the namespace, and so every process there; the
        # mounts go with the mount namespace, and what it wrote is under $base_tmp.
        msg "stopping the base's mmdebstrap"
        kill -KILL "$base_pid" 2>/dev/null || true
        wait "$base_pid" 2>/dev/null || true
        base_pid=""
        rm -rf --one-file-system -- "$base_tmp" "$base.partial"
    fi
    [[ -n "$run" && -d "$run" ]] || return 0
    # The namespace is gone by now, and its mounts with it; make sure before deleting.
    if findmnt -rn -o TARGET | grep -qF "$root"; then
        findmnt -rn -o TARGET | grep -F "$root" | sort -r | xargs -r -n1 umount -l || true
    fi
    if findmnt -rn -o TARGET | grep -qF "$root"; then
        msg "mounts remain under $root; not deleting it"
        return 0
    fi
    local t
    t=$(now)
    rm -rf --one-file-system -- "$run"
    msg "chroot removed ($(since "$t")); wall time $(since "$start")"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Chroots of runs that were killed before they could clean up (SIGKILL, a power cut): an
# hour old, nothing mounted below.
while IFS= read -r stale; do
    findmnt -rn -o TARGET | grep -qF "$stale/" || rm -rf --one-file-system -- "$stale"
done < <(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'run.*' -mmin +60)

say "mmdebstrap (only when missing)"
t=$(now)
scripts/harness.sh install mmdebstrap
msg "mmdebstrap $(dpkg-query -W -f='${Version}' mmdebstrap) ($(since "$t"))"

# The base: the host's release from the host's own distribution archives (those apt-cache
# policy shows with the host's origin and codename — not third-party repositories).
# shellcheck disable=SC1091
. /etc/os-release
codename="${VERSION_CODENAME:-}"
[[ -n "$codename" ]] || die "/etc/os-release names no VERSION_CODENAME"
origin="${ID^}"
mapfile -t mirrors < <(LC_ALL=C apt-cache policy | awk -v o="o=$origin," -v c="$codename" '
    $2 ~ /^[a-z+]+:\/\// && $NF == "Packages" { uri = $2; sc = $3; next }
    $1 == "release" && uri != "" {
        split(sc, p, "/")
        if (index($2, o) && (p[1] == c || index(p[1], c "-") == 1))
            print "deb " uri " " p[1] " " substr(sc, length(p[1]) + 2)
        uri = ""
    }' | LC_ALL=C sort -u)
((${#mirrors[@]})) || die "apt knows no $origin archive for $codename (apt-cache policy); run apt-get update"
arch=$(dpkg --print-architecture)
key=$(printf '%s\n' "$codename" "$arch" "$BASE_PACKAGES" "${mirrors[@]}" | sha256sum | cut -c1-12)
base="$work/base-$codename-$arch-$key.tar"

if [[ -s "$base" && -n "$(find "$base" -mtime "-$BASE_MAX_AGE_DAYS")" ]]; then
    msg "base: cached $(basename "$base"), $(du -m "$base" | cut -f1) MiB"
else
    say "base chroot: mmdebstrap $codename (in the background, while the package builds)"
    printf '  %s\n' "${mirrors[@]}" >&2
    rm -rf --one-file-system -- "$base_tmp" "$work"/base-*.tar.partial
    mkdir -p "$base_tmp"
    base_start=$(now)
    # Its own mount and PID namespace: the chroot's /proc, /dev and /sys mounts stay
    # there, and no process outlives it (see cleanup).
    unshare --mount --pid --fork --kill-child --mount-proc --propagation private -- \
        env TMPDIR="$base_tmp" mmdebstrap --variant=apt --include="$BASE_PACKAGES" \
        --skip=cleanup/apt/lists --format=tar "$codename" "$base.partial" "${mirrors[@]}" \
        </dev/null >"$work/mmdebstrap.log" 2>&1 &
    base_pid=$!
fi

t=$(now)
if [[ $# -ge 1 ]]; then
    deb="$(realpath "$1")"
    [[ -f "$deb" ]] || die "no package $1"
else
    say "building the package (scripts/deb.sh)"
    deb=$(scripts/deb.sh) || die "scripts/deb.sh failed (above)"
fi
msg "package: $deb, $(du -k "$deb" | cut -f1) KiB ($(since "$t"))"

if [[ -n "$base_pid" ]]; then
    t=$(now)
    rc=0
    wait "$base_pid" || rc=$?
    base_pid=""
    rm -rf --one-file-system -- "$base_tmp"
    if ((rc != 0)); then
        rm -f -- "$base.partial"
        tail -n 20 "$work/mmdebstrap.log" >&2
        die "mmdebstrap failed (above; all of it in $work/mmdebstrap.log)"
    fi
    rm -f -- "$work"/base-*.tar
    mv -- "$base.partial" "$base"
    msg "base: $(basename "$base"), $(du -m "$base" | cut -f1) MiB, built in $(since "$base_start") (waited $(since "$t"))"
fi

# The harness's libvirtd, reached from the chroot through its socket folder.
uri="" sockdir=""
if [[ -x scripts/harness.sh ]]; then
    eval "$(scripts/harness.sh env | grep -E '^HARNESS_(URI|SOCKET)=')"
    if [[ -S "${HARNESS_SOCKET:-}" ]]; then
        uri="$HARNESS_URI"
        sockdir="$(dirname "$HARNESS_SOCKET")"
    fi
fi
if [[ -z "$uri" ]]; then
    [[ "${CI:-}" != true ]] || die "the harness is not up (scripts/harness.sh up): the VM name check cannot run"
    msg "the harness is not up: the VM name completion is not checked (scripts/harness.sh up first)"
fi

run="$(mktemp -d "$work/run.XXXXXX")"
root="$run/root"

say "chroot: unpacking the base"
t=$(now)
mkdir "$root"
tar -xpf "$base" -C "$root" --numeric-owner
msg "unpacked into $root ($(since "$t"))"

rc=0
unshare --mount --pid --fork --kill-child --propagation private -- \
    "$self" --inside "$run" "$deb" "$work/archives" "$sockdir" "$uri" || rc=$?

say "checked in $(since "$start")"
if ((rc != 0)); then
    cp "$run/apt.log" "$work/apt.log" 2>/dev/null || true
    msg "FAILED (above); the chroot's apt log: $work/apt.log"
    exit 1
fi
msg "the package installs, works and purges cleanly"
