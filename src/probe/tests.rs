//! Decision logic of the probe manager against the fake hypervisor.

use super::*;
use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
use crate::hypervisor::{classify_agent_message, DomainState, MAX_DETAIL};
use crate::snapshot::MAX_OS_TEXT;
use serde_json::{json, Value};
use std::path::Path;

const WIN_XML: &str = r#"<domain><name>win</name><metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://microsoft.com/win/2k22"/></libosinfo:libosinfo></metadata><devices><disk type='file' device='cdrom'><source file='/isos/virtio.iso'/><target dev='sda' bus='sata'/><readonly/></disk></devices></domain>"#;

fn osinfo(pretty: &'static str) -> impl Fn(&str, &Value) -> HvResult<Value> + Send + Sync {
    move |_, req| match req["execute"].as_str() {
        Some("guest-get-osinfo") => Ok(json!({"id": "ubuntu", "pretty-name": pretty})),
        other => panic!("unexpected {other:?}"),
    }
}

fn settings(timeout_ms: u64) -> ProbeSettings {
    ProbeSettings {
        deadline: Duration::from_millis(timeout_ms),
        cache_ttl: Duration::from_secs(60),
        jobs: 4,
        no_cache: false,
        cache_path: None,
    }
}

fn manager(hv: &FakeHypervisor, s: ProbeSettings) -> ProbeManager {
    ProbeManager::new(Arc::new(hv.clone()), s)
        .with_osinfo_db(OsinfoDb::at(Path::new("/nonexistent")))
}

fn find<'a>(s: &'a Snapshot, name: &str) -> &'a VmRow {
    s.vms.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn each_link_of_the_chain_and_its_source() {
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("ubuntu", DomainState::Running).with_agent(osinfo("Ubuntu 18.04.6 LTS")))
        .with_domain(FakeDomain::new("blocked", DomainState::Running).with_agent(|d, req| {
            match req["execute"].as_str().unwrap() {
                "guest-get-osinfo" => Err(HvError::AgentCommandDisabled {
                    domain: d.into(),
                    command: "guest-get-osinfo".into(),
                }),
                "guest-exec" => Ok(json!({"pid": 7})),
                // base64 of PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n
                "guest-exec-status" => Ok(json!({"exited": true, "exitcode": 0,
                    "out-data": "UFJFVFRZX05BTUU9IkRlYmlhbiBHTlUvTGludXggMTIgKGJvb2t3b3JtKSIKSUQ9ZGViaWFuCg=="})),
                other => panic!("unexpected {other}"),
            }
        }))
        .with_domain(FakeDomain::new("noagent", DomainState::Running))
        .with_domain(FakeDomain::new("win", DomainState::ShutOff).with_xml(WIN_XML))
        .with_domain(FakeDomain::new("paused", DomainState::Paused).with_agent(osinfo("never asked")));
    let snap = manager(&hv, settings(2000)).scan().unwrap();

    let names: Vec<&str> = snap.vms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["blocked", "noagent", "paused", "ubuntu", "win"]);

    let u = find(&snap, "ubuntu");
    assert_eq!(u.os.text.as_deref(), Some("Ubuntu 18.04.6 LTS"));
    assert_eq!(u.os.source, Some(OsSource::GuestGetOsinfo));
    assert_eq!(u.agent, AgentStatus::Ok);

    let b = find(&snap, "blocked");
    assert_eq!(b.os.text.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert_eq!(b.os.source, Some(OsSource::GuestExec));
    assert_eq!(b.os.id.as_deref(), Some("debian"));

    let n = find(&snap, "noagent");
    assert_eq!(n.os.text, None);
    assert_eq!(n.os.reason.as_deref(), Some("agent not connected"));
    assert_eq!(n.agent, AgentStatus::Absent);

    let w = find(&snap, "win");
    assert_eq!(w.os.text.as_deref(), Some("Windows Server 2022"));
    assert_eq!(w.os.source, Some(OsSource::LibosinfoMetadata));
    assert_eq!(w.media[0].source.as_deref(), Some("/isos/virtio.iso"));

    let p = find(&snap, "paused");
    assert_eq!(p.agent, AgentStatus::NotAsked);
    assert_eq!(p.os.reason.as_deref(), Some("VM paused"));
    // Paused and shut-off VMs get no agent calls.
    assert!(hv.agent_calls("paused").is_empty());
    assert!(hv.agent_calls("win").is_empty());
}

