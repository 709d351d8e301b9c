//! Faults on the real harness: interrupts in the middle of an upload, a second interrupt
//! during the rollback, a full local disk, libvirt going away in the middle of a scan.
//! Nothing may be lost, nothing may hang, and every ending is one clear line.
//!
//! The guest is diq-media-a (an honest qemu-ga); these tests only touch files under a
//! scratch directory of its /tmp, and run one at a time.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::child::*;
use common::cut_proxy::CutProxy;
use common::guest::*;
use common::*;

const VM: &str = "diq-media-a";

#[test]
fn an_interrupt_mid_push_puts_the_original_back() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    for (sig, name) in [
        (libc::SIGINT, "SIGINT (Ctrl-C)"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGHUP, "SIGHUP (the terminal went away)"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let dir = GuestDir::new(VM, "fault");
        let f = dir.file("data.bin");
        let original = pattern(64 << 10, 1);
        guest_put(VM, &f, &original);
        let local = home.path().join("new.bin");
        std::fs::write(&local, pattern(6 << 20, 2)).unwrap();
        let t0 = Instant::now();
        let child = spawn(
            home.path(),
            "native",
            &["push", VM, local.to_str().unwrap(), &f],
        );
        wait_until_changed(VM, &f, &original, Duration::from_secs(30));
        signal(&child, sig);
        let (code, out, err) = finish(child, Duration::from_secs(60));
        eprintln!("{name}: {:.1} s: {err}", t0.elapsed().as_secs_f64());
        assert_eq!(code, 1, "{name}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains(&format!("was stopped by {name}")),
            "{name}: {err}"
        );
        assert!(
            err.contains("rollback worked:")
                && err.contains("original content again (verified by sha256)"),
            "{name}: {err}"
        );
        assert_eq!(
            guest_sha(VM, &f),
            local_sha(&original),
            "{name}: the original is back"
        );
        assert!(!err.chars().any(|c| c.is_control() && c != '\n'));
    }
}

#[test]
fn a_second_interrupt_abandons_the_rollback_and_leaves_a_record() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let log = UnixDatagram::bind(home.path().join("log")).unwrap();
    log.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let dir = GuestDir::new(VM, "fault");
    let f = dir.file("big.bin");
    let original = pattern(6 << 20, 3);
    // Put the original in place with the tool itself (it is large).
    let seed = home.path().join("original.bin");
    std::fs::write(&seed, &original).unwrap();
    let (code, _, err) = finish(
        spawn(
            home.path(),
            "native",
            &["push", VM, seed.to_str().unwrap(), &f],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{err}");
    let local = home.path().join("new.bin");
    std::fs::write(&local, pattern(6 << 20, 4)).unwrap();

    let child = spawn(
        home.path(),
        "native",
        &["push", VM, local.to_str().unwrap(), &f],
    );
    wait_until_changed(VM, &f, &original, Duration::from_secs(60));
    signal(&child, libc::SIGINT);
    // The rollback writes 6 MiB back: interrupt it too.
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, libc::SIGINT);
    let (code, _, err) = finish(child, Duration::from_secs(120));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("ROLLBACK ABANDONED by a second SIGINT (Ctrl-C)"),
        "{err}"
    );
    assert!(err.contains("the original is saved at "), "{err}");
    assert!(err.contains("recovery record written: "), "{err}");

    // The system log got the audit line and the recovery line.
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = log.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(lines.iter().any(|l| l.contains("action=push")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("recovery needed: diq-media-a:")),
        "{lines:?}"
    );

    // Every later run reminds of it, until it is dealt with.
    let (code, out, err) = finish(
        spawn(home.path(), "native", &["recovery"]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("recovery needed: {VM}:{f}")), "{out}");
    let id = out
        .split("recovery --done ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let (_, _, err) = finish(
        spawn(home.path(), "native", &["isos"]),
        Duration::from_secs(30),
    );
    assert!(err.contains("recovery needed"), "{err}");
    let (code, out, _) = finish(
        spawn(home.path(), "native", &["recovery", "--done", &id]),
        Duration::from_secs(30),
    );
    assert_eq!(code, 0);
    assert!(out.contains("marked dealt with"), "{out}");
    let (_, _, err) = finish(
        spawn(home.path(), "native", &["isos"]),
        Duration::from_secs(30),
    );
    assert!(!err.contains("recovery needed"), "{err}");
}

