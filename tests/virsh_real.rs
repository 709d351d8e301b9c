//! The virsh adapter against a real `virsh` and libvirt's built-in test driver
//! (`test:///default`, or a node file of our own), so no daemon is needed.
//!
//! Skipped with a message when `virsh` is not installed, except with `CI=true`, where a
//! missing virsh would hide a broken environment and so fails.

mod common;

use std::time::{Duration, Instant};

use dismount_iso_qemu::hypervisor::virsh::VirshHypervisor;
use dismount_iso_qemu::hypervisor::{ChangeScope, DomainState, HvError, Hypervisor, XmlScope};

fn virsh_available() -> bool {
    common::require(
        common::on_path("virsh"),
        "`virsh`",
        "install libvirt-clients",
    )
}

/// Every domain has a fixed UUID: the test driver invents a new one per process otherwise,
/// and the adapter's second round (dominfo) looks domains up by UUID.
/// A test-driver node with a running, a paused and a shut-off domain (names that need
/// quoting) and a pool with volumes.
const NODE_XML: &str = r#"<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>run one</name>
    <uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory unit='KiB'>262144</memory>
    <currentMemory unit='KiB'>131072</currentMemory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    </devices>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>it's off-ü</name>
    <uuid>22222222-2222-3333-4444-555555555555</uuid>
    <memory unit='KiB'>524288</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>paused</name>
    <uuid>33333333-2222-3333-4444-555555555555</uuid>
    <memory unit='KiB'>524288</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
    <test:runstate>3</test:runstate>
  </domain>
  <pool type='dir'>
    <name>isos</name>
    <target><path>/srv/isos</path></target>
    <volume type='file'>
      <name>debian 12.iso</name>
      <capacity unit='bytes'>654311424</capacity>
      <target><path>/srv/isos/debian 12.iso</path></target>
    </volume>
    <volume type='file'><name>b.iso</name><capacity>1024</capacity></volume>
  </pool>
</node>
"#;

fn node_uri(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("node.xml");
    std::fs::write(&path, NODE_XML).unwrap();
    format!("test://{}", path.display())
}

#[test]
fn lists_the_default_test_domain() {
    if !virsh_available() {
        return;
    }
    let hv = VirshHypervisor::open(Some("test:///default")).unwrap();
    assert_eq!(hv.uri(), "test:///default");
    let before = hv.processes_spawned();
    let started = Instant::now();
    let domains = hv.list_domains().unwrap();
    let took = started.elapsed();
    let used = hv.processes_spawned() - before;
    eprintln!("list_domains on test:///default: {used} processes, {took:?}");
    let test = domains.iter().find(|d| d.name == "test").unwrap();
    assert_eq!(test.state, DomainState::Running);
    assert_eq!(test.memory_max_kib, 8_388_608);
    assert_eq!(test.memory_used_kib, 2_097_152);
    assert_eq!(test.vcpus, 2);
    assert_eq!(test.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
    assert!(test.persistent);
    assert!(test.cpu_time_ns > 0);
    // The test driver has no bulk stats: one process for lists + stats, one for dominfo.
    assert_eq!(used, 2);
}

#[test]
fn lists_running_paused_and_shut_off_domains_with_odd_names() {
    if !virsh_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hv = VirshHypervisor::open(Some(&node_uri(&dir))).unwrap();
    let mut domains = hv.list_domains().unwrap();
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["it's off-ü", "paused", "run one"]);
    assert_eq!(domains[0].state, DomainState::ShutOff);
    assert_eq!(domains[0].memory_max_kib, 524_288);
    assert_eq!(domains[1].state, DomainState::Paused);
    assert_eq!(domains[2].state, DomainState::Running);
    assert_eq!(domains[2].uuid, "11111111-2222-3333-4444-555555555555");
    assert_eq!(domains[2].memory_used_kib, 131_072);
}

#[test]
fn domain_xml_and_batch() {
    if !virsh_available() {
        return;
    }
    let hv = VirshHypervisor::open(Some("test:///default")).unwrap();
    let xml = hv.domain_xml("test", XmlScope::Current).unwrap();
    assert!(xml.starts_with("<domain type='test'"));
    assert!(roxmltree::Document::parse(&xml).is_ok());
    let inactive = hv.domain_xml("test", XmlScope::Persistent).unwrap();
    assert!(inactive.contains("<name>test</name>"));
    assert_eq!(
        hv.domain_xml("nope", XmlScope::Current),
        Err(HvError::NoSuchDomain("nope".into()))
    );

    let before = hv.processes_spawned();
    let xmls = hv.domain_xmls(&["test".into(), "nope".into()], XmlScope::Current);
    assert_eq!(hv.processes_spawned() - before, 1);
    assert_eq!(xmls.len(), 2);
    assert!(xmls[0].as_ref().unwrap().contains("<name>test</name>"));
    assert_eq!(xmls[1], Err(HvError::NoSuchDomain("nope".into())));
}

