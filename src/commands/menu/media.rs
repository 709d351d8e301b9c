//! The menu's media flows: option 1 "Mount ISO" (pick a VM, see its drives, eject or pick
//! an ISO and a drive, confirm) and the dismount offer after option 2's table. Line-based
//! through [`Prompter`], so tests drive them by piping input.

use std::path::PathBuf;

use crate::app::App;
use crate::commands::media::{audit_ejects, audit_mount, eject_options, iso_volumes, note_change};
use crate::exit::Failure;
use crate::media::eject::{eject_many, eject_vm, Which};
use crate::media::mount::{mount, MountRequest, ScopeChoice};
use crate::media::read_host;
use crate::render::media::{eject_line, slot_text};
use crate::snapshot::media::{DriveOutcome, HostMedia, IsoMatch, MediaSlot, VmMedia, VmReport};
use crate::term::prompt::Prompter;

use super::Session;

const TYPE_A_PATH: &str = "Type a path";
const MOUNT_ANOTHER: &str = "Mount another ISO";

/// Show a VM's drives (`name`: how the menu calls it).
fn show_drives(p: &mut Prompter<'_>, name: &str, vm: &VmMedia) -> Result<(), Failure> {
    if vm.drives.is_empty() {
        p.say(&format!("{name} ({}) has no CD-ROM drive.", vm.state))?;
        return Ok(());
    }
    p.say(&format!("CD-ROM drives of {name} ({}):", vm.state))?;
    for d in &vm.drives {
        let what = if d.is_empty() && !d.differs {
            "empty".to_string()
        } else {
            slot_text(d)
        };
        p.say(&format!(
            "  {} ({}): {what}",
            d.target,
            d.bus.as_deref().unwrap_or("?")
        ))?;
    }
    Ok(())
}

/// Print each report's line (after `prefix`: `HOST:` with several hosts); when some
/// drive was locked, offer to force it open.
fn report_and_offer_force(
    app: &App,
    p: &mut Prompter<'_>,
    prefix: &str,
    vms: &[VmMedia],
    which: &Which,
    reports: Vec<VmReport>,
) -> Result<(), Failure> {
    audit_ejects(&app.uri(), &reports);
    note_change(app);
    for r in &reports {
        p.say(&format!("{prefix}{}", eject_line(r)))?;
    }
    let locked: Vec<VmMedia> = reports
        .iter()
        .filter(|r| {
            r.drives
                .iter()
                .any(|d| matches!(d.outcome, DriveOutcome::Locked))
        })
        .filter_map(|r| vms.iter().find(|v| v.name == r.vm).cloned())
        .collect();
    if locked.is_empty() {
        return Ok(());
    }
    let again = p.confirm(
        "Force the tray open anyway? The guest loses the disc under it.",
        false,
    )?;
    if again == Some(true) {
        let opts = eject_options(app, true);
        let forced = eject_many(app.hv.as_ref(), &locked, which, &opts);
        audit_ejects(&app.uri(), &forced);
        note_change(app);
        for r in &forced {
            p.say(&format!("{prefix}{}", eject_line(r)))?;
        }
    }
    Ok(())
}

/// Every host's drives; a host that cannot be read is one line on `p`.
fn read_hosts(session: &Session, p: &mut Prompter<'_>) -> Result<Vec<(usize, HostMedia)>, Failure> {
    let read = session.each(|app| read_host(app.hv.as_ref()));
    let mut hosts = Vec::new();
    for (h, r) in read.into_iter().enumerate() {
        match r {
            Ok(media) => hosts.push((h, media)),
            Err(e) => p.say(&format!("{}cannot read the drives: {e}", session.on(h)))?,
        }
    }
    Ok(hosts)
}

/// Menu option 1.
pub fn mount_flow(session: &Session, p: &mut Prompter<'_>) -> Result<(), Failure> {
    let hosts = read_hosts(session, p)?;
    let vms: Vec<(usize, &VmMedia)> = hosts
        .iter()
        .flat_map(|(h, media)| media.vms.iter().map(move |vm| (*h, vm)))
        .collect();
    if vms.is_empty() {
        let uris: Vec<&str> = hosts.iter().map(|(_, m)| m.uri.as_str()).collect();
        if !uris.is_empty() {
            p.say(&format!("no VMs on {}", uris.join(", ")))?;
        }
        return Ok(());
    }
    let items: Vec<String> = vms
        .iter()
        .map(|(h, v)| format!("{} ({})", session.label(*h, &v.name), v.state))
        .collect();
    let Some(i) = p.choose("Mount an ISO into which VM?", &items)? else {
        return Ok(());
    };
    let (h, vm) = vms[i];
    let app = &session.hosts[h].app;
    let hv = app.hv.as_ref();
    let shown = session.label(h, &vm.name);
    show_drives(p, &shown, vm)?;

    let held: Vec<&MediaSlot> = vm.drives.iter().filter(|d| !d.is_empty()).collect();
    if !held.is_empty() {
        let mut actions: Vec<String> = held
            .iter()
            .map(|d| {
                format!(
                    "Eject {} from {}",
                    d.current().unwrap_or("the disc"),
                    d.target
                )
            })
            .collect();
        actions.push(MOUNT_ANOTHER.to_string());
        let Some(a) = p.choose("What now?", &actions)? else {
            return Ok(());
        };
        if a < held.len() {
            let which = Which::Drive(held[a].target.clone());
            let report = eject_vm(hv, vm, &which, &eject_options(app, false));
            let prefix = session.prefix(h);
            let vms = std::slice::from_ref(vm);
            return report_and_offer_force(app, p, &prefix, vms, &which, vec![report]);
        }
    }

    let iso = match pick_iso(app, p)? {
        Some(iso) => iso,
        None => return Ok(()),
    };
    let drive = if vm.drives.len() > 1 {
        let items: Vec<String> = vm
            .drives
            .iter()
            .map(|d| format!("{} ({})", d.target, slot_text(d)))
            .collect();
        match p.choose("Which drive?", &items)? {
            Some(i) => Some(vm.drives[i].target.clone()),
            None => return Ok(()),
        }
    } else {
        vm.drives.first().map(|d| d.target.clone())
    };
    let into = match &drive {
        Some(t) => format!("{shown} {t}"),
        None => format!("{shown} (a new CD-ROM drive)"),
    };
    let question = format!("Mount {} into {into}?", iso.to_string_lossy());
    if p.confirm(&question, true)? != Some(true) {
        p.say("Nothing was changed.")?;
        return Ok(());
    }
    let req = MountRequest {
        vm: &vm.name,
        iso: &iso,
        drive: drive.as_deref(),
        scope: ScopeChoice::Both,
    };
    match mount(hv, &req) {
        Ok(line) => {
            audit_mount(app, &vm.name, &line);
            p.say(&format!("{}{line}", session.prefix(h)))?
        }
        Err(e) => p.say(&format!("error: {e}"))?,
    }
    Ok(())
}

