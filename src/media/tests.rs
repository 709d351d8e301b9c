//! Media decisions against the fake hypervisor: drives from XML, mount checks, the eject
//! policy (guest unmount, locked tray, force), batches and the menu flows.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cmd::write_batch;
use super::*;
use crate::cli::prompt::Prompter;
use crate::config::{resolve_with, FileConfig, Overrides};
use crate::hypervisor::fake::{Call, FakeDomain, FakeHypervisor};
use crate::hypervisor::{HvResult, StorageVolume};
use crate::{exit, App};

/// One CD-ROM: (target, bus, source, unit).
type Cd<'a> = (&'a str, &'a str, Option<&'a str>, u32);

fn xml(name: &str, cds: &[Cd<'_>], controllers: &[&str]) -> String {
    let mut s = format!("<domain type='qemu'><name>{name}</name><devices>");
    s.push_str("<disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vda' bus='virtio'/></disk>");
    for (t, bus, src, unit) in cds {
        s.push_str("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>");
        if let Some(src) = src {
            s.push_str(&format!(
                "<source file='{}'/>",
                crate::domxml::escape_attr(src).unwrap()
            ));
        }
        s.push_str(&format!(
            "<target dev='{t}' bus='{bus}'/><readonly/><address type='drive' controller='0' bus='0' target='0' unit='{unit}'/></disk>"
        ));
    }
    for c in controllers {
        s.push_str(&format!("<controller type='{c}' index='0'/>"));
    }
    s.push_str("</devices></domain>");
    s
}

fn opts(force: bool) -> EjectOptions {
    EjectOptions {
        force,
        agent_timeout: Duration::from_secs(1),
        umount_timeout: Duration::from_secs(2),
        jobs: 4,
    }
}

fn info(hv: &FakeHypervisor, name: &str) -> DomainInfo {
    hv.list_domains()
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap()
}

fn vm(hv: &FakeHypervisor, name: &str) -> VmMedia {
    read_vm(hv, &info(hv, name)).unwrap()
}

fn updates(hv: &FakeHypervisor) -> Vec<(String, String, ChangeScope, bool)> {
    hv.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::UpdateDevice {
                domain,
                xml,
                scope,
                force,
            } => Some((domain, xml, scope, force)),
            _ => None,
        })
        .collect()
}

fn attaches(hv: &FakeHypervisor) -> Vec<(String, String, ChangeScope)> {
    hv.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::AttachDevice { domain, xml, scope } => Some((domain, xml, scope)),
            _ => None,
        })
        .collect()
}

/// A guest agent: which commands are enabled, what fsinfo and /proc/mounts say, and
/// whether `umount` succeeds.
#[derive(Clone)]
struct Guest {
    fsinfo: Option<Value>,
    exec: bool,
    proc_mounts: &'static str,
    umount_ok: bool,
}

impl Guest {
    fn script(self) -> impl Fn(&str, &Value) -> HvResult<Value> + Send + Sync + 'static {
        let last = Arc::new(std::sync::Mutex::new(String::new()));
        move |domain, req| {
            let cmd = req["execute"].as_str().unwrap();
            match cmd {
                "guest-info" => Ok(json!({"version": "7.2.0", "supported_commands": [
                    {"name": "guest-get-fsinfo", "enabled": self.fsinfo.is_some()},
                    {"name": "guest-exec", "enabled": self.exec},
                    {"name": "guest-exec-status", "enabled": self.exec},
                ]})),
                "guest-get-fsinfo" => Ok(self.fsinfo.clone().unwrap()),
                "guest-exec" => {
                    let args = &req["arguments"];
                    let mut l = last.lock().unwrap();
                    *l = format!(
                        "{} {}",
                        args["path"].as_str().unwrap(),
                        args["arg"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a.as_str().unwrap())
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    Ok(json!({"pid": 7}))
                }
                "guest-exec-status" => {
                    use base64::Engine as _;
                    let l = last.lock().unwrap().clone();
                    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                    if l.starts_with("cat ") {
                        Ok(
                            json!({"exited": true, "exitcode": 0, "out-data": b64(self.proc_mounts)}),
                        )
                    } else if self.umount_ok {
                        Ok(json!({"exited": true, "exitcode": 0}))
                    } else {
                        Ok(json!({"exited": true, "exitcode": 1,
                            "err-data": b64("umount: can't unmount /mnt: Device or resource busy\n")}))
                    }
                }
                other => panic!("{domain}: unexpected agent command {other}"),
            }
        }
    }
}

