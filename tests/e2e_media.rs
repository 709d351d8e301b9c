//! End-to-end: `isos`, `mount`, `eject` and the menu's media flows against the real harness
//! (libvirtd + QEMU + qemu-ga), on both backends.
//!
//! The state-changing tests use the harness's own media guests (diq-media-*), run one at a
//! time (they share those guests), and put back what they changed, so reruns pass; the
//! shared guests (diq-ubuntu, diq-win2k22…) are only read.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;
use dismount_iso_qemu::agent::Agent;
use dismount_iso_qemu::domxml::{self, MediaSource};
use dismount_iso_qemu::hypervisor::{self, Backend, ChangeScope, Hypervisor, XmlScope};

const MEDIA_A: &str = "diq-media-a";
const MEDIA_B: &str = "diq-media-b";
const MEDIA_OFF: &str = "diq-media-off";
const MEDIA_BARE: &str = "diq-media-bare";
const MEDIA_SCSI: &str = "diq-media-scsi";

fn hv() -> Arc<dyn Hypervisor> {
    Arc::from(hypervisor::open(Backend::Native, Some(harness_uri())).expect("open harness"))
}

/// The harness discs: from `scripts/harness.sh env` variables when set, else next to the
/// disc diq-ubuntu holds.
fn isos() -> (String, String) {
    if let (Ok(a), Ok(b)) = (
        std::env::var("HARNESS_ISO"),
        std::env::var("HARNESS_SECOND_ISO"),
    ) {
        return (a, b);
    }
    let xml = hv().domain_xml(UBUNTU, XmlScope::Persistent).unwrap();
    let first = domxml::parse(&xml).unwrap().cdroms[0]
        .source
        .clone()
        .expect("diq-ubuntu holds the harness disc");
    let second = PathBuf::from(&first)
        .with_file_name("second disc é.iso")
        .to_string_lossy()
        .into_owned();
    (first, second)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// One OS cache for every run of this file, kept for an hour, so only the first scan (the
/// menu scans too) probes diq-frozen: each probe of it keeps libvirt busy for about 5 s
/// after the process ends, which would slow whatever scans next.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The tool's cache file under [`cache_dir`].
fn cache_file() -> std::path::PathBuf {
    cache_dir().join("dismount_iso_qemu").join("os-cache.json")
}

static LAST_SCAN: Mutex<Option<Instant>> = Mutex::new(None);

/// Wait until a scan of ours can no longer hold up the frozen guest's agent queue, so the
/// scan tests that may run next measure only themselves.
fn settle() {
    let last = *LAST_SCAN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = last {
        let quiet = Duration::from_secs(9);
        if at.elapsed() < quiet {
            std::thread::sleep(quiet - at.elapsed());
        }
    }
}

fn run(backend: &str, args: &[&str], stdin: Option<&str>) -> Run {
    if args.iter().any(|a| *a == "scan" || *a == "menu") {
        *LAST_SCAN.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    let mut c = tool_on_harness(cache_dir(), backend);
    c.args(["--probe-timeout", "3", "--cache-ttl", "3600"])
        .args(args)
        .timeout(Duration::from_secs(120));
    if let Some(s) = stdin {
        c.write_stdin(s.as_bytes().to_vec());
    }
    let t0 = Instant::now();
    let out = c.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: t0.elapsed(),
    }
}

fn ok(backend: &str, args: &[&str]) -> Run {
    let r = run(backend, args, None);
    assert_eq!(
        r.code, 0,
        "{backend} {args:?}: stdout {} stderr {}",
        r.stdout, r.stderr
    );
    r
}

fn info_of(h: &dyn Hypervisor, vm: &str) -> hypervisor::DomainInfo {
    h.list_domains()
        .unwrap()
        .into_iter()
        .find(|d| d.name == vm)
        .unwrap_or_else(|| panic!("{vm} is not defined"))
}

/// (live, config) source of drive `target`; `None` = empty, missing = drive absent.
fn media(vm: &str, target: &str) -> (Option<Option<String>>, Option<Option<String>>) {
    let h = hv();
    let info = info_of(h.as_ref(), vm);
    let read = |scope| {
        let xml = h.domain_xml(vm, scope).unwrap();
        domxml::parse(&xml)
            .unwrap()
            .cdroms
            .into_iter()
            .find(|d| d.target == target)
            .map(|d| d.source)
    };
    let live = if info.state.is_active() {
        read(XmlScope::Current)
    } else {
        None
    };
    (live, read(XmlScope::Persistent))
}

/// Run a shell script in the guest; (exit code, stdout + stderr).
fn guest_sh(vm: &str, script: &str) -> (Option<i64>, String) {
    let h = hv();
    let agent = Agent::new(h.as_ref(), vm, Duration::from_secs(5));
    let out = agent
        .exec(
            "/bin/sh",
            &["-c", script],
            Instant::now() + Duration::from_secs(20),
        )
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.exit_code, text)
}