/// The storage pools' ISO volumes, plus "Type a path".
fn pick_iso(app: &App, p: &mut Prompter<'_>) -> Result<Option<PathBuf>, Failure> {
    let volumes = match iso_volumes(app) {
        Ok(v) => v,
        Err(e) => {
            p.say(&format!("(cannot list storage pools: {e})"))?;
            Vec::new()
        }
    };
    let mut items: Vec<String> = volumes
        .iter()
        .map(|v| format!("{} (pool {})", v.path, v.pool))
        .collect();
    items.push(TYPE_A_PATH.to_string());
    let Some(i) = p.choose("Which ISO?", &items)? else {
        return Ok(None);
    };
    if i < volumes.len() {
        return Ok(Some(PathBuf::from(&volumes[i].path)));
    }
    match p.ask("ISO path: ")? {
        Some(s) if !s.trim().is_empty() => Ok(Some(PathBuf::from(s.trim()))),
        _ => Ok(None),
    }
}

/// After option 2's table: one numbered choice dismounts a drive, an ISO everywhere (on
/// every host), or everything.
pub fn dismount_offer(session: &Session, p: &mut Prompter<'_>) -> Result<(), Failure> {
    let hosts = read_hosts(session, p)?;
    let held: Vec<(usize, &VmMedia, &MediaSlot)> = hosts
        .iter()
        .flat_map(|(h, media)| media.vms.iter().map(move |vm| (*h, vm)))
        .flat_map(|(h, vm)| vm.drives.iter().map(move |d| (h, vm, d)))
        .filter(|(_, _, d)| !d.is_empty())
        .collect();
    if held.is_empty() {
        if !hosts.is_empty() {
            p.say("No VM holds an ISO.")?;
        }
        return Ok(());
    }
    enum Action {
        Drive(usize),
        Iso(String),
        Everything,
    }
    let mut items = Vec::new();
    let mut actions = Vec::new();
    for (i, (h, vm, d)) in held.iter().enumerate() {
        let vm = session.label(*h, &vm.name);
        items.push(format!("{vm} {}: {}", d.target, slot_text(d)));
        actions.push(Action::Drive(i));
    }
    let mut isos: Vec<&str> = held.iter().filter_map(|(_, _, d)| d.current()).collect();
    isos.sort();
    isos.dedup();
    for iso in isos {
        let n = held
            .iter()
            .filter(|(_, _, d)| d.holds(&IsoMatch::new(std::path::Path::new(iso))))
            .map(|(h, vm, _)| (h, &vm.name))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if n > 1 {
            items.push(format!("{iso} from all {n} VMs holding it"));
            actions.push(Action::Iso(iso.to_string()));
        }
    }
    if held.len() > 1 {
        items.push(format!("Every ISO from every VM ({} drives)", held.len()));
        actions.push(Action::Everything);
    }
    let Some(i) = p.choose("Dismount an ISO? (empty to go back)", &items)? else {
        return Ok(());
    };
    // What goes, host by host.
    let plan: Vec<(usize, Which, Vec<VmMedia>)> = match &actions[i] {
        Action::Drive(k) => {
            let (h, vm, d) = held[*k];
            vec![(h, Which::Drive(d.target.clone()), vec![vm.clone()])]
        }
        Action::Iso(iso) => {
            let m = IsoMatch::new(std::path::Path::new(iso));
            holding(&hosts, |d| d.holds(&m), || Which::Holding(m.clone(), None))
        }
        Action::Everything => holding(&hosts, |d| !d.is_empty(), || Which::All),
    };
    for (h, which, vms) in plan {
        let app = &session.hosts[h].app;
        let reports = eject_many(app.hv.as_ref(), &vms, &which, &eject_options(app, false));
        report_and_offer_force(app, p, &session.prefix(h), &vms, &which, reports)?;
    }
    Ok(())
}

/// Per host, the VMs with a drive that `takes`, and what to eject from them.
fn holding(
    hosts: &[(usize, HostMedia)],
    takes: impl Fn(&MediaSlot) -> bool,
    which: impl Fn() -> Which,
) -> Vec<(usize, Which, Vec<VmMedia>)> {
    hosts
        .iter()
        .map(|(h, media)| {
            let vms: Vec<VmMedia> = media
                .vms
                .iter()
                .filter(|vm| vm.drives.iter().any(&takes))
                .cloned()
                .collect();
            (*h, which(), vms)
        })
        .filter(|(_, _, vms)| !vms.is_empty())
        .collect()
}
