use super::testfs::{fake, lock, GuestFs, VM};
use super::*;
use crate::config::DEFAULT_MAX_SIZE;

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
        let sum = replace_verified(
            &a,
            "/etc/f",
            &local,
            before,
            DEFAULT_MAX_SIZE,
            true,
            &ProgressSink::none(),
        )
        .unwrap();
        assert_eq!(sum, Summary::of_bytes(&data));
        assert_eq!(lock(&fs).files["/etc/f"], data, "{n} bytes");
        assert_eq!(count(&hv, "guest-file-write"), writes, "{n} bytes");

        hv.clear_calls();
        let writes_before = lock(&fs).writes();
        let mut out = Vec::new();
        let got = download(
            &a,
            "/etc/f",
            "r",
            &mut out,
            DEFAULT_MAX_SIZE,
            "x",
            &ProgressSink::none(),
        )
        .unwrap();
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
        2 * CHUNK as u64,
        "x",
        &ProgressSink::none(),
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
        2 * CHUNK as u64,
        "x",
        &ProgressSink::none(),
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
    let e = download(
        &a,
        "/etc",
        "r",
        &mut Vec::new(),
        10,
        "x",
        &ProgressSink::none(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "/etc is a directory in \"vm\", not a file");
    let e = download(
        &a,
        "/etc",
        "r+",
        &mut Vec::new(),
        10,
        "x",
        &ProgressSink::none(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "/etc is a directory in \"vm\", not a file");
    let e = download(
        &a,
        "/nope",
        "r",
        &mut Vec::new(),
        10,
        "x",
        &ProgressSink::none(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "/nope does not exist in \"vm\"");
    let e = download(
        &a,
        "/sys/notes",
        "r+",
        &mut Vec::new(),
        10,
        "x",
        &ProgressSink::none(),
    )
    .unwrap_err();
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
        DEFAULT_MAX_SIZE,
        true,
        &ProgressSink::none(),
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
        DEFAULT_MAX_SIZE,
        true,
        &ProgressSink::none(),
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
        DEFAULT_MAX_SIZE,
        true,
        &ProgressSink::none(),
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
        w.starts_with("WARNING: /etc/other in \"vm\" was created WORLD-WRITABLE"),
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
    let f = replace_verified(
        &a,
        "/etc/new",
        &new,
        Before::Missing,
        100,
        true,
        &ProgressSink::none(),
    )
    .unwrap_err();
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