/// Put `iso` into sda of `vm` (live when running, and config), forcing the tray.
fn restore(vm: &str, iso: &str) {
    let h = hv();
    let info = info_of(h.as_ref(), vm);
    let xml = domxml::cdrom_device_xml("sda", Some("sata"), Some(MediaSource::File(iso))).unwrap();
    let scope = ChangeScope {
        live: info.state.is_active(),
        config: true,
    };
    h.update_device(vm, &xml, scope, true)
        .unwrap_or_else(|e| panic!("restoring {vm}: {e}"));
}

/// The guest unmounts whatever it has on /mnt and stops any process holding it.
fn guest_release(vm: &str) {
    guest_sh(
        vm,
        "for p in $(pidof sleep); do kill $p; done; sleep 0.2; umount /mnt 2>/dev/null; true",
    );
}

/// Mount sr0 at /mnt inside the guest, retrying while the new disc settles.
fn guest_mount(vm: &str) -> String {
    let (code, text) = guest_sh(
        vm,
        "for i in 1 2 3 4 5 6 7 8 9 10; do mount -t iso9660 -o ro /dev/sr0 /mnt 2>/dev/null && break; sleep 0.5; done; cat /mnt/*.TXT",
    );
    assert_eq!(code, Some(0), "{vm}: mount in the guest failed: {text}");
    text
}

#[test]
fn isos_shows_the_harness_disc() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, _) = isos();
    for backend in BACKENDS {
        let r = ok(backend, &["isos", "--json"]);
        let doc: Value = serde_json::from_str(&r.stdout).unwrap();
        let vm = |name: &str| {
            doc["vms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .clone()
        };
        let ubuntu = vm(UBUNTU);
        assert_eq!(ubuntu["drives"][0]["target"], "sda");
        assert_eq!(ubuntu["drives"][0]["live"]["source"], harness.as_str());
        assert_eq!(ubuntu["drives"][0]["config"]["source"], harness.as_str());
        let win = vm(WIN_OFF);
        assert_eq!(win["state"], "shut_off");
        assert_eq!(win["drives"][0]["live"], Value::Null);
        assert_eq!(win["drives"][0]["config"]["source"], harness.as_str());
        assert_eq!(vm(CENTOS)["drives"][0]["live"]["source"], Value::Null);
        assert_eq!(vm(NO_AGENT)["drives"], serde_json::json!([]));

        let r = ok(backend, &["isos", "--iso", &harness]);
        assert!(
            r.stdout.contains(UBUNTU) && r.stdout.contains(WIN_OFF),
            "{}",
            r.stdout
        );
        assert!(!r.stdout.contains(CENTOS));
        assert!(r.stdout.lines().next().unwrap().starts_with("VM "));

        // The scan table's ISO column shows the same disc.
        let r = ok(backend, &["scan"]);
        let row = r.stdout.lines().find(|l| l.starts_with(UBUNTU)).unwrap();
        assert!(row.ends_with(&harness), "{row}");
    }
    settle();
}

