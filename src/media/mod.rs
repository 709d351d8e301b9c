//! CD-ROM media: which ISO sits in which drive (running and saved definition), inserting
//! one, and dismounting — first inside the guest, then at the hypervisor.
//!
//! Everything here talks to libvirt only through the [`Hypervisor`] port, so it works the
//! same on every backend and is tested against the fake. The command front-ends live in
//! [`cmd`] (scriptable) and [`menu`] (interactive); both only format what this module
//! decides.

pub mod cmd;
pub mod guest;
pub mod menu;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::domxml::{self, DriveAddress, MediaSource};
use crate::hypervisor::{ChangeScope, DomainInfo, DomainState, HvError, Hypervisor, XmlScope};
use crate::render::text::sanitize;
use crate::Failure;

/// What one definition (running or saved) of a drive holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Content {
    /// The image (or device) in the drive; `None` when empty.
    pub source: Option<String>,
}

/// One CD-ROM drive of a VM, as its running and its saved definition see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaSlot {
    pub target: String,
    pub bus: Option<String>,
    /// The drive in the running definition; `None` when the VM is not active or the drive
    /// exists only in its saved config.
    pub live: Option<Content>,
    /// The drive in the saved (persistent) definition; `None` for transient VMs and for a
    /// drive hot-added to the running VM only.
    pub config: Option<Content>,
    /// Running and saved definition were both read and disagree (another disc, or the
    /// drive is in one of them only).
    pub differs: bool,
}

impl MediaSlot {
    /// The disc the VM sees now: the live one when it runs, else the saved one.
    pub fn current(&self) -> Option<&str> {
        self.live
            .as_ref()
            .or(self.config.as_ref())
            .and_then(|c| c.source.as_deref())
    }

    /// Whether either definition holds `path`.
    pub fn holds(&self, path: &IsoMatch) -> bool {
        [&self.live, &self.config]
            .into_iter()
            .flatten()
            .any(|c| c.source.as_deref().is_some_and(|s| path.matches(s)))
    }

    pub fn is_empty(&self) -> bool {
        [&self.live, &self.config]
            .into_iter()
            .flatten()
            .all(|c| c.source.is_none())
    }
}

/// One VM and its drives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmMedia {
    pub name: String,
    pub state: DomainState,
    pub persistent: bool,
    pub drives: Vec<MediaSlot>,
    /// Controller types of the definition a new drive would go into (hot-add decisions).
    #[serde(skip)]
    pub controllers: Vec<String>,
    /// Every disk target name in use (live and saved), so a new drive gets a free one.
    #[serde(skip)]
    pub disk_targets: Vec<String>,
    /// Bus addresses of the live CD-ROM drives, to match what the guest agent reports.
    #[serde(skip)]
    pub live_addresses: Vec<(String, DriveAddress)>,
}

impl VmMedia {
    pub fn drive(&self, target: &str) -> Option<&MediaSlot> {
        self.drives.iter().find(|d| d.target == target)
    }

