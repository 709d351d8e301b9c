//! Build script: the text `--version` prints, `DIQ_VERSION` — the package version, the
//! git commit it was built from and the backends built in:
//!
//! ```text
//! 0.1.0 (commit 6db2560, backends: native virsh)
//! ```
//!
//! The commit is `git rev-parse --short HEAD` of this tree; `DISMOUNT_ISO_QEMU_COMMIT`
//! overrides it (a build from a source tarball), and without git, or outside a work tree,
//! it is `unknown`. Git is never required: the build does not fail without it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DISMOUNT_ISO_QEMU_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());

    let commit = match std::env::var("DISMOUNT_ISO_QEMU_COMMIT") {
        Ok(c) if is_commit(c.trim()) => c.trim().to_string(),
        _ => {
            watch_head(&dir);
            git(&dir, &["rev-parse", "--short", "HEAD"])
                .filter(|c| is_commit(c))
                .unwrap_or_else(|| "unknown".to_string())
        }
    };
    let backends = if std::env::var_os("CARGO_FEATURE_NATIVE").is_some() {
        "native virsh"
    } else {
        "virsh"
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=DIQ_VERSION={version} (commit {commit}, backends: {backends})");
}

/// One line of git's output, or None when git is missing or fails (no repository,
/// a repository owned by someone else, …).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}

fn is_commit(s: &str) -> bool {
    (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Rebuild when HEAD moves: HEAD itself, the branch it points at (a loose ref, or the
/// folder a new loose ref appears in) and packed-refs. Only paths that exist are named:
/// cargo reruns the script on every build for a path that does not.
fn watch_head(dir: &Path) {
    let mut paths = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some((parent, _)) = branch.rsplit_once('/') {
            paths.push(parent.to_string());
        }
        paths.push(branch);
    }
    for p in paths {
        let Some(found) = git(dir, &["rev-parse", "--git-path", &p]) else {
            continue;
        };
        // Relative to the directory git ran in.
        let found = dir.join(found);
        if found.exists() {
            println!("cargo:rerun-if-changed={}", found.display());
        }
    }
}