#[test]
fn bad_input_gets_one_clear_line() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, _) = isos();
    for backend in BACKENDS {
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["eject", "no-such-vm"],
                "no VM named \"no-such-vm\" on this connection (`dismount_iso_qemu scan` lists them)",
            ),
            (
                vec!["mount", "no-such-vm", &harness],
                "no VM named \"no-such-vm\"",
            ),
            (
                vec!["mount", MEDIA_A, "/no/such disc.iso"],
                "ISO \"/no/such disc.iso\" does not exist",
            ),
            (
                vec!["eject", MEDIA_A, "--drive", "sdq"],
                "VM diq-media-a has no CD-ROM drive \"sdq\" (its drives: sda)",
            ),
            (
                vec!["eject", NO_AGENT],
                "VM diq-noagent has no CD-ROM drive",
            ),
            (
                vec!["mount", MEDIA_A, &harness, "--drive", "sdq"],
                "VM diq-media-a has no CD-ROM drive \"sdq\" (its drives: sda)",
            ),
            (
                vec!["mount", MEDIA_A, "/"],
                "ISO \"/\" is a directory, not an image",
            ),
        ];
        for (args, want) in cases {
            let r = run(backend, &args, None);
            assert_eq!(r.code, 2, "{backend} {args:?}: {}", r.stderr);
            assert!(r.stdout.is_empty(), "{}", r.stdout);
            assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
            assert!(r.stderr.contains(want), "{backend} {args:?}: {}", r.stderr);
        }
    }
    // Nothing was touched.
    assert_eq!(media(MEDIA_A, "sda").0, Some(Some(harness)));
}

#[test]
fn eject_mount_second_disc_and_dismount_a_mounted_disc() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, second) = isos();
    for backend in BACKENDS {
        guest_release(MEDIA_A);
        restore(MEDIA_A, &harness);

        // Eject empties the drive, live and config.
        let r = ok(backend, &["eject", MEDIA_A]);
        assert!(
            r.stdout.starts_with(&format!(
                "{MEDIA_A}: sda ejected {harness} (live and config)"
            )),
            "{backend}: {}",
            r.stdout
        );
        assert_eq!(media(MEDIA_A, "sda"), (Some(None), Some(None)));
        let r = ok(backend, &["eject", MEDIA_A]);
        assert_eq!(r.stdout, format!("{MEDIA_A}: sda already empty\n"));

        // Mount the second disc (space and é in its path): the guest reads it.
        let r = ok(backend, &["mount", MEDIA_A, &second]);
        assert_eq!(
            r.stdout,
            format!("{MEDIA_A} sda: mounted {second} (live and config)\n")
        );
        assert_eq!(
            media(MEDIA_A, "sda"),
            (Some(Some(second.clone())), Some(Some(second.clone())))
        );
        let text = guest_mount(MEDIA_A);
        assert!(
            text.contains("Second disc of the dismount_iso_qemu harness."),
            "{text}"
        );

        // The guest has it mounted: eject unmounts it inside the guest first.
        let r = ok(backend, &["eject", MEDIA_A]);
        assert_eq!(
            r.stdout,
            format!("{MEDIA_A}: sda ejected {second} (live and config); unmounted /mnt inside the guest first\n"),
            "{backend}"
        );
        let (_, mounts) = guest_sh(MEDIA_A, "cat /proc/mounts");
        assert!(!mounts.contains("/dev/sr0"), "{mounts}");

        restore(MEDIA_A, &harness);
    }
}

#[test]
fn a_busy_disc_is_locked_and_force_takes_it() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, _) = isos();
    for backend in BACKENDS {
        guest_release(MEDIA_B);
        restore(MEDIA_B, &harness);
        let text = guest_mount(MEDIA_B);
        assert!(text.contains("Hello from"), "{text}");
        // A process inside the disc keeps it busy: umount fails, the tray stays locked.
        let h = hv();
        Agent::new(h.as_ref(), MEDIA_B, Duration::from_secs(5))
            .exec_start("/bin/sh", &["-c", "cd /mnt && exec sleep 600"])
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));

        let r = run(backend, &["eject", MEDIA_B], None);
        assert_eq!(r.code, 1, "{backend}: {} {}", r.stdout, r.stderr);
        assert_eq!(r.stdout.lines().count(), 1);
        assert!(
            r.stdout.starts_with(&format!("{MEDIA_B}: sda locked: the guest holds the tray locked (the disc is in use inside the guest), nothing changed; --force would force the tray open and the guest would lose the disc under it; not unmounted inside the guest: umount /mnt failed in the guest")),
            "{backend}: {}",
            r.stdout
        );
        assert_eq!(media(MEDIA_B, "sda").0, Some(Some(harness.clone())));

        let r = ok(backend, &["eject", MEDIA_B, "--force"]);
        assert!(
            r.stdout.starts_with(&format!(
                "{MEDIA_B}: sda ejected {harness} (live and config), tray forced open"
            )),
            "{backend}: {}",
            r.stdout
        );
        assert_eq!(media(MEDIA_B, "sda"), (Some(None), Some(None)));

        guest_release(MEDIA_B);
        restore(MEDIA_B, &harness);
    }
}

