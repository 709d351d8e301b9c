//! Decision logic of the probe manager against the fake hypervisor.

use super::*;
use crate::hypervisor::fake::{Call, FakeDomain, FakeHypervisor};
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
        collect: Families::NONE,
        ask_agents: true,
        definition_ttl: DEFAULT_DEFINITION_TTL,
        stats_ttl: Duration::ZERO,
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
fn read_only_asks_no_agent_and_uses_the_cache_and_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(1000);
    s.cache_path = Some(dir.path().join("os-cache.json"));
    let hv = FakeHypervisor::new()
        .with_domain(FakeDomain::new("known", DomainState::Running).with_agent(osinfo("Ubuntu")))
        .with_domain(
            FakeDomain::new("meta", DomainState::Running)
                .with_xml(WIN_XML)
                .with_agent(osinfo("never asked")),
        )
        .with_domain(FakeDomain::new("new", DomainState::Running).with_agent(osinfo("Debian")));
    // An earlier run with agents answered for "known" only.
    let earlier = FakeHypervisor::new()
        .with_domain(FakeDomain::new("known", DomainState::Running).with_agent(osinfo("Ubuntu")));
    manager(&earlier, s.clone()).scan().unwrap();

    s.ask_agents = false;
    let snap = manager(&hv, s).scan().unwrap();
    assert!(
        ["known", "meta", "new"]
            .iter()
            .all(|d| hv.agent_calls(d).is_empty()),
        "{:?}",
        hv.calls()
    );
    let known = find(&snap, "known");
    assert_eq!(known.os.text.as_deref(), Some("Ubuntu"));
    assert!(known.os.cached);
    let meta = find(&snap, "meta");
    assert_eq!(meta.agent, AgentStatus::NotAsked);
    assert_eq!(meta.os.source, Some(OsSource::LibosinfoMetadata));
    let new = find(&snap, "new");
    assert_eq!(new.agent, AgentStatus::NotAsked);
    assert_eq!(new.os.text, None);
    assert_eq!(new.os.reason.as_deref(), Some(NOT_ASKED_READ_ONLY));
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

// ---------------------------------------------------------------------------------------
// `serve`'s bulk statistics.

const DISK_XML: &str = r#"<domain><name>a</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
  <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default' bridge='virbr0'/><target dev='vnet0'/><model type='virtio'/></interface>
</devices></domain>"#;

fn collecting(timeout_ms: u64, collect: Families) -> ProbeSettings {
    ProbeSettings {
        collect,
        ..settings(timeout_ms)
    }
}