    pub fn target_list(&self) -> String {
        self.drives
            .iter()
            .map(|d| d.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Build from the two definitions' XML (`live` only for an active VM, `config` only
    /// for a persistent one).
    pub fn from_xml(
        info: &DomainInfo,
        live: Option<&str>,
        config: Option<&str>,
    ) -> Result<VmMedia, String> {
        let live = live.map(domxml::parse).transpose()?;
        let config = config.map(domxml::parse).transpose()?;
        let mut drives: Vec<MediaSlot> = Vec::new();
        let mut slot = |target: &str, bus: &Option<String>| -> usize {
            match drives.iter().position(|d| d.target == target) {
                Some(i) => i,
                None => {
                    drives.push(MediaSlot {
                        target: target.to_string(),
                        bus: bus.clone(),
                        live: None,
                        config: None,
                        differs: false,
                    });
                    drives.len() - 1
                }
            }
        };
        let mut positions = Vec::new();
        for (facts, is_live) in [(&live, true), (&config, false)] {
            for d in facts.iter().flat_map(|f| f.cdroms.iter()) {
                positions.push((slot(&d.target, &d.bus), is_live, d.source.clone()));
            }
        }
        for (i, is_live, source) in positions {
            let content = Some(Content { source });
            if is_live {
                drives[i].live = content;
            } else {
                drives[i].config = content;
            }
        }
        if live.is_some() && config.is_some() {
            for d in &mut drives {
                d.differs = d.live != d.config;
            }
        }
        let mut disk_targets = Vec::new();
        for f in live.iter().chain(config.iter()) {
            for t in &f.disk_targets {
                if !disk_targets.contains(t) {
                    disk_targets.push(t.clone());
                }
            }
        }
        let controllers = live
            .as_ref()
            .or(config.as_ref())
            .map(|f| f.controllers.clone())
            .unwrap_or_default();
        Ok(VmMedia {
            name: info.name.clone(),
            state: info.state,
            persistent: info.persistent,
            drives,
            controllers,
            disk_targets,
            live_addresses: live.map(|f| f.cdrom_addresses).unwrap_or_default(),
        })
    }
}

/// Which definitions of a domain to read: the running one when active, the saved one
/// when persistent.
fn scopes(info: &DomainInfo) -> (bool, bool) {
    (info.state.is_active(), info.persistent)
}

fn xml_failure(e: String) -> HvError {
    HvError::Failed {
        operation: "reading domain XML",
        detail: e,
    }
}

/// Read one VM's drives.
pub fn read_vm(hv: &dyn Hypervisor, info: &DomainInfo) -> Result<VmMedia, HvError> {
    let (want_live, want_config) = scopes(info);
    let live = if want_live {
        Some(hv.domain_xml(&info.name, XmlScope::Current)?)
    } else {
        None
    };
    let config = if want_config {
        Some(hv.domain_xml(&info.name, XmlScope::Persistent)?)
    } else {
        None
    };
    VmMedia::from_xml(info, live.as_deref(), config.as_deref()).map_err(xml_failure)
}

/// Every VM's drives, with the VMs whose XML could not be read apart.
#[derive(Debug, Default)]
pub struct HostMedia {
    pub uri: String,
    /// Sorted by name.
    pub vms: Vec<VmMedia>,
    /// (VM, reason) for VMs that could not be read.
    pub errors: Vec<(String, String)>,
}

/// Read the drives of every VM: one listing and two XML batches.
pub fn read_host(hv: &dyn Hypervisor) -> Result<HostMedia, HvError> {
    let mut infos = hv.list_domains()?;
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let live_names: Vec<String> = infos
        .iter()
        .filter(|i| scopes(i).0)
        .map(|i| i.name.clone())
        .collect();
    let config_names: Vec<String> = infos
        .iter()
        .filter(|i| scopes(i).1)
        .map(|i| i.name.clone())
        .collect();
    let mut live = hv.domain_xmls(&live_names, XmlScope::Current).into_iter();
    let mut config = hv
        .domain_xmls(&config_names, XmlScope::Persistent)
        .into_iter();
    let mut host = HostMedia {
        uri: hv.uri(),
        ..HostMedia::default()
    };
    for info in &infos {
        let (want_live, want_config) = scopes(info);
        let l = if want_live { live.next() } else { None };
        let c = if want_config { config.next() } else { None };
        let result = (|| -> Result<VmMedia, String> {
            let l = l.transpose().map_err(|e| e.to_string())?;
            let c = c.transpose().map_err(|e| e.to_string())?;
            VmMedia::from_xml(info, l.as_deref(), c.as_deref())
        })();
        match result {
            Ok(vm) => host.vms.push(vm),
            // Undefined between the listing and the XML: no longer there, nothing to say.
            Err(e) if e == HvError::NoSuchDomain(info.name.clone()).to_string() => {}
            Err(e) => host.errors.push((info.name.clone(), e)),
        }
    }
    Ok(host)
}

/// Find one VM by name; an unknown name is bad input (exit 2).
pub fn find_domain(hv: &dyn Hypervisor, name: &str) -> Result<DomainInfo, Failure> {
    let infos = hv.list_domains()?;
    infos
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| Failure::usage(HvError::NoSuchDomain(name.to_string()).to_string()))
}

/// An ISO path as the user typed it and as an absolute path; a drive holding either
/// holds "that ISO".
#[derive(Debug, Clone)]
pub struct IsoMatch {
    given: String,
    absolute: String,
    /// With symlinks resolved, when the file exists here.
    canonical: Option<String>,
}

impl IsoMatch {
    pub fn new(path: &Path) -> IsoMatch {
        let given = path.to_string_lossy().into_owned();
        let absolute = std::path::absolute(path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| given.clone());
        let canonical = std::fs::canonicalize(path)
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        IsoMatch {
            given,
            absolute,
            canonical,
        }
    }

