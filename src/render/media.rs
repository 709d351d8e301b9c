//! Views of the media facts: the `isos` table, the ISO text of one drive, and the one
//! line each VM gets after a dismount. The table escapes its cells (it needs their
//! width); the lines are plain text for an output point to escape.

use std::io::{self, Write};

use serde::Serialize;

use super::json::SCHEMA_VERSION;
use super::text::{cell, clip, sanitize};
use crate::snapshot::media::{DriveOutcome, HostMedia, MediaSlot, VmMedia, VmReport, SHOWN};

/// The ISO column's text for one drive: the disc the VM sees now, then where the running
/// and saved definitions disagree.
pub fn slot_text(d: &MediaSlot) -> String {
    let now = d.current().unwrap_or("-").to_string();
    if !d.differs {
        return now;
    }
    let note = match (&d.live, &d.config) {
        (Some(_), Some(c)) => match &c.source {
            Some(s) => format!("saved config: {s}"),
            None => "saved config: empty".to_string(),
        },
        (Some(_), None) => "running VM only, gone after a restart".to_string(),
        (None, Some(_)) => "saved config only, from next boot".to_string(),
        (None, None) => String::new(),
    };
    format!("{now} ({note})")
}

/// The `isos` table: one row per VM and drive.
pub fn write_isos_table(out: &mut dyn Write, vms: &[&VmMedia]) -> io::Result<()> {
    let row = |vm: &str, state: &str, drive: &str, bus: &str, iso: &str| {
        format!(
            "{}{}{}{}{}",
            cell(&sanitize(vm), 20, 21),
            cell(state, 13, 14),
            cell(&sanitize(drive), 7, 8),
            cell(&sanitize(bus), 6, 7),
            sanitize(iso)
        )
        .trim_end()
        .to_string()
    };
    writeln!(out, "{}", row("VM", "State", "Drive", "Bus", "ISO"))?;
    writeln!(out, "{}", "-".repeat(80))?;
    for vm in vms {
        if vm.drives.is_empty() {
            writeln!(
                out,
                "{}",
                row(&vm.name, vm.state.as_str(), "-", "-", "(no CD-ROM drive)")
            )?;
        }
        for d in &vm.drives {
            writeln!(
                out,
                "{}",
                row(
                    &vm.name,
                    vm.state.as_str(),
                    &d.target,
                    d.bus.as_deref().unwrap_or("-"),
                    &slot_text(d)
                )
            )?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct IsosJson<'a> {
    schema_version: u32,
    uri: &'a str,
    vms: &'a [&'a VmMedia],
    errors: Vec<VmError<'a>>,
}

#[derive(Serialize)]
struct VmError<'a> {
    vm: &'a str,
    error: &'a str,
}

/// `isos --json`: the chosen VMs' drives and the VMs that could not be read.
pub fn write_isos_json(out: &mut dyn Write, host: &HostMedia, vms: &[&VmMedia]) -> io::Result<()> {
    let doc = IsosJson {
        schema_version: SCHEMA_VERSION,
        uri: &host.uri,
        vms,
        errors: host
            .errors
            .iter()
            .map(|(vm, error)| VmError { vm, error })
            .collect(),
    };
    super::json::write_pretty(out, &doc)
}

#[derive(Serialize)]
struct FleetIsos<'a> {
    schema_version: u32,
    hosts: &'a [super::json::HostStatus<'a>],
    vms: Vec<super::json::OnHost<'a, VmMedia>>,
    errors: Vec<HostVmError<'a>>,
}

#[derive(Serialize)]
struct HostVmError<'a> {
    host: &'a str,
    vm: &'a str,
    error: &'a str,
}

/// `isos --json` over several hosts: every host's status, the chosen VMs with their
/// `host`, and the VMs that could not be read.
pub fn write_fleet_isos_json(
    out: &mut dyn Write,
    hosts: &[super::json::HostStatus],
    chosen: &[(&str, &HostMedia, Vec<&VmMedia>)],
) -> io::Result<()> {
    let doc = FleetIsos {
        schema_version: SCHEMA_VERSION,
        hosts,
        vms: chosen
            .iter()
            .flat_map(|(host, _, vms)| {
                vms.iter()
                    .map(move |item| super::json::OnHost { host, item: *item })
            })
            .collect(),
        errors: chosen
            .iter()
            .flat_map(|(host, media, _)| {
                media
                    .errors
                    .iter()
                    .map(move |(vm, error)| HostVmError { host, vm, error })
            })
            .collect(),
    };
    super::json::write_pretty(out, &doc)
}

/// The `isos` table over several hosts: a HOST column first.
pub fn write_fleet_isos_table(
    out: &mut dyn Write,
    chosen: &[(&str, &HostMedia, Vec<&VmMedia>)],
) -> io::Result<()> {
    let mut tables = Vec::new();
    for (host, _, vms) in chosen {
        let mut buf = Vec::new();
        write_isos_table(&mut buf, vms)?;
        tables.push((*host, String::from_utf8_lossy(&buf).into_owned()));
    }
    super::text::write_with_host_column(out, &tables)
}

/// The one line a VM gets after a dismount (plain text).
pub fn eject_line(r: &VmReport) -> String {
    let vm = &r.vm;
    if let Some(e) = &r.error {
        return format!("{vm}: error: {e}");
    }
    let mut parts = Vec::new();
    for d in &r.drives {
        let t = &d.target;
        parts.push(match &d.outcome {
            DriveOutcome::Ejected {
                sources,
                scope,
                forced,
            } => {
                let forced = if *forced { ", tray forced open" } else { "" };
                format!(
                    "{t} ejected {} ({}){forced}",
                    sources.join(" and "),
                    scope.describe()
                )
            }
            DriveOutcome::AlreadyEmpty => format!("{t} already empty"),
            DriveOutcome::Locked => format!(
                "{t} locked: the guest holds the tray locked (the disc is in use inside the guest), nothing changed; --force would force the tray open and the guest would lose the disc under it"
            ),
            DriveOutcome::Error(e) => format!("{t} error: {e}"),
        });
    }
    if !r.guest.unmounted.is_empty() {
        parts.push(format!(
            "unmounted {} inside the guest first",
            r.guest
                .unmounted
                .iter()
                .map(|m| clip(m, SHOWN))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(skip) = &r.guest.skipped {
        // The same failure (libvirt gone, say) is said once.
        if !parts.iter().any(|p| p.ends_with(skip.as_str())) {
            parts.push(format!("not unmounted inside the guest: {skip}"));
        }
    }
    format!("{vm}: {}", parts.join("; "))
}
