//! The menu's media flows and the media commands against the fake hypervisor: what the
//! user types, what they read, the exit codes.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::media::{self as media_cmd, write_batch};
use super::menu::media::{dismount_offer, mount_flow};
use super::menu::Session;
use crate::app::App;
use crate::config::{resolve_with, FileConfig, Overrides};
use crate::exit::{self, Failure};
use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
use crate::hypervisor::{DomainState, StorageVolume};
use crate::media::eject::{eject_many, Which};
use crate::media::read_host;
use crate::media::testkit::*;
use crate::snapshot::media::{IsoMatch, VmMedia};
use crate::term::prompt::Prompter;

fn app(hv: FakeHypervisor) -> App {
    let mut settings = resolve_with(&Overrides::default(), None, FileConfig::default()).unwrap();
    settings.cache_path = None;
    settings.scan_deadline = Duration::from_millis(500);
    App::from_parts(settings, Arc::new(hv), false)
}

fn drive_flow(
    app: &App,
    input: &str,
    f: fn(&Session, &mut Prompter<'_>) -> Result<(), Failure>,
) -> String {
    let mut inp = Cursor::new(input.as_bytes().to_vec());
    let mut out = Vec::new();
    let session = Session::one(app.clone());
    f(&session, &mut Prompter::new(&mut inp, &mut out)).unwrap();
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
    let out = drive_flow(&a, "2\n1\n2\n\n", mount_flow);
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
    let out = drive_flow(&a, &format!("1\n2\n{}\ny\n", iso.display()), mount_flow);
    assert!(out.contains("alpha (shut off) has no CD-ROM drive."));
    assert!(
        out.contains("alpha sda: added a SATA CD-ROM drive holding"),
        "{out}"
    );

    // Cancel at the confirmation: nothing changes.
    hv.clear_calls();
    let out = drive_flow(&a, "2\n1\n1\nn\n", mount_flow);
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
    let out = drive_flow(&a, "1\n1\ny\n", mount_flow);
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
    let out = drive_flow(&a, "\n", dismount_offer);
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
    let out = drive_flow(&a, &format!("{n}\nn\n"), dismount_offer);
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
    let out = drive_flow(&app(empty), "", dismount_offer);
    assert_eq!(out, "No VM holds an ISO.\n");
}

// ------------------------------------------------------------------------------ commands

fn run_cmd(f: impl FnOnce(&mut Vec<u8>) -> Result<u8, Failure>) -> (Result<u8, String>, String) {
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
    let (r, out) = run_cmd(|o| media_cmd::isos(&a, &args(false, None), o));
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

    let (_, out) = run_cmd(|o| media_cmd::isos(&a, &args(true, Some("/isos/other.iso")), o));
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["vms"].as_array().unwrap().len(), 1);
    assert_eq!(doc["vms"][0]["name"], "d-other");
    assert_eq!(
        doc["vms"][0]["drives"][0]["config"]["source"],
        "/isos/other.iso"
    );
    assert_eq!(doc["vms"][0]["drives"][0]["live"], Value::Null);

    let (r, out) = run_cmd(|o| media_cmd::isos(&a, &args(false, Some("/nowhere.iso")), o));
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
            dry_run: false,
            yes: false,
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
        let (r, out) = run_cmd(|o| media_cmd::eject(&a, &a_, o));
        assert_eq!(r, Err(want.to_string()));
        assert!(out.is_empty());
    }
    let (r, out) = run_cmd(|o| media_cmd::eject(&a, &args(Some("e-empty"), None, None, false), o));
    assert_eq!(r, Ok(exit::OK));
    assert_eq!(out, "e-empty: sda already empty\n");

    // --iso with --drive: only that drive; no VM has an sdb holding it.
    let (r, out) = run_cmd(|o| media_cmd::eject(&a, &args(None, Some("sdb"), Some(ISO), false), o));
    assert_eq!(r, Ok(exit::OK));
    assert_eq!(out, format!("no VM holds {ISO}\n"));

    // --dry-run: the discs --all would take, and nothing changes.
    let dry = crate::cli::EjectArgs {
        dry_run: true,
        ..args(None, None, None, true)
    };
    let before = read_host(a.hv.as_ref()).unwrap();
    let (r, out) = run_cmd(|o| media_cmd::eject(&a, &dry, o));
    assert_eq!(r, Ok(exit::OK));
    assert!(
        out.lines().all(|l| l.contains(": sda would eject /isos/")),
        "{out}"
    );
    assert!(
        out.contains("d-other: sda would eject /isos/other.iso"),
        "{out}"
    );
    assert!(!out.contains("e-empty"), "{out}");
    assert_eq!(read_host(a.hv.as_ref()).unwrap(), before);

    // --all: every VM with a drive, one line each, then the summary; exit 1 (locked, error).
    let (r, out) = run_cmd(|o| media_cmd::eject(&a, &args(None, None, None, true), o));
    assert_eq!(r, Ok(exit::PARTIAL));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert_eq!(lines[3], "d-other: sda ejected /isos/other.iso (config)");
    assert_eq!(lines[4], "e-empty: sda already empty");
    assert!(lines[6].starts_with("6 VMs: 3 ejected, 1 already empty, 1 locked, 1 failed"));
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