/// `vm`'s row in `scan --json` with `extra` flags.
fn scanned_row(backend: &str, vm: &str, extra: &[&str]) -> Value {
    let r = ok(backend, &[&["scan", "--json"], extra].concat());
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    doc["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vm)
        .unwrap_or_else(|| panic!("{vm} missing"))
        .clone()
}

/// The disc `scan --json` shows in `vm`'s sda.
fn scanned_disc(backend: &str, vm: &str) -> Value {
    let row = scanned_row(backend, vm, &[]);
    assert_eq!(row["media"][0]["target"], "sda", "{row}");
    row["media"][0]["source"].clone()
}

/// Runs `virsh ARGS` on the harness, which must succeed.
fn virsh(args: &[&str]) {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", harness_uri()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `--stats-ttl` a scan within the TTL asks libvirt nothing about the domains: a
/// disc another tool ejected meanwhile still shows, with the listing's age; without it
/// (the default, 0) the same scan sees the change.
#[test]
fn a_stats_ttl_rescan_reuses_what_the_last_scan_read() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, second) = isos();
    let cache_file = cache_file();
    let ttl = ["--stats-ttl", "600"];
    for backend in BACKENDS {
        // No listing from an earlier test or backend.
        if let Ok(text) = std::fs::read_to_string(&cache_file) {
            let mut file: Value = serde_json::from_str(&text).unwrap();
            file.as_object_mut().unwrap().remove("listings");
            std::fs::write(&cache_file, file.to_string()).unwrap();
        }
        let first = scanned_row(backend, MEDIA_OFF, &ttl);
        assert_eq!(first["media"][0]["source"], harness.as_str(), "{first}");
        assert_eq!(first["ages"]["statistics_seconds"], 0, "{first}");
        virsh(&[
            "change-media",
            MEDIA_OFF,
            "sda",
            "--eject",
            "--config",
            "--force",
        ]);
        std::thread::sleep(Duration::from_millis(1100));
        let reused = scanned_row(backend, MEDIA_OFF, &ttl);
        assert_eq!(reused["media"][0]["source"], harness.as_str(), "{reused}");
        let age = reused["ages"]["statistics_seconds"].as_u64().unwrap();
        assert!((1..60).contains(&age), "{backend}: {reused}");
        assert_eq!(reused["state"], "shut_off", "{reused}");
        let running = scanned_row(backend, MEDIA_A, &ttl);
        assert_eq!(running["state"], "running", "{running}");
        assert!(running["ages"]["statistics_seconds"].as_u64().unwrap() >= 1);
        // Statistics TTL 0: the change shows at once.
        let fresh = scanned_row(backend, MEDIA_OFF, &[]);
        assert_eq!(
            fresh["media"][0]["source"],
            Value::Null,
            "{backend}: {fresh}"
        );
        assert_eq!(fresh["ages"]["statistics_seconds"], 0, "{fresh}");
        // A change made by this tool shows at once under the TTL too.
        let _ = scanned_row(backend, MEDIA_OFF, &ttl);
        ok(backend, &["mount", MEDIA_OFF, second.as_str()]);
        let mounted = scanned_row(backend, MEDIA_OFF, &ttl);
        assert_eq!(mounted["media"][0]["source"], second.as_str(), "{mounted}");
        restore(MEDIA_OFF, &harness);
    }
    settle();
}

