//! The scriptable media commands: `isos`, `mount`, `eject`. They format what
//! [`crate::media`] decides; results go to `out`, one line per VM, and the exit code says
//! whether every target worked.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

use super::{
    eject_many, eject_vm, find_domain, read_host, read_vm, DriveOutcome, EjectOptions, IsoMatch,
    MediaSlot, MountRequest, ScopeChoice, VmMedia, VmReport, Which,
};
use crate::cli::{EjectArgs, IsosArgs, MountArgs};
use crate::render::text::{cell, sanitize};
use crate::{exit, App, Failure};

/// The ISO column's text for one drive: the disc the VM sees now, then where the running
/// and saved definitions disagree.
pub fn slot_text(d: &MediaSlot) -> String {
    let now = d.current().map(sanitize).unwrap_or_else(|| "-".to_string());
    if !d.differs {
        return now;
    }
    let note = match (&d.live, &d.config) {
        (Some(_), Some(c)) => match &c.source {
            Some(s) => format!("saved config: {}", sanitize(s)),
            None => "saved config: empty".to_string(),
        },
        (Some(_), None) => "running VM only, gone after a restart".to_string(),
        (None, Some(_)) => "saved config only, from next boot".to_string(),
        (None, None) => String::new(),
    };
    format!("{now} ({note})")
}

#[derive(Serialize)]
struct IsosJson<'a> {
    uri: &'a str,
    vms: Vec<&'a VmMedia>,
    errors: Vec<VmError<'a>>,
}

#[derive(Serialize)]
struct VmError<'a> {
    vm: &'a str,
    error: &'a str,
}

/// `isos [--json] [--iso PATH]`.
pub fn isos(app: &App, args: &IsosArgs, out: &mut impl Write) -> Result<u8, Failure> {
    let host = read_host(app.hv.as_ref())?;
    let wanted = args.iso.as_deref().map(IsoMatch::new);
    let vms: Vec<&VmMedia> = host
        .vms
        .iter()
        .filter(|vm| match &wanted {
            Some(iso) => vm.drives.iter().any(|d| d.holds(iso)),
            None => true,
        })
        .collect();
    if args.json {
        let doc = IsosJson {
            uri: &host.uri,
            vms,
            errors: host
                .errors
                .iter()
                .map(|(vm, error)| VmError { vm, error })
                .collect(),
        };
        let text =
            serde_json::to_string_pretty(&doc).map_err(|e| Failure::partial(e.to_string()))?;
        writeln!(out, "{text}")?;
    } else {
        if vms.is_empty() {
            match &wanted {
                Some(iso) => writeln!(out, "no VM holds {}", iso.shown())?,
                None if host.errors.is_empty() => {
                    writeln!(out, "no VMs on {}", sanitize(&host.uri))?
                }
                None => {}
            }
        } else {
            write_isos_table(out, &vms)?;
        }
        for (vm, e) in &host.errors {
            writeln!(out, "{}: error: {}", sanitize(vm), sanitize(e))?;
        }
    }
    out.flush()?;
    Ok(if host.errors.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// The `isos` table: one row per VM and drive.
pub fn write_isos_table(out: &mut dyn Write, vms: &[&VmMedia]) -> std::io::Result<()> {
    let row = |vm: &str, state: &str, drive: &str, bus: &str, iso: &str| {
        format!(
            "{}{}{}{}{}",
            cell(vm, 20, 21),
            cell(state, 13, 14),
            cell(drive, 7, 8),
            cell(bus, 6, 7),
            iso
        )
        .trim_end()
        .to_string()
    };
    writeln!(out, "{}", row("VM", "State", "Drive", "Bus", "ISO"))?;
    writeln!(out, "{}", "-".repeat(80))?;
    for vm in vms {
        let name = sanitize(&vm.name);
        if vm.drives.is_empty() {
            writeln!(
                out,
                "{}",
                row(&name, vm.state.as_str(), "-", "-", "(no CD-ROM drive)")
            )?;
        }
        for d in &vm.drives {
            writeln!(
                out,
                "{}",
                row(
                    &name,
                    vm.state.as_str(),
                    &sanitize(&d.target),
                    &sanitize(d.bus.as_deref().unwrap_or("-")),
                    &slot_text(d)
                )
            )?;
        }
    }
    Ok(())
}

/// `mount VM ISO [--drive T] [--live-only | --config-only]`.
pub fn mount(app: &App, args: &MountArgs, out: &mut impl Write) -> Result<u8, Failure> {
    let scope = if args.live_only {
        ScopeChoice::LiveOnly
    } else if args.config_only {
        ScopeChoice::ConfigOnly
    } else {
        ScopeChoice::Both
    };
    let line = super::mount(
        app.hv.as_ref(),
        &MountRequest {
            vm: &args.vm,
            iso: &args.iso,
            drive: args.drive.as_deref(),
            scope,
        },
    )?;
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(exit::OK)
}

pub fn eject_options(app: &App, force: bool) -> EjectOptions {
    EjectOptions::new(force, app.settings.probe_timeout, app.settings.jobs)
}

/// `eject VM [--drive T]`, `eject --iso PATH`, `eject --all` (each with `--force`).
pub fn eject(app: &App, args: &EjectArgs, out: &mut impl Write) -> Result<u8, Failure> {
    let hv = app.hv.as_ref();
    let opts = eject_options(app, args.force);
    if let Some(name) = &args.vm {
        let info = find_domain(hv, name)?;
        let vm = read_vm(hv, &info)?;
        if vm.drives.is_empty() {
            return Err(Failure::usage(format!(
                "VM {} has no CD-ROM drive",
                sanitize(&vm.name)
            )));
        }
        let which = match &args.drive {
            Some(t) if vm.drive(t).is_none() => {
                return Err(Failure::usage(format!(
                    "VM {} has no CD-ROM drive {:?} (its drives: {})",
                    sanitize(&vm.name),
                    sanitize(t),
                    sanitize(&vm.target_list())
                )))
            }
            Some(t) => Which::Drive(t.clone()),
            None => Which::All,
        };
        let report = eject_vm(hv, &vm, &which, &opts);
        writeln!(out, "{}", report.line())?;
        out.flush()?;
        return Ok(if report.failed() {
            exit::PARTIAL
        } else {
            exit::OK
        });
    }

    let started = Instant::now();
    let host = read_host(hv)?;
    let (which, vms): (Which, Vec<VmMedia>) = if let Some(iso) = &args.iso {
        let m = IsoMatch::new(iso);
        let vms = host
            .vms
            .iter()
            .filter(|vm| {
                vm.drives
                    .iter()
                    .any(|d| d.holds(&m) && args.drive.as_ref().map_or(true, |t| &d.target == t))
            })
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
    };
    if vms.is_empty() && host.errors.is_empty() {
        match &which {
            Which::Holding(m, _) => writeln!(out, "no VM holds {}", m.shown())?,
            _ => writeln!(out, "no VM has a CD-ROM drive")?,
        }
        return Ok(exit::OK);
    }
    let reports = eject_many(hv, &vms, &which, &opts);
    write_batch(out, &reports, &host.errors, started)
}

/// One line per VM, then a summary; exit 1 when any VM failed.
pub fn write_batch(
    out: &mut dyn Write,
    reports: &[VmReport],
    errors: &[(String, String)],
    started: Instant,
) -> Result<u8, Failure> {
    let (mut ejected, mut empty, mut locked, mut failed) = (0, 0, 0, errors.len());
    for r in reports {
        writeln!(out, "{}", r.line())?;
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
        writeln!(out, "{}: error: {}", sanitize(vm), sanitize(e))?;
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
