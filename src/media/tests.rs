//! Media decisions against the fake hypervisor: drives from XML, mount checks, the eject
//! policy (guest unmount, locked tray, force) and batches.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::eject::{eject_many, eject_vm, EjectOptions, Which};
use super::iso::{resolve_iso, resolve_iso_on, uri_is_local, IsoImage};
use super::mount::{mount, MountRequest, ScopeChoice};
use super::testkit::*;
use super::*;
use crate::hypervisor::fake::{Call, FakeDomain, FakeHypervisor};
use crate::hypervisor::{ChangeScope, DomainState, StorageVolume};
use crate::render::media::eject_line;
use crate::snapshot::media::{DriveOutcome, IsoMatch};

#[test]
fn drives_come_from_both_definitions() {
    let live = xml(
        "vm",
        &[("sda", "sata", Some(ISO), 0), ("sdc", "scsi", None, 2)],
        &["sata", "scsi"],
    );
    let config = xml(
        "vm",
        &[
            ("sda", "sata", Some("/isos/other.iso"), 0),
            ("sdb", "sata", None, 1),
        ],
        &["sata"],
    );
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&live)
            .with_persistent_xml(&config),
    );
    let v = vm(&hv, "vm");
    assert_eq!(v.drives.len(), 3);
    let sda = v.drive("sda").unwrap();
    assert_eq!(sda.current(), Some(ISO));
    assert!(sda.differs);
    assert_eq!(
        crate::render::media::slot_text(sda),
        format!("{ISO} (saved config: /isos/other.iso)")
    );
    let sdc = v.drive("sdc").unwrap();
    assert!(sdc.live.is_some() && sdc.config.is_none() && sdc.differs);
    let sdb = v.drive("sdb").unwrap();
    assert!(sdb.live.is_none() && sdb.config.is_some());
    assert!(v.disk_targets.contains(&"vda".to_string()));
    assert_eq!(v.live_addresses.len(), 2);

    // A shut-off VM has only its saved definition, and nothing "differs".
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("off", DomainState::ShutOff).with_xml(&xml(
            "off",
            &[("sda", "sata", Some(ISO), 0)],
            &[],
        )),
    );
    let v = vm(&hv, "off");
    assert!(v.drives[0].live.is_none());
    assert!(!v.drives[0].differs);
    assert!(v.drives[0].holds(&IsoMatch::new(Path::new(ISO))));
}

#[test]
fn host_listing_reports_unreadable_xml_apart() {
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("good", DomainState::ShutOff).with_xml(&xml(
            "good",
            &[("sda", "sata", None, 0)],
            &[],
        )))
        .with_domain(FakeDomain::new("bad", DomainState::ShutOff).with_xml("<domain>"));
    let host = read_host(&hv).unwrap();
    assert_eq!(host.vms.len(), 1);
    assert_eq!(host.errors.len(), 1);
    assert_eq!(host.errors[0].0, "bad");
}

// ---------------------------------------------------------------------------------- mount

// ---------------------------------------------------------------------------------- mount

#[test]
fn mount_inserts_live_and_config_with_the_path_escaped() {
    let (_d, iso) = iso_file();
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running).with_xml(&xml(
            "vm",
            &[("sda", "sata", None, 0)],
            &["sata"],
        )),
    );
    let line = mount(&hv, &req("vm", &iso)).unwrap();
    assert_eq!(
        line,
        format!("vm sda: mounted {} (live and config)", iso.display())
    );
    let u = updates(&hv);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].2, ChangeScope::BOTH);
    assert!(!u[0].3);
    let f =
        crate::domxml::parse(&format!("<domain><devices>{}</devices></domain>", u[0].1)).unwrap();
    assert_eq!(f.cdroms[0].source.as_deref(), iso.to_str());
    assert_eq!(f.cdroms[0].bus.as_deref(), Some("sata"));

    // --live-only / --config-only, and a shut-off VM gets its config only.
    hv.clear_calls();
    let mut r = req("vm", &iso);
    r.scope = ScopeChoice::LiveOnly;
    assert!(mount(&hv, &r).unwrap().ends_with("(live)"));
    assert_eq!(updates(&hv)[0].2, ChangeScope::LIVE);
    hv.set_state("vm", DomainState::ShutOff);
    hv.clear_calls();
    assert!(mount(&hv, &req("vm", &iso)).unwrap().ends_with("(config)"));
    assert_eq!(updates(&hv)[0].2, ChangeScope::CONFIG);
    let e = mount(&hv, &r).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(
        e.to_string().contains("--live-only has nothing to change"),
        "{}",
        e.to_string()
    );
}

