//! The VM under a command goes away or freezes: destroyed in the middle of a push or
//! while the editor is open, frozen in the middle of an upload. And exact addressing: a
//! VM whose name is the numeric id of another running VM gets every command, never the
//! other one (virsh tries a name as an id first).
//!
//! Each test boots guests of its own (transient copies of diq-media-a, see
//! tests/common/scratch_vm.rs): the shared guests are never destroyed or frozen.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::child::*;
use common::cut_proxy::CutProxy;
use common::guest::*;
use common::scratch_vm::ScratchVm;
use common::*;

/// The line of `err` that names a local path after `marker`, and that path.
fn path_after(err: &str, marker: &str) -> Option<PathBuf> {
    let rest = err.split(marker).nth(1)?;
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ';' || c == ',' || c == ')')
        .unwrap_or(rest.len());
    Some(PathBuf::from(rest[..end].trim_end_matches('.')))
}

fn recovery_records(home: &Path) -> usize {
    std::fs::read_dir(home.join("state"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_vm_destroyed_mid_push_leaves_the_original_safe_and_said_where() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    for backend in BACKENDS {
        let vm = ScratchVm::boot(&format!("push-{backend}"));
        let home = tempfile::tempdir().unwrap();
        let dir = GuestDir::new(vm.name, "gone");
        let f = dir.file("data.bin");
        let original = pattern(64 << 10, 7);
        guest_put(vm.name, &f, &original);
        let local = home.path().join("new.bin");
        std::fs::write(&local, pattern(6 << 20, 8)).unwrap();

        let child = spawn(
            home.path(),
            backend,
            &["push", vm.name, local.to_str().unwrap(), &f],
        );
        wait_until_changed(vm.name, &f, &original, Duration::from_secs(60));
        vm.destroy();
        let t0 = Instant::now();
        let (code, out, err) = finish(child, Duration::from_secs(120));
        let took = t0.elapsed();
        eprintln!(
            "{backend}: exit {code} {:.1} s after the VM was destroyed: {err}",
            took.as_secs_f64()
        );
        assert_eq!(code, 1, "{err}");
        assert!(out.is_empty(), "{out}");
        assert!(took < Duration::from_secs(15), "{took:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("ROLLBACK FAILED"), "{err}");
        // The original bytes are on the host, where the message says.
        let kept = path_after(&err, "the original is saved at ")
            .unwrap_or_else(|| panic!("no path of the original in: {err}"));
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            original,
            "{}",
            kept.display()
        );
        assert!(err.contains("recovery record written: "), "{err}");
        assert_eq!(recovery_records(home.path()), 1);
        // The user's file is untouched.
        assert_eq!(std::fs::read(&local).unwrap().len(), 6 << 20);
    }
}

#[test]
fn a_vm_destroyed_while_the_editor_is_open_keeps_the_edit() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    for backend in BACKENDS {
        let vm = ScratchVm::boot(&format!("edit-{backend}"));
        let home = tempfile::tempdir().unwrap();
        let dir = GuestDir::new(vm.name, "gone");
        let f = dir.file("app.conf");
        guest_put(vm.name, &f, b"port = 80\n");
        // The editor pulls the plug on the VM, then saves the user's work.
        let editor = home.path().join("editor.sh");
        std::fs::write(
            &editor,
            format!(
                "#!/bin/sh\nvirsh -q -c '{}' destroy '{}' >/dev/null 2>&1\nprintf 'port = 8080\\n' > \"$1\"\n",
                harness_uri(),
                vm.name
            ),
        )
        .unwrap();
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t0 = Instant::now();
        let out = tool_process(home.path())
            .args(["-c", harness_uri(), "--backend", backend])
            .args(["edit", vm.name, &f, "--yes"])
            .env("EDITOR", &editor)
            .env("DISMOUNT_ISO_QEMU_STATE_DIR", home.path().join("state"))
            .env("DISMOUNT_ISO_QEMU_SYSLOG_SOCKET", home.path().join("log"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "{backend}: exit {:?} after {:.1} s: {err}",
            out.status.code(),
            t0.elapsed().as_secs_f64()
        );
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let copy = path_after(&err, "your edited copy is kept at ")
            .or_else(|| path_after(&err, "your copy is at "))
            .unwrap_or_else(|| panic!("no path of the edited copy in: {err}"));
        assert_eq!(std::fs::read(&copy).unwrap(), b"port = 8080\n");
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn an_agent_frozen_mid_push_costs_the_deadline_not_more() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    let vm = ScratchVm::boot("frozen");
    let home = tempfile::tempdir().unwrap();
    let dir = GuestDir::new(vm.name, "frozen");
    let f = dir.file("data.bin");
    let original = pattern(64 << 10, 9);
    guest_put(vm.name, &f, &original);
    let local = home.path().join("new.bin");
    std::fs::write(&local, pattern(6 << 20, 10)).unwrap();

    const BUDGET: u64 = 15;
    let child = spawn(
        home.path(),
        "native",
        &[
            "--transfer-timeout",
            &BUDGET.to_string(),
            "push",
            vm.name,
            local.to_str().unwrap(),
            &f,
        ],
    );
    wait_until_changed(vm.name, &f, &original, Duration::from_secs(60));
    vm.suspend();
    let t0 = Instant::now();
    let (code, out, err) = finish(child, Duration::from_secs(4 * BUDGET));
    let took = t0.elapsed();
    vm.resume();
    eprintln!(
        "exit {code} {:.1} s after the guest froze: {err}",
        took.as_secs_f64()
    );
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    // The upload's deadline, then the rollback's own (which gives up on a frozen agent).
    assert!(
        took < Duration::from_secs(2 * BUDGET + 10),
        "{took:?} for a {BUDGET} s transfer deadline"
    );
    assert!(
        err.contains("ROLLBACK FAILED") || err.contains("rollback worked"),
        "{err}"
    );
    if err.contains("ROLLBACK FAILED") {
        let kept = path_after(&err, "the original is saved at ")
            .unwrap_or_else(|| panic!("no path of the original in: {err}"));
        assert_eq!(std::fs::read(&kept).unwrap(), original);
        assert_eq!(recovery_records(home.path()), 1);
    } else {
        assert_eq!(guest_sha(vm.name, &f), local_sha(&original));
    }
}

/// The sources in a VM's drives, as virsh lists them (`target source` lines).
fn blklist(vm: &str) -> String {
    let out = std::process::Command::new("virsh")
        .env("LC_ALL", "C")
        .args(["-c", harness_uri(), "domblklist", vm])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_vm_named_like_another_vms_id_gets_every_command() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    // A running shared guest, and a scratch VM named after its domain id.
    let other = "diq-media-b";
    let out = std::process::Command::new("virsh")
        .args(["-c", harness_uri(), "domid", other])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.parse::<u32>().is_ok(), "domid of {other}: {id:?}");
    let twin = ScratchVm::boot_named(&id);
    // The test's own raw calls address the twin by UUID (virsh would take "42" as an id).
    let t = twin.uuid;
    let home = tempfile::tempdir().unwrap();
    // One scratch path, in both guests.
    let dir = GuestDir::new(t, "twin");
    guest_text(other, &format!("mkdir -p '{}'", dir.path));
    let _other_dir = GuestDir {
        vm: other,
        path: dir.path.clone(),
    };
    let blk_before = blklist(other);
    let iso = blk_before
        .lines()
        .find_map(|l| l.trim().strip_prefix("sda").map(str::trim))
        .filter(|s| s.starts_with('/'))
        .expect("diq-media-b holds the harness ISO in sda")
        .to_string();

    for backend in BACKENDS {
        let tf = dir.file(&format!("who-{backend}"));
        guest_put(t, &tf, b"twin\n");
        guest_put(other, &tf, b"other\n");
        let run = |args: &[&str]| {
            let out = tool_on_harness(home.path(), backend)
                .args(args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{backend} {args:?}: {err}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };

        assert_eq!(run(&["cat", &id, &tf]), "twin\n", "{backend}: cat");

        let pulled = home.path().join(format!("pulled-{backend}"));
        run(&["pull", &id, &tf, pulled.to_str().unwrap()]);
        assert_eq!(
            std::fs::read(&pulled).unwrap(),
            b"twin\n",
            "{backend}: pull"
        );

        let local = home.path().join(format!("push-{backend}"));
        std::fs::write(&local, b"pushed\n").unwrap();
        run(&["push", &id, local.to_str().unwrap(), &tf]);
        assert_eq!(guest_get(t, &tf), b"pushed\n", "{backend}: push");

        let editor = home.path().join("append.sh");
        std::fs::write(&editor, "#!/bin/sh\nprintf 'edited\\n' >> \"$1\"\n").unwrap();
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = tool_on_harness(home.path(), backend)
            .args(["edit", &id, &tf, "--yes"])
            .env("EDITOR", &editor)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(guest_get(t, &tf), b"pushed\nedited\n", "{backend}: edit");

        run(&["eject", &id, "--drive", "sda"]);
        assert!(
            !blklist(t).contains(&iso),
            "{backend}: eject emptied the twin's drive:\n{}",
            blklist(t)
        );
        run(&["mount", &id, &iso, "--drive", "sda"]);
        assert!(
            blklist(t).contains(&iso),
            "{backend}: mount\n{}",
            blklist(t)
        );

        // The VM whose id the twin is named after was never touched.
        assert_eq!(
            guest_get(other, &tf),
            b"other\n",
            "{backend}: {other}'s file"
        );
        assert_eq!(blklist(other), blk_before, "{backend}: {other}'s drives");
    }
}

#[test]
fn libvirt_going_away_mid_eject_batch_never_claims_what_did_not_happen() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    // A disc of the test's own (readable by the harness daemon's user) in three scratch
    // VMs: the batch touches no shared guest.
    let share = tempfile::tempdir().unwrap();
    std::fs::set_permissions(share.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let iso = share.path().join("batch.iso");
    let harness_iso = blklist("diq-media-b")
        .lines()
        .find_map(|l| l.trim().strip_prefix("sda").map(str::trim))
        .expect("diq-media-b holds the harness ISO")
        .to_string();
    std::fs::copy(&harness_iso, &iso).unwrap();
    std::fs::set_permissions(&iso, std::fs::Permissions::from_mode(0o644)).unwrap();
    let vms: Vec<ScratchVm> = (0..3)
        .map(|i| {
            let iso = iso.clone();
            std::thread::spawn(move || ScratchVm::boot_holding(&format!("batch{i}"), &iso))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let home = tempfile::tempdir().unwrap();
    let iso_s = iso.to_str().unwrap();
    let eject = |uri: &str| {
        let t0 = Instant::now();
        let out = tool_process(home.path())
            .args(["-c", uri, "--jobs", "1", "--agent-timeout", "3"])
            .args(["eject", "--iso", iso_s])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            t0.elapsed(),
        )
    };

    let holds = |vm: &ScratchVm| blklist(vm.uuid).contains(iso_s);
    let remount = || {
        for vm in &vms {
            if !holds(vm) {
                let out = tool_on_harness(home.path(), "native")
                    .args(["mount", vm.name, iso_s, "--drive", "sda"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };

    // Uncut proxies measure the conversation: reading every VM's drives (what `isos`
    // does, and a batch does first), then the whole batch.
    let reading = {
        let p = CutProxy::start(home.path(), u64::MAX);
        let out = tool_process(home.path())
            .args(["-c", &p.uri(), "isos"])
            .output()
            .unwrap();
        assert!(out.status.success());
        p.served()
    };
    let full = CutProxy::start(home.path(), u64::MAX);
    let (code, out, err, _) = eject(&full.uri());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 VMs: 3 ejected"), "{out}");
    let bytes = full.served();
    assert!(bytes > reading, "{bytes} {reading}");

    // libvirt goes away while the drives are read: nothing was changed, one line.
    remount();
    let cut = CutProxy::start(home.path(), reading / 2);
    let (code, out, err, took) = eject(&cut.uri());
    eprintln!(
        "cut while reading ({} of {reading} bytes): exit {code} after {:.1} s\n{out}{err}",
        reading / 2,
        took.as_secs_f64()
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the connection was lost while reading the VMs' drives"),
        "{err}"
    );
    assert!(vms.iter().all(holds), "nothing was changed");

    // libvirt goes away between the changes: what was done is said, the rest is one line.
    let cut_at = reading + (bytes - reading) / 2;
    let cut = CutProxy::start(home.path(), cut_at);
    let (code, out, err, took) = eject(&cut.uri());
    eprintln!(
        "cut between the changes ({cut_at} of {bytes} bytes): exit {code} after {:.1} s\n{out}{err}",
        took.as_secs_f64()
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!format!("{out}{err}")
        .chars()
        .any(|c| c.is_control() && c != '\n'));
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(
        code, 1,
        "a batch that lost libvirt does not claim success:\n{out}{err}"
    );
    assert!(out.lines().last().unwrap().starts_with("3 VMs: "), "{out}");
    for vm in &vms {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{}:", vm.name)));
        match line {
            // No false success: a VM said to be ejected is empty...
            Some(l) if l.contains(" ejected ") => {
                assert!(!holds(vm), "{} was reported ejected:\n{out}", vm.name)
            }
            Some(_) => {}
            // ...and one not attempted still holds its disc.
            None => {
                assert!(
                    out.contains("VM(s) not attempted"),
                    "{} is missing:\n{out}",
                    vm.name
                );
                assert!(holds(vm), "{} was not attempted but changed", vm.name);
            }
        }
    }
}
