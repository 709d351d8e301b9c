//! The guest-side half of a dismount: find where the guest mounted the disc and unmount
//! it through the agent, so the guest releases the tray and the eject can succeed without
//! pulling a mounted disc from under it.
//!
//! Mounts come from `guest-get-fsinfo` (which also says which bus address each device
//! sits on) or, when that is blocked, from `/proc/mounts` read through `guest-exec`.
//! Everything the guest reports is untrusted: mount points go back to it only as one
//! argument of `umount` (no shell), and are sanitized before they are printed.

use std::time::Instant;

use super::eject::EjectOptions;
use crate::agent::{Agent, Filesystem};
use crate::hypervisor::{HvError, Hypervisor};
use crate::snapshot::media::{GuestUnmount, MediaSlot, VmMedia, SHOWN};
use crate::units::clip;

/// Where a guest device sits, as `guest-get-fsinfo` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAddress {
    pub bus_type: String,
    pub bus: u32,
    pub target: u32,
    pub unit: u32,
}

/// A CD-ROM file system mounted inside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMount {
    /// `/dev/sr0`.
    pub device: String,
    pub mountpoint: String,
    pub address: Option<GuestAddress>,
}

fn is_cdrom_device(dev: &str) -> bool {
    let name = dev.strip_prefix("/dev/").unwrap_or(dev);
    name.strip_prefix("sr")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// CD-ROM mounts among the guest's file systems. Windows drive letters are left out:
/// Windows does not lock the tray of a mounted disc, so nothing needs undoing there.
pub fn cdrom_mounts(filesystems: &[Filesystem]) -> Vec<GuestMount> {
    let mut out = Vec::new();
    for fs in filesystems {
        if !fs.mountpoint.starts_with('/') {
            continue;
        }
        let disk = fs
            .disks
            .iter()
            .find(|d| d.dev.as_deref().is_some_and(is_cdrom_device));
        let device = match disk.and_then(|d| d.dev.as_deref()) {
            Some(dev) => dev.to_string(),
            // The kernel's name (`sr0`); a guest may send the node path itself.
            None if is_cdrom_device(&fs.name) => {
                format!("/dev/{}", fs.name.strip_prefix("/dev/").unwrap_or(&fs.name))
            }
            None => continue,
        };
        let address = disk.or(fs.disks.first()).map(|d| GuestAddress {
            bus_type: d.bus_type.clone(),
            bus: d.bus,
            target: d.target,
            unit: d.unit,
        });
        out.push(GuestMount {
            device,
            mountpoint: fs.mountpoint.clone(),
            address,
        });
    }
    out
}

/// Undo the octal escapes `/proc/mounts` uses for space, tab, newline and backslash.
fn unescape_mounts_field(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|b| (b'0'..=b'7').contains(b))
                .then(|| d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0')))
        });
        if let (b'\\', Some(v @ 0..=255)) = (bytes[i], octal) {
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// CD-ROM mounts from the text of the guest's `/proc/mounts` (no bus addresses there).
pub fn parse_proc_mounts(text: &str) -> Vec<GuestMount> {
    text.lines()
        .filter_map(|line| {
            // Fields are separated by single spaces; the kernel escapes blanks, tabs and
            // newlines inside a field, but any other white space (U+00A0, a vertical tab)
            // is part of the mount point.
            let mut f = line.split(' ').filter(|f| !f.is_empty());
            let device = unescape_mounts_field(f.next()?);
            let mountpoint = unescape_mounts_field(f.next()?);
            is_cdrom_device(&device).then_some(GuestMount {
                device,
                mountpoint,
                address: None,
            })
        })
        .collect()
}

/// Which live drive of `vm` a guest mount is on; `None` when that cannot be told.
pub fn drive_of(vm: &VmMedia, m: &GuestMount) -> Option<String> {
    let live: Vec<&MediaSlot> = vm.drives.iter().filter(|d| d.live.is_some()).collect();
    if live.len() == 1 {
        return Some(live[0].target.clone());
    }
    let a = m.address.as_ref()?;
    let hits: Vec<&String> = vm
        .live_addresses
        .iter()
        .filter(|(target, x)| {
            let bus = vm
                .drive(target)
                .and_then(|d| d.bus.as_deref())
                .unwrap_or_default();
            bus == a.bus_type
                && match bus {
                    // AHCI: one port (unit) per guest host; qemu-ga numbers them the same way.
                    "sata" => x.unit == a.unit,
                    "scsi" => x.target == a.target && x.unit == a.unit,
                    _ => x.bus == a.bus && x.unit == a.unit,
                }
        })
        .map(|(t, _)| t)
        .collect();
    match hits.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// Why an agent call failed, as the tail of "not unmounted inside the guest: …".
fn agent_reason(e: &HvError) -> String {
    match e {
        HvError::AgentNotConnected(_) => {
            "no guest agent answers (not installed or not running)".to_string()
        }
        HvError::AgentTimeout(_) => "its guest agent did not answer in time".to_string(),
        HvError::AgentBroken(_) => {
            "its guest agent sent a reply libvirt could not read".to_string()
        }
        HvError::ExecUnfinished { seconds, .. } => {
            format!("it did not finish within {seconds} s in the guest")
        }
        HvError::AgentCommandDisabled { command, .. } => {
            format!("its guest agent has {command} disabled")
        }
        HvError::DomainNotRunning(_) => "the VM is not running".to_string(),
        other => other.to_string(),
    }
}

/// At most `n` items of a list for a message, with how many more there are.
pub fn some_of(items: &[String], n: usize) -> String {
    let mut s = items
        .iter()
        .take(n)
        .map(|i| clip(i, SHOWN))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > n {
        s.push_str(&format!(" and {} more", items.len() - n));
    }
    s
}

/// Unmount, inside the guest, every CD-ROM file system on one of `targets` (live drives
/// about to be ejected), by `deadline` and at most `opts.max_unmounts` of them. Never
/// fails: what could not be done is reported in `skipped`, and the eject goes ahead (it
/// may then find the tray locked).
pub fn unmount(
    hv: &dyn Hypervisor,
    vm: &VmMedia,
    targets: &[String],
    opts: &EjectOptions,
    deadline: Instant,
) -> GuestUnmount {
    // Every call gets at most what is left of the VM's time.
    let left = || deadline.saturating_duration_since(Instant::now());
    let agent = |cap: std::time::Duration| Agent::new(hv, &vm.name, cap.min(left()));
    let info = match agent(opts.agent_timeout).info() {
        Ok(i) => i,
        Err(e) => return GuestUnmount::skipped(agent_reason(&e)),
    };
    let fsinfo_on = info.allows("guest-get-fsinfo");
    let exec_on = info.can_exec();
    let step_deadline = || deadline.min(Instant::now() + opts.umount_timeout);

    let mut mounts = None;
    let mut why_not = String::new();
    if fsinfo_on {
        match agent(opts.agent_timeout).fsinfo() {
            Ok(fs) => mounts = Some(cdrom_mounts(&fs)),
            Err(e) => why_not = format!("guest-get-fsinfo failed: {}", agent_reason(&e)),
        }
    }
    if mounts.is_none() && exec_on {
        match agent(opts.agent_timeout).exec("cat", &["/proc/mounts"], step_deadline()) {
            Ok(out) if out.success() => {
                mounts = Some(parse_proc_mounts(&String::from_utf8_lossy(&out.stdout)))
            }
            Ok(out) => {
                why_not = format!(
                    "reading /proc/mounts in the guest failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            }
            Err(e) => why_not = format!("reading /proc/mounts failed: {}", agent_reason(&e)),
        }
    }
    let Some(mounts) = mounts else {
        if why_not.is_empty() {
            why_not = "its guest agent allows neither guest-get-fsinfo nor guest-exec".to_string();
        }
        return GuestUnmount::skipped(why_not);
    };

    let all_live_ejected = vm
        .drives
        .iter()
        .filter(|d| d.live.as_ref().is_some_and(|c| c.source.is_some()))
        .all(|d| targets.contains(&d.target));
    let mut to_unmount: Vec<String> = Vec::new();
    let mut unsure: Vec<String> = Vec::new();
    for m in &mounts {
        match drive_of(vm, m) {
            Some(t) if targets.contains(&t) => to_unmount.push(m.mountpoint.clone()),
            Some(_) => {}
            // Every drive with a disc is being ejected: whichever it is, it is ours.
            None if all_live_ejected => to_unmount.push(m.mountpoint.clone()),
            None => unsure.push(m.device.clone()),
        }
    }
    to_unmount.sort_by_key(|m| std::cmp::Reverse(m.len()));
    to_unmount.dedup();
    unsure.dedup();

    let mut result = GuestUnmount::default();
    let mut problems = Vec::new();
    if !unsure.is_empty() {
        problems.push(format!(
            "cannot tell which drive the guest's {} is, left mounted",
            some_of(&unsure, 3)
        ));
    }
    if !to_unmount.is_empty() && !exec_on {
        problems.push(format!(
            "the guest has it mounted at {} and its agent has guest-exec disabled",
            some_of(&to_unmount, 3)
        ));
        to_unmount.clear();
    }
    if to_unmount.len() > opts.max_unmounts {
        problems.push(format!(
            "the guest reports {} mounts of the disc; unmounted at most {}",
            to_unmount.len(),
            opts.max_unmounts
        ));
        to_unmount.truncate(opts.max_unmounts);
    }
    for mp in &to_unmount {
        let shown = clip(mp, SHOWN);
        if left().is_zero() {
            problems.push(format!(
                "the time for the guest-side step ran out before umount {shown}"
            ));
            break;
        }
        match agent(opts.agent_timeout).exec("umount", &[mp.as_str()], step_deadline()) {
            Ok(out) if out.success() => result.unmounted.push(mp.clone()),
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let err = clip(err.trim(), SHOWN * 2);
                problems.push(format!(
                    "umount {shown} failed in the guest{}",
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                ));
            }
            Err(e) => problems.push(format!("umount {shown}: {}", agent_reason(&e))),
        }
    }
    if !problems.is_empty() {
        result.skipped = Some(problems.join("; "));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fsinfo_keeps_cdroms_with_their_address() {
        let reply = json!([
            {"name":"sr0","total-bytes":376832,"mountpoint":"/mnt/my disc","type":"iso9660",
             "disk":[{"bus-type":"sata","bus":0,"unit":1,"target":0,"dev":"/dev/sr0",
                      "pci-controller":{"bus":0,"slot":31,"domain":0,"function":2}}]},
            {"name":"vda1","mountpoint":"/","type":"ext4","disk":[{"bus-type":"virtio","bus":0,"unit":0,"target":0,"dev":"/dev/vda1"}]},
            {"name":"\\\\?\\Volume{x}","mountpoint":"D:\\","type":"CDFS","disk":[{"bus-type":"sata","bus":0,"unit":0,"target":0}]}
        ]);
        let fs: Vec<Filesystem> = serde_json::from_value(reply).unwrap();
        let m = cdrom_mounts(&fs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].device, "/dev/sr0");
        assert_eq!(m[0].mountpoint, "/mnt/my disc");
        assert_eq!(
            m[0].address,
            Some(GuestAddress {
                bus_type: "sata".into(),
                bus: 0,
                target: 0,
                unit: 1
            })
        );
    }

    #[test]
    fn proc_mounts_unescapes_mount_points() {
        let text = "rootfs / rootfs rw 0 0\n/dev/sr0 /media/cd\\040rom iso9660 ro 0 0\n/dev/sda1 /boot ext4 rw 0 0\n/dev/sr10 /x\\134y udf ro 0 0\n";
        let m = parse_proc_mounts(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, "/media/cd rom");
        assert_eq!(m[1].device, "/dev/sr10");
        assert_eq!(m[1].mountpoint, "/x\\y");
        assert!(!is_cdrom_device("/dev/srx"));
        assert!(!is_cdrom_device("/dev/sr"));
    }
}