fn stats_calls(hv: &FakeHypervisor) -> Vec<crate::hypervisor::StatsGroups> {
    hv.calls()
        .into_iter()
        .filter_map(|c| match c {
            crate::hypervisor::fake::Call::DomainStats(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn telemetry_of<'a>(snap: &'a Snapshot, name: &str) -> &'a DomainTelemetry {
    let t = snap.telemetry.as_ref().expect("telemetry");
    assert_eq!(t.domains.len(), snap.vms.len(), "one entry per row");
    let i = snap.vms.iter().position(|r| r.name == name).unwrap();
    &t.domains[i]
}

fn two_domains() -> FakeHypervisor {
    let vda = crate::hypervisor::BlockStats {
        name: "vda".into(),
        rd_bytes: Some(4096),
        ..Default::default()
    };
    FakeHypervisor::new()
        .with_domain(
            FakeDomain::new("a", DomainState::Running)
                .with_xml(DISK_XML)
                .with_stats(DomainStats {
                    blocks: vec![vda],
                    cpu_time_ns: Some(5),
                    ..DomainStats::default()
                }),
        )
        .with_domain(FakeDomain::new("b", DomainState::ShutOff))
}

#[test]
fn scan_makes_no_statistics_call() {
    let hv = two_domains();
    let snap = manager(&hv, settings(500)).scan().unwrap();
    assert!(stats_calls(&hv).is_empty());
    assert_eq!(snap.telemetry, None);
}

#[test]
fn serve_scans_carry_statistics_and_device_facts_per_row() {
    let hv = two_domains();
    let snap = manager(&hv, collecting(500, Families::ALL)).scan().unwrap();
    assert_eq!(stats_calls(&hv), vec![crate::hypervisor::StatsGroups::ALL]);
    assert_eq!(snap.telemetry.as_ref().unwrap().families, Families::ALL);
    let a = telemetry_of(&snap, "a");
    assert_eq!(a.stats_error, None);
    let stats = a.stats.as_ref().unwrap();
    assert_eq!(stats.blocks[0].rd_bytes, Some(4096));
    let targets: Vec<&str> = a.disks.iter().map(|d| d.target.as_str()).collect();
    assert_eq!(targets, ["vda", "sda"]);
    assert_eq!(a.interfaces[0].source_bridge, "virbr0");
    // The CD-ROM facts still reach the table's columns.
    assert_eq!(find(&snap, "a").media.len(), 1);
    let b = telemetry_of(&snap, "b");
    assert_eq!(b.stats.as_ref().unwrap().state, Some(DomainState::ShutOff));
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
}

#[test]
fn families_switched_off_are_not_asked_of_libvirt() {
    let hv = two_domains();
    let only_balloon = Families {
        balloon: true,
        ..Families::NONE
    };
    let snap = manager(&hv, collecting(500, only_balloon)).scan().unwrap();
    assert_eq!(
        stats_calls(&hv),
        vec![crate::hypervisor::StatsGroups {
            balloon: true,
            ..Default::default()
        }]
    );
    assert!(telemetry_of(&snap, "a")
        .stats
        .as_ref()
        .unwrap()
        .blocks
        .is_empty());
    // The Debian-compatible series need no statistics call at all.
    hv.clear_calls();
    let compat = Families {
        compat: true,
        ..Families::NONE
    };
    let snap = manager(&hv, collecting(500, compat)).scan().unwrap();
    assert!(stats_calls(&hv).is_empty());
    assert_eq!(snap.telemetry.as_ref().unwrap().families, compat);
    assert_eq!(telemetry_of(&snap, "a").stats_error, None);
}

#[test]
fn a_failed_statistics_call_marks_every_domain_and_keeps_the_scan() {
    for error in [
        HvError::Failed {
            operation: "reading domain statistics",
            detail: "*: internal error".into(),
        },
        // Even a lost connection only costs the statistics: the listing and XML decide
        // whether the scan (and libvirt_up) failed.
        HvError::Unreachable {
            uri: "x".into(),
            detail: "cannot recv data".into(),
        },
    ] {
        let hv = two_domains();
        hv.fail_stats(error);
        let snap = manager(&hv, collecting(500, Families::ALL)).scan().unwrap();
        for name in ["a", "b"] {
            let t = telemetry_of(&snap, name);
            assert_eq!(t.stats, None);
            assert!(
                t.stats_error
                    .as_deref()
                    .unwrap()
                    .starts_with("statistics call failed"),
                "{t:?}"
            );
        }
        // The devices are still described: the XML was read.
        assert_eq!(telemetry_of(&snap, "a").disks.len(), 2);
        let lines: Vec<&String> = snap
            .errors
            .iter()
            .filter(|e| e.starts_with("domain statistics"))
            .collect();
        assert_eq!(lines.len(), 1, "{:?}", snap.errors);
    }
}

#[test]
fn a_stuck_statistics_call_ends_at_the_deadline_and_is_not_stacked() {
    let hv = two_domains();
    hv.delay_stats(Duration::from_millis(1500));
    let probes = manager(&hv, collecting(300, Families::ALL));
    let t0 = Instant::now();
    let snap = probes.scan().unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    let a = telemetry_of(&snap, "a");
    assert_eq!(a.stats, None);
    assert!(
        a.stats_error.as_deref().unwrap().contains("deadline"),
        "{a:?}"
    );
    // The first call still runs: the next scan starts none and says why.
    let snap = probes.scan().unwrap();
    assert!(
        telemetry_of(&snap, "b")
            .stats_error
            .as_deref()
            .unwrap()
            .contains("still waiting"),
        "{snap:?}"
    );
    assert_eq!(stats_calls(&hv).len(), 1);
    // Once it returned, scans get statistics again.
    std::thread::sleep(Duration::from_millis(1500));
    hv.delay_stats(Duration::ZERO);
    let snap = probes.scan().unwrap();
    assert_eq!(telemetry_of(&snap, "a").stats_error, None);
    assert_eq!(stats_calls(&hv).len(), 2);
}

#[test]
fn a_domain_libvirt_left_out_is_marked_alone() {
    let hv = two_domains();
    hv.omit_stats("b");
    let snap = manager(&hv, collecting(500, Families::ALL)).scan().unwrap();
    assert!(telemetry_of(&snap, "a").stats.is_some());
    let b = telemetry_of(&snap, "b");
    assert_eq!(b.stats, None);
    assert_eq!(b.stats_error.as_deref(), Some(STATS_MISSING));
    assert!(
        snap.errors
            .iter()
            .any(|e| e == "domain statistics: libvirt returned none for 1 VM(s): b"),
        "{:?}",
        snap.errors
    );
}

/// The XML reads of one scan, by domain.
fn xml_reads(hv: &FakeHypervisor) -> Vec<String> {
    let mut names: Vec<String> = hv
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::DomainXml(name, _) => Some(name),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

/// A shut-off domain "win" with an ISO, under definition tag `tag`.
fn shut_off_win(tag: u64) -> FakeDomain {
    FakeDomain::new("win", DomainState::ShutOff)
        .with_xml(WIN_XML)
        .with_definition_tag(tag)
}

fn media_of(s: &Snapshot, name: &str) -> Vec<Option<String>> {
    find(s, name)
        .media
        .iter()
        .map(|c| c.source.clone())
        .collect()
}

#[test]
fn a_shut_off_definition_is_read_once_while_its_tag_holds() {
    let hv = FakeHypervisor::new()
        .with_domain(shut_off_win(1))
        .with_domain(FakeDomain::new("run", DomainState::Running));
    let m = manager(&hv, settings(500));
    let first = m.scan().unwrap();
    assert_eq!(xml_reads(&hv), ["run", "win"]);
    assert_eq!(find(&first, "run").ages.os_seconds, Some(0));
    hv.clear_calls();
    // Same tag: the facts are reused; a running domain is read every time.
    let second = m.scan().unwrap();
    assert_eq!(xml_reads(&hv), ["run"]);
    assert_eq!(
        media_of(&second, "win"),
        [Some("/isos/virtio.iso".to_string())]
    );
    assert_eq!(find(&second, "win").os, find(&first, "win").os);
    assert_eq!(
        find(&second, "win").os.source,
        Some(OsSource::LibosinfoMetadata)
    );
    // Another ISO changes the tag (its path is in the bulk statistics): read again.
    hv.redefine("win", &WIN_XML.replace("virtio.iso", "other.iso"), Some(2));
    hv.clear_calls();
    let third = m.scan().unwrap();
    assert_eq!(xml_reads(&hv), ["run", "win"]);
    assert_eq!(
        media_of(&third, "win"),
        [Some("/isos/other.iso".to_string())]
    );
    // A domain without a tag (a driver without the figures) is always read.
    hv.redefine("win", WIN_XML, None);
    hv.clear_calls();
    m.scan().unwrap();
    m.scan().unwrap();
    assert_eq!(xml_reads(&hv), ["run", "run", "win", "win"]);
}

#[test]
fn definition_ttl_zero_reads_every_xml_and_no_cache_keeps_the_facts() {
    let hv = FakeHypervisor::new().with_domain(shut_off_win(1));
    let mut s = settings(500);
    s.definition_ttl = Duration::ZERO;
    let m = manager(&hv, s);
    m.scan().unwrap();
    m.scan().unwrap();
    assert_eq!(xml_reads(&hv), ["win", "win"]);
    // --no-cache is about agent answers: the tag still vouches for the XML facts.
    hv.clear_calls();
    let mut s = settings(500);
    s.no_cache = true;
    let m = manager(&hv, s);
    m.scan().unwrap();
    m.scan().unwrap();
    assert_eq!(xml_reads(&hv), ["win"]);
}

#[test]
fn definition_facts_persist_between_runs_and_forget_undefined_domains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.json");
    let hv = FakeHypervisor::new()
        .with_domain(shut_off_win(7))
        .with_domain(FakeDomain::new("gone", DomainState::ShutOff).with_definition_tag(8));
    let mut s = settings(500);
    s.cache_path = Some(path.clone());
    let first = manager(&hv, s.clone()).scan().unwrap();
    assert_eq!(find(&first, "win").ages.definition_seconds, 0);
    assert_eq!(find(&first, "win").ages.os_seconds, None);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("virtio.iso"));
    // Make the stored facts 100 s old, as if a run 100 s ago had read them.
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for e in file["definitions"].as_object_mut().unwrap().values_mut() {
        e["stored_at"] = json!(e["stored_at"].as_u64().unwrap() - 100);
    }
    std::fs::write(&path, file.to_string()).unwrap();
    hv.clear_calls();
    // A second run (a new process in real life) reads no XML, and says how old it is.
    let snap = manager(&hv, s.clone()).scan().unwrap();
    assert!(xml_reads(&hv).is_empty(), "{:?}", xml_reads(&hv));
    assert_eq!(
        media_of(&snap, "win"),
        [Some("/isos/virtio.iso".to_string())]
    );
    let age = find(&snap, "win").ages.definition_seconds;
    assert!((100..110).contains(&age), "{age}");
    assert_eq!(find(&snap, "win").ages.statistics_seconds, 0);
    // An undefined domain's facts leave the file with it.
    let hv2 = FakeHypervisor::new().with_domain(shut_off_win(7));
    let before = std::fs::read_to_string(&path).unwrap();
    let gone_uuid = find(&snap, "gone").uuid.clone();
    assert!(before.contains(&gone_uuid));
    manager(&hv2, s).scan().unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains(&gone_uuid));
    assert!(xml_reads(&hv2).is_empty());
}

