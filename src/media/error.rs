//! What can go wrong in media work, one variant per failure an operator can act on. The
//! messages are plain text (they may hold VM names and paths); whoever prints them
//! escapes them.

use crate::hypervisor::{DomainState, HvError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("ISO {0:?} does not exist")]
    IsoMissing(String),
    #[error("cannot read ISO {path:?}: {reason}")]
    IsoUnreadable { path: String, reason: String },
    #[error("ISO {0:?} is a directory, not an image")]
    IsoIsDirectory(String),
    #[error("ISO path {0:?} is not valid UTF-8, which libvirt's XML cannot carry")]
    IsoNotUtf8(String),
    #[error("no storage pool volume on {uri} has the path {path:?}: a remote host can only use ISOs in its storage pools (see `virsh vol-list POOL`)")]
    NotAPoolVolume { uri: String, path: String },
    #[error("VM {vm} is {state}: --live-only has nothing to change (drop it to change the saved config)")]
    NothingLive { vm: String, state: DomainState },
    #[error("VM {0} is transient: it has no saved config to change (drop --config-only)")]
    Transient(String),
    #[error("VM {0} has no CD-ROM drive")]
    NoDrive(String),
    #[error("VM {vm} has no CD-ROM drive {drive:?} (its drives: {drives})")]
    NoSuchDrive {
        vm: String,
        drive: String,
        drives: String,
    },
    #[error("VM {vm} has {count} CD-ROM drives ({drives}): choose one with --drive")]
    ChooseDrive {
        vm: String,
        count: usize,
        drives: String,
    },
    #[error(
        "drive {drive} of VM {vm} is not in its {definition} definition; nothing to change there"
    )]
    NotInDefinition {
        vm: String,
        drive: String,
        definition: &'static str,
    },
    #[error("VM {vm} already has a disk named {drive:?}: pick a free --drive name")]
    TargetTaken { vm: String, drive: String },
    #[error("VM {0} has no free sd? target name left: pick one with --drive")]
    NoFreeTarget(String),
    #[error("VM {vm} is {state} and has no CD-ROM drive: a SATA or IDE drive can only be added while the VM is shut off, and it has no SCSI controller to hot-add one on. Shut it down and run this again (a SATA CD-ROM drive is added to its config), add one to its saved config now with --config-only, or give it a SCSI controller (<controller type='scsi' model='virtio-scsi'/>) and restart it")]
    CannotAddDrive { vm: String, state: DomainState },
    #[error("{0}")]
    DeviceXml(String),
    #[error("{vm} {drive}: locked: the guest holds the tray locked (the disc in it is in use inside the guest); nothing was changed. Eject it first with `eject {vm} --drive {drive}`, which unmounts it inside the guest, or add --force there")]
    TrayLocked { vm: String, drive: String },
    #[error("{0}")]
    DeviceChange(String),
}

impl MediaError {
    /// Whether this is bad input — nothing was tried (exit 2) — rather than a failure
    /// while working (exit 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            MediaError::Hv(e) => e.is_connection() || matches!(e, HvError::NoSuchDomain(_)),
            MediaError::TrayLocked { .. } | MediaError::DeviceChange(_) => false,
            _ => true,
        }
    }
}