#[test]
fn mount_says_what_it_replaced() {
    let (_d, iso) = iso_file();
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::ShutOff).with_xml(&xml(
            "vm",
            &[("hdc", "ide", Some("/old.iso"), 0)],
            &[],
        )),
    );
    let line = mount(&hv, &req("vm", &iso)).unwrap();
    assert!(line.ends_with("(config), in place of /old.iso"), "{line}");
}

#[test]
fn bad_mount_input_is_one_line_and_touches_nothing() {
    let (dir, iso) = iso_file();
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("two", DomainState::Running).with_xml(&xml(
            "two",
            &[("sda", "sata", None, 0), ("sdb", "sata", None, 1)],
            &["sata"],
        )))
        .with_domain(FakeDomain::new("bare", DomainState::Running).with_xml(&xml(
            "bare",
            &[],
            &["sata"],
        )));
    let cases: Vec<(MountRequest<'_>, &str)> = vec![
        (req("nope", &iso), "no VM named \"nope\" on this connection (`dismount_iso_qemu scan` lists them)"),
        (req("two", Path::new("/no/such.iso")), "ISO \"/no/such.iso\" does not exist"),
        (req("two", dir.path()), "is a directory, not an image"),
        (req("two", &iso), "VM two has 2 CD-ROM drives (sda, sdb): choose one with --drive"),
        (
            MountRequest { drive: Some("sdz"), ..req("two", &iso) },
            "VM two has no CD-ROM drive \"sdz\" (its drives: sda, sdb)",
        ),
        (req("bare", &iso), "VM bare is running and has no CD-ROM drive: a SATA or IDE drive can only be added while the VM is shut off"),
    ];
    for (r, want) in cases {
        let e = mount(&hv, &r).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
        assert!(e.to_string().contains(want), "{e} ≠ {want}");
        assert!(!e.to_string().contains('\n'));
    }
    assert!(updates(&hv).is_empty());
    assert!(attaches(&hv).is_empty());
}

#[test]
fn unreadable_iso_is_refused() {
    if unsafe { libc::geteuid() } == 0 {
        return; // root reads everything
    }
    let (_d, iso) = iso_file();
    std::fs::set_permissions(&iso, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let hv = FakeHypervisor::new();
    let e = resolve_iso(&hv, &iso).unwrap_err();
    assert!(
        e.to_string().starts_with("cannot read ISO"),
        "{}",
        e.to_string()
    );
}

#[test]
fn a_vm_without_a_drive_gets_one() {
    let (_d, iso) = iso_file();
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("off", DomainState::ShutOff).with_xml(&xml(
            "off",
            &[],
            &["sata"],
        )))
        .with_domain(FakeDomain::new("scsi", DomainState::Running).with_xml(&xml(
            "scsi",
            &[],
            &["scsi"],
        )));
    let line = mount(&hv, &req("off", &iso)).unwrap();
    assert!(
        line.starts_with("off sda: added a SATA CD-ROM drive holding"),
        "{line}"
    );
    assert!(line.ends_with("(config); the VM sees it from its next boot"));
    let line = mount(&hv, &req("scsi", &iso)).unwrap();
    assert!(
        line.starts_with("scsi sda: added a SCSI CD-ROM drive"),
        "{line}"
    );
    let a = attaches(&hv);
    assert_eq!(a[0].2, ChangeScope::CONFIG);
    assert!(a[0].1.contains("bus='sata'"));
    assert_eq!(a[1].2, ChangeScope::BOTH);
    assert!(a[1].1.contains("bus='scsi'"));
}

