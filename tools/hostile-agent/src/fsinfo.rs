//! `guest-get-fsinfo` as qemu-ga answers it on Linux: every mount of a device node from
//! `/proc/self/mounts`, with the disk's bus address found through sysfs (AHCI: `sata`,
//! the unit being the port's index on its controller; virtio-scsi: `scsi` with
//! channel:target:lun; virtio-blk: `virtio`), and the controller's PCI address.

use std::path::Path;

use serde_json::{json, Map, Value};

/// Undo the octal escapes of `/proc/mounts` (space, tab, newline, backslash).
pub fn unescape_mounts_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (device, mount point, type) of every mount whose source is a path, as qemu-ga
/// keeps them (it leaves out proc, sysfs, tmpfs and the like).
pub fn device_mounts(proc_mounts: &str) -> Vec<(String, String, String)> {
    proc_mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let dev = unescape_mounts_field(f.next()?);
            let mp = unescape_mounts_field(f.next()?);
            let ty = f.next()?.to_string();
            dev.starts_with('/').then_some((dev, mp, ty))
        })
        .collect()
}

/// A PCI address `DDDD:BB:SS.F`.
fn pci_address(s: &str) -> Option<[u32; 4]> {
    let (dom, rest) = s.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, func) = rest.split_once('.')?;
    if dom.len() != 4 || bus.len() != 2 || slot.len() != 2 || func.len() != 1 {
        return None;
    }
    Some([
        u32::from_str_radix(dom, 16).ok()?,
        u32::from_str_radix(bus, 16).ok()?,
        u32::from_str_radix(slot, 16).ok()?,
        u32::from_str_radix(func, 16).ok()?,
    ])
}

fn numbered(s: &str, prefix: &str) -> Option<u32> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// The disk address of a block device from its sysfs path (`/sys/devices/...`), like
/// qemu-ga: `sysroot` is where `/sys` is (tests give a fake tree).
pub fn disk_address(sysroot: &Path, devpath: &str, dev: &str) -> Option<Value> {
    let parts: Vec<&str> = devpath.split('/').collect();
    let pci_at = parts.iter().rposition(|p| pci_address(p).is_some())?;
    let pci = pci_address(parts[pci_at])?;
    let after = &parts[pci_at + 1..];
    let mut disk = Map::new();
    disk.insert(
        "pci-controller".into(),
        json!({"domain": pci[0], "bus": pci[1], "slot": pci[2], "function": pci[3]}),
    );
    // H:C:T:L of the SCSI device, when there is one.
    let hctl: Option<Vec<u32>> = after.iter().find_map(|p| {
        let v: Vec<u32> = p
            .split(':')
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 4).then_some(v)
    });
    let (bus_type, bus, target, unit) =
        if let Some(ata) = after.iter().find_map(|p| numbered(p, "ata")) {
            // AHCI: one host per port; the unit is the port's index on the controller.
            let controller = sysroot.join(parts[1..=pci_at].join("/"));
            let mut ports: Vec<u32> = std::fs::read_dir(&controller)
                .map(|d| {
                    d.filter_map(|e| numbered(&e.ok()?.file_name().to_string_lossy(), "ata"))
                        .collect()
                })
                .unwrap_or_default();
            ports.sort_unstable();
            let unit = ports.iter().position(|&p| p == ata).unwrap_or(0) as u32;
            ("sata", 0, 0, unit)
        } else if let Some(v) = hctl {
            ("scsi", v[1], v[2], v[3])
        } else if after.iter().any(|p| numbered(p, "virtio").is_some()) {
            ("virtio", 0, 0, 0)
        } else {
            ("unknown", 0, 0, 0)
        };
    disk.insert("bus-type".into(), json!(bus_type));
    disk.insert("bus".into(), json!(bus));
    disk.insert("target".into(), json!(target));
    disk.insert("unit".into(), json!(unit));
    disk.insert("dev".into(), json!(dev));
    Some(Value::Object(disk))
}

/// The kernel's name of a device node and the disks it sits on.
fn block_device(dev: &str) -> (String, Vec<Value>) {
    let real = std::fs::canonicalize(dev).unwrap_or_else(|_| Path::new(dev).to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dev.to_string());
    let class = Path::new("/sys/class/block").join(&name);
    let disks = std::fs::canonicalize(&class)
        .ok()
        .and_then(|p| {
            let mut s = p.to_string_lossy().into_owned();
            // A partition's path ends in .../block/sda/sda1: the disk is one up.
            if class.join("partition").exists() {
                s = s.rsplit_once('/').map(|(a, _)| a.to_string()).unwrap_or(s);
            }
            let s = s.strip_prefix("/sys").unwrap_or(&s).to_string();
            disk_address(Path::new("/sys"), &s, &real.to_string_lossy())
        })
        .into_iter()
        .collect();
    (name, disks)
}

/// The honest answer.
pub fn real() -> Vec<Value> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    device_mounts(&text)
        .into_iter()
        .map(|(dev, mp, ty)| {
            let (name, disks) = block_device(&dev);
            json!({"name": name, "mountpoint": mp, "type": ty, "disk": disks})
        })
        .collect()
}

/// The disk address of the guest's `/dev/sr0` (the harness CD-ROM, `sda`), or the one
/// it has on the harness's q35 guests when sysfs does not say.
pub fn sr0_disk() -> Value {
    block_device("/dev/sr0")
        .1
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            json!({"pci-controller": {"domain": 0, "bus": 0, "slot": 31, "function": 2},
                   "bus-type": "sata", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/sr0"})
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_of_device_nodes_only() {
        let text = "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n/dev/sr0 /mnt/my\\040disc iso9660 ro 0 0\n/dev/vda1 /boot ext4 rw 0 0\n";
        assert_eq!(
            device_mounts(text),
            [
                ("/dev/sr0".into(), "/mnt/my disc".into(), "iso9660".into()),
                ("/dev/vda1".into(), "/boot".into(), "ext4".into())
            ]
        );
        assert_eq!(unescape_mounts_field("a\\134b\\012"), "a\\b\n");
        assert_eq!(unescape_mounts_field("x\\04"), "x\\04");
    }

    #[test]
    fn addresses_from_sysfs_paths() {
        let root = std::env::temp_dir().join(format!("diq-hostile-fsinfo-{}", std::process::id()));
        let ctl = root.join("devices/pci0000:00/0000:00:1f.2");
        for p in ["ata1", "ata2", "ata10"] {
            std::fs::create_dir_all(ctl.join(p)).unwrap();
        }
        let sata = disk_address(
            &root,
            "/devices/pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sr0",
            "/dev/sr0",
        )
        .unwrap();
        assert_eq!(sata["bus-type"], "sata");
        assert_eq!(sata["unit"], 1);
        assert_eq!(sata["pci-controller"]["slot"], 31);
        assert_eq!(sata["pci-controller"]["function"], 2);
        let scsi = disk_address(
            &root,
            "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/virtio2/host6/target6:0:3/6:0:3:2/block/sr1",
            "/dev/sr1",
        )
        .unwrap();
        assert_eq!(scsi["bus-type"], "scsi");
        assert_eq!(
            (scsi["target"].as_u64(), scsi["unit"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(scsi["pci-controller"]["bus"], 1);
        let blk = disk_address(
            &root,
            "/devices/pci0000:00/0000:00:1c.1/0000:02:00.0/virtio3/block/vda",
            "/dev/vda",
        )
        .unwrap();
        assert_eq!(blk["bus-type"], "virtio");
        assert!(disk_address(&root, "/devices/virtual/block/loop0", "/dev/loop0").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
