use std::path::Path;
use std::sync::{Arc, Mutex};

use super::workspace::BACKUP_NAME;
use super::*;
use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
use crate::hypervisor::DomainState;
use crate::transfer::testfs::{fake, lock, GuestFs, VM};
use crate::transfer::CHUNK;

struct Scripted<F: FnMut(&Path) -> Result<(), String>> {
    f: F,
    calls: usize,
    seen: Vec<PathBuf>,
}

impl<F: FnMut(&Path) -> Result<(), String>> Editor for Scripted<F> {
    fn edit(&mut self, file: &Path) -> Result<(), String> {
        self.calls += 1;
        self.seen.push(file.to_path_buf());
        (self.f)(file)
    }
}

fn scripted<F: FnMut(&Path) -> Result<(), String>>(f: F) -> Scripted<F> {
    Scripted {
        f,
        calls: 0,
        seen: Vec::new(),
    }
}

fn never() -> Scripted<impl FnMut(&Path) -> Result<(), String>> {
    scripted(|_: &Path| -> Result<(), String> { panic!("the editor must not open") })
}

fn opts(path: &str) -> EditOptions {
    EditOptions {
        vm: VM.to_string(),
        remote_path: path.to_string(),
        local: None,
        yes: true,
        force: false,
        mode: DEFAULT_NEW_MODE,
        transfer: Transfer::default(),
        interactive: false,
        agent_timeout: Duration::from_secs(1),
    }
}

fn run(
    hv: &dyn Hypervisor,
    o: &EditOptions,
    ed: &mut dyn Editor,
    input: &str,
) -> (Result<EditDone, EditError>, String) {
    let mut inp = io::Cursor::new(input.as_bytes().to_vec());
    let mut out = Vec::new();
    let r = edit(hv, o, ed, &mut Prompter::new(&mut inp, &mut out));
    (r, String::from_utf8(out).unwrap())
}

fn replace_in(file: &Path, from: &str, to: &str) {
    let s = fs::read(file).unwrap();
    let t = String::from_utf8(s).unwrap().replacen(from, to, 1);
    fs::write(file, t).unwrap();
}

#[test]
fn a_change_lands_byte_exact_and_the_copy_goes() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/hosts", b"a\r\nb\r\nlast"));
    let mut ed = scripted(|f: &Path| {
        let meta = fs::metadata(f).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir = fs::metadata(f.parent().unwrap()).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        assert!(f.ends_with("hosts"), "{}", f.display());
        replace_in(f, "b\r\n", "c\r\n");
        Ok(())
    });
    let (r, out) = run(&hv, &opts("/etc/hosts"), &mut ed, "");
    assert!(r.is_ok(), "{r:?} {out}");
    assert_eq!(lock(&gfs).files["/etc/hosts"], b"a\r\nc\r\nlast");
    assert!(out.contains("\n-b\n+c\n"), "{out}");
    assert!(
        out.contains("(CRLF line endings, kept as they are)"),
        "{out}"
    );
    assert!(out.contains("verified by reading it back"), "{out}");
    assert!(!ed.seen[0].parent().unwrap().exists(), "temp dir removed");
    assert_eq!(lock(&gfs).open_handles(), 0);
}

#[test]
fn an_unchanged_edit_writes_nothing() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/hosts", b"a\n"));
    let writes = lock(&gfs).writes();
    let mut ed = scripted(|_: &Path| Ok(()));
    let (r, out) = run(&hv, &opts("/etc/hosts"), &mut ed, "");
    assert!(r.is_ok(), "{r:?}");
    assert!(out.contains("No changes: nothing uploaded."), "{out}");
    // The one writing open is the "r+" download that proves the file is writable.
    let g = lock(&gfs);
    assert_eq!(g.write_calls, 0);
    assert_eq!(g.write_opens, vec![("/etc/hosts".into(), "r+".into())]);
    assert_eq!(g.writes(), writes + 1);
    assert!(!ed.seen[0].parent().unwrap().exists());
}