fn fsinfo_sr0(mountpoint: &str, unit: u32) -> Value {
    json!([{"name": "sr0", "mountpoint": mountpoint, "type": "iso9660",
            "disk": [{"bus-type": "sata", "bus": 0, "target": 0, "unit": unit, "dev": "/dev/sr0"}]}])
}

fn linux_guest() -> Guest {
    Guest {
        fsinfo: Some(fsinfo_sr0("/mnt", 0)),
        exec: true,
        proc_mounts: "",
        umount_ok: true,
    }
}

fn exec_calls(hv: &FakeHypervisor, name: &str) -> Vec<Value> {
    hv.agent_calls(name)
        .into_iter()
        .filter(|c| c["execute"] == "guest-exec")
        .map(|c| c["arguments"].clone())
        .collect()
}

const ISO: &str = "/isos/a b é.iso";

fn locked_when_not_forced(hv: &FakeHypervisor) {
    hv.on_device_change(|domain, xml, _scope, force| {
        if force {
            Ok(())
        } else {
            Err(HvError::TrayLocked {
                domain: domain.to_string(),
                drive: crate::domxml::parse(&format!("<domain><devices>{xml}</devices></domain>"))
                    .unwrap()
                    .cdroms[0]
                    .target
                    .clone(),
            })
        }
    });
}

// ------------------------------------------------------------------------ drives from XML

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
        super::cmd::slot_text(sda),
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

fn iso_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("my disc \"é\" & co.iso");
    std::fs::write(&p, b"CD001").unwrap();
    (dir, p)
}

fn req<'a>(vm: &'a str, iso: &'a Path) -> MountRequest<'a> {
    MountRequest {
        vm,
        iso,
        drive: None,
        scope: ScopeChoice::Both,
    }
}

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
    assert_eq!(e.code, exit::USAGE);
    assert!(
        e.message.contains("--live-only has nothing to change"),
        "{}",
        e.message
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
        assert_eq!(e.code, exit::USAGE, "{}", e.message);
        assert!(e.message.contains(want), "{} ≠ {want}", e.message);
        assert!(!e.message.contains('\n'));
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
    assert!(e.message.starts_with("cannot read ISO"), "{}", e.message);
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
        r.line(),
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
    let line = r.line();
    assert!(line.starts_with("vm: sda locked: the guest holds the tray locked (the disc is in use inside the guest), nothing changed; --force would force the tray open and the guest would lose the disc under it"), "{line}");
    assert!(line.contains(
        "umount /mnt failed in the guest: umount: can't unmount /mnt: Device or resource busy"
    ));
    assert!(!line.contains('\n'));

    let r = eject_vm(&hv, &v, &Which::All, &opts(true));
    assert!(!r.failed());
    assert!(r.line().contains("tray forced open"));
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
    assert!(r.line().ends_with("; not unmounted inside the guest: no guest agent answers (not installed or not running)"), "{}", r.line());

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
    assert!(r.line().contains("not unmounted inside the guest: the guest has it mounted at /mnt and its agent has guest-exec disabled"), "{}", r.line());
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
    assert!(r
        .line()
        .contains("its guest agent allows neither guest-get-fsinfo nor guest-exec"));

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
        r.line()
            .ends_with("not unmounted inside the guest: the VM is paused"),
        "{}",
        r.line()
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
    assert!(r
        .line()
        .contains("cannot tell which drive the guest's /dev/sr1 is, left mounted"));
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
    assert_eq!(r.line(), "empty: sda already empty");
    assert!(!r.failed());
    assert!(updates(&hv).is_empty());
    assert!(hv.agent_calls("empty").is_empty());

    let r = eject_vm(&hv, &vm(&hv, "vm"), &Which::All, &opts(false));
    assert_eq!(r.line(), format!("vm: sda ejected {ISO} (config)"));
    assert_eq!(updates(&hv)[0].2, ChangeScope::CONFIG);
}

// ------------------------------------------------------------------------------- batches

