//! Shared helpers for tests that need the real harness (scripts/harness.sh).
//!
//! When `CI=true` the harness must be up: a missing harness fails the test loudly.
//! Elsewhere the test is skipped with a message that says how to run it.

#![allow(dead_code)]

use std::process::Command;
use std::sync::OnceLock;

/// Where `scripts/harness.sh` puts its own libvirtd's socket by default.
const DEFAULT_HARNESS_SOCKET: &str = "/var/lib/dismount-iso-qemu-harness/run/libvirt/libvirt-sock";

/// The socket of the harness's own libvirtd (a session daemon of the harness user, never
/// the host's): `HARNESS_SOCKET` from `scripts/harness.sh env`, else the default place.
pub fn harness_socket() -> &'static str {
    static SOCKET: OnceLock<String> = OnceLock::new();
    SOCKET.get_or_init(|| {
        std::env::var("HARNESS_SOCKET").unwrap_or_else(|_| DEFAULT_HARNESS_SOCKET.to_string())
    })
}

/// The URI that reaches the harness's own libvirtd.
pub fn harness_uri() -> &'static str {
    static URI: OnceLock<String> = OnceLock::new();
    URI.get_or_init(|| format!("qemu+unix:///session?socket={}", harness_socket()))
}

/// Guests the harness defines (see scripts/harness.sh).
pub const UBUNTU: &str = "diq-ubuntu";
pub const CENTOS: &str = "diq-centos";
pub const DEBIAN_EXEC: &str = "diq-debian";
pub const NO_AGENT: &str = "diq-noagent";
pub const NO_EXEC: &str = "diq-noexec";
pub const FROZEN: &str = "diq-frozen";
pub const PAUSED: &str = "diq-paused";
pub const WIN_OFF: &str = "diq-win2k22";

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// `true` when the harness answers; `false` (after printing why) when the test should skip.
/// Panics in CI, where skipping would hide a broken harness.
pub fn harness_available() -> bool {
    let ok = Command::new("virsh")
        .args(["-c", harness_uri(), "domstate", UBUNTU])
        .env("LC_ALL", "C")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("running"))
        .unwrap_or(false);
    if ok {
        return true;
    }
    if in_ci() {
        panic!("CI=true but the e2e harness is not up: run `scripts/harness.sh up` as root first");
    }
    eprintln!("skipping e2e test: the harness is not up (run `scripts/harness.sh up` as root, or `scripts/test-all.sh`)");
    false
}
