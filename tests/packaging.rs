//! What the Debian package ships, from the binary itself: `--version`, the man pages and
//! the shell completion — a real bash running the script `completions bash` prints, VM
//! names from libvirt's test driver, and the bound on a libvirtd that never answers.
//! (scripts/deb-check.sh checks the installed package in a chroot, on the harness.)

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NAME: &str = "dismount_iso_qemu";

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// What the binary answers a completion script for `words` (the command line, the word
/// under the cursor last), as bash asks it.
fn candidates(home: &Path, words: &[&str]) -> (Vec<String>, Output) {
    let out = common::tool_process(home)
        .env("DISMOUNT_ISO_QEMU_COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_IFS", "\n")
        .arg("--")
        .args(words)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (list, out)
}

#[test]
fn version_names_the_commit_and_the_backends() {
    let home = tempfile::tempdir().unwrap();
    let out = text(
        &common::tool_process(home.path())
            .arg("--version")
            .output()
            .unwrap(),
    );
    let backends = if cfg!(feature = "native") {
        "native virsh"
    } else {
        "virsh"
    };
    let line = out.trim_end();
    let prefix = format!("{NAME} {} (commit ", env!("CARGO_PKG_VERSION"));
    let suffix = format!(", backends: {backends})");
    assert!(
        line.starts_with(&prefix) && line.ends_with(&suffix),
        "{line}"
    );
    let commit = &line[prefix.len()..line.len() - suffix.len()];
    // The build's own commit when git can tell it (the build script asked the same git).
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) if std::env::var_os("DISMOUNT_ISO_QEMU_COMMIT").is_none() => {
            assert_eq!(commit, head)
        }
        _ => assert!(commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit())),
    }
}

#[test]
fn manpage_prints_roff_that_names_every_command() {
    let home = tempfile::tempdir().unwrap();
    let page = text(
        &common::tool_process(home.path())
            .arg("manpage")
            .output()
            .unwrap(),
    );
    assert!(page.contains(&format!(".TH {NAME} 1 ")), "{page:.300}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "{section}");
    }
    assert!(page.contains(&format!("{NAME}\\-serve(1)")));
}

#[test]
fn the_binary_completes_commands_and_flags() {
    let home = tempfile::tempdir().unwrap();
    let (got, _) = candidates(home.path(), &[NAME, "sc"]);
    assert_eq!(got, ["scan"]);
    let (got, _) = candidates(home.path(), &[NAME, "eject", "--fo"]);
    assert_eq!(got, ["--force"]);
    // An empty word: the shells first, then the flags that may still come.
    let (got, _) = candidates(home.path(), &[NAME, "completions", ""]);
    assert_eq!(got[..3], ["bash", "zsh", "fish"], "{got:?}");
    assert!(got[3..].iter().all(|w| w.starts_with('-')), "{got:?}");
}

#[test]
fn vm_names_complete_from_the_connection_on_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    for backend in ["native", "virsh"] {
        if backend == "native" && !cfg!(feature = "native") {
            continue;
        }
        for cmd in ["mount", "eject", "edit", "cat", "pull", "push"] {
            let words = [
                NAME,
                "-c",
                "test:///default",
                "--backend",
                backend,
                cmd,
                "t",
            ];
            let (got, out) = candidates(home.path(), &words);
            assert_eq!(got, ["test"], "{backend} {cmd}");
            assert!(
                out.stderr.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The variable counts as it would for the command.
    let out = common::tool_process(home.path())
        .env("LIBVIRT_URI", "test:///default")
        .env("DISMOUNT_ISO_QEMU_COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", "2")
        .env("_CLAP_IFS", "\n")
        .args(["--", NAME, "cat", ""])
        .output()
        .unwrap();
    assert!(text(&out).lines().any(|l| l == "test"));
}

/// A libvirtd that accepts connections and never answers: Tab gives up after the bound
/// (2 s), prints nothing on stderr and exits 0 — for both backends.
#[test]
fn a_hung_libvirtd_costs_a_tab_two_seconds_not_forever() {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("hung.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let held = std::thread::spawn(move || {
        // Accept and hold every connection, answering nothing.
        let mut conns = Vec::new();
        for c in listener.incoming() {
            conns.push(c);
        }
    });
    let uri = format!("qemu+unix:///system?socket={}", socket.display());
    for backend in ["native", "virsh"] {
        if backend == "native" && !cfg!(feature = "native") {
            continue;
        }
        let start = Instant::now();
        let (got, out) = candidates(
            home.path(),
            &[NAME, "-c", &uri, "--backend", backend, "mount", ""],
        );
        let took = start.elapsed();
        assert!(out.status.success(), "{backend}: {:?}", out.status);
        assert!(took < Duration::from_millis(3500), "{backend}: {took:?}");
        assert!(!got.iter().any(|c| c == "test"), "{backend}: {got:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(held);
}

/// The script `completions bash` prints, in a real bash: Tab (the registered function)
/// calls the binary through PATH, as the installed file does.
#[test]
fn the_bash_script_completes_through_the_binary() {
    if !common::require(common::on_path("bash"), "bash", "apt-get install bash") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let script = text(
        &common::tool_process(home.path())
            .args(["completions", "bash"])
            .output()
            .unwrap(),
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_dismount_iso_qemu"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tab = |words: &str| -> Vec<String> {
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c"])
            .arg(format!(
                "{script}\n\
                 COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_TYPE=9\n\
                 _clap_complete_{NAME} {NAME} \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
                 printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ))
            .env("PATH", &path)
            .env("XDG_CACHE_HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("LIBVIRT_URI")
            .env_remove("LIBVIRT_DEFAULT_URI")
            .output()
            .unwrap();
        text(&out).lines().map(str::to_string).collect()
    };
    assert_eq!(tab(&format!("{NAME} mo")), ["mount"]);
    assert_eq!(tab(&format!("{NAME} -c test:///default cat te")), ["test"]);
    let scripts_parse = Command::new("bash")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(scripts_parse.success());
}
