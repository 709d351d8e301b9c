//! The Prometheus view of a snapshot: every series `/metrics` shows, rendered once per
//! scan into both exposition formats and then served as bytes.
//!
//! A custom [`Collector`] (rather than `Family`s) keeps series in the snapshot's order, so
//! the output is deterministic (testable against a golden file) and building it costs one
//! pass over the rows. prometheus-client writes names, types, units and escaping; we only
//! make guest-controlled label values printable and short first.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::hypervisor::DomainState;
use crate::render::text::sanitize;
use crate::snapshot::{AgentStatus, Snapshot};

/// Content type of the OpenMetrics text format (what Prometheus asks for first).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format (curl, promtool, older scrapers).
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Longest label value we emit, in characters (guests choose some of them).
pub const MAX_LABEL_CHARS: usize = 128;

/// The exporter's own counters, kept by the scan loop across scans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanStats {
    /// Scans attempted (successful or not).
    pub scans: u64,
    /// Scans that failed as a whole (libvirt unreachable, listing failed).
    pub failed_scans: u64,
    /// Wall time of the last scan attempt.
    pub last_duration_seconds: Option<f64>,
    /// Unix time of the last successful scan.
    pub last_success_unix: Option<u64>,
    /// Whether the last attempt reached libvirt; `None` before the first scan.
    pub up: Option<bool>,
}

/// The two renderings of one state, plain and gzipped (Prometheus asks for gzip), ready
/// to be written to any number of scrapers.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub openmetrics: Arc<[u8]>,
    pub text: Arc<[u8]>,
    pub openmetrics_gzip: Arc<[u8]>,
    pub text_gzip: Arc<[u8]>,
}

/// Compressed once per scan, so a scrape that accepts gzip moves a tenth of the bytes.
fn gzip(data: &[u8]) -> Arc<[u8]> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    Arc::from(enc.finish().unwrap_or_default())
}

/// Render the metrics. Domain series come from `snapshot` only while libvirt is up: after
/// a failed scan they vanish (Prometheus marks them stale) rather than repeat old numbers.
pub fn render(snapshot: Option<Arc<Snapshot>>, stats: &ScanStats) -> Exposition {
    let domains = if stats.up == Some(true) {
        snapshot
    } else {
        None
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snapshot: domains,
        stats: stats.clone(),
    }));
    let mut openmetrics = String::new();
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in our labels.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut openmetrics, &registry) {
        tracing::error!("cannot encode metrics (OpenMetrics): {e}");
    }
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::error!("cannot encode metrics (text): {e}");
    }
    Exposition {
        openmetrics_gzip: gzip(openmetrics.as_bytes()),
        text_gzip: gzip(text.as_bytes()),
        openmetrics: Arc::from(openmetrics.into_bytes()),
        text: Arc::from(text.into_bytes()),
    }
}

/// A label value that is safe to show: control characters as visible escapes (the
/// library escapes only `\`, `"` and newline), at most [`MAX_LABEL_CHARS`] characters.
pub fn label_value(s: &str) -> String {
    let clean = sanitize(s);
    if clean.chars().count() <= MAX_LABEL_CHARS {
        return clean;
    }
    let mut out: String = clean.chars().take(MAX_LABEL_CHARS - 1).collect();
    out.push('…');
    out
}

/// The `state` label: libvirt's state name in snake case (`shut_off`, `running`, ...).
pub fn state_label(s: DomainState) -> &'static str {
    match s {
        DomainState::NoState => "no_state",
        DomainState::Running => "running",
        DomainState::Blocked => "blocked",
        DomainState::Paused => "paused",
        DomainState::ShuttingDown => "shutting_down",
        DomainState::ShutOff => "shut_off",
        DomainState::Crashed => "crashed",
        DomainState::PmSuspended => "pmsuspended",
    }
}

/// libvirt's numeric `virDomainState`, the value of `libvirt_domain_state`.
pub fn state_code(s: DomainState) -> i64 {
    match s {
        DomainState::NoState => 0,
        DomainState::Running => 1,
        DomainState::Blocked => 2,
        DomainState::Paused => 3,
        DomainState::ShuttingDown => 4,
        DomainState::ShutOff => 5,
        DomainState::Crashed => 6,
        DomainState::PmSuspended => 7,
    }
}

/// The `status` label of `libvirt_domain_agent_status` (snake case like every label).
pub fn agent_label(a: AgentStatus) -> &'static str {
    match a {
        AgentStatus::NotAsked => "not_asked",
        other => other.as_str(),
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Option<Arc<Snapshot>>,
    stats: ScanStats,
}