// ------------------------------------------------------------------------- eject policy

#[test]
fn eject_unmounts_inside_the_guest_first() {
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&xml("vm", &[("sda", "sata", Some(ISO), 0)], &["sata"]))
            .with_agent(linux_guest().script()),
    );
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert!(!r.failed());
    assert_eq!(r.guest.unmounted, vec!["/mnt".to_string()]);
    assert_eq!(
        eject_line(&r),
        format!("vm: sda ejected {ISO} (live and config); unmounted /mnt inside the guest first")
    );
    let execs = exec_calls(&hv, "vm");
    assert_eq!(
        execs,
        vec![json!({"path": "umount", "arg": ["/mnt"], "capture-output": true})]
    );
    // The umount happened before the eject.
    let calls = hv.calls();
    let umount_at = calls
        .iter()
        .position(|c| matches!(c, Call::Agent(_, v) if v["execute"] == "guest-exec"))
        .unwrap();
    let eject_at = calls
        .iter()
        .position(|c| matches!(c, Call::UpdateDevice { .. }))
        .unwrap();
    assert!(umount_at < eject_at);
    let u = updates(&hv);
    assert!(!u[0].1.contains("<source"));
    assert!(u[0].1.contains("<target dev='sda' bus='sata'/>"));
}

#[test]
fn locked_tray_is_one_line_and_force_forces() {
    let guest = Guest {
        umount_ok: false,
        ..linux_guest()
    };
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&xml("vm", &[("sda", "sata", Some(ISO), 0)], &["sata"]))
            .with_agent(guest.script()),
    );
    locked_when_not_forced(&hv);
    let v = vm(&hv, "vm");
    let r = eject_vm(&hv, &v, &Which::All, &opts(false));
    assert!(r.failed());
    assert_eq!(r.drives[0].outcome, DriveOutcome::Locked);
    let line = eject_line(&r);
    assert!(line.starts_with("vm: sda locked: the guest holds the tray locked (the disc is in use inside the guest), nothing changed; --force would force the tray open and the guest would lose the disc under it"), "{line}");
    assert!(line.contains(
        "umount /mnt failed in the guest: umount: can't unmount /mnt: Device or resource busy"
    ));
    assert!(!line.contains('\n'));

    let r = eject_vm(&hv, &v, &Which::All, &opts(true));
    assert!(!r.failed());
    assert!(eject_line(&r).contains("tray forced open"));
    assert!(updates(&hv).last().unwrap().3);
}

