//! Facts read from a domain's XML: its CD-ROM drives, the libosinfo metadata that
//! virt-install and virt-manager write, and what describes each disk and network
//! interface (the `*_info` metrics). Pure functions on text, so every adapter and every
//! test shares them.

use serde::{Deserialize, Serialize};

const LIBOSINFO_NS: &str = "http://libosinfo.org/xmlns/libvirt/domain/1.0";

/// One CD-ROM drive of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdromDrive {
    /// Target device name as the guest bus sees it (`sda`, `hdc`, ...).
    pub target: String,
    /// Bus (`sata`, `ide`, `scsi`, `usb`), when given.
    pub bus: Option<String>,
    /// The image file (or block device / volume) in the drive; `None` when empty.
    pub source: Option<String>,
    pub readonly: bool,
}

/// What one domain XML tells us.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainXmlFacts {
    pub cdroms: Vec<CdromDrive>,
    /// The libosinfo OS id, e.g. `http://microsoft.com/win/2k22`.
    pub libosinfo_id: Option<String>,
    /// Disk buses with a controller present (`scsi`, `sata`, ...), for hot-add decisions.
    pub controllers: Vec<String>,
    /// Target names of every disk (CD-ROM or not), so a new drive gets a free name.
    pub disk_targets: Vec<String>,
    /// Where each CD-ROM sits on its bus (`<address type='drive'>`), by target, to match
    /// the drive with what the guest agent reports.
    pub cdrom_addresses: Vec<(String, DriveAddress)>,
    /// Every disk device (disk, CD-ROM, floppy, LUN) with a target, in XML order.
    pub disks: Vec<DiskFacts>,
    /// Every network interface, in XML order.
    pub interfaces: Vec<InterfaceFacts>,
}

/// What describes one disk device. Every field is text from the XML, empty when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskFacts {
    /// `<target dev>`: `vda`, `sda`, …
    pub target: String,
    /// `<target bus>`: `virtio`, `sata`, `scsi`, …
    pub bus: String,
    /// `<disk device>`: `disk`, `cdrom`, `floppy`, `lun`.
    pub device: String,
    /// `<disk type>`: `file`, `block`, `network`, `volume`, `dir`.
    pub disk_type: String,
    /// The source: a file or device path, a network disk's name, a pool volume.
    pub source: String,
    /// `<source protocol>` of a network disk (`rbd`, `iscsi`, `nbd`, …).
    pub source_protocol: String,
    pub driver_name: String,
    pub driver_type: String,
    pub driver_cache: String,
    pub driver_discard: String,
    pub serial: String,
}

/// What describes one network interface. Every field is text from the XML, empty when
/// absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceFacts {
    /// `<interface type>`: `network`, `bridge`, `user`, `direct`, …
    pub interface_type: String,
    /// `<target dev>`: the host-side device (`vnet0`); what libvirt's statistics name.
    pub target: String,
    pub mac: String,
    /// `<source bridge>` (also set on a live `network` interface: the network's bridge).
    pub source_bridge: String,
    /// `<source network>`.
    pub source_network: String,
    /// `<model type>`: `virtio`, `e1000`, …
    pub model: String,
    pub mtu: String,
}

/// A drive's `<address type='drive' controller bus target unit/>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveAddress {
    pub controller: u32,
    pub bus: u32,
    pub target: u32,
    pub unit: u32,
}