    pub fn matches(&self, source: &str) -> bool {
        source == self.given || source == self.absolute || self.canonical.as_deref() == Some(source)
    }

    pub fn shown(&self) -> String {
        sanitize(&self.absolute)
    }
}

/// An ISO image the hypervisor can read, checked before any VM is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoImage {
    /// Absolute path as libvirt will see it.
    pub path: String,
    /// A block device rather than a file.
    pub block: bool,
}

impl IsoImage {
    pub fn source(&self) -> MediaSource<'_> {
        if self.block {
            MediaSource::Block(&self.path)
        } else {
            MediaSource::File(&self.path)
        }
    }
}

/// Whether a libvirt URI names this machine (`qemu:///system`, `qemu+unix:///session`):
/// then the ISO is a local file we can check ourselves.
pub fn uri_is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => rest.starts_with('/') || rest.is_empty(),
        None => true,
    }
}

/// Check that `iso` exists and is readable by the hypervisor: for a local URI the file
/// itself; for a remote one, a storage pool volume with that path.
pub fn resolve_iso(hv: &dyn Hypervisor, iso: &Path) -> Result<IsoImage, Failure> {
    resolve_iso_on(hv, &hv.uri(), iso)
}

/// [`resolve_iso`] for a connection named `uri` (tests pretend to be remote).
pub fn resolve_iso_on(hv: &dyn Hypervisor, uri: &str, iso: &Path) -> Result<IsoImage, Failure> {
    if !uri_is_local(uri) {
        let wanted = iso.to_string_lossy();
        let volumes = hv.list_volumes()?;
        return match volumes.iter().find(|v| v.path == wanted) {
            Some(v) => Ok(IsoImage {
                path: v.path.clone(),
                block: false,
            }),
            None => Err(Failure::usage(format!(
                "no storage pool volume on {} has the path {:?}: a remote host can only use ISOs in its storage pools (see `virsh vol-list POOL`)",
                sanitize(uri),
                sanitize(&wanted)
            ))),
        };
    }
    let absolute: PathBuf = std::path::absolute(iso).unwrap_or_else(|_| iso.to_path_buf());
    let shown = sanitize(&absolute.to_string_lossy());
    let meta = std::fs::metadata(&absolute).map_err(|e| {
        Failure::usage(if e.kind() == std::io::ErrorKind::NotFound {
            format!("ISO {shown:?} does not exist")
        } else {
            format!("cannot read ISO {shown:?}: {e}")
        })
    })?;
    if meta.is_dir() {
        return Err(Failure::usage(format!(
            "ISO {shown:?} is a directory, not an image"
        )));
    }
    std::fs::File::open(&absolute)
        .map_err(|e| Failure::usage(format!("cannot read ISO {shown:?}: {e}")))?;
    let path = absolute.to_str().ok_or_else(|| {
        Failure::usage(format!(
            "ISO path {shown:?} is not valid UTF-8, which libvirt's XML cannot carry"
        ))
    })?;
    use std::os::unix::fs::FileTypeExt;
    Ok(IsoImage {
        path: path.to_string(),
        block: meta.file_type().is_block_device(),
    })
}

/// Where a mount should apply, as the user asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScopeChoice {
    /// Live when running, and config when persistent.
    #[default]
    Both,
    LiveOnly,
    ConfigOnly,
}

/// A mount request.
#[derive(Debug, Clone)]
pub struct MountRequest<'a> {
    pub vm: &'a str,
    pub iso: &'a Path,
    pub drive: Option<&'a str>,
    pub scope: ScopeChoice,
}

fn tray_locked_on_mount(vm: &str, target: &str) -> Failure {
    Failure::partial(format!(
        "{vm} {target}: locked: the guest holds the tray locked (the disc in it is in use inside the guest); nothing was changed. Eject it first with `eject {vm} --drive {target}`, which unmounts it inside the guest, or add --force there",
        vm = sanitize(vm),
        target = sanitize(target)
    ))
}