#[test]
fn managers_sharing_a_cache_leave_the_saving_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.json");
    let mut s = settings(500);
    s.cache_path = Some(path.clone());
    let cache = Arc::new(Mutex::new(ProbeManager::load_cache(&s)));
    for name in ["a", "b"] {
        let hv = FakeHypervisor::new().with_domain(
            FakeDomain::new(name, DomainState::ShutOff)
                .with_xml(WIN_XML)
                .with_definition_tag(1),
        );
        ProbeManager::with_cache(Arc::new(hv), s.clone(), Arc::clone(&cache))
            .scan()
            .unwrap();
    }
    assert!(!path.exists(), "a shared manager's scan wrote the file");
    save_cache(&mut cache.lock().unwrap(), &s).unwrap();
    // One write, with the facts the scans read.
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let uuid = FakeDomain::new("b", DomainState::ShutOff).info.uuid;
    assert!(
        file["definitions"][format!("fake:///test {uuid}")]["facts"]["cdroms"][0]["source"]
            == "/isos/virtio.iso",
        "{file}"
    );
}

fn list_calls(hv: &FakeHypervisor) -> usize {
    hv.calls()
        .iter()
        .filter(|c| matches!(c, Call::ListDomains))
        .count()
}

#[test]
fn a_stats_ttl_reuses_the_listing_and_every_fact_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.json");
    let hv = FakeHypervisor::new()
        .with_domain(shut_off_win(1))
        .with_domain(
            FakeDomain::new("run", DomainState::Running)
                .with_xml(WIN_XML)
                .with_agent(osinfo("Ubuntu 24.04.1 LTS")),
        );
    let mut s = settings(500);
    s.cache_path = Some(path.clone());
    s.stats_ttl = Duration::from_secs(60);
    let first = manager(&hv, s.clone()).scan().unwrap();
    assert_eq!(list_calls(&hv), 1);
    assert_eq!(find(&first, "run").ages.statistics_seconds, 0);
    // Age the listing by 20 s, as if a run 20 s ago had read it.
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for l in file["listings"].as_object_mut().unwrap().values_mut() {
        l["stored_at"] = json!(l["stored_at"].as_u64().unwrap() - 20);
    }
    std::fs::write(&path, file.to_string()).unwrap();
    // A domain undefined since is still listed: within the TTL nothing is asked.
    hv.redefine("win", &WIN_XML.replace("virtio.iso", "other.iso"), Some(2));
    hv.clear_calls();
    let second = manager(&hv, s.clone()).scan().unwrap();
    assert!(hv.calls().is_empty(), "{:?}", hv.calls());
    for name in ["win", "run"] {
        let ages = &find(&second, name).ages;
        assert!((20..30).contains(&ages.statistics_seconds), "{ages:?}");
        assert_eq!(find(&second, name).state, find(&first, name).state);
        assert_eq!(find(&second, name).media, find(&first, name).media);
    }
    assert_eq!(find(&second, "run").os, {
        let mut os = find(&first, "run").os.clone();
        os.cached = true;
        os
    });
    // Past the TTL the listing is asked again, and the new tag brings the new ISO.
    s.stats_ttl = Duration::from_secs(10);
    hv.clear_calls();
    let third = manager(&hv, s.clone()).scan().unwrap();
    assert_eq!(list_calls(&hv), 1);
    assert_eq!(xml_reads(&hv), ["run", "win"]);
    assert_eq!(find(&third, "win").ages.statistics_seconds, 0);
    assert_eq!(
        media_of(&third, "win"),
        [Some("/isos/other.iso".to_string())]
    );
}

#[test]
fn scans_collecting_metrics_never_reuse_a_listing() {
    let hv = FakeHypervisor::new().with_domain(FakeDomain::new("run", DomainState::Running));
    let mut s = collecting(500, Families::ALL);
    s.stats_ttl = Duration::from_secs(60);
    let m = manager(&hv, s);
    m.scan().unwrap();
    m.scan().unwrap();
    assert_eq!(list_calls(&hv), 2);
}