#[test]
fn frozen_agent_costs_the_deadline_once_then_is_remembered() {
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("ok", DomainState::Running).with_agent(osinfo("Ubuntu")))
        .with_domain(
            FakeDomain::new("frozen", DomainState::Running)
                .with_agent(osinfo("too late"))
                .with_agent_delay(Duration::from_secs(3)),
        );
    let m = manager(&hv, settings(300));
    let t0 = Instant::now();
    let snap = m.scan().unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "scan waited {took:?}");
    assert_eq!(find(&snap, "ok").os.text.as_deref(), Some("Ubuntu"));
    let f = find(&snap, "frozen");
    assert_eq!(f.agent, AgentStatus::Timeout);
    assert!(f.os.reason.as_deref().unwrap().contains("timed out"));

    // Second scan: answers from the cache, no agent asked at all.
    hv.clear_calls();
    let t1 = Instant::now();
    let again = m.scan().unwrap();
    assert!(t1.elapsed() < Duration::from_millis(200));
    assert!(hv.agent_calls("frozen").is_empty());
    assert!(hv.agent_calls("ok").is_empty());
    assert!(find(&again, "ok").os.cached);
    assert_eq!(find(&again, "frozen").agent, AgentStatus::Timeout);
}

#[test]
fn no_cache_asks_again_but_never_twice_at_once() {
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("slow", DomainState::Running)
            .with_agent(osinfo("Ubuntu"))
            .with_agent_delay(Duration::from_millis(600)),
    );
    let mut s = settings(150);
    s.no_cache = true;
    let m = manager(&hv, s);
    m.scan().unwrap();
    // The first probe is still waiting on the agent: a second scan must not queue another.
    let snap = m.scan().unwrap();
    assert_eq!(find(&snap, "slow").agent, AgentStatus::Timeout);
    assert_eq!(hv.agent_calls("slow").len(), 1);
    thread::sleep(Duration::from_millis(700));
    let snap = m.scan().unwrap();
    assert_eq!(hv.agent_calls("slow").len(), 2);
    assert_eq!(find(&snap, "slow").agent, AgentStatus::Timeout);
}

#[test]
fn disabled_commands_and_metadata_fallback_keep_the_reason() {
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new("locked", DomainState::Running)
            .with_xml(WIN_XML)
            .with_agent(|d, req| {
                Err(HvError::AgentCommandDisabled {
                    domain: d.into(),
                    command: req["execute"].as_str().unwrap().into(),
                })
            }),
    );
    let snap = manager(&hv, settings(1000)).scan().unwrap();
    let r = find(&snap, "locked");
    assert_eq!(r.agent, AgentStatus::Disabled);
    assert_eq!(r.os.source, Some(OsSource::LibosinfoMetadata));
    let reason = r.os.reason.as_deref().unwrap();
    assert!(reason.contains("guest-get-osinfo is disabled"), "{reason}");
    assert!(reason.contains("guest-exec is disabled"), "{reason}");
}

#[test]
fn windows_without_osinfo_falls_back_to_ver() {
    let hv =
        FakeHypervisor::new().with_domain(FakeDomain::new("win", DomainState::Running).with_agent(
            |d, req| match req["execute"].as_str().unwrap() {
                "guest-get-osinfo" => Err(HvError::AgentCommandFailed {
                    domain: d.into(),
                    command: "guest-get-osinfo".into(),
                    message: "The command guest-get-osinfo has not been found".into(),
                }),
                "guest-exec" if req["arguments"]["path"] == "cmd.exe" => Ok(json!({"pid": 1})),
                "guest-exec" => Err(HvError::AgentCommandFailed {
                    domain: d.into(),
                    command: "guest-exec".into(),
                    message: "Failed to execute child process (No such file or directory)".into(),
                }),
                // "Microsoft Windows [Version 10.0.22631.2428]"
                "guest-exec-status" => Ok(json!({"exited": true, "exitcode": 0,
                "out-data": "DQpNaWNyb3NvZnQgV2luZG93cyBbVmVyc2lvbiAxMC4wLjIyNjMxLjI0MjhdDQo="})),
                other => panic!("unexpected {other}"),
            },
        ));
    let snap = manager(&hv, settings(1000)).scan().unwrap();
    let r = find(&snap, "win");
    assert_eq!(
        r.os.text.as_deref(),
        Some("Microsoft Windows 11 (version 10.0.22631.2428)")
    );
    assert_eq!(r.os.source, Some(OsSource::GuestExec));
}