#[test]
fn chunk_boundaries_through_the_editor() {
    for n in [0, CHUNK, CHUNK + 1] {
        let data: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        let (gfs, hv) = fake(GuestFs::new().with_file("/f", &data));
        let mut ed = scripted(|f: &Path| {
            let mut d = fs::read(f).unwrap();
            assert_eq!(d.len(), n);
            d.push(b'!');
            fs::write(f, d).unwrap();
            Ok(())
        });
        let (r, out) = run(&hv, &opts("/f"), &mut ed, "");
        assert!(r.is_ok(), "{r:?} {out}");
        let mut want = data.clone();
        want.push(b'!');
        assert_eq!(lock(&gfs).files["/f"], want, "{n} bytes");
    }
}

#[test]
fn a_conflict_keeps_the_guest_change_and_the_copy() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/app.conf", b"x=1\n"));
    let g2 = Arc::clone(&gfs);
    let mut ed = scripted(move |f: &Path| {
        fs::write(f, b"x=2\n").unwrap();
        lock(&g2)
            .files
            .insert("/etc/app.conf".into(), b"x=3 (someone else)\n".to_vec());
        Ok(())
    });
    let (r, out) = run(&hv, &opts("/etc/app.conf"), &mut ed, "");
    let f = r.unwrap_err();
    assert_eq!(f.exit_code(), exit::PARTIAL);
    let kept = ed.seen[0].display().to_string();
    assert!(
        f.to_string()
            .starts_with("/etc/app.conf in \"vm\" changed (sha256 "),
        "{}",
        f.to_string()
    );
    assert!(
        f.to_string().ends_with(&format!("while you were editing: not overwritten; your edited copy is kept at {kept} (--force overwrites)")),
        "{}",
        f.to_string()
    );
    assert_eq!(lock(&gfs).files["/etc/app.conf"], b"x=3 (someone else)\n");
    assert_eq!(fs::read(&ed.seen[0]).unwrap(), b"x=2\n");
    assert!(!ed.seen[0].parent().unwrap().join(BACKUP_NAME).exists());
    assert!(out.contains("+x=2"), "{out}");
    fs::remove_dir_all(ed.seen[0].parent().unwrap()).unwrap();
}

#[test]
fn force_overwrites_a_conflict() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/app.conf", b"x=1\n"));
    let g2 = Arc::clone(&gfs);
    let mut ed = scripted(move |f: &Path| {
        fs::write(f, b"x=2\n").unwrap();
        lock(&g2)
            .files
            .insert("/etc/app.conf".into(), b"x=3\n".to_vec());
        Ok(())
    });
    let o = EditOptions {
        force: true,
        ..opts("/etc/app.conf")
    };
    run(&hv, &o, &mut ed, "").0.unwrap();
    assert_eq!(lock(&gfs).files["/etc/app.conf"], b"x=2\n");
}

#[test]
fn failure_mid_write_rolls_back_and_keeps_the_copy() {
    let original: Vec<u8> = (0..CHUNK + 100).map(|i| b'a' + (i % 26) as u8).collect();
    let (gfs, hv) = fake(GuestFs::new().with_file("/var/big.txt", &original));
    lock(&gfs).fail_write_call = Some(2);
    let mut ed = scripted(|f: &Path| {
        let mut d = fs::read(f).unwrap();
        d.extend_from_slice(&vec![b'z'; CHUNK]);
        fs::write(f, d).unwrap();
        Ok(())
    });
    let (r, _) = run(&hv, &opts("/var/big.txt"), &mut ed, "");
    let f = r.unwrap_err();
    let kept = ed.seen[0].display().to_string();
    assert_eq!(
        f.to_string(),
        format!("upload to vm:/var/big.txt failed: guest agent command guest-file-write failed in \"vm\": failed to write to file: No space left on device; rollback worked: /var/big.txt has its original content again (verified by sha256); your edited copy is kept at {kept}")
    );
    assert_eq!(lock(&gfs).files["/var/big.txt"], original);
    assert_eq!(fs::read(&ed.seen[0]).unwrap().len(), 2 * CHUNK + 100);
    assert_eq!(lock(&gfs).open_handles(), 0);
    fs::remove_dir_all(ed.seen[0].parent().unwrap()).unwrap();
}

