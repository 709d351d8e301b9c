//! The harness's guests: who they are, what state `up` promises for each, and their
//! domain XML. Every value that goes into the XML is escaped.

use std::path::{Path, PathBuf};

use dismount_iso_qemu::domxml::escape_attr;
use sha2::{Digest, Sha256};

/// What `up` leaves a guest as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Running,
    /// Running, with its agent stopped (every call times out).
    Frozen,
    Paused,
    Off,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Running => "running",
            Expect::Frozen => "frozen",
            Expect::Paused => "paused",
            Expect::Off => "off",
        }
    }
}

/// What sits in the guest's SATA drive `sda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cdrom {
    /// `iso/harness.iso`.
    Harness,
    /// A drive with no disc.
    Empty,
    /// No drive.
    None,
}

/// One guest. `persona` `None` is the Windows VM that is only ever defined.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    pub name: &'static str,
    pub persona: Option<&'static str>,
    /// The kernel's `diq.agent=` mode: ok, none, freeze, block-osinfo, block-exec, hostile
    /// (diq-hostile-agent instead of qemu-ga, with a control channel).
    pub agent: &'static str,
    pub cdrom: Cdrom,
    pub expect: Expect,
    /// A small data disk (`vda`, virtio) and a NIC (`DATA_TAP`): the block and interface
    /// statistics `serve` exports need a device of each kind to have values.
    pub data_devices: bool,
}

const fn guest(
    name: &'static str,
    persona: Option<&'static str>,
    agent: &'static str,
    cdrom: Cdrom,
    expect: Expect,
) -> Guest {
    Guest {
        name,
        persona,
        agent,
        cdrom,
        expect,
        data_devices: false,
    }
}

/// `g` with a data disk and a NIC.
const fn with_data_devices(g: Guest) -> Guest {
    Guest {
        data_devices: true,
        ..g
    }
}

/// The guests, as scripts/harness.sh's header describes them.
pub const GUESTS: &[Guest] = &[
    guest(
        "diq-ubuntu",
        Some("ubuntu"),
        "ok",
        Cdrom::Harness,
        Expect::Running,
    ),
    with_data_devices(guest(
        "diq-centos",
        Some("centos"),
        "ok",
        Cdrom::Empty,
        Expect::Running,
    )),
    guest(
        "diq-debian",
        Some("debian"),
        "block-osinfo",
        Cdrom::None,
        Expect::Running,
    ),
    guest(
        "diq-noexec",
        Some("alpine"),
        "block-exec",
        Cdrom::None,
        Expect::Running,
    ),
    guest(
        "diq-noagent",
        Some("alpine"),
        "none",
        Cdrom::None,
        Expect::Running,
    ),
    guest(
        "diq-frozen",
        Some("alpine"),
        "freeze",
        Cdrom::None,
        Expect::Frozen,
    ),
    guest(
        "diq-paused",
        Some("alpine"),
        "ok",
        Cdrom::None,
        Expect::Paused,
    ),
    guest("diq-win2k22", None, "-", Cdrom::Harness, Expect::Off),
    guest(
        HOSTILE,
        Some("alpine"),
        "hostile",
        Cdrom::Harness,
        Expect::Running,
    ),
    guest(
        "diq-media-a",
        Some("alpine"),
        "ok",
        Cdrom::Harness,
        Expect::Running,
    ),
    guest(
        "diq-media-b",
        Some("alpine"),
        "ok",
        Cdrom::Harness,
        Expect::Running,
    ),
    guest(
        "diq-media-off",
        Some("alpine"),
        "ok",
        Cdrom::Harness,
        Expect::Off,
    ),
    guest(
        "diq-media-bare",
        Some("alpine"),
        "ok",
        Cdrom::None,
        Expect::Off,
    ),
    guest(
        "diq-media-scsi",
        Some("alpine"),
        "ok",
        Cdrom::None,
        Expect::Running,
    ),
];

/// Every harness domain's name starts with this.
pub const PREFIX: &str = "diq-";