/// Insert an ISO. Returns the line saying what changed.
pub fn mount(hv: &dyn Hypervisor, req: &MountRequest<'_>) -> Result<String, Failure> {
    let info = find_domain(hv, req.vm)?;
    let iso = resolve_iso(hv, req.iso)?;
    let vm = read_vm(hv, &info)?;
    let name = sanitize(&vm.name);
    let active = vm.state.is_active();
    if req.scope == ScopeChoice::LiveOnly && !active {
        return Err(Failure::usage(format!(
            "VM {name} is {}: --live-only has nothing to change (drop it to change the saved config)",
            vm.state
        )));
    }
    if req.scope == ScopeChoice::ConfigOnly && !vm.persistent {
        return Err(Failure::usage(format!(
            "VM {name} is transient: it has no saved config to change (drop --config-only)"
        )));
    }
    if vm.drives.is_empty() {
        return add_drive(hv, &vm, &iso, req);
    }
    let slot = match req.drive {
        Some(t) => vm.drive(t).ok_or_else(|| {
            Failure::usage(format!(
                "VM {name} has no CD-ROM drive {:?} (its drives: {})",
                sanitize(t),
                sanitize(&vm.target_list())
            ))
        })?,
        None if vm.drives.len() == 1 => &vm.drives[0],
        None => {
            return Err(Failure::usage(format!(
                "VM {name} has {} CD-ROM drives ({}): choose one with --drive",
                vm.drives.len(),
                sanitize(&vm.target_list())
            )))
        }
    };
    let want_live = active && req.scope != ScopeChoice::ConfigOnly;
    let want_config = vm.persistent && req.scope != ScopeChoice::LiveOnly;
    let scope = ChangeScope {
        live: want_live && slot.live.is_some(),
        config: want_config && slot.config.is_some(),
    };
    let target = sanitize(&slot.target);
    if !scope.live && !scope.config {
        let missing = if want_live { "running" } else { "saved" };
        return Err(Failure::usage(format!(
            "drive {target} of VM {name} is not in its {missing} definition; nothing to change there"
        )));
    }
    let xml = domxml::cdrom_device_xml(&slot.target, slot.bus.as_deref(), Some(iso.source()))
        .map_err(Failure::usage)?;
    hv.update_device(&vm.name, &xml, scope, false)
        .map_err(|e| match e {
            HvError::TrayLocked { .. } => tray_locked_on_mount(&vm.name, &slot.target),
            other if other.is_connection() => Failure::from(other),
            other => Failure::partial(device_error(&other, &vm.name, &slot.target)),
        })?;
    let mut line = format!(
        "{name} {target}: mounted {} ({})",
        sanitize(&iso.path),
        scope.describe()
    );
    let before: Vec<&str> = [
        scope.live.then_some(&slot.live),
        scope.config.then_some(&slot.config),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|c| c.source.as_deref())
    .filter(|s| *s != iso.path)
    .collect();
    if let Some(old) = before.first() {
        line.push_str(&format!(", in place of {}", sanitize(old)));
    }
    if want_live && !scope.live {
        line.push_str(
            "; the drive exists only in the saved config, so the running VM sees it at next boot",
        );
    }
    if want_config && !scope.config {
        line.push_str(
            "; the drive is not in the saved config, so the disc is gone after a restart",
        );
    }
    Ok(line)
}

/// The first free `sd?` name.
fn free_target(vm: &VmMedia, wanted: Option<&str>) -> Result<String, Failure> {
    if let Some(t) = wanted {
        if vm.disk_targets.iter().any(|d| d == t) {
            return Err(Failure::usage(format!(
                "VM {} already has a disk named {:?}: pick a free --drive name",
                sanitize(&vm.name),
                sanitize(t)
            )));
        }
        return Ok(t.to_string());
    }
    ('a'..='z')
        .map(|c| format!("sd{c}"))
        .find(|t| !vm.disk_targets.contains(t))
        .ok_or_else(|| {
            Failure::usage(format!(
                "VM {} has no free sd? target name left: pick one with --drive",
                sanitize(&vm.name)
            ))
        })
}