#[test]
fn a_failed_rollback_keeps_the_original_too() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/f", b"one\n"));
    let g2 = Arc::clone(&gfs);
    let mut ed = scripted(move |f: &Path| {
        fs::write(f, b"two\n").unwrap();
        // The upload's first write fails; the rollback's write then stores only half.
        let mut g = lock(&g2);
        g.fail_write_call = Some(1);
        Ok(())
    });
    // Make the rollback's write lie (stores half), so its verification fails.
    let g3 = Arc::clone(&gfs);
    let (r, _) = {
        let o = opts("/etc/f");
        let mut inp = io::Cursor::new(Vec::new());
        let mut out = Vec::new();
        struct Twice<'a, E: Editor>(&'a mut E, Arc<Mutex<GuestFs>>);
        impl<E: Editor> Editor for Twice<'_, E> {
            fn edit(&mut self, f: &Path) -> Result<(), String> {
                let r = self.0.edit(f);
                lock(&self.1).lie_write_call = Some(1);
                r
            }
        }
        let r = edit(
            &hv,
            &o,
            &mut Twice(&mut ed, g3),
            &mut Prompter::new(&mut inp, &mut out),
        );
        (r, out)
    };
    let f = r.unwrap_err();
    let dir = ed.seen[0].parent().unwrap();
    assert!(
        f.to_string()
            .contains("ROLLBACK FAILED, /etc/f may be damaged in the guest"),
        "{}",
        f.to_string()
    );
    assert!(
        f.to_string().contains(&format!(
            "the original is saved at {}",
            dir.join(BACKUP_NAME).display()
        )),
        "{}",
        f.to_string()
    );
    assert_eq!(fs::read(dir.join(BACKUP_NAME)).unwrap(), b"one\n");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn editor_failures_upload_nothing() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/f", b"one\n"));
    let mut ed = scripted(|_: &Path| Err("editor \"nano\" exited with status 1".to_string()));
    let (r, _) = run(&hv, &opts("/etc/f"), &mut ed, "");
    assert_eq!(
        r.unwrap_err().to_string(),
        "editor \"nano\" exited with status 1; nothing uploaded"
    );
    assert!(
        !ed.seen[0].parent().unwrap().exists(),
        "an unedited copy is not kept"
    );
    assert_eq!(lock(&gfs).write_calls, 0);

    // An editor that saved something and then failed: the work is kept.
    let mut ed = scripted(|f: &Path| {
        fs::write(f, b"half done\n").unwrap();
        Err("editor \"vi\" exited with status 1".to_string())
    });
    let (r, _) = run(&hv, &opts("/etc/f"), &mut ed, "");
    let msg = r.unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "editor \"vi\" exited with status 1; nothing uploaded; your edited copy is kept at {}",
            ed.seen[0].display()
        )
    );
    assert_eq!(lock(&gfs).write_calls, 0);
    assert_eq!(lock(&gfs).files["/etc/f"], b"one\n");
    fs::remove_dir_all(ed.seen[0].parent().unwrap()).unwrap();
}

#[test]
fn the_real_editor_reports_missing_and_failing_programs() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    fs::write(&f, "x").unwrap();
    let mut e = ExternalEditor {
        argv: vec!["/nonexistent/editor".into()],
    };
    assert_eq!(
        e.edit(&f).unwrap_err(),
        "editor \"/nonexistent/editor\" not found: install it or set VISUAL or EDITOR"
    );
    let mut e = ExternalEditor {
        argv: vec!["false".into()],
    };
    assert_eq!(
        e.edit(&f).unwrap_err(),
        "editor \"false\" exited with status 1"
    );
    let mut e = ExternalEditor {
        argv: vec!["sh".into(), "-c".into(), "printf 'y' >> \"$0\"".into()],
    };
    e.edit(&f).unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"xy");
}

