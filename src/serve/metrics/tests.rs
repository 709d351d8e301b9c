use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::domxml::CdromDrive;
use crate::snapshot::{OsAnswer, OsSource, VmRow};

fn vm(name: &str, state: DomainState) -> VmRow {
    VmRow {
        name: name.to_string(),
        uuid: format!("uuid-{name}"),
        state,
        persistent: true,
        vcpus: 2,
        memory_used_kib: 262_144,
        memory_max_kib: 524_288,
        cpu_time_seconds: 6.25,
        media: Vec::new(),
        media_error: None,
        os: OsAnswer::unknown("VM shut off"),
        agent: AgentStatus::NotAsked,
        probe_ms: None,
    }
}

fn fixed_snapshot() -> Snapshot {
    let mut ubuntu = vm("diq-ubuntu", DomainState::Running);
    ubuntu.os = OsAnswer::known(
        "Ubuntu 18.04.6 LTS".into(),
        Some("ubuntu".into()),
        OsSource::GuestGetOsinfo,
    );
    ubuntu.agent = AgentStatus::Ok;
    ubuntu.probe_ms = Some(12);
    ubuntu.media = vec![CdromDrive {
        target: "sda".into(),
        bus: Some("sata".into()),
        source: Some("/var/lib/libvirt/images/ubuntu.iso".into()),
        readonly: true,
    }];
    let mut frozen = vm("diq-frozen", DomainState::Running);
    frozen.agent = AgentStatus::Timeout;
    frozen.os = OsAnswer::unknown("agent timed out");
    frozen.media = vec![CdromDrive {
        target: "hdc".into(),
        bus: Some("ide".into()),
        source: None,
        readonly: true,
    }];
    let mut win = vm("diq-win2k22", DomainState::ShutOff);
    win.os = OsAnswer::known(
        "Microsoft Windows Server 2022".into(),
        Some("http://microsoft.com/win/2k22".into()),
        OsSource::LibosinfoMetadata,
    );
    win.memory_used_kib = 0;
    win.cpu_time_seconds = 0.0;
    Snapshot {
        uri: "qemu:///system".into(),
        taken_at: 1_700_000_000,
        duration_ms: 1234,
        vms: vec![frozen, ubuntu, win],
        errors: vec!["diq-x: domain XML: bad".into()],
    }
}

fn up_stats() -> ScanStats {
    ScanStats {
        scans: 3,
        failed_scans: 1,
        last_duration_seconds: Some(1.25),
        last_success_unix: Some(1_700_000_000),
        up: Some(true),
    }
}

fn text(b: &Arc<[u8]>) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// Compare with a golden file; `UPDATE_GOLDEN=1 cargo test` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/serve/testdata")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} changed; check and rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn exposition_of_a_fixed_snapshot() {
    let e = render(Some(Arc::new(fixed_snapshot())), &up_stats());
    golden("metrics.openmetrics", &text(&e.openmetrics));
    golden("metrics.prom", &text(&e.text));
}

#[test]
fn openmetrics_has_units_totals_and_eof() {
    let e = render(Some(Arc::new(fixed_snapshot())), &up_stats());
    let om = text(&e.openmetrics);
    assert!(om.ends_with("# EOF\n"), "{om}");
    for needle in [
        "libvirt_up 1\n",
        "# UNIT libvirt_domain_memory_maximum_bytes bytes\n",
        "libvirt_domain_memory_maximum_bytes{domain=\"diq-ubuntu\"} 536870912\n",
        "libvirt_domain_memory_current_bytes{domain=\"diq-ubuntu\"} 268435456\n",
        "libvirt_domain_cpu_seconds_total{domain=\"diq-ubuntu\"} 6.25\n",
        "libvirt_domain_state{domain=\"diq-win2k22\",state=\"shut_off\"} 5\n",
        "libvirt_domain_agent_status{domain=\"diq-frozen\",status=\"timeout\"} 1\n",
        "libvirt_domain_agent_probe_duration_seconds{domain=\"diq-ubuntu\"} 0.012\n",
        "libvirt_domain_media_info{domain=\"diq-frozen\",drive=\"hdc\",iso=\"\"} 1\n",
        "os_pretty_name=\"Ubuntu 18.04.6 LTS\",os_id=\"ubuntu\",os_source=\"guest-get-osinfo\"} 1\n",
        "dismount_iso_qemu_scan_errors_total 1\n",
        "dismount_iso_qemu_last_successful_scan_timestamp_seconds 1700000000.0\n",
    ] {
        assert!(om.contains(needle), "missing {needle:?} in\n{om}");
    }
    // The frozen guest has no probe duration: none ran to completion.
    assert!(!om.contains("libvirt_domain_agent_probe_duration_seconds{domain=\"diq-frozen\""));
}

