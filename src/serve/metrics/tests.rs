use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::domxml::{CdromDrive, DiskFacts, InterfaceFacts};
use crate::hypervisor::{
    BalloonStats, BlockStats, DomainStats, InterfaceStats, VcpuStat, VcpuStats,
};
use crate::snapshot::telemetry::{DomainTelemetry, Families, Telemetry};
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
        ages: Default::default(),
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
        telemetry: Some(fixed_telemetry(Families::ALL)),
    }
}

fn disk(target: &str, bus: &str, device: &str, source: &str) -> DiskFacts {
    DiskFacts {
        target: target.into(),
        bus: bus.into(),
        device: device.into(),
        disk_type: "file".into(),
        source: source.into(),
        driver_name: "qemu".into(),
        driver_type: if device == "disk" { "qcow2" } else { "raw" }.into(),
        ..DiskFacts::default()
    }
}

/// Statistics as libvirt 9.0 gives them for the fixed snapshot's three guests: the frozen
/// one's call timed out, ubuntu runs with a disk, its CD-ROM and a NIC, the Windows guest
/// is shut off (sizes and counts only).
fn fixed_telemetry(families: Families) -> Telemetry {
    let frozen = DomainTelemetry {
        stats: None,
        stats_error: Some("no statistics within the scan deadline (5s)".into()),
        disks: vec![disk("hdc", "ide", "cdrom", "")],
        interfaces: Vec::new(),
    };
    let ubuntu = DomainTelemetry {
        stats: Some(DomainStats {
            name: "diq-ubuntu".into(),
            state: Some(DomainState::Running),
            cpu_time_ns: Some(6_250_000_000),
            balloon: BalloonStats {
                current_kib: Some(262_144),
                maximum_kib: Some(524_288),
                swap_in_kib: Some(0),
                swap_out_kib: Some(0),
                major_fault: Some(7),
                minor_fault: Some(9352),
                unused_kib: Some(166_832),
                available_kib: Some(210_752),
                usable_kib: Some(170_336),
                rss_kib: Some(261_724),
                disk_caches_kib: Some(11_588),
            },
            vcpu: VcpuStats {
                current: Some(2),
                maximum: Some(2),
                vcpus: vec![
                    VcpuStat {
                        id: 0,
                        state: Some(1),
                        time_ns: Some(22_700_000_000),
                        wait_ns: Some(0),
                        delay_ns: Some(55_636_708_751),
                    },
                    VcpuStat {
                        id: 1,
                        state: Some(1),
                        time_ns: Some(1_500_000_000),
                        wait_ns: Some(0),
                        delay_ns: Some(1_000),
                    },
                ],
            },
            blocks: vec![
                BlockStats {
                    name: "vda".into(),
                    path: Some("/var/lib/libvirt/images/ubuntu.qcow2".into()),
                    rd_reqs: Some(10),
                    rd_bytes: Some(1024),
                    rd_times_ns: Some(1_500_000),
                    wr_reqs: Some(4),
                    wr_bytes: Some(4096),
                    wr_times_ns: Some(2_000_000),
                    fl_reqs: Some(2),
                    fl_times_ns: Some(250_000),
                    capacity: Some(1 << 30),
                    allocation: Some(200 << 20),
                    physical: Some(201 << 20),
                },
                BlockStats {
                    name: "sda".into(),
                    path: Some("/var/lib/libvirt/images/ubuntu.iso".into()),
                    rd_reqs: Some(6),
                    rd_bytes: Some(2150),
                    rd_times_ns: Some(502_220),
                    wr_reqs: Some(0),
                    wr_bytes: Some(0),
                    wr_times_ns: Some(0),
                    fl_reqs: Some(0),
                    fl_times_ns: Some(0),
                    capacity: Some(376_832),
                    allocation: Some(0),
                    physical: Some(376_832),
                },
            ],
            interfaces: vec![InterfaceStats {
                name: "vnet0".into(),
                rx_bytes: Some(5000),
                rx_pkts: Some(50),
                rx_errs: Some(0),
                rx_drop: Some(1),
                tx_bytes: Some(3000),
                tx_pkts: Some(30),
                tx_errs: Some(0),
                tx_drop: Some(0),
            }],
        }),
        stats_error: None,
        disks: vec![
            disk(
                "vda",
                "virtio",
                "disk",
                "/var/lib/libvirt/images/ubuntu.qcow2",
            ),
            disk("sda", "sata", "cdrom", "/var/lib/libvirt/images/ubuntu.iso"),
        ],
        interfaces: vec![InterfaceFacts {
            interface_type: "network".into(),
            target: "vnet0".into(),
            mac: "52:54:00:12:34:56".into(),
            source_bridge: "virbr0".into(),
            source_network: "default".into(),
            model: "virtio".into(),
            mtu: String::new(),
        }],
    };
    let win = DomainTelemetry {
        stats: Some(DomainStats {
            name: "diq-win2k22".into(),
            state: Some(DomainState::ShutOff),
            cpu_time_ns: Some(184_080_000_000),
            balloon: BalloonStats {
                current_kib: Some(524_288),
                maximum_kib: Some(524_288),
                ..BalloonStats::default()
            },
            vcpu: VcpuStats {
                current: Some(2),
                maximum: Some(2),
                vcpus: Vec::new(),
            },
            blocks: vec![BlockStats {
                name: "sda".into(),
                path: None,
                capacity: Some(0),
                ..BlockStats::default()
            }],
            interfaces: Vec::new(),
        }),
        stats_error: None,
        disks: vec![disk("sda", "sata", "cdrom", "")],
        interfaces: Vec::new(),
    };
    Telemetry {
        families,
        domains: vec![frozen, ubuntu, win],
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
        telemetry: None,
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

/// Every sample name and its label names, in order of appearance.
fn sample_shapes(exposition: &str) -> Vec<(String, Vec<String>)> {
    parse_samples(exposition)
        .into_iter()
        .map(|(n, l, _)| (n, l.into_iter().map(|(k, _)| k).collect()))
        .collect()
}

/// Debian's prometheus-libvirt-exporter 0.2.0 (kumina's libvirt_exporter v0.2.0, read
/// from its source and from the binary's output on the harness): every per-domain series
/// name with its labels.
const DEBIAN_SERIES: &[(&str, &[&str])] = &[
    ("libvirt_domain_state_code", &["domain", "uuid"]),
    (
        "libvirt_domain_info_maximum_memory_bytes",
        &["domain", "uuid"],
    ),
    (
        "libvirt_domain_info_memory_usage_bytes",
        &["domain", "uuid"],
    ),
    ("libvirt_domain_info_virtual_cpus", &["domain", "uuid"]),
    (
        "libvirt_domain_info_cpu_time_seconds_total",
        &["domain", "uuid"],
    ),
    (
        "libvirt_domain_block_stats_read_bytes_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_block_stats_read_requests_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_block_stats_read_seconds_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_block_stats_write_bytes_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_block_stats_write_requests_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_block_stats_write_seconds_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_block_stats_flush_requests_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_block_stats_flush_seconds_total",
        &["domain", "uuid", "source_file", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_receive_bytes_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_receive_packets_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_receive_errors_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_receive_drops_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_transmit_bytes_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_transmit_packets_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_transmit_errors_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
    (
        "libvirt_domain_interface_stats_transmit_drops_total",
        &["domain", "uuid", "source_bridge", "target_device"],
    ),
];

/// inovex's prometheus-libvirt-exporter (v2.5.0) names for what Debian's lacks, with the
/// identifying labels our series carry.
const INOVEX_SERIES: &[(&str, &[&str])] = &[
    (
        "libvirt_domain_block_stats_capacity_bytes",
        &["domain", "target_device"],
    ),
    (
        "libvirt_domain_memory_stats_current_balloon_bytes",
        &["domain"],
    ),
    ("libvirt_domain_memory_stats_maximum_bytes", &["domain"]),
    ("libvirt_domain_memory_stats_swap_in_bytes", &["domain"]),
    ("libvirt_domain_memory_stats_swap_out_bytes", &["domain"]),
    ("libvirt_domain_memory_stats_major_fault_total", &["domain"]),
    ("libvirt_domain_memory_stats_minor_fault_total", &["domain"]),
    ("libvirt_domain_memory_stats_unused_bytes", &["domain"]),
    ("libvirt_domain_memory_stats_available_bytes", &["domain"]),
    ("libvirt_domain_memory_stats_usable_bytes", &["domain"]),
    ("libvirt_domain_memory_stats_rss_bytes", &["domain"]),
    ("libvirt_domain_memory_stats_disk_caches_bytes", &["domain"]),
    ("libvirt_domain_vcpu_current", &["domain"]),
    ("libvirt_domain_vcpu_maximum", &["domain"]),
    ("libvirt_domain_vcpu_state", &["domain", "vcpu"]),
    (
        "libvirt_domain_vcpu_time_seconds_total",
        &["domain", "vcpu"],
    ),
    (
        "libvirt_domain_vcpu_wait_seconds_total",
        &["domain", "vcpu"],
    ),
    (
        "libvirt_domain_vcpu_delay_seconds_total",
        &["domain", "vcpu"],
    ),
];

#[test]
fn peer_exporters_names_and_labels_are_exported_exactly() {
    let e = render(Some(Arc::new(fixed_snapshot())), &up_stats());
    for body in [text(&e.text), text(&e.openmetrics)] {
        let shapes = sample_shapes(&body);
        for (name, labels) in DEBIAN_SERIES.iter().chain(INOVEX_SERIES) {
            let found: Vec<&Vec<String>> = shapes
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, l)| l)
                .collect();
            assert!(!found.is_empty(), "no {name} in\n{body}");
            for l in found {
                assert_eq!(l, labels, "{name}");
            }
        }
    }
}

#[test]
fn debian_series_cover_active_domains_with_their_values() {
    let e = render(Some(Arc::new(fixed_snapshot())), &up_stats());
    let om = text(&e.text);
    for needle in [
        "libvirt_domains_number 2\n",
        "libvirt_domain_state_code{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\"} 1\n",
        "libvirt_domain_info_maximum_memory_bytes{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\"} 536870912\n",
        "libvirt_domain_info_memory_usage_bytes{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\"} 268435456\n",
        "libvirt_domain_info_virtual_cpus{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\"} 2\n",
        "libvirt_domain_info_cpu_time_seconds_total{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\"} 6.25\n",
        "libvirt_domain_block_stats_read_bytes_total{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\",source_file=\"/var/lib/libvirt/images/ubuntu.qcow2\",target_device=\"vda\"} 1024\n",
        "libvirt_domain_block_stats_read_seconds_total{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\",source_file=\"/var/lib/libvirt/images/ubuntu.qcow2\",target_device=\"vda\"} 0.0015\n",
        "libvirt_domain_interface_stats_receive_drops_total{domain=\"diq-ubuntu\",uuid=\"uuid-diq-ubuntu\",source_bridge=\"virbr0\",target_device=\"vnet0\"} 1\n",
        "libvirt_domain_block_stats_capacity_bytes{domain=\"diq-win2k22\",target_device=\"sda\"} 0\n",
        "libvirt_domain_memory_stats_rss_bytes{domain=\"diq-ubuntu\"} 268005376\n",
        "libvirt_domain_vcpu_delay_seconds_total{domain=\"diq-ubuntu\",vcpu=\"0\"} 55.636708751\n",
        "libvirt_domain_vcpu_maximum{domain=\"diq-win2k22\"} 2\n",
        "libvirt_domain_stats_error{domain=\"diq-frozen\"} 1\n",
        "libvirt_domain_stats_error{domain=\"diq-ubuntu\"} 0\n",
        "libvirt_domain_block_stats_info{domain=\"diq-frozen\",target_device=\"hdc\",target_bus=\"ide\",device=\"cdrom\",disk_type=\"file\",source_file=\"\",source_protocol=\"\",driver_name=\"qemu\",driver_type=\"raw\",driver_cache=\"\",driver_discard=\"\",serial=\"\"} 1\n",
        "libvirt_domain_interface_stats_info{domain=\"diq-ubuntu\",target_device=\"vnet0\",interface_type=\"network\",mac_address=\"52:54:00:12:34:56\",model_type=\"virtio\",mtu_size=\"\",source_bridge=\"virbr0\",source_network=\"default\"} 1\n",
    ] {
        assert!(om.contains(needle), "missing {needle:?} in\n{om}");
    }
    // Debian's exporter lists active domains only; the shut-off guest is in ours.
    assert!(!om.contains("libvirt_domain_state_code{domain=\"diq-win2k22\""));
    // A domain without statistics has no device series, but its XML's devices.
    assert!(!om.contains("target_device=\"hdc\"} "), "{om}");
    // A shut-off domain's stale CPU time and absent counters give no series.
    assert!(!om.contains("libvirt_domain_block_stats_read_bytes_total{domain=\"diq-win2k22\""));
    assert!(!om.contains("libvirt_domain_memory_stats_rss_bytes{domain=\"diq-win2k22\""));
}

/// The family names (descriptor lines) of an exposition.
fn families_in(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn each_family_switches_alone() {
    let all = families_in(&text(
        &render(Some(Arc::new(fixed_snapshot())), &up_stats()).text,
    ));
    let with = |families: Families| {
        let mut snap = fixed_snapshot();
        snap.telemetry = Some(fixed_telemetry(families));
        families_in(&text(&render(Some(Arc::new(snap)), &up_stats()).text))
    };
    let none = with(Families::NONE);
    // Without a switchable family only the always-on ones remain, as before them.
    let mut plain = fixed_snapshot();
    plain.telemetry = None;
    assert_eq!(
        none,
        families_in(&text(&render(Some(Arc::new(plain)), &up_stats()).text))
    );
    let prefixes: [(&str, &[&str]); 5] = [
        ("block", &["libvirt_domain_block_stats_"]),
        ("interface", &["libvirt_domain_interface_stats_"]),
        ("balloon", &["libvirt_domain_memory_stats_"]),
        ("vcpu", &["libvirt_domain_vcpu_"]),
        (
            "compat",
            &[
                "libvirt_domains_number",
                "libvirt_domain_state_code",
                "libvirt_domain_info_",
            ],
        ),
    ];
    for (name, owned) in prefixes {
        let one = with(Families::parse([name]).unwrap());
        let added: Vec<&String> = one.iter().filter(|f| !none.contains(f)).collect();
        assert!(!added.is_empty(), "{name} adds nothing");
        for f in &added {
            assert!(
                owned.iter().any(|p| f.starts_with(p)) || *f == "libvirt_domain_stats_error",
                "{name} brought {f}"
            );
        }
        // Everything the family owns is in the full exposition too.
        assert!(added.iter().all(|f| all.contains(f)), "{name}");
        assert_eq!(
            one.contains(&"libvirt_domain_stats_error".to_string()),
            name != "compat",
            "{name}"
        );
    }
}

#[test]
fn hostile_device_labels_are_escaped_and_capped() {
    let hostile = "/isos/evil\"} libvirt_up 1\n\x1b[2J".to_string() + &"x".repeat(300);
    let mut snap = fixed_snapshot();
    let tel = snap.telemetry.as_mut().unwrap();
    let ubuntu = &mut tel.domains[1];
    ubuntu.disks[0].source = hostile.clone();
    ubuntu.disks[0].serial = "\u{202e}serial".into();
    ubuntu.interfaces[0].source_bridge = hostile.clone();
    let stats = ubuntu.stats.as_mut().unwrap();
    stats.blocks[0].path = Some(hostile.clone());
    let e = render(Some(Arc::new(snap)), &up_stats());
    for body in [text(&e.text), text(&e.openmetrics)] {
        assert!(!body.contains('\x1b') && !body.contains('\u{202e}'));
        let samples = parse_samples(&body);
        assert_eq!(samples.iter().filter(|s| s.0 == "libvirt_up").count(), 1);
        for (name, labels, _) in &samples {
            for (k, v) in labels {
                assert!(v.chars().count() <= MAX_LABEL_CHARS, "{name} {k}={v}");
            }
        }
        let read = samples
            .iter()
            .find(|s| s.0 == "libvirt_domain_block_stats_read_bytes_total" && s.1[3].1 == "vda")
            .expect("vda read bytes");
        assert!(
            read.1[2].1.starts_with("/isos/evil\"} libvirt_up 1\\x0a"),
            "{read:?}"
        );
        assert!(read.1[2].1.ends_with('…'));
    }
}