#[test]
fn persistent_cache_spares_the_next_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(1000);
    s.cache_path = Some(dir.path().join("os-cache.json"));
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("ok", DomainState::Running).with_agent(osinfo("Ubuntu")));
    manager(&hv, s.clone()).scan().unwrap();
    hv.clear_calls();
    let snap = manager(&hv, s.clone()).scan().unwrap();
    assert!(hv.agent_calls("ok").is_empty());
    assert_eq!(find(&snap, "ok").os.text.as_deref(), Some("Ubuntu"));
    s.no_cache = true;
    manager(&hv, s).scan().unwrap();
    assert_eq!(hv.agent_calls("ok").len(), 1);
}

#[test]
fn listing_failure_is_the_scans_error() {
    let hv = FakeHypervisor::new();
    hv.fail_listing(HvError::Unreachable {
        uri: "qemu:///system".into(),
        detail: "socket missing".into(),
    });
    let err = manager(&hv, settings(100)).scan().unwrap_err();
    assert!(err.is_connection());
}

#[test]
fn libvirt_lost_during_the_probes_is_the_scans_error_not_a_table_of_blanks() {
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("ok", DomainState::Running).with_agent(osinfo("Ubuntu")))
        .with_domain(FakeDomain::new("cut", DomainState::Running).with_agent(
            |_: &str, _: &Value| {
                Err(HvError::Unreachable {
                    uri: "qemu:///system".into(),
                    detail: "End of file while reading data".into(),
                })
            },
        ));
    let mut s = settings(1000);
    s.no_cache = true;
    let err = manager(&hv, s).scan().unwrap_err();
    assert!(err.is_connection());
    assert!(
        err.to_string()
            .contains("the connection was lost while scanning: End of file"),
        "{err}"
    );
}

#[test]
fn a_guest_cannot_make_its_os_name_or_error_text_huge() {
    let huge: &'static str = Box::leak("Ubuntu \u{200b}".repeat(20_000).into_boxed_str());
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("big", DomainState::Running).with_agent(osinfo(huge)))
        .with_domain(FakeDomain::new("loud", DomainState::Running).with_agent(
            |d: &str, _: &Value| {
                Err(classify_agent_message(
                    d,
                    "guest-get-osinfo",
                    &"E".repeat(1 << 20),
                ))
            },
        ));
    let mut s = settings(2000);
    s.no_cache = true;
    let snap = manager(&hv, s).scan().unwrap();
    let text = snap.vms[0].os.text.as_deref().unwrap();
    assert!(text.chars().count() < MAX_OS_TEXT + 30, "{}", text.len());
    assert!(text.ends_with(" more bytes]"));
    let reason = snap.vms[1].os.reason.as_deref().unwrap();
    assert!(reason.len() < 2 * MAX_DETAIL, "{}", reason.len());
}

#[test]
fn many_guests_probe_in_parallel() {
    let mut hv = FakeHypervisor::new();
    for i in 0..40 {
        hv = hv.with_domain(
            FakeDomain::new(&format!("vm{i:02}"), DomainState::Running)
                .with_agent(osinfo("Ubuntu"))
                .with_agent_delay(Duration::from_millis(100)),
        );
    }
    let mut s = settings(3000);
    s.jobs = 20;
    let t0 = Instant::now();
    let snap = manager(&hv, s).scan().unwrap();
    // 40 probes of 100 ms on 20 workers: about 200 ms, far below 4 s sequential.
    assert!(t0.elapsed() < Duration::from_millis(2000));
    assert!(snap.vms.iter().all(|r| r.agent == AgentStatus::Ok));
}

#[test]
fn a_stuck_daemon_cannot_hold_the_table_past_the_deadline() {
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("ok", DomainState::Running).with_agent(osinfo("Ubuntu")))
        .with_domain(
            FakeDomain::new("stuck", DomainState::ShutOff)
                .with_xml(WIN_XML)
                .with_xml_delay(Duration::from_secs(3)),
        );
    let t0 = Instant::now();
    let snap = manager(&hv, settings(300)).scan().unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(find(&snap, "ok").os.text.as_deref(), Some("Ubuntu"));
    let stuck = find(&snap, "stuck");
    assert!(stuck.media_error.as_deref().unwrap().contains("deadline"));
    assert_eq!(crate::render::table::iso_text(stuck), "?");
    assert!(
        snap.errors
            .iter()
            .any(|e| e.contains("did not return the XML of")),
        "{:?}",
        snap.errors
    );
}