/// The guest whose agent is diq-hostile-agent (tools/hostile-agent).
pub const HOSTILE: &str = "diq-hostile";
/// The tap device of the data guest's NIC. scripts/harness.sh makes it, owned by the
/// harness user, in the network namespace its libvirtd runs in (never the host's), and
/// libvirt opens it as it is (`managed='no'`): an unprivileged daemon cannot make one, and
/// user-mode networking has no host device, so libvirt reports no statistics for it.
pub const DATA_TAP: &str = "diq-tap0";
/// The data guest's NIC's MAC address.
pub const DATA_MAC: &str = "52:54:00:d1:0a:01";

/// The data disk of guest `name` (a 16 MiB raw file scripts/harness.sh makes).
pub fn data_disk(dir: &Path, name: &str) -> PathBuf {
    dir.join("disks").join(format!("{name}.img"))
}
/// The virtio-serial port over which diq-hostile-agent's mode is switched.
pub const CONTROL_CHANNEL: &str = "org.dismount-iso-qemu.control.0";

/// The host side of a hostile guest's control channel.
pub fn control_socket(dir: &Path, name: &str) -> PathBuf {
    dir.join("run/agent").join(format!("{name}.control.sock"))
}

/// The harness disc and the second one, under `iso/`.
pub const HARNESS_ISO: &str = "harness.iso";
pub const SECOND_ISO: &str = "second disc é.iso";
pub const HELLO_TEXT: &str = "Hello from the dismount_iso_qemu harness disc.";
pub const SECOND_TEXT: &str = "Second disc of the dismount_iso_qemu harness.";

impl Guest {
    pub fn find(name: &str) -> Option<&'static Guest> {
        GUESTS.iter().find(|g| g.name == name)
    }

    /// Whether `up` waits for its agent.
    pub fn has_agent(&self) -> bool {
        self.persona.is_some() && self.agent != "none"
    }

    /// Whether its agent is diq-hostile-agent, switched over a control channel.
    pub fn is_hostile(&self) -> bool {
        self.agent == "hostile"
    }
}

