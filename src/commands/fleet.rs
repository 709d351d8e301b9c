//! `scan` and `isos` over several hosts: each host read in parallel under one deadline
//! ([`crate::fleet::each_host`]), one table with a HOST column (or one JSON document with
//! `host` on every VM), and one error line per host that failed, naming it and why.
//! Exit 0 when every host answered, 1 when some did not, 2 when none did. `eject --iso`
//! and `eject --all` over several hosts read everything first, then ask once.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::probe_settings;
use crate::cli::{EjectArgs, IsosArgs, ScanArgs};
use crate::commands::media::{
    audit_ejects, chosen_for_eject, discs_in, nothing_to_eject, would_eject, write_batch,
};
use crate::config::Settings;
use crate::exit::{self, Failure};
use crate::fleet::{self, widest, HostOutcome, Target};
use crate::media::eject::{eject_many, EjectOptions, Which};
use crate::media::read_host;
use crate::probe::{self, save_cache, ProbeManager};
use crate::render::json::{write_fleet_json, HostStatus};
use crate::render::media::{write_fleet_isos_json, write_fleet_isos_table};
use crate::render::table::write_fleet_table;
use crate::render::text::{sanitize, write_line};
use crate::snapshot::media::{HostMedia, IsoMatch, VmMedia};
use crate::snapshot::Snapshot;

