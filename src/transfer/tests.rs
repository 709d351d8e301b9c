use super::testfs::{fake, lock, GuestFs, VM};
use super::*;
use crate::config::DEFAULT_MAX_SIZE;
use crate::term::interrupt::Cancel;

/// The default transfer with another size limit.
fn lim(limit: u64) -> Transfer {
    Transfer {
        limit,
        ..Transfer::default()
    }
}

fn agent(hv: &dyn Hypervisor) -> Agent<'_> {
    Agent::new(hv, VM, Duration::from_secs(1))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn count(hv: &crate::hypervisor::fake::FakeHypervisor, cmd: &str) -> usize {
    hv.agent_calls(VM)
        .iter()
        .filter(|r| r["execute"] == cmd)
        .count()
}

#[test]
fn chunk_boundaries_round_trip_byte_exact() {
    let per_read = CHUNK / WRITE_CHUNK;
    for (n, reads, writes) in [
        (0, 1, 0),
        (WRITE_CHUNK, 1, 1),
        (WRITE_CHUNK + 1, 1, 2),
        (CHUNK, 2, per_read),
        (CHUNK + 1, 2, per_read + 1),
    ] {
        let data = pattern(n);
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("new");
        std::fs::write(&local, &data).unwrap();
        let backup = dir.path().join("backup");
        std::fs::write(&backup, b"old\r\n").unwrap();
        let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", b"old\r\n"));
        let a = agent(&hv);
        let before = Before::Existing {
            backup: &backup,
            summary: Summary::of_bytes(b"old\r\n"),
        };
        let sum =
            replace_verified(&a, "/etc/f", &local, before, true, &lim(DEFAULT_MAX_SIZE)).unwrap();
        assert_eq!(sum, Summary::of_bytes(&data));
        assert_eq!(lock(&fs).files["/etc/f"], data, "{n} bytes");
        assert_eq!(count(&hv, "guest-file-write"), writes, "{n} bytes");

        hv.clear_calls();
        let writes_before = lock(&fs).writes();
        let mut out = Vec::new();
        let got = download(&a, "/etc/f", "r", &mut out, "x", &lim(DEFAULT_MAX_SIZE)).unwrap();
        assert_eq!(out, data);
        assert_eq!(got, sum);
        assert_eq!(
            lock(&fs).writes(),
            writes_before,
            "a download writes nothing"
        );
        assert_eq!(count(&hv, "guest-file-read"), reads, "{n} bytes");
        assert_eq!(lock(&fs).open_handles(), 0);
    }
}

#[test]
fn size_limit_is_checked_before_reading() {
    let (fs, hv) = fake(GuestFs::new().with_file("/big", &pattern(3 * CHUNK)));
    let err = download(
        &agent(&hv),
        "/big",
        "r",
        &mut Vec::new(),
        "x",
        &lim(2 * CHUNK as u64),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/big in \"vm\" is 3.0 MiB or more, above the limit of 2.0 MiB (raise it with --max-size)"
    );
    assert_eq!(count(&hv, "guest-file-read"), 0);
    assert_eq!(lock(&fs).open_handles(), 0);
}

#[test]
fn size_limit_holds_without_seek() {
    let mut g = GuestFs::new().with_file("/big", &pattern(3 * CHUNK));
    g.disabled.insert("guest-file-seek".into());
    let (_, hv) = fake(g);
    let err = download(
        &agent(&hv),
        "/big",
        "r",
        &mut Vec::new(),
        "x",
        &lim(2 * CHUNK as u64),
    )
    .unwrap_err();
    assert!(matches!(err, FileError::TooLarge { .. }), "{err}");
}

#[test]
fn directories_missing_files_and_denied_writes_are_named() {
    let mut g = GuestFs::new().with_file("/sys/notes", b"x");
    g.readonly.insert("/sys/notes".into());
    let (fs, hv) = fake(g);
    let a = agent(&hv);
    let e = download(&a, "/etc", "r", &mut Vec::new(), "x", &lim(10)).unwrap_err();
    assert_eq!(e.to_string(), "/etc is a directory in \"vm\", not a file");
    let e = download(&a, "/etc", "r+", &mut Vec::new(), "x", &lim(10)).unwrap_err();
    assert_eq!(e.to_string(), "/etc is a directory in \"vm\", not a file");
    let e = download(&a, "/nope", "r", &mut Vec::new(), "x", &lim(10)).unwrap_err();
    assert_eq!(e.to_string(), "/nope does not exist in \"vm\"");
    let e = download(&a, "/sys/notes", "r+", &mut Vec::new(), "x", &lim(10)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "permission denied inside \"vm\": cannot write /sys/notes"
    );
    assert_eq!(lock(&fs).open_handles(), 0);
}