#[test]
fn agent_missing_or_blocked_skips_the_guest_step_and_says_so() {
    let cd = xml("vm", &[("sda", "sata", Some(ISO), 0)], &["sata"]);
    // No agent at all.
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("vm", DomainState::Running).with_xml(&cd));
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert!(!r.failed());
    assert!(eject_line(&r).ends_with("; not unmounted inside the guest: no guest agent answers (not installed or not running)"), "{}", eject_line(&r));

    // fsinfo sees the mount but guest-exec is disabled.
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&cd)
            .with_agent(
                Guest {
                    exec: false,
                    ..linux_guest()
                }
                .script(),
            ),
    );
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert!(eject_line(&r).contains("not unmounted inside the guest: the guest has it mounted at /mnt and its agent has guest-exec disabled"), "{}", eject_line(&r));
    assert!(exec_calls(&hv, "vm").is_empty());

    // Neither fsinfo nor exec.
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&cd)
            .with_agent(
                Guest {
                    exec: false,
                    fsinfo: None,
                    ..linux_guest()
                }
                .script(),
            ),
    );
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert!(
        eject_line(&r).contains("its guest agent allows neither guest-get-fsinfo nor guest-exec")
    );

    // fsinfo blocked: /proc/mounts through guest-exec, with its escapes.
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&cd)
            .with_agent(
                Guest {
                    fsinfo: None,
                    proc_mounts: "/dev/sr0 /media/cd\\040rom iso9660 ro 0 0\n",
                    ..linux_guest()
                }
                .script(),
            ),
    );
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert_eq!(r.guest.unmounted, vec!["/media/cd rom".to_string()]);
    let execs = exec_calls(&hv, "vm");
    assert_eq!(execs[0]["path"], "cat");
    assert_eq!(execs[1]["arg"][0], "/media/cd rom");

    // A paused or shut-off VM: no agent call at all.
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Paused)
            .with_xml(&cd)
            .with_agent(linux_guest().script()),
    );
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert!(
        eject_line(&r).ends_with("not unmounted inside the guest: the VM is paused"),
        "{}",
        eject_line(&r)
    );
    assert!(hv.agent_calls("vm").is_empty());
}

#[test]
fn several_drives_unmount_only_the_matching_device() {
    // The guest mounted the disc of sdb (AHCI port 1) at /mnt/b and sda's at /mnt/a.
    let fsinfo = json!([
        {"name": "sr0", "mountpoint": "/mnt/a", "type": "iso9660",
         "disk": [{"bus-type": "sata", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/sr0"}]},
        {"name": "sr1", "mountpoint": "/mnt/b", "type": "iso9660",
         "disk": [{"bus-type": "sata", "bus": 0, "target": 0, "unit": 1, "dev": "/dev/sr1"}]}
    ]);
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&xml(
                "vm",
                &[
                    ("sda", "sata", Some("/a.iso"), 0),
                    ("sdb", "sata", Some("/b.iso"), 1),
                ],
                &["sata"],
            ))
            .with_agent(
                Guest {
                    fsinfo: Some(fsinfo),
                    ..linux_guest()
                }
                .script(),
            ),
    );
    let r = eject_vm(
        &hv,
        &vm(&hv, "vm"),
        &Which::Drive("sdb".into()),
        &opts(false),
    );
    assert_eq!(r.guest.unmounted, vec!["/mnt/b".to_string()]);
    assert_eq!(r.drives.len(), 1);
    assert_eq!(updates(&hv).len(), 1);
    assert!(updates(&hv)[0].1.contains("dev='sdb'"));

    // Without addresses (from /proc/mounts) the tool cannot tell and leaves the guest alone.
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&xml(
                "vm",
                &[
                    ("sda", "sata", Some("/a.iso"), 0),
                    ("sdb", "sata", Some("/b.iso"), 1),
                ],
                &["sata"],
            ))
            .with_agent(
                Guest {
                    fsinfo: None,
                    proc_mounts: "/dev/sr1 /mnt/b iso9660 ro 0 0\n",
                    ..linux_guest()
                }
                .script(),
            ),
    );
    let r = eject_vm(
        &hv,
        &vm(&hv, "vm"),
        &Which::Drive("sdb".into()),
        &opts(false),
    );
    assert!(r.guest.unmounted.is_empty());
    assert!(
        eject_line(&r).contains("cannot tell which drive the guest's /dev/sr1 is, left mounted")
    );
    // …but when every drive is ejected, whichever it is, it goes.
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert_eq!(r.guest.unmounted, vec!["/mnt/b".to_string()]);
    assert_eq!(r.drives.len(), 2);
}