/// A command run with a small tmpfs as its local disk, in a mount namespace of its own
/// (the host's mounts are not touched).
fn on_small_disk(home: &Path, disk: &Path, args: &[&str]) -> (i32, String, String) {
    std::fs::create_dir_all(disk).unwrap();
    let exe = env!("CARGO_BIN_EXE_dismount_iso_qemu");
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=1m tmpfs "$1" && shift && "$@"; rc=$?; echo "left: $(ls -A "$0" | tr '\n' ' ')" >&2; exit $rc"#)
        .arg(disk)
        .arg(disk)
        .arg(exe)
        .args(["-c", harness_uri(), "--backend", "native"])
        .args(args);
    for (k, v) in [
        ("XDG_CACHE_HOME", home.to_path_buf()),
        ("XDG_CONFIG_HOME", home.to_path_buf()),
        ("TMPDIR", disk.to_path_buf()),
        ("DISMOUNT_ISO_QEMU_STATE_DIR", home.join("state")),
    ] {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_full_local_disk_is_one_line_and_changes_nothing() {
    if !harness_available() || !require(on_path("unshare"), "unshare", "it comes with util-linux") {
        return;
    }
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let disk = home.path().join("disk");
    let dir = GuestDir::new(VM, "fault");
    let f = dir.file("large.bin");
    let data = pattern(3 << 20, 5);
    let seed = home.path().join("seed.bin");
    std::fs::write(&seed, &data).unwrap();
    let (code, _, err) = finish(
        spawn(
            home.path(),
            "native",
            &["push", VM, seed.to_str().unwrap(), &f],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{err}");

    // pull into a 1 MiB disk: no space, no half file left behind.
    let target = disk.join("large.bin");
    let (code, out, err) = on_small_disk(
        home.path(),
        &disk,
        &["pull", VM, &f, target.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("left: \n") || err.ends_with("left: \n"),
        "{err}"
    );

    // edit whose private backup does not fit: refused before any editor, guest intact.
    let (code, _, err) = on_small_disk(home.path(), &disk, &["edit", VM, &f, "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(guest_sha(VM, &f), local_sha(&data));
}

#[test]
fn libvirt_going_away_mid_scan_is_one_clear_line() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let scan = |uri: &str| {
            let child = tool_process(home.path())
                .args(["-c", uri, "--backend", backend, "--probe-timeout", "5"])
                .args(["scan", "--no-cache"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let t0 = Instant::now();
            let (code, out, err) = finish(child, Duration::from_secs(60));
            (code, out, err, t0.elapsed())
        };
        // Whole scans through an uncut proxy measure the conversation (the smaller of
        // two: a guest's answers may differ in size between scans)...
        let bytes = (0..2)
            .map(|_| {
                let full = CutProxy::start(home.path(), u64::MAX);
                let (code, out, err, _) = scan(&full.uri());
                assert_eq!(code, 0, "{out}{err}");
                full.served()
            })
            .min()
            .unwrap();
        // ...then libvirt goes away a quarter and half of the way through.
        for cut in [bytes / 4, bytes / 2] {
            let proxy = CutProxy::start(home.path(), cut);
            let (code, out, err, took) = scan(&proxy.uri());
            eprintln!(
                "{backend}: cut after {cut} of {bytes} bytes: exit {code} after {:.1} s\n{out}{err}",
                took.as_secs_f64()
            );
            assert!(!err.contains("panicked"), "{err}");
            assert!(!format!("{out}{err}")
                .chars()
                .any(|c| c.is_control() && c != '\n'));
            assert!(took < Duration::from_secs(30), "bounded by the deadlines");
            // Not a table of blanks with a warning per VM: one line, exit 2.
            assert_eq!(
                code, 2,
                "a scan that lost libvirt does not claim success:\n{out}{err}"
            );
            assert!(out.is_empty(), "{out}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("cannot reach libvirt at "), "{err}");
        }
    }
}
