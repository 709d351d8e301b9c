#!/usr/bin/env bash
# deb.sh — build the Debian package: target/debian/dismount-iso-qemu_VERSION-1_ARCH.deb
#
# Usage: scripts/deb.sh          (prints the package's path on stdout)
#
# Steps: the release binary (cargo build --release --locked, native backend); then the
# binary's own commands write what the package ships beside it, into target/dist/: the man
# pages (`dismount_iso_qemu manpage --dir`, one page per command, from the clap
# definitions) and the bash, zsh and fish completion scripts (`dismount_iso_qemu
# completions SHELL`); THIRD-PARTY lists the crates compiled in with their licences
# (`cargo tree`); then cargo-deb packs it all as [package.metadata.deb] in Cargo.toml says
# (`cargo deb --no-build`): Depends from the libraries the binary links (dpkg-shlibdeps:
# libc6 and libvirt0; cargo-deb leaves out libgcc-s1, which every Debian system has) plus
# adduser, the systemd unit contrib/dismount_iso_qemu.service installed but not enabled, and
# contrib/deb/ (maintainer scripts: the service's user, the cleanup on purge; the copyright
# file). Each step's wall time goes to stderr.
#
# cargo-deb is installed on first use into target/tools/ of this repository (never into
# ~/.cargo; a debug build: a minute, not three; built in target/tools/build, which is then
# removed). Besides the tool's build packages (gcc,
# pkg-config, libvirt-dev) it needs dpkg-dev and binutils; as root the missing ones are
# installed the way scripts/harness.sh installs packages (by name, --no-install-recommends,
# refusing any upgrade or removal), otherwise it says which to install.
#
# Environment: DEBFULLNAME and DEBEMAIL, when both are set, name the package's maintainer.

set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

readonly CARGO_DEB_VERSION=3.8.0
readonly NAME=dismount_iso_qemu

say() { printf 'deb.sh: %s\n' "$*" >&2; }
die() { printf 'deb.sh: error: %s\n' "$*" >&2; exit 2; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    if [[ -x "$d/cargo" ]] && ! command -v cargo >/dev/null 2>&1; then PATH="$d:$PATH"; fi
done
command -v cargo >/dev/null 2>&1 || die "no Rust toolchain found: install one with rustup (Rust >= 1.88), then rerun"

start=$(now)
if [[ $EUID -eq 0 ]]; then
    rc=0
    scripts/harness.sh deps build >&2 || rc=$?
    ((rc == 0)) || die "the build packages cannot be installed (above); the package needs the native backend, so libvirt-dev"
    scripts/harness.sh install dpkg-dev binutils >&2
else
    for tool in pkg-config:pkg-config dpkg-shlibdeps:dpkg-dev strip:binutils cc:gcc; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || die "${tool%%:*} is missing: install ${tool#*:} (or run as root)"
    done
fi

t=$(now)
say "building the release binary"
cargo build --release --locked --quiet
say "release binary ready ($(since "$t"))"
bin="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/$NAME"
[[ -x "$bin" ]] || die "cargo built no $bin"

t=$(now)
dist="$root/target/dist"
say "man pages, completion scripts and the crate list into $dist"
rm -rf "$dist"
mkdir -p "$dist/man" "$dist/completions"
"$bin" manpage --dir "$dist/man" >/dev/null
"$bin" completions bash >"$dist/completions/$NAME"
"$bin" completions zsh >"$dist/completions/_$NAME"
"$bin" completions fish >"$dist/completions/$NAME.fish"
{
    echo "The Rust crates compiled into /usr/bin/$NAME: name, version, licence."
    echo "Their licence texts come with each crate's source (https://crates.io/crates/NAME)."
    echo
    # Normal dependencies of the shipped features, proc-macros left out (they run in the
    # compiler, nothing of them is in the binary); the crate itself is the package.
    cargo tree --locked --edges normal,no-proc-macro --prefix none --format '{p} {l}' |
        grep -v "^$NAME " | sed 's/ (\*)$//' | sort -u
} >"$dist/THIRD-PARTY"
say "$(find "$dist/man" -name '*.1' | wc -l) man pages, 3 completion scripts, $(($(wc -l <"$dist/THIRD-PARTY") - 3)) crates ($(since "$t"))"

tools="$root/target/tools"
export PATH="$tools/bin:$PATH"
if [[ "$(cargo-deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]]; then
    t=$(now)
    say "installing cargo-deb $CARGO_DEB_VERSION into $tools (once)"
    # Built under target/ too (cargo would use a temporary directory outside the repo).
    # Without liblzma-dev, xz is compiled in: optimised, or packing takes several times longer.
    cargo install --locked --debug --quiet --root "$tools" --target-dir "$tools/build" \
        --config 'profile.dev.package.lzma-sys.opt-level=3' \
        --version "$CARGO_DEB_VERSION" cargo-deb
    rm -rf -- "$tools/build"
    say "cargo-deb installed ($(since "$t"))"
fi

maintainer=()
if [[ -n "${DEBFULLNAME:-}" && -n "${DEBEMAIL:-}" ]]; then
    maintainer=(--maintainer "$DEBFULLNAME <$DEBEMAIL>")
fi
t=$(now)
say "packing"
deb=$(cargo deb --no-build --locked --quiet "${maintainer[@]}")
[[ -f "$deb" ]] || die "cargo deb reported no package"
say "built $deb ($(du -k "$deb" | cut -f1) KiB; packed in $(since "$t"), all of deb.sh $(since "$start"))"
printf '%s\n' "$deb"
