//! The scriptable media commands: `isos`, `mount`, `eject`. They show what
//! [`crate::media`] decides: one line per VM, and an exit code that says whether every
//! target worked.

use std::io::Write;
use std::time::Instant;

use crate::app::App;
use crate::audit::{self, Change};
use crate::cli::{EjectArgs, IsosArgs, MountArgs};
use crate::exit::{self, Failure};
use crate::hypervisor::{find_domain, HvError, StorageVolume};
use crate::media::eject::{eject_many, eject_vm, EjectOptions, Which};
use crate::media::guest::some_of;
use crate::media::mount::{mount, MountRequest, ScopeChoice};
use crate::media::{read_host, read_vm, MediaError};
use crate::probe;
use crate::render::media::{eject_line, write_isos_json, write_isos_table};
use crate::render::text::write_line;
use crate::snapshot::media::{DriveOutcome, HostMedia, IsoMatch, VmMedia, VmReport};

/// `isos [--json] [--iso PATH]`.
pub fn isos(app: &App, args: &IsosArgs, out: &mut impl Write) -> Result<u8, Failure> {
    let host = read_host(app.hv.as_ref())?;
    let wanted = args.iso.as_deref().map(IsoMatch::new);
    let vms = host.holding(wanted.as_ref());
    if args.json {
        write_isos_json(out, &host, &vms)?;
    } else {
        if vms.is_empty() {
            match &wanted {
                Some(iso) => write_line(out, &format!("no VM holds {}", iso.shown()))?,
                None if host.errors.is_empty() => {
                    write_line(out, &format!("no VMs on {}", host.uri))?
                }
                None => {}
            }
        } else {
            write_isos_table(out, &vms)?;
        }
        for (vm, e) in &host.errors {
            write_line(out, &format!("{vm}: error: {e}"))?;
        }
    }
    out.flush()?;
    Ok(if host.errors.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// `mount VM ISO [--drive T] [--live-only | --config-only]`.
pub fn mount_cmd(app: &App, args: &MountArgs, out: &mut impl Write) -> Result<u8, Failure> {
    let scope = if args.live_only {
        ScopeChoice::LiveOnly
    } else if args.config_only {
        ScopeChoice::ConfigOnly
    } else {
        ScopeChoice::Both
    };
    let line = mount(
        app.hv.as_ref(),
        &MountRequest {
            vm: &args.vm,
            iso: &args.iso,
            drive: args.drive.as_deref(),
            scope,
        },
    )?;
    audit_mount(app, &args.vm, &line);
    write_line(out, &line)?;
    out.flush()?;
    Ok(exit::OK)
}

/// The audit line of a mount that changed something.
/// After a change to `app`'s VMs: the next `scan` must see it, whatever `--stats-ttl`.
pub fn note_change(app: &App) {
    probe::forget_listings(app.settings.cache_path.as_deref(), [app.uri().as_str()]);
}

pub fn audit_mount(app: &App, vm: &str, line: &str) {
    note_change(app);
    audit::log_change(&Change {
        action: "mount",
        uri: &app.uri(),
        vm,
        what: line,
        result: "ok",
    });
}

/// One audit line per VM an eject touched (a drive already empty is no change).
pub fn audit_ejects(uri: &str, reports: &[VmReport]) {
    for r in reports {
        if r.drives
            .iter()
            .all(|d| matches!(d.outcome, DriveOutcome::AlreadyEmpty))
            && r.error.is_none()
        {
            continue;
        }
        let result = if r.failed() { "not all ejected" } else { "ok" };
        audit::log_change(&Change {
            action: "eject",
            uri,
            vm: &r.vm,
            what: &eject_line(r),
            result,
        });
    }
}

/// The knobs of a dismount from the settings.
pub fn eject_options(app: &App, force: bool) -> EjectOptions {
    EjectOptions::new(force, app.settings.agent_timeout, app.settings.jobs)
}

/// Dismount the discs of one VM (or of its drive `drive`), audited: what `eject VM` and
/// `top`'s `e` do. Bad input (unknown VM or drive, a VM without drive) is an error and
/// changes nothing; the report says what happened to each drive.
pub fn eject_one(
    app: &App,
    name: &str,
    drive: Option<&str>,
    force: bool,
) -> Result<VmReport, Failure> {
    let hv = app.hv.as_ref();
    let info = find_domain(hv, name)?;
    let vm = read_vm(hv, &info)?;
    if vm.drives.is_empty() {
        return Err(MediaError::NoDrive(vm.name).into());
    }
    let which = match drive {
        Some(t) if vm.drive(t).is_none() => {
            return Err(MediaError::NoSuchDrive {
                drives: vm.target_list(),
                vm: vm.name,
                drive: t.to_string(),
            }
            .into())
        }
        Some(t) => Which::Drive(t.to_string()),
        None => Which::All,
    };
    let report = eject_vm(hv, &vm, &which, &eject_options(app, force));
    audit_ejects(&app.uri(), std::slice::from_ref(&report));
    note_change(app);
    Ok(report)
}

/// The storage pools' ISO volumes (by name or path ending in `.iso`), sorted by path:
/// what the menu and `top` offer to mount.
pub fn iso_volumes(app: &App) -> Result<Vec<StorageVolume>, HvError> {
    let mut volumes = app.hv.list_volumes()?;
    volumes.retain(|v| {
        v.path.to_ascii_lowercase().ends_with(".iso")
            || v.name.to_ascii_lowercase().ends_with(".iso")
    });
    volumes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(volumes)
}

/// `eject VM [--drive T]`, `eject --iso PATH`, `eject --all` (each with `--force`).
pub fn eject(app: &App, args: &EjectArgs, out: &mut impl Write) -> Result<u8, Failure> {
    let hv = app.hv.as_ref();
    let opts = eject_options(app, args.force);
    if let Some(name) = &args.vm {
        let report = eject_one(app, name, args.drive.as_deref(), args.force)?;
        write_line(out, &eject_line(&report))?;
        out.flush()?;
        return Ok(if report.failed() {
            exit::PARTIAL
        } else {
            exit::OK
        });
    }

    let started = Instant::now();
    let host = read_host(hv)?;
    let (which, vms) = chosen_for_eject(&host, args);
    if vms.is_empty() && host.errors.is_empty() {
        write_line(out, &nothing_to_eject(&which, "VM"))?;
        return Ok(exit::OK);
    }
    if args.dry_run {
        for line in would_eject(&vms, &which) {
            write_line(out, &line)?;
        }
        out.flush()?;
        return Ok(exit::OK);
    }
    let reports = eject_many(hv, &vms, &which, &opts);
    audit_ejects(&app.uri(), &reports);
    note_change(app);
    write_batch(out, &reports, &host.errors, started)
}

/// What `eject --iso PATH` or `eject --all` (with `--drive`) chooses on one host: the
/// drives to take, and the VMs that have one of them.
pub fn chosen_for_eject(host: &HostMedia, args: &EjectArgs) -> (Which, Vec<VmMedia>) {
    let drive_ok = |t: &str| args.drive.as_deref().is_none_or(|want| want == t);
    if let Some(iso) = &args.iso {
        let m = IsoMatch::new(iso);
        let vms = host
            .vms
            .iter()
            .filter(|vm| vm.drives.iter().any(|d| d.holds(&m) && drive_ok(&d.target)))
            .cloned()
            .collect();
        (Which::Holding(m, args.drive.clone()), vms)
    } else {
        let vms = host
            .vms
            .iter()
            .filter(|vm| match &args.drive {
                Some(t) => vm.drive(t).is_some(),
                None => !vm.drives.is_empty(),
            })
            .cloned()
            .collect();
        let which = match &args.drive {
            Some(t) => Which::Drive(t.clone()),
            None => Which::All,
        };
        (which, vms)
    }
}

/// The line for a batch that found nothing to take (`place`: "VM" or "VM on these hosts").
pub fn nothing_to_eject(which: &Which, place: &str) -> String {
    match which {
        Which::Holding(m, _) => format!("no {place} holds {}", m.shown()),
        _ => format!("no {place} has a CD-ROM drive"),
    }
}

/// `--dry-run`: one line per drive that holds a disc the batch would take out.
pub fn would_eject(vms: &[VmMedia], which: &Which) -> Vec<String> {
    let mut lines = Vec::new();
    for vm in vms {
        for d in &vm.drives {
            let taken = match which {
                Which::All => true,
                Which::Drive(t) => &d.target == t,
                Which::Holding(m, t) => d.holds(m) && t.as_ref().is_none_or(|t| &d.target == t),
            };
            if let (true, Some(disc)) = (taken, d.current()) {
                lines.push(format!("{}: {} would eject {disc}", vm.name, d.target));
            }
        }
    }
    lines
}

/// How many drives with a disc a batch would take out.
pub fn discs_in(vms: &[VmMedia], which: &Which) -> usize {
    would_eject(vms, which).len()
}

/// One line per VM, then a summary; exit 1 when any VM failed.
pub fn write_batch(
    out: &mut dyn Write,
    reports: &[VmReport],
    errors: &[(String, String)],
    started: Instant,
) -> Result<u8, Failure> {
    let (mut ejected, mut empty, mut locked, mut failed) = (0, 0, 0, errors.len());
    let mut not_attempted = Vec::new();
    for r in reports {
        if r.not_attempted {
            not_attempted.push(r.vm.clone());
            failed += 1;
            continue;
        }
        write_line(out, &eject_line(r))?;
        let outcomes: Vec<&DriveOutcome> = r.drives.iter().map(|d| &d.outcome).collect();
        if r.error.is_some() || outcomes.iter().any(|o| matches!(o, DriveOutcome::Error(_))) {
            failed += 1;
        } else if outcomes.iter().any(|o| matches!(o, DriveOutcome::Locked)) {
            locked += 1;
        } else if outcomes
            .iter()
            .any(|o| matches!(o, DriveOutcome::Ejected { .. }))
        {
            ejected += 1;
        } else {
            empty += 1;
        }
    }
    for (vm, e) in errors {
        write_line(out, &format!("{vm}: error: {e}"))?;
    }
    if !not_attempted.is_empty() {
        write_line(
            out,
            &format!(
                "libvirt went away during the batch: {} VM(s) not attempted, their discs are where they were: {}",
                not_attempted.len(),
                some_of(&not_attempted, 5)
            ),
        )?;
    }
    writeln!(
        out,
        "{} VMs: {ejected} ejected, {empty} already empty, {locked} locked, {failed} failed ({:.2} s)",
        reports.len() + errors.len(),
        started.elapsed().as_secs_f64()
    )?;
    out.flush()?;
    Ok(if locked + failed > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    })
}
