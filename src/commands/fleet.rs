//! `scan` and `isos` over several hosts: each host read in parallel under one deadline
//! ([`crate::fleet::each_host`]), one table with a HOST column (or one JSON document with
//! `host` on every VM), and one error line per host that failed, naming it and why.
//! Exit 0 when every host answered, 1 when some did not, 2 when none did.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::probe_settings;
use crate::cli::{IsosArgs, ScanArgs};
use crate::config::Settings;
use crate::exit::{self, Failure};
use crate::fleet::{self, HostOutcome, Target};
use crate::media::read_host;
use crate::probe::ProbeManager;
use crate::render::json::{write_fleet_json, HostStatus};
use crate::render::media::{write_fleet_isos_json, write_fleet_isos_table};
use crate::render::table::write_fleet_table;
use crate::render::text::write_line;
use crate::snapshot::media::{HostMedia, IsoMatch, VmMedia};
use crate::snapshot::Snapshot;

/// What a fleet command may take in all: connecting, then the scan's own deadline.
fn limit(settings: &Settings) -> Duration {
    fleet::CONNECT_TIMEOUT + settings.scan_deadline + Duration::from_secs(1)
}

fn statuses<T>(outcomes: &[HostOutcome<T>]) -> Vec<HostStatus<'_>> {
    outcomes
        .iter()
        .map(|o| HostStatus {
            host: &o.target.name,
            uri: &o.target.uri,
            ok: o.result.is_ok(),
            error: o.error(),
            duration_ms: o.took.as_millis() as u64,
        })
        .collect()
}

/// One `error:` line per failed host; the exit code the outcomes call for.
fn report_hosts<T>(outcomes: &[HostOutcome<T>], warnings: &mut impl Write) -> Result<u8, Failure> {
    let mut failed = 0;
    for o in outcomes {
        if let Some(e) = o.error() {
            failed += 1;
            let host = if o.target.name == o.target.uri {
                o.target.name.clone()
            } else {
                format!("{} ({})", o.target.name, o.target.uri)
            };
            write_line(warnings, &format!("error: host {host}: {e}"))?;
        }
    }
    Ok(match failed {
        0 => exit::OK,
        n if n == outcomes.len() => exit::USAGE,
        _ => exit::PARTIAL,
    })
}

/// `scan [--json]` over `targets`.
pub fn scan(
    settings: &Settings,
    targets: &[Target],
    args: &ScanArgs,
    out: &mut impl Write,
    warnings: &mut impl Write,
) -> Result<u8, Failure> {
    let probe = probe_settings(settings, args.no_cache);
    // One cache for every host (keyed by URI inside), so no host's save drops another's.
    let cache = Arc::new(Mutex::new(ProbeManager::load_cache(&probe)));
    let outcomes = fleet::each_host(targets, limit(settings), move |_, hv| {
        ProbeManager::with_cache(hv, probe.clone(), Arc::clone(&cache))
            .scan()
            .map_err(|e| e.to_string())
    });
    let snaps: Vec<(&str, &Snapshot)> = outcomes
        .iter()
        .filter_map(|o| Some((o.target.name.as_str(), o.result.as_ref().ok()?)))
        .collect();
    if args.json {
        write_fleet_json(out, &statuses(&outcomes), &snaps)?;
    } else {
        write_fleet_table(out, &snaps)?;
    }
    out.flush()?;
    for (host, snap) in &snaps {
        for e in &snap.errors {
            write_line(warnings, &format!("warning: {host}: {e}"))?;
        }
    }
    report_hosts(&outcomes, warnings)
}

/// `isos [--json] [--iso PATH]` over `targets`.
pub fn isos(
    settings: &Settings,
    targets: &[Target],
    args: &IsosArgs,
    out: &mut impl Write,
    warnings: &mut impl Write,
) -> Result<u8, Failure> {
    let outcomes = fleet::each_host(targets, limit(settings), |_, hv| {
        read_host(hv.as_ref()).map_err(|e| e.to_string())
    });
    let wanted = args.iso.as_deref().map(IsoMatch::new);
    let chosen: Vec<(&str, &HostMedia, Vec<&VmMedia>)> = outcomes
        .iter()
        .filter_map(|o| {
            let media = o.result.as_ref().ok()?;
            Some((
                o.target.name.as_str(),
                media,
                media.holding(wanted.as_ref()),
            ))
        })
        .collect();
    if args.json {
        write_fleet_isos_json(out, &statuses(&outcomes), &chosen)?;
    } else {
        let any = chosen.iter().any(|(_, _, vms)| !vms.is_empty());
        if any {
            write_fleet_isos_table(out, &chosen)?;
        } else if let Some(iso) = &wanted {
            write_line(out, &format!("no VM on these hosts holds {}", iso.shown()))?;
        }
        for (host, media, _) in &chosen {
            for (vm, e) in &media.errors {
                write_line(out, &format!("{host}:{vm}: error: {e}"))?;
            }
        }
    }
    out.flush()?;
    let code = report_hosts(&outcomes, warnings)?;
    let vm_errors = chosen.iter().any(|(_, m, _)| !m.errors.is_empty());
    Ok(if code == exit::OK && vm_errors {
        exit::PARTIAL
    } else {
        code
    })
}
