//! End-to-end: `edit`, `cat`, `pull`, `push` and menu option 3 against the real harness,
//! on both backends. Guest files are seeded and checked through `virsh
//! qemu-agent-command` directly, not through the code under test. Every test works only
//! under its own fresh /tmp/diq-edit-* directory in the guest and removes it afterwards:
//! other tests read the same guests at the same time.

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::json;

use common::guest::*;
use common::*;

fn bin(home: &tempfile::TempDir, backend: &str) -> Command {
    tool_on_harness(home.path(), backend)
}

/// A scripted editor: a shell script that gets the file as "$1".
fn editor(home: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = home.path().join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "#!/bin/sh\nset -e\n{body}").unwrap();
    drop(f);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn one_line_failure(out: &Output, want: &str) {
    failure_with_code(out, 1, want);
}

fn failure_with_code(out: &Output, code: i32, want: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(
        err,
        format!("dismount_iso_qemu: error: {want}\n"),
        "exactly one line"
    );
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
}

/// Private edit directories left under `home` (kept copies).
fn kept_dirs(home: &tempfile::TempDir) -> Vec<PathBuf> {
    std::fs::read_dir(home.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dismount_iso_qemu-edit-")
        })
        .collect()
}

#[test]
fn an_edit_lands_byte_exact_keeps_crlf_and_an_unchanged_edit_writes_nothing() {
    if !harness_available() {
        return;
    }
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let dir = GuestDir::new(UBUNTU, backend);
        let f = dir.file("app.conf");
        guest_put(UBUNTU, &f, b"a=1\r\nb=2\r\nno newline at end");
        let ed = editor(&home, "ed.sh", "sed -i 's/b=2/b=3/' \"$1\"");
        let out = bin(&home, backend)
            .env("EDITOR", &ed)
            .args(["edit", UBUNTU, &f, "--yes"])
            .output()
            .unwrap();
        let so = text(&out.stdout);
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        assert!(so.contains("\n-b=2\n+b=3\n"), "{so}");
        assert!(so.contains("(CRLF line endings, kept as they are)"), "{so}");
        assert!(so.contains("verified by reading it back"), "{so}");
        assert_eq!(
            guest_get(UBUNTU, &f),
            b"a=1\r\nb=3\r\nno newline at end",
            "{backend}"
        );
        assert!(kept_dirs(&home).is_empty(), "the private copy is removed");

        // Unchanged: nothing is written, so the guest's mtime stays.
        let before = guest_text(UBUNTU, &format!("stat -c %Y '{f}'"));
        std::thread::sleep(Duration::from_millis(1100));
        let out = bin(&home, backend)
            .env("EDITOR", "true")
            .args(["edit", UBUNTU, &f])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "No changes: nothing uploaded.\n");
        let after = guest_text(UBUNTU, &format!("stat -c %Y '{f}'"));
        assert_eq!(before, after, "{backend}: mtime changed");
        assert_eq!(guest_get(UBUNTU, &f), b"a=1\r\nb=3\r\nno newline at end");
        assert!(kept_dirs(&home).is_empty());
    }
}

#[test]
fn a_guest_change_while_editing_is_not_overwritten() {
    if !harness_available() {
        return;
    }
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let dir = GuestDir::new(CENTOS, backend);
        let f = dir.file("shared.conf");
        guest_put(CENTOS, &f, b"owner=me\n");
        // While "the user" edits, someone else changes the guest file.
        let theirs = json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", format!("echo theirs=1 >> {f}")]}});
        let uri = harness_uri();
        let ed = editor(
            &home,
            "ed.sh",
            &format!(
                "virsh -c '{uri}' qemu-agent-command {CENTOS} '{theirs}' >/dev/null\n\
                 sleep 2\n\
                 printf 'owner=me, edited\\n' > \"$1\""
            ),
        );
        let out = bin(&home, backend)
            .env("EDITOR", &ed)
            .args(["edit", CENTOS, &f, "--yes"])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("error: {f} in \"{CENTOS}\" changed (sha256 ")),
            "{err}"
        );
        let kept = err
            .split("your edited copy is kept at ")
            .nth(1)
            .and_then(|s| s.strip_suffix(" (--force overwrites)\n"))
            .unwrap_or_else(|| panic!("no kept path in {err}"));
        assert_eq!(std::fs::read(kept).unwrap(), b"owner=me, edited\n");
        assert_eq!(guest_get(CENTOS, &f), b"owner=me\ntheirs=1\n", "{backend}");
    }
}