#[test]
fn editor_command_follows_visual_editor_nano_vi() {
    let yes = |_: &str| true;
    let no = |_: &str| false;
    assert_eq!(
        editor_argv(Some("code --wait"), Some("vim"), &yes).unwrap(),
        ["code", "--wait"]
    );
    assert_eq!(
        editor_argv(Some(""), Some("emacs -nw"), &yes).unwrap(),
        ["emacs", "-nw"]
    );
    assert_eq!(
        editor_argv(None, Some("'/opt/my editor/bin/ed' --flag=\"a b\""), &yes).unwrap(),
        ["/opt/my editor/bin/ed", "--flag=a b"]
    );
    assert_eq!(editor_argv(None, None, &yes).unwrap(), ["nano"]);
    assert_eq!(editor_argv(None, Some("  "), &no).unwrap(), ["vi"]);
    assert!(editor_argv(Some("vim 'unclosed"), None, &yes)
        .unwrap_err()
        .contains("$VISUAL"));
}

#[test]
fn disabled_commands_refuse_before_the_editor() {
    let mut g = GuestFs::new().with_file("/etc/f", b"x");
    g.disabled.insert("guest-file-write".into());
    let (_, hv) = fake(g);
    let (r, _) = run(&hv, &opts("/etc/f"), &mut never(), "");
    let f = r.unwrap_err();
    assert!(f.to_string().starts_with("the guest agent of \"vm\" has guest-file-write disabled: allow it in the guest's qemu-ga settings (--allow-rpcs/--block-rpcs"), "{}", f.to_string());
}

#[test]
fn directories_denied_files_unknown_and_stopped_vms_are_one_line() {
    let mut g = GuestFs::new().with_file("/sys/kernel/notes", b"\0\x01");
    g.readonly.insert("/sys/kernel/notes".into());
    let (gfs, hv) = fake(g);
    let hv = hv
        .with_domain(FakeDomain::new("off", DomainState::ShutOff))
        .with_domain(FakeDomain::new("noagent", DomainState::Running));
    for (vm, path, want) in [
        (VM, "/etc", "/etc is a directory in \"vm\", not a file"),
        (VM, "/sys/kernel/notes", "permission denied inside \"vm\": cannot write /sys/kernel/notes"),
        ("nope", "/etc/f", "no VM named \"nope\" on this connection (`dismount_iso_qemu scan` lists them)"),
        ("off", "/etc/f", "VM \"off\" is shut off: files move through its guest agent, so it must be running"),
        ("noagent", "/etc/f", "the guest agent of \"noagent\" is not connected (is qemu-guest-agent running inside the guest?)"),
    ] {
        let o = EditOptions { vm: vm.into(), ..opts(path) };
        let (r, out) = run(&hv, &o, &mut never(), "");
        let f = r.unwrap_err();
        assert_eq!(f.to_string(), want);
        assert!(!f.to_string().contains('\n'));
        assert_eq!(out, "");
    }
    assert_eq!(lock(&gfs).write_calls, 0);
    assert_eq!(lock(&gfs).open_handles(), 0);
}

#[test]
fn a_new_file_is_asked_for_and_gets_its_mode() {
    let (gfs, hv) = fake(GuestFs::new());
    // Interactive, answered "no": nothing is created.
    let o = EditOptions {
        yes: false,
        interactive: true,
        ..opts("/etc/new.conf")
    };
    let (r, out) = run(&hv, &o, &mut never(), "n\n");
    assert!(r.is_ok(), "{r:?}");
    assert!(
        out.contains("/etc/new.conf does not exist in \"vm\". Create it? [y/N]"),
        "{out}"
    );
    assert!(!lock(&gfs).files.contains_key("/etc/new.conf"));

    // Non-interactive without --yes: refused.
    let o = EditOptions {
        yes: false,
        ..opts("/etc/new.conf")
    };
    let (r, _) = run(&hv, &o, &mut never(), "");
    assert_eq!(
        r.unwrap_err().to_string(),
        "/etc/new.conf does not exist in \"vm\"; pass --yes to create it"
    );

    // --yes with --mode 600: created, chmod before content.
    let mut ed = scripted(|f: &Path| {
        assert_eq!(fs::read(f).unwrap(), b"");
        fs::write(f, b"k=v\n").unwrap();
        Ok(())
    });
    let o = EditOptions {
        mode: 0o600,
        ..opts("/etc/new.conf")
    };
    let (r, _) = run(&hv, &o, &mut ed, "");
    assert!(r.is_ok(), "{r:?}");
    let g = lock(&gfs);
    assert_eq!(g.files["/etc/new.conf"], b"k=v\n");
    assert_eq!(g.modes["/etc/new.conf"], 0o600);
    assert_eq!(g.exec_log, vec![vec!["chmod", "600", "/etc/new.conf"]]);
}