/// A VM without a drive: add one (SATA to the config of a shut-off VM; SCSI hot-add to a
/// running VM that has a SCSI controller); otherwise say exactly what to do.
fn add_drive(
    hv: &dyn Hypervisor,
    vm: &VmMedia,
    iso: &IsoImage,
    req: &MountRequest<'_>,
) -> Result<String, Failure> {
    let name = sanitize(&vm.name);
    let active = vm.state.is_active();
    let (bus, scope) = if !active {
        ("sata", ChangeScope::CONFIG)
    } else if vm.controllers.iter().any(|c| c == "scsi") {
        (
            "scsi",
            ChangeScope {
                live: req.scope != ScopeChoice::ConfigOnly,
                config: vm.persistent && req.scope != ScopeChoice::LiveOnly,
            },
        )
    } else if req.scope == ScopeChoice::ConfigOnly {
        ("sata", ChangeScope::CONFIG)
    } else {
        return Err(Failure::usage(format!(
            "VM {name} is {} and has no CD-ROM drive: a SATA or IDE drive can only be added while the VM is shut off, and it has no SCSI controller to hot-add one on. Shut it down and run this again (a SATA CD-ROM drive is added to its config), add one to its saved config now with --config-only, or give it a SCSI controller (<controller type='scsi' model='virtio-scsi'/>) and restart it",
            vm.state
        )));
    };
    let target = free_target(vm, req.drive)?;
    let xml =
        domxml::cdrom_device_xml(&target, Some(bus), Some(iso.source())).map_err(Failure::usage)?;
    hv.attach_device(&vm.name, &xml, scope)?;
    let when = if scope.live {
        ""
    } else {
        "; the VM sees it from its next boot"
    };
    Ok(format!(
        "{name} {}: added a {} CD-ROM drive holding {} ({}){when}",
        sanitize(&target),
        bus.to_uppercase(),
        sanitize(&iso.path),
        scope.describe()
    ))
}

/// Which drives of a VM an eject is about.
#[derive(Debug, Clone)]
pub enum Which {
    /// Every drive.
    All,
    /// One drive by target name.
    Drive(String),
    /// The drives holding this ISO (in either definition); only drive `.1` when given.
    Holding(IsoMatch, Option<String>),
}

/// Knobs of a dismount.
#[derive(Debug, Clone, Copy)]
pub struct EjectOptions {
    pub force: bool,
    /// Timeout of each guest agent call.
    pub agent_timeout: Duration,
    /// How long an `umount` inside the guest may take.
    pub umount_timeout: Duration,
    /// VMs handled at once in a batch.
    pub jobs: usize,
}

impl EjectOptions {
    pub fn new(force: bool, agent_timeout: Duration, jobs: usize) -> EjectOptions {
        EjectOptions {
            force,
            agent_timeout,
            umount_timeout: Duration::from_secs(10),
            jobs: jobs.max(1),
        }
    }
}

/// What happened to one drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveOutcome {
    Ejected {
        /// The discs taken out (live and saved may differ).
        sources: Vec<String>,
        scope: ChangeScope,
        forced: bool,
    },
    AlreadyEmpty,
    /// The guest holds the tray; nothing changed.
    Locked,
    Error(String),
}

/// One drive's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveReport {
    pub target: String,
    pub outcome: DriveOutcome,
}

/// One VM's result: its drives, and what the guest-side step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmReport {
    pub vm: String,
    pub drives: Vec<DriveReport>,
    pub guest: guest::GuestUnmount,
    /// A failure before any drive was touched (XML unreadable).
    pub error: Option<String>,
}

impl VmReport {
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self
                .drives
                .iter()
                .any(|d| matches!(d.outcome, DriveOutcome::Locked | DriveOutcome::Error(_)))
    }

    /// The one line this VM gets.
    pub fn line(&self) -> String {
        let vm = sanitize(&self.vm);
        if let Some(e) = &self.error {
            return format!("{vm}: error: {}", sanitize(e));
        }
        let mut parts = Vec::new();
        for d in &self.drives {
            let t = sanitize(&d.target);
            parts.push(match &d.outcome {
                DriveOutcome::Ejected {
                    sources,
                    scope,
                    forced,
                } => {
                    let what: Vec<String> = sources.iter().map(|s| sanitize(s)).collect();
                    let forced = if *forced {
                        ", tray forced open"
                    } else {
                        ""
                    };
                    format!(
                        "{t} ejected {} ({}){forced}",
                        what.join(" and "),
                        scope.describe()
                    )
                }
                DriveOutcome::AlreadyEmpty => format!("{t} already empty"),
                DriveOutcome::Locked => format!(
                    "{t} locked: the guest holds the tray locked (the disc is in use inside the guest), nothing changed; --force would force the tray open and the guest would lose the disc under it"
                ),
                DriveOutcome::Error(e) => format!("{t} error: {}", sanitize(e)),
            });
        }
        if !self.guest.unmounted.is_empty() {
            let mps: Vec<String> = self.guest.unmounted.iter().map(|m| sanitize(m)).collect();
            parts.push(format!(
                "unmounted {} inside the guest first",
                mps.join(", ")
            ));
        }
        if let Some(skip) = &self.guest.skipped {
            parts.push(format!(
                "not unmounted inside the guest: {}",
                sanitize(skip)
            ));
        }
        format!("{vm}: {}", parts.join("; "))
    }
}