#[test]
fn empty_drive_is_already_empty_and_config_only_discs_are_ejected_from_config() {
    let live = xml("vm", &[("sda", "sata", None, 0)], &["sata"]);
    let config = xml("vm", &[("sda", "sata", Some(ISO), 0)], &["sata"]);
    let hv = FakeHypervisor::new()
        .with_domain(
            FakeDomain::new("vm", DomainState::Running)
                .with_xml(&live)
                .with_persistent_xml(&config),
        )
        .with_domain(
            FakeDomain::new("empty", DomainState::Running)
                .with_xml(&live)
                .with_agent(linux_guest().script()),
        );
    let r = eject_vm(&hv, &vm(&hv, "empty"), &Which::All, &opts(false));
    assert_eq!(eject_line(&r), "empty: sda already empty");
    assert!(!r.failed());
    assert!(updates(&hv).is_empty());
    assert!(hv.agent_calls("empty").is_empty());

    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert_eq!(eject_line(&r), format!("vm: sda ejected {ISO} (config)"));
    assert_eq!(updates(&hv)[0].2, ChangeScope::CONFIG);
}

// ------------------------------------------------------------------------------- batches

#[test]
fn batches_run_in_parallel() {
    let names: Vec<String> = (0..8).map(|i| format!("vm{i}")).collect();
    let mut hv = FakeHypervisor::new();
    for n in &names {
        hv = hv.with_domain(
            FakeDomain::new(n, DomainState::Running)
                .with_xml(&xml(n, &[("sda", "sata", Some(ISO), 0)], &["sata"]))
                .with_agent(linux_guest().script())
                .with_agent_delay(Duration::from_millis(50)),
        );
    }
    let host = read_host(&hv).unwrap();
    let t0 = Instant::now();
    let reports = eject_many(
        &hv,
        &host.vms,
        &Which::All,
        &EjectOptions {
            jobs: 8,
            ..opts(false)
        },
    );
    // Each VM costs 4 agent calls of 50 ms: serially 1.6 s.
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(reports.len(), 8);
    assert!(reports.iter().all(|r| !r.failed()));
}

#[test]
fn a_batch_that_loses_libvirt_starts_no_further_vm() {
    let mut hv = FakeHypervisor::new();
    for n in ["a", "b", "c", "d"] {
        hv = hv.with_domain(FakeDomain::new(n, DomainState::ShutOff).with_xml(&xml(
            n,
            &[("sda", "sata", Some(ISO), 0)],
            &["sata"],
        )));
    }
    let host = read_host(&hv).unwrap();
    // libvirtd dies during the second VM's change.
    let changes = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = changes.clone();
    hv.on_device_change(move |_, _, _, _| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(())
        } else {
            Err(HvError::Unreachable {
                uri: "qemu:///system".into(),
                detail: "End of file while reading data".into(),
            })
        }
    });
    let reports = eject_many(
        &hv,
        &host.vms,
        &Which::All,
        &EjectOptions {
            jobs: 1,
            ..opts(false)
        },
    );
    assert_eq!(
        changes.load(Ordering::SeqCst),
        2,
        "no VM after the loss was tried"
    );
    let shape: Vec<(&str, bool, bool)> = reports
        .iter()
        .map(|r| (r.vm.as_str(), r.failed(), r.not_attempted))
        .collect();
    assert_eq!(
        shape,
        [
            ("a", false, false),
            ("b", true, false),
            ("c", true, true),
            ("d", true, true)
        ]
    );
}

#[test]
fn a_listing_that_loses_libvirt_half_way_is_one_error() {
    let hv = FakeHypervisor::new().with_domain(FakeDomain::new("a", DomainState::Running));
    hv.fail_xml(HvError::Unreachable {
        uri: "qemu:///system".into(),
        detail: "client socket is closed".into(),
    });
    let e = read_host(&hv).unwrap_err();
    assert!(e.is_connection());
    assert!(e.to_string().contains(
        "the connection was lost while reading the VMs' drives: client socket is closed"
    ));
}

// ---------------------------------------------------------------------------------- menu