#[test]
fn failure_mid_write_rolls_back_the_original() {
    let original = pattern(CHUNK + 10);
    let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", &original));
    lock(&fs).fail_write_call = Some(2);
    let dir = tempfile::tempdir().unwrap();
    let (new, backup) = (dir.path().join("new"), dir.path().join("backup"));
    std::fs::write(&new, pattern(3 * CHUNK)).unwrap();
    std::fs::write(&backup, &original).unwrap();
    let before = Before::Existing {
        backup: &backup,
        summary: Summary::of_bytes(&original),
    };
    let f = replace_verified(
        &agent(&hv),
        "/etc/f",
        &new,
        before,
        true,
        &lim(DEFAULT_MAX_SIZE),
    )
    .unwrap_err();
    assert!(
        f.cause.to_string().contains("No space left on device"),
        "{}",
        f.cause
    );
    assert_eq!(f.rollback, Rollback::Restored);
    assert_eq!(lock(&fs).files["/etc/f"], original);
    assert_eq!(lock(&fs).open_handles(), 0);
}

#[test]
fn a_lying_write_is_caught_by_read_back_and_rolled_back() {
    let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", b"a=1\n"));
    lock(&fs).lie_write_call = Some(1);
    let dir = tempfile::tempdir().unwrap();
    let (new, backup) = (dir.path().join("new"), dir.path().join("backup"));
    std::fs::write(&new, b"a=2\nb=3\n").unwrap();
    std::fs::write(&backup, b"a=1\n").unwrap();
    let before = Before::Existing {
        backup: &backup,
        summary: Summary::of_bytes(b"a=1\n"),
    };
    let f = replace_verified(
        &agent(&hv),
        "/etc/f",
        &new,
        before,
        true,
        &lim(DEFAULT_MAX_SIZE),
    )
    .unwrap_err();
    assert!(
        matches!(f.cause, FileError::VerifyMismatch { .. }),
        "{}",
        f.cause
    );
    assert_eq!(f.rollback, Rollback::Restored);
    assert_eq!(lock(&fs).files["/etc/f"], b"a=1\n");
}