#[test]
fn new_files_are_created_only_when_asked_and_never_world_writable() {
    if !harness_available() {
        return;
    }
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let dir = GuestDir::new(UBUNTU, backend);
        let ed = editor(&home, "ed.sh", "printf 'created\\n' > \"$1\"");
        let f = dir.file("new.conf");
        // Without --yes and without a terminal: refused, nothing created.
        let out = bin(&home, backend)
            .env("EDITOR", &ed)
            .args(["edit", UBUNTU, &f])
            .output()
            .unwrap();
        one_line_failure(
            &out,
            &format!("{f} does not exist in \"{UBUNTU}\"; pass --yes to create it"),
        );
        assert_eq!(guest_sh(UBUNTU, &format!("test -e '{f}'")).0, 1);

        let out = bin(&home, backend)
            .env("EDITOR", &ed)
            .args(["edit", UBUNTU, &f, "--yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(guest_get(UBUNTU, &f), b"created\n");
        assert_eq!(guest_text(UBUNTU, &format!("stat -c %a '{f}'")), "644");

        let g = dir.file("secret.conf");
        let out = bin(&home, backend)
            .env("EDITOR", &ed)
            .args(["edit", UBUNTU, &g, "--yes", "--mode", "0600"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(guest_text(UBUNTU, &format!("stat -c %a '{g}'")), "600");

        let local = home.path().join("pushed");
        std::fs::write(&local, b"pushed\n").unwrap();
        let p = dir.file("pushed.conf");
        let out = bin(&home, backend)
            .args(["push", UBUNTU, local.to_str().unwrap(), &p])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(guest_text(UBUNTU, &format!("stat -c %a '{p}'")), "644");
    }
}

#[test]
fn a_multi_mib_file_round_trips_byte_exact_through_push_pull_and_cat() {
    if !harness_available() {
        return;
    }
    // 5 MiB + 1: several chunks, and one byte past a chunk boundary.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 1)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let dir = GuestDir::new(CENTOS, backend);
        let local = home.path().join("big.bin");
        std::fs::write(&local, &data).unwrap();
        let f = dir.file("big.bin");

        let t0 = Instant::now();
        let out = bin(&home, backend)
            .args(["push", CENTOS, local.to_str().unwrap(), &f])
            .output()
            .unwrap();
        let push = t0.elapsed();
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));

        let t0 = Instant::now();
        let out = bin(&home, backend)
            .args(["cat", CENTOS, &f])
            .output()
            .unwrap();
        let cat = t0.elapsed();
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        assert!(out.stdout == data, "{backend}: cat is not byte-exact");

        let back = home.path().join("back.bin");
        let out = bin(&home, backend)
            .args(["pull", CENTOS, &f, back.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        assert!(std::fs::read(&back).unwrap() == data, "{backend}: pull");
        // pull does not clobber without --force.
        let out = bin(&home, backend)
            .args(["pull", CENTOS, &f, back.to_str().unwrap()])
            .output()
            .unwrap();
        one_line_failure(
            &out,
            &format!(
                "{} already exists: not overwriting it (--force replaces it); nothing was copied",
                back.display()
            ),
        );

        let sum = guest_text(CENTOS, &format!("sha256sum '{f}'"));
        let want = {
            use sha2::Digest;
            sha2::Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert!(sum.starts_with(&want), "{backend}: guest has {sum}");

        // Above the size limit: one clear line, nothing read.
        let out = bin(&home, backend)
            .args(["cat", CENTOS, &f, "--max-size", "4M"])
            .output()
            .unwrap();
        one_line_failure(
            &out,
            &format!("{f} in \"{CENTOS}\" is 5.0 MiB or more, above the limit of 4.0 MiB (raise it with --max-size)"),
        );
        eprintln!(
            "timing {backend}: push {:.2}s, cat {:.2}s for {} bytes",
            push.as_secs_f64(),
            cat.as_secs_f64(),
            data.len()
        );
    }
}

#[test]
fn failures_are_one_clear_line_and_change_nothing() {
    if !harness_available() {
        return;
    }
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let never = editor(&home, "never.sh", "echo editor-ran > \"$HOME/ran\"; exit 1");
        let run = |args: &[&str]| {
            bin(&home, backend)
                .env("EDITOR", &never)
                .env("HOME", home.path())
                .args(args)
                .output()
                .unwrap()
        };
        one_line_failure(
            &run(&["edit", WIN_OFF, "/etc/hosts", "--yes"]),
            &format!("VM \"{WIN_OFF}\" is shut off: files move through its guest agent, so it must be running"),
        );
        // An unknown VM is bad input, the same line and exit 2 from every command.
        let local = home.path().join("local.txt");
        std::fs::write(&local, "x").unwrap();
        let local = local.to_str().unwrap();
        for args in [
            &["edit", "diq-no-such-vm", "/etc/hosts", "--yes"][..],
            &["cat", "diq-no-such-vm", "/etc/hosts"],
            &["pull", "diq-no-such-vm", "/etc/hosts", local, "--force"],
            &["push", "diq-no-such-vm", local, "/tmp/x"],
            &["mount", "diq-no-such-vm", local],
            &["eject", "diq-no-such-vm"],
        ] {
            failure_with_code(
                &run(args),
                2,
                "no VM named \"diq-no-such-vm\" on this connection (`dismount_iso_qemu scan` lists them)",
            );
        }
        one_line_failure(
            &run(&["edit", NO_AGENT, "/etc/hosts", "--yes"]),
            &format!("the guest agent of \"{NO_AGENT}\" is not connected (is qemu-guest-agent running inside the guest?)"),
        );
        one_line_failure(
            &run(&["edit", UBUNTU, "/etc", "--yes"]),
            &format!("/etc is a directory in \"{UBUNTU}\", not a file"),
        );
        one_line_failure(
            &run(&["edit", UBUNTU, "/sys/kernel/notes", "--yes"]),
            &format!("permission denied inside \"{UBUNTU}\": cannot write /sys/kernel/notes"),
        );
        one_line_failure(
            &run(&["cat", UBUNTU, "/etc/diq-no-such-file"]),
            &format!("/etc/diq-no-such-file does not exist in \"{UBUNTU}\""),
        );
        assert!(!home.path().join("ran").exists(), "the editor never opened");
        assert!(kept_dirs(&home).is_empty());

        // An editor that fails: nothing uploaded, and the unedited copy is not kept.
        let dir = GuestDir::new(UBUNTU, backend);
        let f = dir.file("x.conf");
        guest_put(UBUNTU, &f, b"x\n");
        one_line_failure(
            &run(&["edit", UBUNTU, &f, "--yes"]),
            &format!(
                "editor \"{}\" exited with status 1; nothing uploaded",
                never.display()
            ),
        );
        one_line_failure(
            &bin(&home, backend)
                .env("EDITOR", "/nonexistent/editor --wait")
                .args(["edit", UBUNTU, &f, "--yes"])
                .output()
                .unwrap(),
            "editor \"/nonexistent/editor\" not found: install it or set VISUAL or EDITOR; nothing uploaded",
        );
        assert_eq!(guest_get(UBUNTU, &f), b"x\n");
    }
    // A frozen agent: the first call's short timeout answers, once (it slows the VM for
    // everyone else for a few seconds).
    let home = tempfile::tempdir().unwrap();
    let out = bin(&home, "native")
        .args(["--probe-timeout", "2", "cat", FROZEN, "/etc/hostname"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    one_line_failure(
        &out,
        &format!("the guest agent of \"{FROZEN}\" did not answer in time"),
    );
}

fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn wait_for_pane(session: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let screen = tmux(&["capture-pane", "-p", "-J", "-t", session]);
        if screen.contains(needle) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {needle:?}; the screen shows:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct TmuxSession(String);

impl Drop for TmuxSession {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// The menu in a real terminal with a real editor (vi): the editor gets the terminal,
/// the change lands, and the menu comes back clean.
#[test]
fn menu_option_3_with_a_real_editor_in_a_real_terminal() {
    if !harness_available() {
        return;
    }
    if !require(
        on_path("tmux") && on_path("vi"),
        "tmux or vi",
        "scripts/harness.sh deps installs them",
    ) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let dir = GuestDir::new(UBUNTU, "tmux");
    let f = dir.file("menu.conf");
    guest_put(UBUNTU, &f, b"line one\n");
    let exe = assert_cmd::cargo::cargo_bin("dismount_iso_qemu");
    let session = format!("diq-edit-{}", std::process::id());
    let _guard = TmuxSession(session.clone());
    let uri = harness_uri();
    let cmd = format!(
        "env -u VISUAL EDITOR='vi -u NONE -n' TMPDIR='{}' XDG_CACHE_HOME='{0}' XDG_CONFIG_HOME='{0}' '{}' -c '{uri}' --backend native; echo MENU-EXITED-$?; sleep 30",
        home.path().display(),
        exe.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ]);
    wait_for_pane(&session, "Select option:", Duration::from_secs(20));
    tmux(&["send-keys", "-t", &session, "3", "Enter"]);
    wait_for_pane(&session, "Choose 1-", Duration::from_secs(10));
    tmux(&["send-keys", "-t", &session, UBUNTU, "Enter"]);
    wait_for_pane(
        &session,
        "Path of the file inside the VM:",
        Duration::from_secs(5),
    );
    tmux(&["send-keys", "-t", &session, &f, "Enter"]);
    wait_for_pane(&session, "Local copy (empty", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &session, "Enter"]);
    // vi owns the screen now: the file's line and no menu text.
    let screen = wait_for_pane(&session, "line one", Duration::from_secs(20));
    assert!(!screen.contains("Select option"), "{screen}");
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "o",
        "line two from vi",
        "Escape",
    ]);
    tmux(&["send-keys", "-t", &session, ":wq", "Enter"]);
    let screen = wait_for_pane(&session, "[e]dit again:", Duration::from_secs(20));
    assert!(screen.contains("+line two from vi"), "{screen}");
    tmux(&["send-keys", "-t", &session, "y", "Enter"]);
    let screen = wait_for_pane(
        &session,
        "verified by reading it back",
        Duration::from_secs(30),
    );
    let after = screen.split("verified by reading it back").nth(1).unwrap();
    assert!(
        after.contains("--- MENU ---\n1) Mount ISO\n2) Scan mounted ISOs\n3) Modify file in VM\n4) Exit\nSelect option:"),
        "the menu comes back clean:\n{screen}"
    );
    tmux(&["send-keys", "-t", &session, "4", "Enter"]);
    wait_for_pane(&session, "MENU-EXITED-0", Duration::from_secs(10));
    assert_eq!(guest_get(UBUNTU, &f), b"line one\nline two from vi\n");
    assert!(kept_dirs(&home).is_empty(), "the private copy is removed");
}

#[test]
fn a_guest_that_blocks_guest_exec_gets_files_but_a_loud_mode_warning() {
    if !harness_available() {
        return;
    }
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        // guest-exec is blocked: no mkdir, so the file goes straight into /tmp.
        let path = format!(
            "/tmp/diq-noexec-{backend}-{}-{stamp}.conf",
            std::process::id()
        );
        let local = home.path().join("pushed");
        std::fs::write(&local, b"no exec here\r\n").unwrap();
        let out = bin(&home, backend)
            .args(["push", NO_EXEC, local.to_str().unwrap(), &path])
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "WARNING: {path} in \"{NO_EXEC}\" may be WORLD-WRITABLE"
            )) && err.contains(&format!("chmod 644 {path}")),
            "{backend}: {err}"
        );
        // The content landed byte-exact all the same.
        assert_eq!(guest_get(NO_EXEC, &path), b"no exec here\r\n");

        // An edit of an existing file needs no guest-exec at all: it works without a warning.
        let ed = editor(&home, "ed.sh", "printf 'edited\\n' >> \"$1\"");
        let out = bin(&home, backend)
            .env("EDITOR", &ed)
            .args(["edit", NO_EXEC, &path, "--yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("WARNING"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(guest_get(NO_EXEC, &path), b"no exec here\r\nedited\n");
    }
}