/// One metric family: its descriptor, then one sample per label set.
fn gauges<N: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (Labels, N)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters<N: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (Labels, N)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn unlabelled<N>(value: Option<N>) -> Vec<(Labels, N)> {
    value.map(|v| (Vec::new(), v)).into_iter().collect()
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        gauges(
            &mut enc,
            "libvirt_up",
            "Whether the last scan reached libvirt (1) or not (0).",
            None,
            unlabelled(s.up.map(i64::from)),
        )?;

        let rows: &[crate::snapshot::VmRow] = match &self.snapshot {
            Some(snap) => &snap.vms,
            None => &[],
        };
        // The domain name is computed once per row; every family reuses it.
        let names: Vec<String> = rows.iter().map(|r| label_value(&r.name)).collect();
        let dom = |i: usize| -> Labels { vec![("domain", names[i].clone())] };
        let seconds = Unit::Seconds;
        let bytes = Unit::Bytes;

        gauges(
            &mut enc,
            "libvirt_domain_info",
            "Every defined domain (running or not) with its guest OS; always 1. os_source says where the OS answer came from (guest-get-osinfo, guest-exec, libosinfo-metadata), empty when unknown.",
            None,
            rows.iter().enumerate().map(|(i, r)| {
                let mut l = dom(i);
                l.push(("uuid", label_value(&r.uuid)));
                l.push(("os_pretty_name", label_value(r.os.text.as_deref().unwrap_or(""))));
                l.push(("os_id", label_value(r.os.id.as_deref().unwrap_or(""))));
                l.push(("os_source", r.os.source.map(|x| x.as_str()).unwrap_or("").to_string()));
                (l, 1i64)
            }),
        )?;
        gauges(
            &mut enc,
            "libvirt_domain_state",
            "libvirt state code of the domain (0 no state, 1 running, 2 blocked, 3 paused, 4 shutting down, 5 shut off, 6 crashed, 7 pmsuspended); the state label names it.",
            None,
            rows.iter().enumerate().map(|(i, r)| {
                let mut l = dom(i);
                l.push(("state", state_label(r.state).to_string()));
                (l, state_code(r.state))
            }),
        )?;
        gauges(
            &mut enc,
            "libvirt_domain_vcpus",
            "Virtual CPUs of the domain.",
            None,
            rows.iter()
                .enumerate()
                .map(|(i, r)| (dom(i), i64::from(r.vcpus))),
        )?;
        gauges(
            &mut enc,
            "libvirt_domain_memory_maximum",
            "Maximum memory of the domain.",
            Some(&bytes),
            rows.iter()
                .enumerate()
                .map(|(i, r)| (dom(i), r.memory_max_kib.saturating_mul(1024))),
        )?;
        gauges(
            &mut enc,
            "libvirt_domain_memory_current",
            "Memory currently allocated to the domain.",
            Some(&bytes),
            rows.iter()
                .enumerate()
                .map(|(i, r)| (dom(i), r.memory_used_kib.saturating_mul(1024))),
        )?;
        counters(
            &mut enc,
            "libvirt_domain_cpu",
            "CPU time the domain has used.",
            Some(&seconds),
            rows.iter()
                .enumerate()
                .map(|(i, r)| (dom(i), r.cpu_time_seconds)),
        )?;
        gauges(
            &mut enc,
            "libvirt_domain_agent_status",
            "Guest agent status in the last scan (ok, timeout, disabled, absent, error, not_asked); always 1, the status label says which.",
            None,
            rows.iter().enumerate().map(|(i, r)| {
                let mut l = dom(i);
                l.push(("status", agent_label(r.agent).to_string()));
                (l, 1i64)
            }),
        )?;
        gauges(
            &mut enc,
            "libvirt_domain_agent_probe_duration",
            "How long the last scan's guest agent probe took (absent when the answer came from the cache or no probe ran).",
            Some(&seconds),
            rows.iter().enumerate().filter_map(|(i, r)| {
                r.probe_ms.map(|ms| (dom(i), ms as f64 / 1000.0))
            }),
        )?;
        gauges(
            &mut enc,
            "libvirt_domain_media_info",
            "One series per CD-ROM drive; iso is the image in it, empty when the drive is empty. Always 1.",
            None,
            rows.iter().enumerate().flat_map(|(i, r)| {
                let names = &names;
                r.media.iter().map(move |d| {
                    (
                        vec![
                            ("domain", names[i].clone()),
                            ("drive", label_value(&d.target)),
                            ("iso", label_value(d.source.as_deref().unwrap_or(""))),
                        ],
                        1i64,
                    )
                })
            }),
        )?;

        if let Some(telemetry) = self.snapshot.as_ref().and_then(|s| s.telemetry.as_ref()) {
            stats::encode(&mut enc, rows, &names, telemetry)?;
        }

        gauges(
            &mut enc,
            "dismount_iso_qemu_scan_duration",
            "Wall time of the last scan.",
            Some(&seconds),
            unlabelled(s.last_duration_seconds),
        )?;
        counters(
            &mut enc,
            "dismount_iso_qemu_scans",
            "Scans attempted since start.",
            None,
            [(Vec::new(), s.scans)],
        )?;
        counters(
            &mut enc,
            "dismount_iso_qemu_scan_errors",
            "Scans that failed as a whole (libvirt unreachable) since start.",
            None,
            [(Vec::new(), s.failed_scans)],
        )?;
        gauges(
            &mut enc,
            "dismount_iso_qemu_scan_domain_errors",
            "Per-domain problems in the last successful scan (e.g. unreadable domain XML).",
            None,
            unlabelled(self.snapshot.as_ref().map(|x| x.errors.len() as i64)),
        )?;
        gauges(
            &mut enc,
            "dismount_iso_qemu_last_successful_scan_timestamp",
            "Unix time of the last successful scan.",
            Some(&seconds),
            unlabelled(s.last_success_unix.map(|t| t as f64)),
        )?;
        Ok(())
    }
}

mod stats;
#[cfg(test)]
mod tests;