fn batch_host() -> FakeHypervisor {
    let with = |name: &str, src: Option<&str>| xml(name, &[("sda", "sata", src, 0)], &["sata"]);
    let hv = FakeHypervisor::new()
        .with_domain(
            FakeDomain::new("a-run", DomainState::Running)
                .with_xml(&with("a-run", Some(ISO)))
                .with_agent(linux_guest().script()),
        )
        .with_domain(
            FakeDomain::new("b-off", DomainState::ShutOff).with_xml(&with("b-off", Some(ISO))),
        )
        .with_domain(
            FakeDomain::new("c-locked", DomainState::Running)
                .with_xml(&with("c-locked", Some(ISO))),
        )
        .with_domain(
            FakeDomain::new("d-other", DomainState::ShutOff)
                .with_xml(&with("d-other", Some("/isos/other.iso"))),
        )
        .with_domain(
            FakeDomain::new("e-empty", DomainState::ShutOff).with_xml(&with("e-empty", None)),
        )
        .with_domain(
            FakeDomain::new("f-gone", DomainState::Running).with_xml(&with("f-gone", Some(ISO))),
        )
        .with_domain(
            FakeDomain::new("g-nodrive", DomainState::ShutOff).with_xml(&xml(
                "g-nodrive",
                &[],
                &[],
            )),
        );
    hv.on_device_change(|domain, _xml, _scope, force| match domain {
        "c-locked" if !force => Err(HvError::TrayLocked {
            domain: domain.into(),
            drive: "sda".into(),
        }),
        "f-gone" => Err(HvError::NoSuchDomain(domain.into())),
        _ => Ok(()),
    });
    hv
}

#[test]
fn batch_by_iso_never_stops_at_the_first_failure() {
    let hv = batch_host();
    let host = read_host(&hv).unwrap();
    let m = IsoMatch::new(Path::new(ISO));
    let vms: Vec<VmMedia> = host
        .vms
        .iter()
        .filter(|v| v.drives.iter().any(|d| d.holds(&m)))
        .cloned()
        .collect();
    assert_eq!(
        vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["a-run", "b-off", "c-locked", "f-gone"]
    );
    let reports = eject_many(&hv, &vms, &Which::Holding(m, None), &opts(false));
    let mut out = Vec::new();
    let code = write_batch(&mut out, &reports, &[], Instant::now()).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(code, exit::PARTIAL);
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with(&format!(
        "a-run: sda ejected {ISO} (live and config); unmounted /mnt"
    )));
    assert_eq!(lines[1], format!("b-off: sda ejected {ISO} (config)"));
    assert!(lines[2].starts_with("c-locked: sda locked: the guest holds the tray locked"));
    assert_eq!(lines[3], "f-gone: sda error: no VM named \"f-gone\" on this connection (`dismount_iso_qemu scan` lists them); not unmounted inside the guest: no guest agent answers (not installed or not running)");
    assert!(
        lines[4].starts_with("4 VMs: 2 ejected, 0 already empty, 1 locked, 1 failed ("),
        "{}",
        lines[4]
    );
    // d-other kept its disc.
    assert!(updates(&hv).iter().all(|u| u.0 != "d-other"));
}

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

// ---------------------------------------------------------------------------------- menu

fn app(hv: FakeHypervisor) -> App {
    let mut settings = resolve_with(&Overrides::default(), None, FileConfig::default()).unwrap();
    settings.cache_path = None;
    settings.probe_timeout = Duration::from_millis(500);
    App::from_parts(settings, Arc::new(hv), false)
}