fn xml_name(xml: &str) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let name = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("name"))
        .and_then(|n| n.text())
        .unwrap();
    name.to_string()
}

#[test]
fn domain_xmls_with_names_that_need_quoting() {
    if !virsh_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hv = VirshHypervisor::open(Some(&node_uri(&dir))).unwrap();
    let names: Vec<String> = ["run one", "it's off-ü", "x'; destroy 'run one", "paused"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let xmls = hv.domain_xmls(&names, XmlScope::Persistent);
    assert!(xmls[0].as_ref().unwrap().contains("<name>run one</name>"));
    assert_eq!(xml_name(xmls[1].as_ref().unwrap()), "it's off-ü");
    assert_eq!(xmls[2], Err(HvError::NoSuchDomain(names[2].clone())));
    assert!(xmls[3].as_ref().unwrap().contains("<name>paused</name>"));
}

#[test]
fn agent_command_on_the_test_driver_is_a_clean_error() {
    if !virsh_available() {
        return;
    }
    let hv = VirshHypervisor::open(Some("test:///default")).unwrap();
    let ping = serde_json::json!({"execute": "guest-ping"});
    match hv.agent_command("test", &ping, Duration::from_millis(300)) {
        Err(HvError::AgentCommandFailed {
            domain,
            command,
            message,
        }) => {
            assert_eq!(domain, "test");
            assert_eq!(command, "guest-ping");
            assert_eq!(
                message,
                "this function is not supported by the connection driver: virDomainQemuAgentCommand"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        hv.agent_command("nope", &ping, Duration::from_secs(1)),
        Err(HvError::NoSuchDomain("nope".into()))
    );
}

#[test]
fn large_agent_command_travels_on_stdin_and_fails_cleanly() {
    if !virsh_available() {
        return;
    }
    let hv = VirshHypervisor::open(Some("test:///default")).unwrap();
    // 300 KiB: far beyond Linux's 128 KiB limit for one argument.
    let big = serde_json::json!({
        "execute": "guest-file-write",
        "arguments": {"handle": 1, "buf-b64": "QUJD".repeat(75 * 1024)}
    });
    match hv.agent_command("test", &big, Duration::from_secs(1)) {
        Err(HvError::AgentCommandFailed { message, .. }) => {
            assert!(message.contains("not supported"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        hv.agent_command("nope", &big, Duration::from_secs(1)),
        Err(HvError::NoSuchDomain("nope".into()))
    );
}

#[test]
fn volumes_of_active_pools() {
    if !virsh_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hv = VirshHypervisor::open(Some(&node_uri(&dir))).unwrap();
    let mut vols = hv.list_volumes().unwrap();
    vols.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(vols.len(), 2);
    assert_eq!(vols[0].name, "b.iso");
    assert_eq!(vols[0].capacity_bytes, Some(1024));
    assert_eq!(vols[1].pool, "isos");
    assert_eq!(vols[1].name, "debian 12.iso");
    assert_eq!(vols[1].path, "/srv/isos/debian 12.iso");
    assert_eq!(vols[1].capacity_bytes, Some(654_311_424));

    let default = VirshHypervisor::open(Some("test:///default")).unwrap();
    assert_eq!(default.list_volumes().unwrap(), vec![]);
}

#[test]
fn update_device_on_a_missing_domain_and_empty_scope() {
    if !virsh_available() {
        return;
    }
    let hv = VirshHypervisor::open(Some("test:///default")).unwrap();
    let cdrom = "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>";
    assert_eq!(
        hv.update_device("nope", cdrom, ChangeScope::LIVE, false),
        Err(HvError::NoSuchDomain("nope".into()))
    );
    assert!(matches!(
        hv.update_device(
            "test",
            cdrom,
            ChangeScope {
                live: false,
                config: false
            },
            false
        ),
        Err(HvError::Failed { .. })
    ));
    assert!(hv
        .attach_device("test", cdrom, ChangeScope::CONFIG)
        .is_err());
}

#[test]
fn connection_failures_are_classified() {
    if !virsh_available() {
        return;
    }
    match VirshHypervisor::open(Some("qemu+unix:///system?socket=/nonexistent/sock")) {
        Err(HvError::Unreachable { detail, .. }) => assert_eq!(
            detail,
            "Failed to connect socket to '/nonexistent/sock': No such file or directory"
        ),
        other => panic!("unexpected {:?}", other.map(|h| h.uri())),
    }
    // An unknown driver needs a daemon to say so: tests/virsh_e2e.rs asks the harness's.
    assert!(matches!(
        VirshHypervisor::open(Some("notauri")),
        Err(HvError::BadUri { .. })
    ));
}