#[test]
fn libvirt_down_drops_domain_series() {
    let stats = ScanStats {
        up: Some(false),
        ..up_stats()
    };
    let e = render(Some(Arc::new(fixed_snapshot())), &stats);
    let om = text(&e.openmetrics);
    assert!(om.contains("libvirt_up 0\n"));
    assert!(!om.contains("diq-ubuntu"), "{om}");
    assert!(om.contains("dismount_iso_qemu_scans_total 3\n"));

    // Before the first scan nothing claims libvirt is down.
    let e = render(None, &ScanStats::default());
    let om = text(&e.openmetrics);
    assert!(!om.contains("\nlibvirt_up "), "{om}");
    assert!(om.ends_with("# EOF\n"));
}

/// Name, labels, value.
type Sample = (String, Vec<(String, String)>, String);

/// Every sample line of the text format: `name{labels} value`, labels parsed by hand the
/// way Prometheus does (only `\\`, `\"` and `\n` escapes).
fn parse_samples(exposition: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => {
                let (n, v) = line.split_once(' ').expect("name value");
                out.push((n.to_string(), Vec::new(), v.to_string()));
                continue;
            }
        };
        let mut labels = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "in {line:?}");
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated label value") {
                    '\\' => match chars.next().unwrap() {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c} in {line:?}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("unexpected {other:?} in {line:?}"),
            }
        }
        let value: String = chars.collect();
        out.push((name.to_string(), labels, value.trim().to_string()));
    }
    out
}

#[test]
fn hostile_label_values_are_escaped_and_capped() {
    let hostile = "evil\"} libvirt_up{x=\"1\\ \nnext_line 1\x1b[2J\u{202e}";
    let mut row = vm(hostile, DomainState::Running);
    row.agent = AgentStatus::Ok;
    row.os = OsAnswer::known(
        format!("{hostile}{}", "x".repeat(400)),
        Some("id\"\\\n".into()),
        OsSource::GuestExec,
    );
    row.media = vec![CdromDrive {
        target: "sda".into(),
        bus: None,
        source: Some(format!("/isos/{hostile}.iso")),
        readonly: true,
    }];
    let snap = Snapshot {
        uri: "qemu:///system".into(),
        taken_at: 1,
        duration_ms: 1,
        vms: vec![row],
        errors: Vec::new(),
    };
    let e = render(Some(Arc::new(snap)), &up_stats());
    for body in [text(&e.text), text(&e.openmetrics)] {
        assert!(
            !body.contains('\x1b') && !body.contains('\u{202e}'),
            "{body}"
        );
        let samples = parse_samples(&body);
        // The injected `libvirt_up{x=...}` never became a sample of its own.
        assert_eq!(
            samples.iter().filter(|s| s.0 == "libvirt_up").count(),
            1,
            "{body}"
        );
        assert!(!samples.iter().any(|s| s.0.starts_with("next_line")));
        let info = samples
            .iter()
            .find(|s| s.0 == "libvirt_domain_info")
            .expect("info sample");
        let get = |k: &str| &info.1.iter().find(|l| l.0 == k).unwrap().1;
        // Control characters became visible escapes; quotes and backslashes survive.
        assert_eq!(
            get("domain"),
            "evil\"} libvirt_up{x=\"1\\ \\x0anext_line 1\\x1b[2J\\u{202e}"
        );
        assert_eq!(get("os_id"), "id\"\\\\x0a");
        let os = get("os_pretty_name");
        assert_eq!(os.chars().count(), MAX_LABEL_CHARS);
        assert!(os.ends_with('…'));
        let media = samples
            .iter()
            .find(|s| s.0 == "libvirt_domain_media_info")
            .unwrap();
        assert!(media.1[2].1.starts_with("/isos/evil\""));
    }
}

#[test]
fn label_values_are_capped_by_characters() {
    assert_eq!(label_value("short"), "short");
    let long = "é".repeat(200);
    let v = label_value(&long);
    assert_eq!(v.chars().count(), MAX_LABEL_CHARS);
    assert!(v.ends_with('…'));
    assert_eq!(label_value("a\nb"), "a\\x0ab");
}

#[test]
fn states_and_statuses_are_snake_case() {
    for code in 0..8 {
        let s = DomainState::from_libvirt(code);
        assert_eq!(state_code(s), i64::from(code));
        let l = state_label(s);
        assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
    }
    assert_eq!(agent_label(AgentStatus::NotAsked), "not_asked");
    assert_eq!(agent_label(AgentStatus::Timeout), "timeout");
}