#[test]
fn iso_paths_match_through_symlinks_and_remote_hosts_need_a_volume() {
    let (dir, iso) = iso_file();
    let link = dir.path().join("link.iso");
    std::os::unix::fs::symlink(&iso, &link).unwrap();
    let m = IsoMatch::new(&link);
    assert!(m.matches(iso.to_str().unwrap()));
    assert!(m.matches(link.to_str().unwrap()));
    assert!(!m.matches("/elsewhere.iso"));

    assert!(uri_is_local("qemu:///system"));
    assert!(uri_is_local("qemu+unix:///session"));
    assert!(!uri_is_local("qemu+ssh://root@host/system"));
    let hv = FakeHypervisor::new().with_volume(StorageVolume {
        pool: "isos".into(),
        name: "x.iso".into(),
        path: "/pool/x.iso".into(),
        capacity_bytes: None,
    });
    let remote = "qemu+ssh://root@host/system";
    assert_eq!(
        resolve_iso_on(&hv, remote, Path::new("/pool/x.iso")).unwrap(),
        IsoImage {
            path: "/pool/x.iso".into(),
            block: false
        }
    );
    let e = resolve_iso_on(&hv, remote, Path::new("/local/only.iso")).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert_eq!(e.to_string(), "no storage pool volume on qemu+ssh://root@host/system has the path \"/local/only.iso\": a remote host can only use ISOs in its storage pools (see `virsh vol-list POOL`)");
}

#[test]
fn hot_added_drive_failure_says_what_to_do() {
    let e = HvError::Failed {
        operation: "changing a device",
        detail: "vm: internal error: unable to execute QEMU command 'blockdev-remove-medium': Tray of device 'scsi0-0-0-0' is not open".into(),
    };
    let text = device_error(&e, "vm", "sdb");
    assert!(text.starts_with("libvirt cannot change the disc of this drive while the VM runs"));
    assert!(text.contains("virsh detach-disk vm sdb --live --config"));
    let other = HvError::NoSuchDomain("vm".into());
    assert_eq!(device_error(&other, "vm", "sda"), other.to_string());
}

/// A guest that reports thousands of mounts of the disc, and answers slowly: the guest
/// step is bounded in count and time, and the eject still happens.
#[test]
fn a_guest_cannot_make_an_eject_work_without_end() {
    let mounts: Vec<Value> = (0..5000)
        .map(|i| {
            json!({"name": "sr0", "mountpoint": format!("/mnt/{i}"), "type": "iso9660",
                   "disk": [{"bus-type": "sata", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/sr0"}]})
        })
        .collect();
    let guest = Guest {
        fsinfo: Some(Value::Array(mounts)),
        exec: true,
        proc_mounts: "",
        umount_ok: true,
    };
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running)
            .with_xml(&xml("vm", &[("sda", "sata", Some(ISO), 0)], &["sata"]))
            .with_agent(guest.script())
            .with_agent_delay(Duration::from_millis(100)),
    );
    let o = EjectOptions {
        guest_budget: Duration::from_millis(700),
        ..opts(false)
    };
    let t = Instant::now();
    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &o);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(r.guest.unmounted.len() < 8, "{:?}", r.guest.unmounted);
    let why = r.guest.skipped.clone().unwrap();
    assert!(
        why.contains("the guest reports 5000 mounts of the disc; unmounted at most 8"),
        "{why}"
    );
    assert!(
        why.contains("the time for the guest-side step ran out"),
        "{why}"
    );
    assert!(eject_line(&r).len() < 2000);
    assert!(matches!(r.drives[0].outcome, DriveOutcome::Ejected { .. }));

    // A batch whose time is up skips the guest step of the VMs still waiting.
    let o = EjectOptions {
        batch_budget: Duration::ZERO,
        ..opts(false)
    };
    let reports = eject_many(&hv, &[vm(&hv, "vm")], &Which::All, &o);
    assert!(reports[0]
        .guest
        .skipped
        .as_deref()
        .unwrap()
        .contains("ran out"));
}