/// A UUID derived from the name: the same guest keeps its UUID across down and up.
pub fn uuid(name: &str) -> String {
    let h = Sha256::digest(format!("dismount-iso-qemu-harness:{name}").as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn esc(s: &str) -> String {
    escape_attr(s).unwrap_or_else(|e| panic!("harness value not XML-safe: {e}"))
}

/// The domain definition of `g`.
pub fn domain_xml(g: &Guest, dir: &Path, emulator: &Path, image_hash: &str) -> String {
    let d = dir.display().to_string();
    let name = esc(g.name);
    let disk = match g.cdrom {
        Cdrom::Harness => format!(
            "<disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      \
             <source file='{}'/>\n      <target dev='sda' bus='sata'/>\n      <readonly/>\n    </disk>",
            esc(&format!("{d}/iso/{HARNESS_ISO}"))
        ),
        Cdrom::Empty => "<disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      \
             <target dev='sda' bus='sata'/>\n      <readonly/>\n    </disk>"
            .to_string(),
        Cdrom::None => String::new(),
    };
    let control = if g.is_hostile() {
        format!(
            "\n    <channel type='unix'>\n      <source mode='bind' path='{}'/>\n      \
             <target type='virtio' name='{CONTROL_CHANNEL}'/>\n    </channel>",
            esc(&control_socket(dir, g.name).display().to_string())
        )
    } else {
        String::new()
    };
    let data = if g.data_devices {
        format!(
            "\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
             <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n    \
             <interface type='ethernet'>\n      <mac address='{DATA_MAC}'/>\n      \
             <target dev='{DATA_TAP}' managed='no'/>\n      <model type='virtio'/>\n    </interface>",
            esc(&data_disk(dir, g.name).display().to_string())
        )
    } else {
        String::new()
    };
    let (memory, vcpus, metadata, os) = match g.persona {
        None => (
            2048,
            2,
            "<libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>\n      \
             <libosinfo:os id='http://microsoft.com/win/2k22'/>\n    </libosinfo:libosinfo>\n    \
             <diq:harness xmlns:diq='urn:x-dismount-iso-qemu:harness'>\n      <diq:image>none</diq:image>\n    </diq:harness>"
                .to_string(),
            "<type arch='x86_64' machine='q35'>hvm</type>\n    <boot dev='cdrom'/>".to_string(),
        ),
        Some(persona) => (
            256,
            1,
            format!(
                "<diq:harness xmlns:diq='urn:x-dismount-iso-qemu:harness'>\n      \
                 <diq:image>{}</diq:image>\n      <diq:persona>{}</diq:persona>\n      \
                 <diq:agent>{}</diq:agent>\n    </diq:harness>",
                esc(image_hash),
                esc(persona),
                esc(g.agent)
            ),
            format!(
                "<type arch='x86_64' machine='q35'>hvm</type>\n    \
                 <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    \
                 <cmdline>console=ttyS0 panic=-1 diq.persona={} diq.agent={} diq.hostname={name}</cmdline>",
                esc(&format!("{d}/image/vmlinuz")),
                esc(&format!("{d}/image/initrd.img")),
                esc(persona),
                esc(g.agent)
            ),
        ),
    };
    // q35 gets only the PCIe root ports its devices use: without a SCSI controller in
    // place, hot-adding a SCSI CD-ROM fails with "No more available PCI slots".
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    {metadata}
  </metadata>
  <memory unit='MiB'>{memory}</memory>
  <currentMemory unit='MiB'>{memory}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    {os}
  </os>
  <features>
    <acpi/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    {disk}{data}
    <controller type='usb' model='none'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path='{agent}'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>{control}
    <memballoon model='virtio'>
      <stats period='5'/>
    </memballoon>
  </devices>
</domain>
",
        uuid = uuid(g.name),
        emulator = esc(&emulator.display().to_string()),
        console = esc(&format!("{d}/console/{}.log", g.name)),
        agent = esc(&format!("{d}/run/agent/{}.sock", g.name)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_gets_a_definition_libvirt_can_parse() {
        for g in GUESTS {
            let xml = domain_xml(g, Path::new("/h"), Path::new("/q/qemu"), "abc");
            let facts = dismount_iso_qemu::domxml::parse(&xml).unwrap();
            assert_eq!(
                facts.cdroms.len(),
                usize::from(g.cdrom != Cdrom::None),
                "{}",
                g.name
            );
            assert!(xml.contains(&uuid(g.name)));
            assert!(g.name.starts_with(PREFIX));
        }
        let win = domain_xml(
            Guest::find("diq-win2k22").unwrap(),
            Path::new("/h"),
            Path::new("/q"),
            "x",
        );
        assert_eq!(
            dismount_iso_qemu::domxml::parse(&win)
                .unwrap()
                .libosinfo_id
                .as_deref(),
            Some("http://microsoft.com/win/2k22")
        );
        let hostile = domain_xml(
            Guest::find(HOSTILE).unwrap(),
            Path::new("/h"),
            Path::new("/q"),
            "x",
        );
        assert!(hostile.contains(&format!(
            "<source mode='bind' path='/h/run/agent/diq-hostile.control.sock'/>\n      \
             <target type='virtio' name='{CONTROL_CHANNEL}'/>"
        )));
        assert!(hostile.contains("diq.agent=hostile"));
        let data: Vec<_> = GUESTS.iter().filter(|g| g.data_devices).collect();
        assert_eq!(data.len(), 1, "one guest has the data disk and the NIC");
        let xml = domain_xml(data[0], Path::new("/h"), Path::new("/q"), "x");
        assert!(xml.contains(&format!("<source file='/h/disks/{}.img'/>", data[0].name)));
        assert!(xml.contains(&format!("<target dev='{DATA_TAP}' managed='no'/>")));
        assert!(!hostile.contains("<interface"));
        assert!(!win.contains(CONTROL_CHANNEL));
        assert_ne!(uuid("diq-a"), uuid("diq-b"));
        assert_eq!(uuid("diq-a").len(), 36);
    }
}