#[test]
fn a_new_file_without_guest_exec_is_a_loud_warning() {
    let mut g = GuestFs::new();
    g.disabled.insert("guest-exec".into());
    let (gfs, hv) = fake(g);
    let mut ed = scripted(|f: &Path| fs::write(f, b"k=v\n").map_err(|e| e.to_string()));
    let (r, out) = run(&hv, &opts("/etc/new.conf"), &mut ed, "");
    assert!(r.is_ok(), "{r:?}");
    assert!(out.contains("WARNING: /etc/new.conf in \"vm\" may be WORLD-WRITABLE (qemu-ga creates files with mode 0666, whatever the umask) and its mode could not be set (guest-exec is disabled in the guest agent). Fix it inside the guest: chmod 644 /etc/new.conf"), "{out}");
    assert_eq!(lock(&gfs).modes["/etc/new.conf"], 0o666);
}

#[test]
fn questions_y_n_e_and_non_interactive_refusal() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/f", b"1\n"));
    let mut n = 0;
    let mut ed = scripted(move |f: &Path| {
        n += 1;
        fs::write(f, format!("{n}+\n")).unwrap();
        Ok(())
    });
    let o = EditOptions {
        yes: false,
        interactive: true,
        ..opts("/etc/f")
    };
    let (r, out) = run(&hv, &o, &mut ed, "what\ne\ny\n");
    assert!(r.is_ok(), "{r:?} {out}");
    assert_eq!(ed.calls, 2);
    assert!(out.contains("Please answer y, n or e."));
    assert_eq!(lock(&gfs).files["/etc/f"], b"2+\n");

    // "n": nothing uploaded, copy kept.
    let mut ed = scripted(|f: &Path| fs::write(f, b"other\n").map_err(|e| e.to_string()));
    let (r, out) = run(&hv, &o, &mut ed, "n\n");
    assert!(r.is_ok(), "{r:?}");
    assert!(
        out.contains(&format!(
            "Not uploaded; /etc/f in \"vm\" is unchanged. Your edited copy is kept at {}",
            ed.seen[0].display()
        )),
        "{out}"
    );
    assert_eq!(lock(&gfs).files["/etc/f"], b"2+\n");
    fs::remove_dir_all(ed.seen[0].parent().unwrap()).unwrap();

    // Not a terminal and no --yes.
    let o = EditOptions {
        yes: false,
        ..opts("/etc/f")
    };
    let mut ed = scripted(|f: &Path| fs::write(f, b"third\n").map_err(|e| e.to_string()));
    let (r, _) = run(&hv, &o, &mut ed, "y\n");
    let msg = r.unwrap_err().to_string();
    assert_eq!(msg, format!("stdin is not a terminal and --yes was not given, so there is nobody to confirm the upload; nothing uploaded; your edited copy is kept at {}", ed.seen[0].display()));
    assert_eq!(lock(&gfs).files["/etc/f"], b"2+\n");
    fs::remove_dir_all(ed.seen[0].parent().unwrap()).unwrap();
}

