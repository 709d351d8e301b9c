//! The plain data of CD-ROM media: which disc sits in which drive of which VM, in its
//! running and its saved definition, and what a dismount did. Media work produces it,
//! the renderers (the `isos` table, the dismount lines) and the menu only read it.

use std::path::Path;

use serde::Serialize;

use crate::domxml::{self, DriveAddress};
use crate::hypervisor::{ChangeScope, DomainInfo, DomainState};

/// The most characters of one guest-supplied mount point a message shows (a guest picks
/// its mount points; the harness's lying agent sends 100 KB ones).
pub const SHOWN: usize = 200;

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

/// Every VM's drives, with the VMs whose XML could not be read apart.
#[derive(Debug, Default, PartialEq)]
pub struct HostMedia {
    pub uri: String,
    /// Sorted by name.
    pub vms: Vec<VmMedia>,
    /// (VM, reason) for VMs that could not be read.
    pub errors: Vec<(String, String)>,
}

impl HostMedia {
    /// The VMs with a drive holding `iso`; every VM without one.
    pub fn holding(&self, iso: Option<&IsoMatch>) -> Vec<&VmMedia> {
        self.vms
            .iter()
            .filter(|vm| iso.is_none_or(|iso| vm.drives.iter().any(|d| d.holds(iso))))
            .collect()
    }
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

    /// The path as it is shown: absolute.
    pub fn shown(&self) -> &str {
        &self.absolute
    }
}

/// What the guest-side step did for one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestUnmount {
    /// Mount points unmounted inside the guest.
    pub unmounted: Vec<String>,
    /// Why the step was skipped or left something mounted.
    pub skipped: Option<String>,
}

impl GuestUnmount {
    pub fn skipped(reason: impl Into<String>) -> GuestUnmount {
        GuestUnmount {
            unmounted: Vec::new(),
            skipped: Some(reason.into()),
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
    pub guest: GuestUnmount,
    /// A failure before any drive was touched (XML unreadable).
    pub error: Option<String>,
    /// Not started: the connection to libvirt was gone before this VM's turn.
    pub not_attempted: bool,
}

impl VmReport {
    /// A VM a batch did not start on, because libvirt had gone away.
    pub fn not_attempted(vm: &str) -> VmReport {
        VmReport {
            vm: vm.to_string(),
            drives: Vec::new(),
            guest: GuestUnmount::default(),
            error: None,
            not_attempted: true,
        }
    }

    pub fn failed(&self) -> bool {
        self.not_attempted
            || self.error.is_some()
            || self
                .drives
                .iter()
                .any(|d| matches!(d.outcome, DriveOutcome::Locked | DriveOutcome::Error(_)))
    }
}
