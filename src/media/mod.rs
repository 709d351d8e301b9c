//! CD-ROM media: which ISO sits in which drive (running and saved definition), inserting
//! one, and dismounting — first inside the guest, then at the hypervisor.
//!
//! Everything here talks to libvirt only through the [`Hypervisor`] port, so it works the
//! same on every backend and is tested against the fake. It returns plain data
//! ([`crate::snapshot::media`]) and typed errors ([`MediaError`]); the commands and the
//! menu decide how to show them.

pub mod eject;
mod error;
pub mod guest;
pub mod iso;
pub mod mount;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use error::MediaError;

use crate::hypervisor::{DomainInfo, HvError, Hypervisor, XmlScope};
use crate::snapshot::media::{HostMedia, VmMedia};

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
    let live = hv.domain_xmls(&live_names, XmlScope::Current);
    let config = hv.domain_xmls(&config_names, XmlScope::Persistent);
    // The connection went away half-way: one error, not one per VM (nothing changed yet).
    if let Some(Err(e)) = live
        .iter()
        .chain(&config)
        .find(|x| matches!(x, Err(HvError::Unreachable { .. })))
    {
        return Err(e.clone().during("reading the VMs' drives"));
    }
    let mut live = live.into_iter();
    let mut config = config.into_iter();
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