#[test]
fn a_rollback_that_fails_says_so() {
    let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", b"a=1\n"));
    {
        let mut g = lock(&fs);
        g.fail_write_call = Some(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let (new, backup) = (dir.path().join("new"), dir.path().join("backup"));
    std::fs::write(&new, b"a=2\n").unwrap();
    std::fs::write(&backup, b"a=1\n").unwrap();
    // The backup is gone by the time the rollback needs it.
    let before = Before::Existing {
        backup: &dir.path().join("missing"),
        summary: Summary::of_bytes(b"a=1\n"),
    };
    let f = replace_verified(
        &agent(&hv),
        "/etc/f",
        &new,
        before,
        true,
        &lim(DEFAULT_MAX_SIZE),
    )
    .unwrap_err();
    assert!(matches!(f.rollback, Rollback::Failed(_)));
    assert!(f
        .rollback
        .describe("/etc/f")
        .starts_with("ROLLBACK FAILED, /etc/f may be damaged"));
}

#[test]
fn new_files_get_their_mode_before_content_or_a_warning() {
    let (fs, hv) = fake(GuestFs::new());
    let a = agent(&hv);
    assert_eq!(create_with_mode(&a, "/etc/new", 0o640, true).unwrap(), None);
    assert_eq!(lock(&fs).modes["/etc/new"], 0o640);
    assert_eq!(lock(&fs).exec_log, vec![vec!["chmod", "640", "/etc/new"]]);

    let reason = create_with_mode(&a, "/etc/other", 0o644, false)
        .unwrap()
        .unwrap();
    assert_eq!(lock(&fs).modes["/etc/other"], 0o666);
    let w = world_writable_warning(VM, "/etc/other", 0o644, &reason);
    assert!(
        w.starts_with("WARNING: /etc/other in \"vm\" may be WORLD-WRITABLE"),
        "{w}"
    );
    assert!(w.ends_with("chmod 644 /etc/other"), "{w}");
}

#[test]
fn a_failed_new_file_is_removed_again() {
    let (fs, hv) = fake(GuestFs::new());
    let a = agent(&hv);
    create_with_mode(&a, "/etc/new", 0o644, true).unwrap();
    lock(&fs).fail_write_call = Some(1);
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new");
    std::fs::write(&new, b"x").unwrap();
    let f = replace_verified(&a, "/etc/new", &new, Before::Missing, true, &lim(100)).unwrap_err();
    assert_eq!(f.rollback, Rollback::Removed);
    assert!(!lock(&fs).files.contains_key("/etc/new"));
}

#[test]
fn capability_check_names_disabled_commands() {
    let mut g = GuestFs::new();
    g.disabled.insert("guest-file-write".into());
    g.disabled.insert("guest-exec".into());
    let (_, hv) = fake(g);
    let needed: Vec<&str> = READ_COMMANDS
        .iter()
        .chain(WRITE_COMMANDS)
        .copied()
        .collect();
    let e = check_capabilities(&hv, VM, Duration::from_secs(1), &needed).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the guest agent of \"vm\" has guest-file-write disabled: allow it in the guest's qemu-ga settings (--allow-rpcs/--block-rpcs, e.g. in /etc/sysconfig/qemu-ga or /etc/qemu/qemu-ga.conf, then restart qemu-ga); nothing was changed"
    );
    let can_exec = check_capabilities(&hv, VM, Duration::from_secs(1), READ_COMMANDS).unwrap();
    assert!(!can_exec, "guest-exec is disabled");
}

#[test]
fn windows_paths_are_recognised() {
    assert!(is_windows_path(r"C:\nps.xml"));
    assert!(!is_windows_path("/etc/hosts"));
}

/// An upload whose write fails with EACCES after the file was opened (so truncated):
/// what was done decides the rollback, not the kind of error.
#[test]
fn a_write_denied_after_the_open_is_rolled_back() {
    let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", &pattern(3 * WRITE_CHUNK)));
    {
        let mut g = lock(&fs);
        g.fail_write_call = Some(2);
        g.fail_write_message = Some("failed to write to file: Permission denied".into());
    }
    let dir = tempfile::tempdir().unwrap();
    let (new, backup) = (dir.path().join("new"), dir.path().join("backup"));
    std::fs::write(&new, pattern(2 * WRITE_CHUNK + 7)).unwrap();
    std::fs::write(&backup, pattern(3 * WRITE_CHUNK)).unwrap();
    let before = Before::Existing {
        backup: &backup,
        summary: Summary::of_bytes(&pattern(3 * WRITE_CHUNK)),
    };
    let f = replace_verified(
        &agent(&hv),
        "/etc/f",
        &new,
        before,
        true,
        &Transfer::default(),
    )
    .unwrap_err();
    assert!(
        matches!(f.cause, FileError::PermissionDenied { .. }),
        "{}",
        f.cause
    );
    assert_eq!(f.rollback, Rollback::Restored, "the file was truncated");
    assert_eq!(lock(&fs).files["/etc/f"], pattern(3 * WRITE_CHUNK));
}

/// A local read error in the middle of an upload, after the guest file was truncated.
#[test]
fn a_local_read_error_mid_upload_is_rolled_back() {
    let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", b"original\n"));
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    std::fs::write(&backup, b"original\n").unwrap();
    // A directory opens for reading and fails on the first read: EISDIR mid-upload.
    let before = Before::Existing {
        backup: &backup,
        summary: Summary::of_bytes(b"original\n"),
    };
    let f = replace_verified(
        &agent(&hv),
        "/etc/f",
        dir.path(),
        before,
        true,
        &Transfer::default(),
    )
    .unwrap_err();
    assert!(matches!(f.cause, FileError::Local { .. }), "{}", f.cause);
    assert_eq!(f.rollback, Rollback::Restored);
    assert_eq!(lock(&fs).files["/etc/f"], b"original\n");
}

/// A local file that is a symbolic link is never read through.
#[test]
fn uploads_do_not_follow_a_link() {
    let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", b"original\n"));
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"root's secret\n").unwrap();
    let link = dir.path().join("new");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let backup = dir.path().join("backup");
    std::fs::write(&backup, b"original\n").unwrap();
    let before = Before::Existing {
        backup: &backup,
        summary: Summary::of_bytes(b"original\n"),
    };
    let f = replace_verified(
        &agent(&hv),
        "/etc/f",
        &link,
        before,
        true,
        &Transfer::default(),
    )
    .unwrap_err();
    assert!(matches!(f.cause, FileError::Local { .. }), "{}", f.cause);
    assert_eq!(f.rollback, Rollback::NotNeeded);
    assert_eq!(lock(&fs).files["/etc/f"], b"original\n");
    assert_eq!(lock(&fs).write_calls, 0);
}