/// Every host's drives and ISOs, read in parallel.
fn read_hosts(settings: &Settings, targets: &[Target]) -> Vec<HostOutcome<HostMedia>> {
    fleet::each_host(
        targets,
        settings.connect_timeout,
        Target::limit(targets, settings),
        |_, hv| read_host(hv.as_ref()).map_err(|e| e.to_string()),
    )
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
            write_line(warnings, &format!("error: host {}: {e}", o.target.shown()))?;
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
    // One cache for every host (keyed by URI inside), saved once after all of them, each
    // part kept for the longest TTL any host has for it.
    let saving = probe_settings(&widest(settings, targets), args.no_cache);
    let cache = Arc::new(Mutex::new(ProbeManager::load_cache(&saving)));
    let shared = Arc::clone(&cache);
    let base = settings.clone();
    let no_cache = args.no_cache;
    let outcomes = fleet::each_host(
        targets,
        settings.connect_timeout,
        Target::limit(targets, settings),
        move |t, hv| {
            let probe = probe_settings(&t.settings(&base), no_cache);
            ProbeManager::with_cache(hv, probe, Arc::clone(&shared))
                .scan()
                .map_err(|e| e.to_string())
        },
    );
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
    if let Err(e) = save_cache(
        &mut cache.lock().unwrap_or_else(|e| e.into_inner()),
        &saving,
    ) {
        write_line(warnings, &format!("warning: {e}"))?;
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
    let outcomes = read_hosts(settings, targets);
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

/// What one host's part of a fleet eject is: the drives to take and the VMs holding
/// them, plus the VMs that could not be read.
struct HostPlan {
    which: Which,
    vms: Vec<VmMedia>,
    errors: Vec<(String, String)>,
}

/// Asks the user a yes/no question; `None` when there is no terminal to ask on.
pub type Ask<'a> = Option<&'a mut dyn FnMut(&str) -> std::io::Result<bool>>;

/// `eject --iso PATH` / `eject --all` over `targets`: read every host in parallel, show
/// what would go (`--dry-run` stops there), ask on a terminal unless `--yes`, then eject
/// on every host in parallel, each host's lines prefixed with its name.
pub fn eject(
    settings: &Settings,
    targets: &[Target],
    args: &EjectArgs,
    out: &mut impl Write,
    warnings: &mut impl Write,
    ask: Ask,
) -> Result<u8, Failure> {
    let read = read_hosts(settings, targets);
    let mut plans: HashMap<String, HostPlan> = HashMap::new();
    for o in &read {
        if let Ok(host) = &o.result {
            let (which, vms) = chosen_for_eject(host, args);
            plans.insert(
                o.target.name.clone(),
                HostPlan {
                    which,
                    vms,
                    errors: host.errors.clone(),
                },
            );
        }
    }
    let mut discs = 0;
    let mut vms = 0;
    let mut busy_hosts = Vec::new();
    for t in targets {
        if let Some(p) = plans.get(&t.name) {
            let n = discs_in(&p.vms, &p.which);
            if n > 0 || !p.errors.is_empty() {
                busy_hosts.push(t.clone());
            }
            discs += n;
            vms += p
                .vms
                .iter()
                .filter(|vm| discs_in(std::slice::from_ref(vm), &p.which) > 0)
                .count();
        }
    }
    if args.dry_run || discs == 0 {
        for t in targets {
            if let Some(p) = plans.get(&t.name) {
                for line in would_eject(&p.vms, &p.which) {
                    write_line(out, &format!("{}: {line}", t.name))?;
                }
            }
        }
        if discs == 0 {
            let which = chosen_for_eject(&HostMedia::default(), args).0;
            write_line(out, &nothing_to_eject(&which, "VM on these hosts"))?;
        }
        out.flush()?;
        return report_hosts(&read, warnings);
    }
    let names: Vec<&str> = busy_hosts.iter().map(|t| t.name.as_str()).collect();
    let what = format!(
        "{discs} disc(s) from {vms} VM(s) on {} host(s) ({})",
        busy_hosts.len(),
        names.join(", ")
    );
    if !args.yes {
        match ask {
            Some(ask) => {
                if !ask(&format!("eject {what}? [y/N] "))? {
                    write_line(out, "nothing ejected")?;
                    out.flush()?;
                    return Ok(exit::OK);
                }
            }
            None => {
                return Err(Failure::usage(format!(
                    "this eject would take {what}: pass --yes to do it without a terminal, \
                     or --dry-run to list the discs"
                )))
            }
        }
    }
    let opts = EjectOptions::new(args.force, settings.agent_timeout, settings.jobs);
    let change_limit = Target::slowest_connect(&busy_hosts, settings)
        + opts.batch_budget
        + Duration::from_secs(30);
    let base = settings.clone();
    let plans = Arc::new(Mutex::new(plans));
    let changed = fleet::each_host(
        &busy_hosts,
        settings.connect_timeout,
        change_limit,
        move |t, hv| {
            let plan = plans
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&t.name)
                .ok_or_else(|| "nothing planned for this host".to_string())?;
            let started = Instant::now();
            let opts = EjectOptions {
                agent_timeout: t.settings(&base).agent_timeout,
                ..opts
            };
            let reports = eject_many(hv.as_ref(), &plan.vms, &plan.which, &opts);
            audit_ejects(&t.uri, &reports);
            let mut lines = Vec::new();
            let code =
                write_batch(&mut lines, &reports, &plan.errors, started).map_err(|f| f.message)?;
            Ok((lines, code))
        },
    );
    // The kept VM lists of every host an eject was tried on go (one that failed midway
    // may have changed some drives), in one rewrite of the shared cache file.
    let uris = read.iter().filter_map(|o| {
        let tried = busy_hosts.iter().any(|t| t.name == o.target.name);
        Some(o.result.as_ref().ok().filter(|_| tried)?.uri.as_str())
    });
    probe::forget_listings(settings.cache_path.as_deref(), uris);
    let mut code = report_hosts(&read, warnings)?;
    for o in &changed {
        match &o.result {
            Ok((lines, host_code)) => {
                for l in String::from_utf8_lossy(lines).lines() {
                    writeln!(out, "{}: {l}", sanitize(&o.target.name))?;
                }
                code = code.max(*host_code);
            }
            Err(e) => {
                write_line(
                    warnings,
                    &format!(
                        "error: host {}: {e}; its discs may be partly ejected: `isos` on it \
                         shows where they are",
                        o.target.name
                    ),
                )?;
                code = code.max(exit::PARTIAL);
            }
        }
    }
    out.flush()?;
    Ok(code)
}
