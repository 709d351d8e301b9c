//! Inserting an ISO: into the drive the user named (or the only one), live and/or in the
//! saved config as the VM's state allows; into a new drive when the VM has none.

use std::path::Path;

use super::iso::{resolve_iso, IsoImage};
use super::{device_error, read_vm, MediaError};
use crate::domxml;
use crate::hypervisor::{find_domain, ChangeScope, HvError, Hypervisor};
use crate::snapshot::media::VmMedia;

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

/// Insert an ISO. Returns the line saying what changed (plain text).
pub fn mount(hv: &dyn Hypervisor, req: &MountRequest<'_>) -> Result<String, MediaError> {
    let info = find_domain(hv, req.vm)?;
    let iso = resolve_iso(hv, req.iso)?;
    let vm = read_vm(hv, &info)?;
    let name = vm.name.clone();
    let active = vm.state.is_active();
    if req.scope == ScopeChoice::LiveOnly && !active {
        return Err(MediaError::NothingLive {
            vm: name,
            state: vm.state,
        });
    }
    if req.scope == ScopeChoice::ConfigOnly && !vm.persistent {
        return Err(MediaError::Transient(name));
    }
    if vm.drives.is_empty() {
        return add_drive(hv, &vm, &iso, req);
    }
    let slot = match req.drive {
        Some(t) => vm.drive(t).ok_or_else(|| MediaError::NoSuchDrive {
            vm: name.clone(),
            drive: t.to_string(),
            drives: vm.target_list(),
        })?,
        None if vm.drives.len() == 1 => &vm.drives[0],
        None => {
            return Err(MediaError::ChooseDrive {
                vm: name,
                count: vm.drives.len(),
                drives: vm.target_list(),
            })
        }
    };
    let want_live = active && req.scope != ScopeChoice::ConfigOnly;
    let want_config = vm.persistent && req.scope != ScopeChoice::LiveOnly;
    let scope = ChangeScope {
        live: want_live && slot.live.is_some(),
        config: want_config && slot.config.is_some(),
    };
    if !scope.live && !scope.config {
        return Err(MediaError::NotInDefinition {
            vm: name,
            drive: slot.target.clone(),
            definition: if want_live { "running" } else { "saved" },
        });
    }
    let xml = domxml::cdrom_device_xml(&slot.target, slot.bus.as_deref(), Some(iso.source()))
        .map_err(MediaError::DeviceXml)?;
    hv.update_device(&vm.name, &xml, scope, false)
        .map_err(|e| match e {
            HvError::TrayLocked { .. } => MediaError::TrayLocked {
                vm: vm.name.clone(),
                drive: slot.target.clone(),
            },
            other if other.is_connection() => MediaError::Hv(other),
            other => MediaError::DeviceChange(device_error(&other, &vm.name, &slot.target)),
        })?;
    let mut line = format!(
        "{name} {}: mounted {} ({})",
        slot.target,
        iso.path,
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
        line.push_str(&format!(", in place of {old}"));
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

/// The first free `sd?` name, or the one asked for when it is free.
fn free_target(vm: &VmMedia, wanted: Option<&str>) -> Result<String, MediaError> {
    if let Some(t) = wanted {
        if vm.disk_targets.iter().any(|d| d == t) {
            return Err(MediaError::TargetTaken {
                vm: vm.name.clone(),
                drive: t.to_string(),
            });
        }
        return Ok(t.to_string());
    }
    ('a'..='z')
        .map(|c| format!("sd{c}"))
        .find(|t| !vm.disk_targets.contains(t))
        .ok_or_else(|| MediaError::NoFreeTarget(vm.name.clone()))
}

/// A VM without a drive: add one (SATA to the config of a shut-off VM; SCSI hot-add to a
/// running VM that has a SCSI controller); otherwise say exactly what to do.
fn add_drive(
    hv: &dyn Hypervisor,
    vm: &VmMedia,
    iso: &IsoImage,
    req: &MountRequest<'_>,
) -> Result<String, MediaError> {
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
        return Err(MediaError::CannotAddDrive {
            vm: vm.name.clone(),
            state: vm.state,
        });
    };
    let target = free_target(vm, req.drive)?;
    let xml = domxml::cdrom_device_xml(&target, Some(bus), Some(iso.source()))
        .map_err(MediaError::DeviceXml)?;
    hv.attach_device(&vm.name, &xml, scope)?;
    let when = if scope.live {
        ""
    } else {
        "; the VM sees it from its next boot"
    };
    Ok(format!(
        "{} {target}: added a {} CD-ROM drive holding {} ({}){when}",
        vm.name,
        bus.to_uppercase(),
        iso.path,
        scope.describe()
    ))
}