fn interrupted_upload(second_at: Option<usize>) -> (UploadFailure, Vec<u8>) {
    let old = pattern(3 * WRITE_CHUNK);
    let (fs, hv) = fake(GuestFs::new().with_file("/etc/f", &old));
    let cancel = Cancel::none();
    {
        let c = cancel.clone();
        // Ctrl-C while the second chunk is written; a second one later, maybe.
        lock(&fs).on_write = Some(Box::new(move |n| {
            if n == 2 || Some(n) == second_at {
                c.raise(2);
            }
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let (new, backup) = (dir.path().join("new"), dir.path().join("backup"));
    std::fs::write(&new, pattern(3 * WRITE_CHUNK + 1)).unwrap();
    std::fs::write(&backup, &old).unwrap();
    let before = Before::Existing {
        backup: &backup,
        summary: Summary::of_bytes(&old),
    };
    let t = Transfer {
        cancel,
        ..Transfer::default()
    };
    let f = replace_verified(&agent(&hv), "/etc/f", &new, before, true, &t).unwrap_err();
    let now = lock(&fs).files["/etc/f"].clone();
    (f, now)
}

#[test]
fn an_interrupt_mid_upload_restores_the_original() {
    let (f, now) = interrupted_upload(None);
    assert!(
        matches!(
            f.cause,
            FileError::Interrupted {
                signal: "SIGINT (Ctrl-C)",
                ..
            }
        ),
        "{}",
        f.cause
    );
    assert_eq!(f.rollback, Rollback::Restored);
    assert_eq!(now, pattern(3 * WRITE_CHUNK));
}

#[test]
fn a_second_interrupt_abandons_the_restore_and_says_so() {
    // Writes 1-2 are the upload (stopped after 2), 3-… the restore: stop it at 4.
    let (f, now) = interrupted_upload(Some(4));
    assert_eq!(f.rollback, Rollback::Abandoned("SIGINT (Ctrl-C)"));
    assert!(!f.rollback.worked());
    assert!(f
        .rollback
        .describe("/etc/f")
        .starts_with("ROLLBACK ABANDONED by a second SIGINT (Ctrl-C): /etc/f may be damaged"));
    assert_ne!(now, pattern(3 * WRITE_CHUNK));
}

/// A guest whose reads never end (one byte, never eof) is stopped by the progress floor.
#[test]
fn a_read_that_never_ends_is_stopped_by_the_floor() {
    let mut g = GuestFs::new().with_file("/f", b"x");
    g.endless_reads = true;
    g.disabled.insert("guest-file-seek".into());
    let (_, hv) = fake(g);
    let t = Transfer {
        pace: Pace {
            budget: Duration::from_secs(30),
            min_rate: 1 << 20,
            window: Duration::from_millis(300),
        },
        ..Transfer::default()
    };
    let started = std::time::Instant::now();
    let e = download(&agent(&hv), "/f", "r", &mut io::sink(), "x", &t).unwrap_err();
    assert!(matches!(e, FileError::TooSlow { .. }), "{e}");
    assert!(
        e.to_string().contains("below the floor of 1.0 MiB/s"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Without a floor, the budget still ends it.
    let t = Transfer {
        pace: Pace {
            budget: Duration::from_millis(700),
            min_rate: 0,
            window: Duration::from_secs(30),
        },
        ..Transfer::default()
    };
    let e = download(&agent(&hv), "/f", "r", &mut io::sink(), "x", &t).unwrap_err();
    assert!(e.to_string().contains("did not finish within 0.7 s"), "{e}");
}

#[test]
fn a_count_that_disagrees_with_the_data_is_refused() {
    let mut g = GuestFs::new().with_file("/f", b"xx");
    g.lying_count = true;
    let (_, hv) = fake(g);
    let e = download(
        &agent(&hv),
        "/f",
        "r",
        &mut Vec::new(),
        "x",
        &Transfer::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("the reply says 3 bytes but carries 2 (asked for at most 1048576): refused"),
        "{e}"
    );
}