/// A shut-off VM's XML facts are reused between scans while libvirt's bulk statistics
/// vouch for them; a disc changed by another tool (virsh here) must show at once anyway.
#[test]
fn scan_sees_a_shut_off_vms_disc_changed_by_another_tool() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, second) = isos();
    let cache_file = cache_file();
    let uuid = info_of(hv().as_ref(), MEDIA_OFF).uuid;
    for backend in BACKENDS {
        assert_eq!(scanned_disc(backend, MEDIA_OFF), harness.as_str());
        if backend == "native" {
            // The facts are in the cache: the next scan would not read this XML again.
            let cached = std::fs::read_to_string(&cache_file).unwrap();
            let file: Value = serde_json::from_str(&cached).unwrap();
            let entry = file["definitions"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| k.ends_with(&uuid))
                .unwrap_or_else(|| panic!("no definition facts for {uuid} in {cached}"));
            assert_eq!(entry.1["facts"]["cdroms"][0]["source"], harness.as_str());
        }
        virsh(&[
            "change-media",
            MEDIA_OFF,
            "sda",
            &second,
            "--update",
            "--config",
            "--force",
        ]);
        assert_eq!(
            scanned_disc(backend, MEDIA_OFF),
            second.as_str(),
            "{backend}"
        );
        virsh(&[
            "change-media",
            MEDIA_OFF,
            "sda",
            "--eject",
            "--config",
            "--force",
        ]);
        assert_eq!(scanned_disc(backend, MEDIA_OFF), Value::Null, "{backend}");
        restore(MEDIA_OFF, &harness);
        assert_eq!(
            scanned_disc(backend, MEDIA_OFF),
            harness.as_str(),
            "{backend}"
        );
    }
    settle();
}

#[test]
fn eject_by_iso_clears_several_vms_including_a_shut_off_one() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, second) = isos();
    let vms = [MEDIA_A, MEDIA_B, MEDIA_OFF];
    for backend in BACKENDS {
        for vm in vms {
            if vm != MEDIA_OFF {
                guest_release(vm);
            }
            let r = ok(backend, &["mount", vm, &second]);
            assert!(r.stdout.contains("mounted"), "{}", r.stdout);
        }
        let r = ok(backend, &["isos", "--iso", &second]);
        for vm in vms {
            assert!(r.stdout.contains(vm), "{}", r.stdout);
        }
        assert!(!r.stdout.contains(UBUNTU));

        let r = ok(backend, &["eject", "--iso", &second]);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{}", r.stdout);
        assert_eq!(
            lines[0],
            format!("{MEDIA_A}: sda ejected {second} (live and config)")
        );
        assert_eq!(
            lines[1],
            format!("{MEDIA_B}: sda ejected {second} (live and config)")
        );
        assert_eq!(
            lines[2],
            format!("{MEDIA_OFF}: sda ejected {second} (config)")
        );
        assert!(lines[3].starts_with("3 VMs: 3 ejected, 0 already empty, 0 locked, 0 failed ("));
        eprintln!(
            "TIMING {backend}: eject --iso from 3 VMs (2 running, 1 shut off): {:?} wall, {}",
            r.took, lines[3]
        );
        for vm in vms {
            let (live, config) = media(vm, "sda");
            assert_eq!(config, Some(None), "{vm}");
            assert!(live.is_none() || live == Some(None), "{vm}");
        }
        // Nothing holds it any more; other discs were left alone.
        let r = ok(backend, &["eject", "--iso", &second]);
        assert_eq!(r.stdout, format!("no VM holds {second}\n"));
        assert_eq!(media(UBUNTU, "sda").0, Some(Some(harness.clone())));

        for vm in vms {
            restore(vm, &harness);
        }
    }
}

