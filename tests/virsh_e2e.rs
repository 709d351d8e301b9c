//! The virsh adapter against the real harness (its own libvirtd, guests `diq-*`): what only
//! a real libvirtd, QEMU and qemu-ga can show. Read-only towards the guests: the one
//! write goes to /dev/null.

mod common;

use std::time::Duration;

use common::{
    harness_available, harness_uri, DEBIAN_EXEC, FROZEN, NO_AGENT, PAUSED, UBUNTU, WIN_OFF,
};
use dismount_iso_qemu::hypervisor::virsh::VirshHypervisor;
use dismount_iso_qemu::hypervisor::{DomainState, HvError, Hypervisor, XmlScope};
use serde_json::json;

fn domstate(domain: &str) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-c", harness_uri(), "domstate", domain])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn open() -> Option<VirshHypervisor> {
    harness_available().then(|| VirshHypervisor::open(Some(harness_uri())).unwrap())
}

#[test]
fn list_domains_is_one_process_on_qemu() {
    let Some(hv) = open() else { return };
    let before = hv.processes_spawned();
    let domains = hv.list_domains().unwrap();
    assert_eq!(
        hv.processes_spawned() - before,
        1,
        "domstats should cover every field"
    );
    let find = |n: &str| domains.iter().find(|d| d.name == n).unwrap();
    assert_eq!(find(UBUNTU).state, DomainState::Running);
    assert!(find(UBUNTU).cpu_time_ns > 0);
    assert!(find(UBUNTU).memory_max_kib > 0);
    // Other e2e tests may resume or pause diq-paused for a moment: compare with virsh.
    let paused_state = domstate(PAUSED);
    assert_eq!(find(PAUSED).state.as_str(), paused_state);
    assert_eq!(find(WIN_OFF).state, DomainState::ShutOff);
    assert_eq!(find(WIN_OFF).cpu_time_ns, 0);

    let names: Vec<String> = domains.iter().map(|d| d.name.clone()).collect();
    let before = hv.processes_spawned();
    let xmls = hv.domain_xmls(&names, XmlScope::Current);
    assert_eq!(hv.processes_spawned() - before, 1);
    assert!(xmls.iter().all(|x| x.is_ok()));
}

#[test]
fn agent_answers_and_failures_are_classified() {
    let Some(hv) = open() else { return };
    let ping = json!({"execute": "guest-ping"});
    let t = Duration::from_secs(3);
    assert_eq!(hv.agent_command(UBUNTU, &ping, t), Ok(json!({})));
    assert_eq!(
        hv.agent_command(NO_AGENT, &ping, t),
        Err(HvError::AgentNotConnected(NO_AGENT.into()))
    );
    if domstate(PAUSED) == "paused" {
        assert_eq!(
            hv.agent_command(PAUSED, &ping, t),
            Err(HvError::DomainNotRunning(PAUSED.into()))
        );
    }
    assert_eq!(
        hv.agent_command(WIN_OFF, &ping, t),
        Err(HvError::DomainNotRunning(WIN_OFF.into()))
    );
    assert_eq!(
        hv.agent_command(FROZEN, &ping, Duration::from_secs(1)),
        Err(HvError::AgentTimeout(FROZEN.into()))
    );
}

#[test]
fn a_write_chunk_larger_than_an_argument_goes_through_stdin() {
    let Some(hv) = open() else { return };
    let t = Duration::from_secs(5);
    let open =
        json!({"execute": "guest-file-open", "arguments": {"path": "/dev/null", "mode": "w"}});
    let handle = hv.agent_command(DEBIAN_EXEC, &open, t).unwrap();
    // 160 KiB of base64: over Linux's 128 KiB per-argument limit.
    let chunk = "QUJD".repeat(40 * 1024);
    let wrote = hv.agent_command(
        DEBIAN_EXEC,
        &json!({"execute": "guest-file-write", "arguments": {"handle": handle, "buf-b64": chunk}}),
        t,
    );
    let closed = hv.agent_command(
        DEBIAN_EXEC,
        &json!({"execute": "guest-file-close", "arguments": {"handle": handle}}),
        t,
    );
    assert_eq!(wrote.unwrap()["count"], 122_880);
    closed.unwrap();
}

#[test]
fn an_unknown_driver_is_a_bad_uri_when_a_daemon_says_so() {
    if !harness_available() {
        return;
    }
    let uri = format!("foo+unix:///bar?socket={}", common::harness_socket());
    match VirshHypervisor::open(Some(&uri)) {
        Err(HvError::BadUri { detail, .. }) => {
            assert_eq!(detail, "no connection driver available for foo:///bar")
        }
        other => panic!("unexpected {:?}", other.map(|h| h.uri())),
    }
}
