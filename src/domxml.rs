//! Facts read from a domain's XML: its CD-ROM drives and the libosinfo metadata that
//! virt-install and virt-manager write. Pure functions on text, so every adapter and
//! every test shares them.

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainXmlFacts {
    pub cdroms: Vec<CdromDrive>,
    /// The libosinfo OS id, e.g. `http://microsoft.com/win/2k22`.
    pub libosinfo_id: Option<String>,
    /// Disk buses with a controller present (`scsi`, `sata`, ...), for hot-add decisions.
    pub controllers: Vec<String>,
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
            "disk" if node.attribute("device") == Some("cdrom") => {
                facts.cdroms.push(parse_cdrom(node));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