fn drive_flow(
    app: &App,
    input: &str,
    f: fn(&App, &mut Prompter<'_>) -> Result<(), crate::Failure>,
) -> String {
    let mut inp = Cursor::new(input.as_bytes().to_vec());
    let mut out = Vec::new();
    f(app, &mut Prompter::new(&mut inp, &mut out)).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn menu_mounts_a_pool_volume_into_the_chosen_drive() {
    let (_d, iso) = iso_file();
    let hv = FakeHypervisor::new()
        .with_domain(
            FakeDomain::new("alpha", DomainState::ShutOff).with_xml(&xml("alpha", &[], &[])),
        )
        .with_domain(FakeDomain::new("beta", DomainState::Running).with_xml(&xml(
            "beta",
            &[("sda", "sata", None, 0), ("sdb", "sata", None, 1)],
            &["sata"],
        )))
        .with_volume(StorageVolume {
            pool: "isos".into(),
            name: "x.iso".into(),
            path: iso.to_string_lossy().into_owned(),
            capacity_bytes: Some(5),
        })
        .with_volume(StorageVolume {
            pool: "images".into(),
            name: "disk.qcow2".into(),
            path: "/img/disk.qcow2".into(),
            capacity_bytes: None,
        });
    let a = app(hv.clone());
    // VM 2 (beta), ISO 1 (the pool's), drive 2 (sdb), confirm with Enter.
    let out = drive_flow(&a, "2\n1\n2\n\n", super::menu::mount_flow);
    assert!(
        out.contains("  1) alpha (shut off)\n  2) beta (running)\n"),
        "{out}"
    );
    assert!(out
        .contains("CD-ROM drives of beta (running):\n  sda (sata): empty\n  sdb (sata): empty\n"));
    assert!(!out.contains("disk.qcow2"), "only ISO volumes are offered");
    assert!(out.contains("  2) Type a path\n"));
    assert!(
        out.contains(&format!(
            "beta sdb: mounted {} (live and config)",
            iso.display()
        )),
        "{out}"
    );
    assert_eq!(updates(&hv).len(), 1);

    // A typed path into a VM without a drive: a drive is added to its config.
    let out = drive_flow(
        &a,
        &format!("1\n2\n{}\ny\n", iso.display()),
        super::menu::mount_flow,
    );
    assert!(out.contains("alpha (shut off) has no CD-ROM drive."));
    assert!(
        out.contains("alpha sda: added a SATA CD-ROM drive holding"),
        "{out}"
    );

    // Cancel at the confirmation: nothing changes.
    hv.clear_calls();
    let out = drive_flow(&a, "2\n1\n1\nn\n", super::menu::mount_flow);
    assert!(out.contains("Nothing was changed."));
    assert!(updates(&hv).is_empty());
}

#[test]
fn menu_offers_to_eject_what_is_in_the_drive() {
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("vm", DomainState::Running).with_xml(&xml(
            "vm",
            &[("sda", "sata", Some(ISO), 0)],
            &["sata"],
        )),
    );
    locked_when_not_forced(&hv);
    let a = app(hv.clone());
    // VM 1, action 1 (eject) → locked → force? y
    let out = drive_flow(&a, "1\n1\ny\n", super::menu::mount_flow);
    assert!(out.contains(&format!("  sda (sata): {ISO}")));
    assert!(
        out.contains(&format!(
            "  1) Eject {ISO} from sda\n  2) Mount another ISO\n"
        )),
        "{out}"
    );
    assert!(out.contains("vm: sda locked:"));
    assert!(out.contains("Force the tray open anyway? The guest loses the disc under it. [y/N]"));
    assert!(out.contains("tray forced open"), "{out}");
    let u = updates(&hv);
    assert_eq!(u.len(), 2);
    assert!(!u[0].3 && u[1].3);
}

#[test]
fn menu_dismount_offer_is_one_choice_away() {
    let hv = batch_host();
    let a = app(hv.clone());
    let out = drive_flow(&a, "\n", super::menu::dismount_offer);
    assert!(out.contains("Dismount an ISO? (empty to go back)"));
    assert!(out.contains(&format!("  1) a-run sda: {ISO}\n")), "{out}");
    assert!(
        out.contains(&format!("{ISO} from all 4 VMs holding it")),
        "{out}"
    );
    assert!(out.contains("Every ISO from every VM (5 drives)"));
    assert!(updates(&hv).is_empty());

    // Choose the ISO-everywhere entry; decline forcing the locked one.
    let items: Vec<&str> = out.lines().filter(|l| l.contains(") ")).collect();
    let n = items
        .iter()
        .position(|l| l.contains("from all 4 VMs"))
        .unwrap()
        + 1;
    let out = drive_flow(&a, &format!("{n}\nn\n"), super::menu::dismount_offer);
    assert!(out.contains("b-off: sda ejected"), "{out}");
    assert!(out.contains("c-locked: sda locked"));
    assert!(updates(&hv).iter().all(|u| u.0 != "d-other"));

    let empty = FakeHypervisor::new().with_domain(
        FakeDomain::new("x", DomainState::ShutOff).with_xml(&xml(
            "x",
            &[("sda", "sata", None, 0)],
            &[],
        )),
    );
    let out = drive_flow(&app(empty), "", super::menu::dismount_offer);
    assert_eq!(out, "No VM holds an ISO.\n");
}

// ------------------------------------------------------------------------------ commands

fn run_cmd(
    f: impl FnOnce(&mut Vec<u8>) -> Result<u8, crate::Failure>,
) -> (Result<u8, String>, String) {
    let mut out = Vec::new();
    let r = f(&mut out).map_err(|e| e.message);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn isos_lists_every_drive_and_filters_by_iso() {
    let a = app(batch_host());
    let args = |json, iso: Option<&str>| crate::cli::IsosArgs {
        json,
        iso: iso.map(PathBuf::from),
    };
    let (r, out) = run_cmd(|o| super::cmd::isos(&a, &args(false, None), o));
    assert_eq!(r, Ok(exit::OK));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "VM                   State         Drive   Bus    ISO"
    );
    assert_eq!(
        lines[2],
        format!("a-run                running       sda     sata   {ISO}")
    );
    assert!(out.contains("g-nodrive            shut off      -       -      (no CD-ROM drive)"));
    assert!(out.contains("e-empty              shut off      sda     sata   -"));

    let (_, out) = run_cmd(|o| super::cmd::isos(&a, &args(true, Some("/isos/other.iso")), o));
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["vms"].as_array().unwrap().len(), 1);
    assert_eq!(doc["vms"][0]["name"], "d-other");
    assert_eq!(
        doc["vms"][0]["drives"][0]["config"]["source"],
        "/isos/other.iso"
    );
    assert_eq!(doc["vms"][0]["drives"][0]["live"], Value::Null);

    let (r, out) = run_cmd(|o| super::cmd::isos(&a, &args(false, Some("/nowhere.iso")), o));
    assert_eq!(r, Ok(exit::OK));
    assert_eq!(out, "no VM holds /nowhere.iso\n");
}