#[test]
fn an_existing_local_path_is_not_clobbered() {
    let (gfs, hv) = fake(GuestFs::new().with_file("/etc/f", b"guest\n"));
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine.txt");
    fs::write(&mine, b"my precious notes\n").unwrap();
    // --yes does not count as permission to overwrite the user's file.
    let o = EditOptions {
        local: Some(mine.clone()),
        ..opts("/etc/f")
    };
    let (r, _) = run(&hv, &o, &mut never(), "");
    assert!(r.unwrap_err().to_string().ends_with("mine.txt already exists: not overwriting it (choose another --local path or remove it); nothing was changed"));
    assert_eq!(fs::read(&mine).unwrap(), b"my precious notes\n");

    // Interactive and agreed: used, edited, uploaded, and left in place.
    let o = EditOptions {
        local: Some(mine.clone()),
        interactive: true,
        ..opts("/etc/f")
    };
    let mut ed = scripted(|f: &Path| fs::write(f, b"guest!\n").map_err(|e| e.to_string()));
    let (r, out) = run(&hv, &o, &mut ed, "y\n");
    assert!(r.is_ok(), "{r:?} {out}");
    assert_eq!(ed.seen[0], mine);
    assert_eq!(lock(&gfs).files["/etc/f"], b"guest!\n");
    assert_eq!(fs::read(&mine).unwrap(), b"guest!\n");
}

/// A link planted where the local copy goes (dangling, or to a file root owns) is
/// refused: root must not create or overwrite its target with guest bytes.
#[test]
fn a_symlink_as_the_local_path_is_refused() {
    let (_, hv) = fake(GuestFs::new().with_file(
        "/etc/f",
        b"guest bytes
",
    ));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("shadow");
    let link = dir.path().join("copy.txt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for interactive in [false, true] {
        let o = EditOptions {
            local: Some(link.clone()),
            interactive,
            ..opts("/etc/f")
        };
        let (r, _) = run(&hv, &o, &mut never(), "y\n");
        let e = r.unwrap_err().to_string();
        assert!(e.ends_with("copy.txt is a symbolic link: refusing to write the guest's file through it (give the real path); nothing was changed"), "{e}");
        assert!(!target.exists(), "the link's target was not created");
    }
    std::fs::write(&target, b"root only\n").unwrap();
    let o = EditOptions {
        local: Some(link.clone()),
        interactive: true,
        ..opts("/etc/f")
    };
    let (r, _) = run(&hv, &o, &mut never(), "y\n");
    assert!(r.is_err());
    assert_eq!(fs::read(&target).unwrap(), b"root only\n");
}

/// The preview as the prompter shows it: each line escaped.
fn shown(lines: Vec<String>) -> String {
    let mut inp = io::Cursor::new(Vec::new());
    let mut out = Vec::new();
    let mut p = Prompter::new(&mut inp, &mut out);
    for l in lines {
        p.say(&l).unwrap();
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn binary_previews_show_sizes_and_hashes() {
    let out = shown(preview("vm", "/bin/x", b"\0\x01", b"\0\x02\x03"));
    assert!(
        out.starts_with("Binary content, no diff: 2 B (sha256 "),
        "{out}"
    );
    assert!(out.contains(") in the guest -> 3 B (sha256 "), "{out}");
}

#[test]
fn previews_are_terminal_safe_and_show_line_ending_changes() {
    let out = shown(preview("vm", "/f", b"a\nb\n", b"a\n\x1b[31mb\n"));
    assert!(out.contains("+\\x1b[31mb\n"), "{out}");
    assert!(!out.contains('\x1b'));
    let out = shown(preview("vm", "/f", b"a\r\nb\r\n", b"a\r\nb\n"));
    assert!(out.contains("-b\\x0d\n+b\n"), "{out}");
    let out = shown(preview("vm", "/f", b"a", b"a\n"));
    assert!(
        out.contains("-a\n\\ No newline at end of file\n+a\n"),
        "{out}"
    );
}

#[test]
fn modes_and_local_names() {
    assert_eq!(parse_mode("0644").unwrap(), 0o644);
    assert_eq!(parse_mode("600").unwrap(), 0o600);
    assert!(parse_mode("0999").is_err());
    assert!(parse_mode("").is_err());
    assert_eq!(local_name(r"C:\nps.xml"), "nps.xml");
    assert_eq!(local_name("/etc/hosts"), "hosts");
    assert_eq!(local_name("/etc/we\x1bird name"), "we_ird_name");
    assert_eq!(local_name("/"), "file");
    assert_eq!(local_name("/x/.."), "file");
    let _ = FakeHypervisor::new();
}