/// Parse the facts we need from domain XML. Malformed XML is an error with the parser's
/// one-line reason.
pub fn parse(xml: &str) -> Result<DomainXmlFacts, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let root = doc.root_element();
    let mut facts = DomainXmlFacts::default();
    for node in root.descendants() {
        if !node.is_element() {
            continue;
        }
        let name = node.tag_name();
        if name.name() == "os" && name.namespace() == Some(LIBOSINFO_NS) {
            if let Some(id) = node.attribute("id") {
                facts.libosinfo_id = Some(id.to_string());
            }
        }
        if name.namespace().is_some() {
            continue;
        }
        match name.name() {
            "disk" => {
                let target = node
                    .children()
                    .find(|c| c.has_tag_name("target"))
                    .and_then(|t| t.attribute("dev"));
                if let Some(t) = target {
                    facts.disk_targets.push(t.to_string());
                    facts.disks.push(parse_disk(node, t));
                }
                if node.attribute("device") == Some("cdrom") {
                    let drive = parse_cdrom(node);
                    if let Some(a) = parse_drive_address(node) {
                        facts.cdrom_addresses.push((drive.target.clone(), a));
                    }
                    facts.cdroms.push(drive);
                }
            }
            "interface" if in_devices(node) => facts.interfaces.push(parse_interface(node)),
            "controller" => {
                if let Some(t) = node.attribute("type") {
                    if !facts.controllers.iter().any(|c| c == t) {
                        facts.controllers.push(t.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// Whether `node` is a device of the domain (`<domain><devices><disk>`), not an element of
/// the same name elsewhere (a `<backingStore>`'s, or one inside `<metadata>` without a
/// namespace).
fn in_devices(node: roxmltree::Node<'_, '_>) -> bool {
    node.parent_element()
        .is_some_and(|p| p.has_tag_name("devices"))
}

/// The attribute `attr` of the first child element `child`, or "".
fn child_attr(node: roxmltree::Node<'_, '_>, child: &str, attr: &str) -> String {
    node.children()
        .find(|c| c.is_element() && c.has_tag_name(child))
        .and_then(|c| c.attribute(attr))
        .unwrap_or_default()
        .to_string()
}

fn parse_disk(disk: roxmltree::Node<'_, '_>, target: &str) -> DiskFacts {
    let source = disk
        .children()
        .find(|c| c.is_element() && c.has_tag_name("source"));
    let source_attr = |names: &[&str]| {
        source
            .and_then(|s| names.iter().find_map(|n| s.attribute(*n)))
            .unwrap_or_default()
            .to_string()
    };
    let serial = disk
        .children()
        .find(|c| c.is_element() && c.has_tag_name("serial"))
        .and_then(|c| c.text())
        .unwrap_or_default()
        .trim()
        .to_string();
    DiskFacts {
        target: target.to_string(),
        bus: child_attr(disk, "target", "bus"),
        device: disk.attribute("device").unwrap_or("disk").to_string(),
        disk_type: disk.attribute("type").unwrap_or_default().to_string(),
        source: source_attr(&["file", "dev", "name", "volume", "dir"]),
        source_protocol: source_attr(&["protocol"]),
        driver_name: child_attr(disk, "driver", "name"),
        driver_type: child_attr(disk, "driver", "type"),
        driver_cache: child_attr(disk, "driver", "cache"),
        driver_discard: child_attr(disk, "driver", "discard"),
        serial,
    }
}

fn parse_interface(iface: roxmltree::Node<'_, '_>) -> InterfaceFacts {
    InterfaceFacts {
        interface_type: iface.attribute("type").unwrap_or_default().to_string(),
        target: child_attr(iface, "target", "dev"),
        mac: child_attr(iface, "mac", "address"),
        source_bridge: child_attr(iface, "source", "bridge"),
        source_network: child_attr(iface, "source", "network"),
        model: child_attr(iface, "model", "type"),
        mtu: child_attr(iface, "mtu", "size"),
    }
}

fn parse_drive_address(disk: roxmltree::Node<'_, '_>) -> Option<DriveAddress> {
    let a = disk
        .children()
        .find(|c| c.has_tag_name("address") && c.attribute("type") == Some("drive"))?;
    let num = |name: &str| -> u32 {
        a.attribute(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    Some(DriveAddress {
        controller: num("controller"),
        bus: num("bus"),
        target: num("target"),
        unit: num("unit"),
    })
}

fn parse_cdrom(disk: roxmltree::Node<'_, '_>) -> CdromDrive {
    let mut drive = CdromDrive {
        target: String::new(),
        bus: None,
        source: None,
        readonly: false,
    };
    for child in disk.children().filter(|c| c.is_element()) {
        match child.tag_name().name() {
            "target" => {
                drive.target = child.attribute("dev").unwrap_or_default().to_string();
                drive.bus = child.attribute("bus").map(str::to_string);
            }
            "source" => {
                drive.source = child
                    .attribute("file")
                    .or_else(|| child.attribute("dev"))
                    .or_else(|| child.attribute("name"))
                    .or_else(|| child.attribute("volume"))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
            }
            "readonly" => drive.readonly = true,
            _ => {}
        }
    }
    drive
}

/// What goes into a CD-ROM drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaSource<'a> {
    /// An image file (also what a storage volume of a directory pool is).
    File(&'a str),
    /// A host block device (`/dev/sr0`, an LVM volume holding an image).
    Block(&'a str),
}

/// A `<disk device='cdrom'>` element for `update_device` (insert; `source` `None` ejects)
/// or `attach_device` (a new drive). Every value is escaped, so any path that XML can
/// carry (spaces, quotes, `&`, non-ASCII) arrives at libvirt unchanged; text XML cannot
/// carry at all (most control characters) is refused.
pub fn cdrom_device_xml(
    target: &str,
    bus: Option<&str>,
    source: Option<MediaSource<'_>>,
) -> Result<String, String> {
    let kind = match source {
        Some(MediaSource::Block(_)) => "block",
        _ => "file",
    };
    let mut xml = format!("<disk type='{kind}' device='cdrom'><driver name='qemu' type='raw'/>");
    match source {
        Some(MediaSource::File(path)) => {
            xml.push_str(&format!("<source file='{}'/>", escape_attr(path)?));
        }
        Some(MediaSource::Block(path)) => {
            xml.push_str(&format!("<source dev='{}'/>", escape_attr(path)?));
        }
        None => {}
    }
    xml.push_str(&format!("<target dev='{}'", escape_attr(target)?));
    if let Some(bus) = bus {
        xml.push_str(&format!(" bus='{}'", escape_attr(bus)?));
    }
    xml.push_str("/><readonly/></disk>");
    Ok(xml)
}

/// Escape text for an XML attribute value (quoted with either quote character).
/// Tabs and line breaks become character references so attribute-value normalisation
/// does not turn them into spaces.
pub fn escape_attr(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                return Err(format!(
                    "{value:?} contains the character U+{:04X}, which libvirt's XML cannot carry",
                    c as u32
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WIN: &str = r#"<domain type='kvm'>
  <name>fs00</name>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://microsoft.com/win/2k22"/>
    </libosinfo:libosinfo>
  </metadata>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/fs00.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/isos/virtio win &amp; drivers é.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sdb' bus='sata'/>
      <readonly/>
    </disk>
    <controller type='sata' index='0'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <controller type='sata' index='1'/>
  </devices>
</domain>"#;

    #[test]
    fn reads_drives_and_metadata() {
        let f = parse(WIN).unwrap();
        assert_eq!(
            f.libosinfo_id.as_deref(),
            Some("http://microsoft.com/win/2k22")
        );
        assert_eq!(f.cdroms.len(), 2);
        assert_eq!(f.cdroms[0].target, "sda");
        assert_eq!(f.cdroms[0].bus.as_deref(), Some("sata"));
        assert_eq!(
            f.cdroms[0].source.as_deref(),
            Some("/isos/virtio win & drivers é.iso")
        );
        assert!(f.cdroms[0].readonly);
        assert_eq!(f.cdroms[1].source, None);
        assert_eq!(f.controllers, vec!["sata".to_string(), "scsi".to_string()]);
    }

    #[test]
    fn other_namespaces_do_not_count_as_devices() {
        let xml = r#"<domain><metadata><x:disk xmlns:x="urn:x" device="cdrom"/></metadata><devices/></domain>"#;
        let f = parse(xml).unwrap();
        assert!(f.cdroms.is_empty());
        assert_eq!(f.libosinfo_id, None);
    }

    #[test]
    fn malformed_xml_is_an_error() {
        assert!(parse("<domain>").unwrap_err().starts_with("domain XML"));
    }

    #[test]
    fn addresses_and_all_disk_targets() {
        let xml = r#"<domain><devices>
          <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
          <disk type='file' device='cdrom'><target dev='sdc' bus='scsi'/>
            <address type='drive' controller='0' bus='0' target='1' unit='2'/></disk>
          <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
        </devices></domain>"#;
        let f = parse(xml).unwrap();
        assert_eq!(f.disk_targets, vec!["vda", "sdc", "sda"]);
        assert_eq!(
            f.cdrom_addresses,
            vec![(
                "sdc".to_string(),
                DriveAddress {
                    controller: 0,
                    bus: 0,
                    target: 1,
                    unit: 2
                }
            )]
        );
    }

    #[test]
    fn disks_and_interfaces_are_described() {
        let xml = r#"<domain><devices>
          <disk type='file' device='disk'>
            <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
            <source file='/img/a.qcow2'/>
            <backingStore type='file'><format type='raw'/><source file='/img/base.raw'/></backingStore>
            <target dev='vda' bus='virtio'/>
            <serial> S-1 </serial>
          </disk>
          <disk type='network' device='disk'>
            <source protocol='rbd' name='pool/vol'/>
            <target dev='vdb' bus='virtio'/>
          </disk>
          <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
          <disk type='file' device='floppy'><source file=''/></disk>
          <interface type='network'>
            <mac address='52:54:00:12:34:56'/>
            <source network='default' portid='x' bridge='virbr0'/>
            <target dev='vnet0'/>
            <model type='virtio'/>
            <mtu size='1500'/>
          </interface>
          <interface type='user'><mac address='52:54:00:aa:bb:cc'/><model type='e1000'/></interface>
        </devices>
        <metadata><interface type='bogus'/></metadata></domain>"#;
        let f = parse(xml).unwrap();
        let targets: Vec<&str> = f.disks.iter().map(|d| d.target.as_str()).collect();
        // The floppy has no target: it has no name to report statistics under.
        assert_eq!(targets, ["vda", "vdb", "sda"]);
        assert_eq!(
            f.disks[0],
            DiskFacts {
                target: "vda".into(),
                bus: "virtio".into(),
                device: "disk".into(),
                disk_type: "file".into(),
                source: "/img/a.qcow2".into(),
                source_protocol: String::new(),
                driver_name: "qemu".into(),
                driver_type: "qcow2".into(),
                driver_cache: "none".into(),
                driver_discard: "unmap".into(),
                serial: "S-1".into(),
            }
        );
        assert_eq!(f.disks[1].source, "pool/vol");
        assert_eq!(f.disks[1].source_protocol, "rbd");
        assert_eq!(f.disks[2].device, "cdrom");
        assert_eq!(f.disks[2].source, "");
        assert_eq!(f.interfaces.len(), 2, "{:?}", f.interfaces);
        assert_eq!(
            f.interfaces[0],
            InterfaceFacts {
                interface_type: "network".into(),
                target: "vnet0".into(),
                mac: "52:54:00:12:34:56".into(),
                source_bridge: "virbr0".into(),
                source_network: "default".into(),
                model: "virtio".into(),
                mtu: "1500".into(),
            }
        );
        assert_eq!(f.interfaces[1].interface_type, "user");
        assert_eq!(f.interfaces[1].target, "");
    }

    #[test]
    fn device_xml_escapes_every_path() {
        let path = "/isos/it's a \"disc\" <1> & more é\u{1F4BF}\tx\ny.iso";
        let xml = cdrom_device_xml("sda", Some("sata"), Some(MediaSource::File(path))).unwrap();
        assert!(!xml.contains("it's"), "{xml}");
        let doc = format!("<domain><devices>{xml}</devices></domain>");
        let f = parse(&doc).unwrap();
        assert_eq!(f.cdroms[0].source.as_deref(), Some(path));
        assert_eq!(f.cdroms[0].target, "sda");
        assert!(f.cdroms[0].readonly);

        let empty = cdrom_device_xml("hdc", None, None).unwrap();
        assert_eq!(
            empty,
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc'/><readonly/></disk>"
        );
        let block =
            cdrom_device_xml("sdb", Some("scsi"), Some(MediaSource::Block("/dev/sr0"))).unwrap();
        assert!(block.starts_with("<disk type='block'"));
        assert!(block.contains("<source dev='/dev/sr0'/>"));
    }

    #[test]
    fn device_xml_refuses_what_xml_cannot_carry() {
        let e = cdrom_device_xml("sda", None, Some(MediaSource::File("/a\u{1}b.iso"))).unwrap_err();
        assert!(e.contains("U+0001"), "{e}");
    }

    proptest! {
        #[test]
        fn any_carryable_path_round_trips(path in "[^\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{fffe}\u{ffff}]{1,60}") {
            let xml = cdrom_device_xml("sda", Some("sata"), Some(MediaSource::File(&path))).unwrap();
            let f = parse(&format!("<domain><devices>{xml}</devices></domain>")).unwrap();
            prop_assert_eq!(f.cdroms[0].source.as_deref(), Some(path.as_str()));
        }
    }
}