/// Dismount the chosen drives of one VM: unmount inside the guest (when it runs and its
/// agent lets us), then eject at the hypervisor, live and/or config as each drive needs.
pub fn eject_vm(hv: &dyn Hypervisor, vm: &VmMedia, which: &Which, opts: &EjectOptions) -> VmReport {
    let selected: Vec<&MediaSlot> = vm
        .drives
        .iter()
        .filter(|d| match which {
            Which::All => true,
            Which::Drive(t) => &d.target == t,
            Which::Holding(iso, drive) => {
                d.holds(iso) && drive.as_ref().map_or(true, |t| &d.target == t)
            }
        })
        .collect();
    // Per drive: which definitions to empty, and the discs they hold.
    let plans: Vec<(&MediaSlot, ChangeScope, Vec<String>)> = selected
        .iter()
        .map(|d| {
            let wanted = |c: &Option<Content>| -> Option<String> {
                let s = c.as_ref()?.source.clone()?;
                match which {
                    Which::Holding(iso, _) if !iso.matches(&s) => None,
                    _ => Some(s),
                }
            };
            let live = wanted(&d.live);
            let config = wanted(&d.config);
            let scope = ChangeScope {
                live: live.is_some(),
                config: config.is_some(),
            };
            let mut sources: Vec<String> = live.into_iter().chain(config).collect();
            sources.dedup();
            (*d, scope, sources)
        })
        .collect();
    let live_targets: Vec<String> = plans
        .iter()
        .filter(|(_, s, _)| s.live)
        .map(|(d, _, _)| d.target.clone())
        .collect();
    let guest = if live_targets.is_empty() {
        guest::GuestUnmount::default()
    } else if !vm.state.agent_may_answer() {
        guest::GuestUnmount::skipped(format!("the VM is {}", vm.state))
    } else {
        guest::unmount(hv, vm, &live_targets, opts)
    };
    let drives = plans
        .into_iter()
        .map(|(d, scope, sources)| {
            let outcome = if !scope.live && !scope.config {
                DriveOutcome::AlreadyEmpty
            } else {
                eject_drive(hv, &vm.name, d, scope, sources, opts.force)
            };
            DriveReport {
                target: d.target.clone(),
                outcome,
            }
        })
        .collect();
    VmReport {
        vm: vm.name.clone(),
        drives,
        guest,
        error: None,
    }
}

fn eject_drive(
    hv: &dyn Hypervisor,
    vm: &str,
    d: &MediaSlot,
    scope: ChangeScope,
    sources: Vec<String>,
    force: bool,
) -> DriveOutcome {
    let xml = match domxml::cdrom_device_xml(&d.target, d.bus.as_deref(), None) {
        Ok(x) => x,
        Err(e) => return DriveOutcome::Error(e),
    };
    match hv.update_device(vm, &xml, scope, force) {
        Ok(()) => DriveOutcome::Ejected {
            sources,
            scope,
            forced: force && scope.live,
        },
        Err(HvError::TrayLocked { .. }) => DriveOutcome::Locked,
        Err(e) => DriveOutcome::Error(device_error(&e, vm, &d.target)),
    }
}

/// A failed media change, in words an operator can act on.
///
/// libvirt 9.0 does not learn that a CD-ROM drive hot-added to a running VM has a tray:
/// it skips opening it and QEMU then refuses to remove the disc ("Tray of device … is not
/// open"), with or without force, until the VM is restarted. Both adapters pass libvirt's
/// text through, so it is recognised here once.
pub fn device_error(e: &HvError, vm: &str, target: &str) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("tray of device") && lower.contains("is not open") {
        return format!(
            "libvirt cannot change the disc of this drive while the VM runs (it does not track the tray of a drive hot-added since the VM started); restart the VM, or remove the drive with `virsh detach-disk {vm} {target} --live --config` ({text})"
        );
    }
    text
}

/// Run `eject_vm` over many VMs, `opts.jobs` at a time; reports come back sorted by VM.
pub fn eject_many(
    hv: &dyn Hypervisor,
    vms: &[VmMedia],
    which: &Which,
    opts: &EjectOptions,
) -> Vec<VmReport> {
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::with_capacity(vms.len()));
    let workers = opts.jobs.min(vms.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(vm) = vms.get(i) else { break };
                let report = eject_vm(hv, vm, which, opts);
                reports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(report);
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by(|a, b| a.vm.cmp(&b.vm));
    reports
}