#[test]
fn drives_are_added_where_libvirt_can() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (_, second) = isos();
    for backend in BACKENDS {
        detach_if_present(MEDIA_BARE, "sda", &["--config"]);
        detach_if_present(MEDIA_SCSI, "sda", &["--live", "--config"]);
        // Shut off: a SATA drive in the config.
        let r = ok(backend, &["mount", MEDIA_BARE, &second]);
        assert_eq!(
            r.stdout,
            format!("{MEDIA_BARE} sda: added a SATA CD-ROM drive holding {second} (config); the VM sees it from its next boot\n")
        );
        assert_eq!(media(MEDIA_BARE, "sda").1, Some(Some(second.clone())));
        let r = ok(backend, &["isos", "--iso", &second]);
        assert!(r.stdout.contains(MEDIA_BARE));
        detach(MEDIA_BARE, "sda", &["--config"]);

        // Running with a SCSI controller: hot-added, live and config; the guest reads it.
        let r = ok(backend, &["mount", MEDIA_SCSI, &second]);
        assert_eq!(
            r.stdout,
            format!(
                "{MEDIA_SCSI} sda: added a SCSI CD-ROM drive holding {second} (live and config)\n"
            )
        );
        let (live, config) = media(MEDIA_SCSI, "sda");
        assert_eq!(live, Some(Some(second.clone())));
        assert_eq!(config, Some(Some(second.clone())));
        let text = guest_mount(MEDIA_SCSI);
        assert!(text.contains("Second disc"), "{text}");
        // libvirt 9.0 cannot change the disc of a drive hot-added since the VM started:
        // the guest side still unmounts, and the error says what to do instead.
        let r = run(backend, &["eject", MEDIA_SCSI], None);
        detach(MEDIA_SCSI, "sda", &["--live", "--config"]);
        assert!(
            r.stdout.contains("unmounted /mnt inside the guest first"),
            "{}",
            r.stdout
        );
        if r.code != 0 {
            assert_eq!(r.code, 1);
            assert!(
                r.stdout.contains(
                    "sda error: libvirt cannot change the disc of this drive while the VM runs"
                ),
                "{}",
                r.stdout
            );
        }
    }
}

fn detach_if_present(vm: &str, target: &str, flags: &[&str]) {
    if media(vm, target) != (None, None) {
        detach(vm, target, flags);
    }
}

fn detach(vm: &str, target: &str, flags: &[&str]) {
    let out = std::process::Command::new("virsh")
        .env("LC_ALL", "C")
        .args(["-c", harness_uri(), "detach-disk", vm, target])
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "detach-disk {vm} {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Hot-unplug finishes asynchronously in the guest.
    for _ in 0..50 {
        if media(vm, target) == (None, None) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn menu_mounts_and_dismounts_through_stdin() {
    if !harness_available() {
        return;
    }
    let _g = serial();
    let (harness, second) = isos();
    for backend in BACKENDS {
        guest_release(MEDIA_A);
        restore(MEDIA_A, &harness);
        // 1 → VM by its list text → "Eject … from sda" → exit.
        let input = format!("1\n{MEDIA_A} (running)\n1\n4\n");
        let r = run(backend, &["menu"], Some(&input));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stdout.contains(&format!(
                "CD-ROM drives of {MEDIA_A} (running):\n  sda (sata): {harness}\n"
            )),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&format!(
                "{MEDIA_A}: sda ejected {harness} (live and config)"
            )),
            "{}",
            r.stdout
        );
        assert_eq!(media(MEDIA_A, "sda").0, Some(None));

        // 1 → VM → (empty drive) pick "Type a path" → the second disc → confirm.
        let input = format!("1\n{MEDIA_A} (running)\nType a path\n{second}\ny\n4\n");
        let r = run(backend, &["menu"], Some(&input));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stdout.contains(&format!(
                "{MEDIA_A} sda: mounted {second} (live and config)"
            )),
            "{}",
            r.stdout
        );

        // 2 → the table, then the dismount offer: one choice ejects it.
        let input = format!("2\n{MEDIA_A} sda: {second}\n4\n");
        let r = run(backend, &["menu"], Some(&input));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stdout.contains("Dismount an ISO? (empty to go back)"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&format!(
                "{MEDIA_A}: sda ejected {second} (live and config)"
            )),
            "{}",
            r.stdout
        );
        assert_eq!(media(MEDIA_A, "sda"), (Some(None), Some(None)));

        restore(MEDIA_A, &harness);
    }
    settle();
}