#[test]
fn eject_command_checks_its_input_and_batches_by_iso_and_drive() {
    let a = app(batch_host());
    let args = |vm: Option<&str>, drive: Option<&str>, iso: Option<&str>, all: bool| {
        crate::cli::EjectArgs {
            vm: vm.map(str::to_string),
            drive: drive.map(str::to_string),
            iso: iso.map(PathBuf::from),
            all,
            force: false,
        }
    };
    for (a_, want) in [
        (
            args(Some("nope"), None, None, false),
            "no VM named \"nope\" on this connection (`dismount_iso_qemu scan` lists them)",
        ),
        (
            args(Some("g-nodrive"), None, None, false),
            "VM g-nodrive has no CD-ROM drive",
        ),
        (
            args(Some("b-off"), Some("hdc"), None, false),
            "VM b-off has no CD-ROM drive \"hdc\" (its drives: sda)",
        ),
    ] {
        let (r, out) = run_cmd(|o| super::cmd::eject(&a, &a_, o));
        assert_eq!(r, Err(want.to_string()));
        assert!(out.is_empty());
    }
    let (r, out) = run_cmd(|o| super::cmd::eject(&a, &args(Some("e-empty"), None, None, false), o));
    assert_eq!(r, Ok(exit::OK));
    assert_eq!(out, "e-empty: sda already empty\n");

    // --iso with --drive: only that drive; no VM has an sdb holding it.
    let (r, out) =
        run_cmd(|o| super::cmd::eject(&a, &args(None, Some("sdb"), Some(ISO), false), o));
    assert_eq!(r, Ok(exit::OK));
    assert_eq!(out, format!("no VM holds {ISO}\n"));

    // --all: every VM with a drive, one line each, then the summary; exit 1 (locked, error).
    let (r, out) = run_cmd(|o| super::cmd::eject(&a, &args(None, None, None, true), o));
    assert_eq!(r, Ok(exit::PARTIAL));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert_eq!(lines[3], "d-other: sda ejected /isos/other.iso (config)");
    assert_eq!(lines[4], "e-empty: sda already empty");
    assert!(lines[6].starts_with("6 VMs: 3 ejected, 1 already empty, 1 locked, 1 failed"));
}

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
    assert_eq!(e.code, exit::USAGE);
    assert_eq!(e.message, "no storage pool volume on qemu+ssh://root@host/system has the path \"/local/only.iso\": a remote host can only use ISOs in its storage pools (see `virsh vol-list POOL`)");
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
