//! The switchable families: block devices, network interfaces, memory balloon, vCPUs
//! (from the scan's bulk statistics) and the series of Debian's exporter under its names.
//!
//! Names and labels: where Debian's prometheus-libvirt-exporter 0.2.0 (kumina's
//! libvirt_exporter) has a series, it is exported under exactly its name and labels —
//! `uuid` and the descriptive `source_file`/`source_bridge` included — so its dashboards
//! work unchanged. Where it has none, the name is inovex's prometheus-libvirt-exporter's
//! and the series carry identifying labels only (`domain`, `target_device`, `vcpu`);
//! what describes a device lives on `libvirt_domain_block_stats_info` and
//! `libvirt_domain_interface_stats_info`. docs/serve.md lists every name beside both
//! exporters' and every difference.

use std::collections::HashSet;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::{counters, gauges, label_value, state_code, Labels};
use crate::domxml::{DiskFacts, InterfaceFacts};
use crate::hypervisor::{BlockStats, DomainStats, InterfaceStats};
use crate::snapshot::telemetry::{DomainTelemetry, Telemetry};
use crate::snapshot::VmRow;

/// Nanoseconds as seconds.
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// KiB as bytes.
fn kib(v: u64) -> u64 {
    v.saturating_mul(1024)
}

/// One row's label values, computed once for every family.
struct Domain<'a> {
    name: String,
    uuid: String,
    row: &'a VmRow,
    tel: &'a DomainTelemetry,
}

impl Domain<'_> {
    fn stats(&self) -> Option<&DomainStats> {
        self.tel.stats.as_ref()
    }

    fn labels(&self) -> Labels {
        vec![("domain", self.name.clone())]
    }

    /// Debian's exporter's domain labels.
    fn compat_labels(&self) -> Labels {
        vec![("domain", self.name.clone()), ("uuid", self.uuid.clone())]
    }

    /// Each block device once (libvirt never repeats one; a repeat would make a
    /// duplicate series, which scrapers reject).
    fn blocks(&self) -> Vec<&BlockStats> {
        let mut seen = HashSet::new();
        self.stats()
            .map(|s| s.blocks.iter().filter(|b| seen.insert(&b.name)).collect())
            .unwrap_or_default()
    }

    fn interfaces(&self) -> Vec<&InterfaceStats> {
        let mut seen = HashSet::new();
        self.stats()
            .map(|s| {
                s.interfaces
                    .iter()
                    .filter(|i| seen.insert(&i.name))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn disk(&self, target: &str) -> Option<&DiskFacts> {
        self.tel.disks.iter().find(|d| d.target == target)
    }

    fn nic(&self, target: &str) -> Option<&InterfaceFacts> {
        self.tel.interfaces.iter().find(|n| n.target == target)
    }
}

/// One counter or gauge per device and field: `field` picks the value, absent values
/// give no series (as libvirt gave none).
type Pick<T, N> = fn(&T) -> Option<N>;
/// A family of such series: name (before unit and `_total`), help, unit, value.
type Family<'u, T, N> = (&'static str, &'static str, Option<&'u Unit>, Pick<T, N>);
/// The same without a unit, or where the unit is the same for a whole list.
type Plain<T, N> = (&'static str, &'static str, Pick<T, N>);

/// The switchable families of `telemetry` for `rows` (`names`: their `domain` labels).
pub(super) fn encode(
    enc: &mut DescriptorEncoder,
    rows: &[VmRow],
    names: &[String],
    telemetry: &Telemetry,
) -> Result<(), std::fmt::Error> {
    let fam = telemetry.families;
    let doms: Vec<Domain> = rows
        .iter()
        .zip(names)
        .zip(&telemetry.domains)
        .map(|((row, name), tel)| Domain {
            name: name.clone(),
            uuid: label_value(&row.uuid),
            row,
            tel,
        })
        .collect();
    let seconds = Unit::Seconds;
    let bytes = Unit::Bytes;

    if fam.need_stats() {
        gauges(
            enc,
            "libvirt_domain_stats_error",
            "1 when this scan has no statistics for the domain: the bulk statistics call failed or did not return within the scan deadline, or libvirt left the domain out (the log and dismount_iso_qemu_scan_domain_errors say why); else 0.",
            None,
            doms.iter()
                .map(|d| (d.labels(), i64::from(d.tel.stats_error.is_some()))),
        )?;
    }

    if fam.compat {
        // Debian's exporter lists active domains only (virConnectListDomains).
        let active: Vec<&Domain> = doms.iter().filter(|d| d.row.state.is_active()).collect();
        gauges(
            enc,
            "libvirt_domains_number",
            "Number of active domains (Debian's prometheus-libvirt-exporter's name).",
            None,
            [(Vec::new(), active.len() as i64)],
        )?;
        gauges(
            enc,
            "libvirt_domain_state_code",
            "State of an active domain: libvirt's state code (Debian's prometheus-libvirt-exporter's name).",
            None,
            active
                .iter()
                .map(|d| (d.compat_labels(), state_code(d.row.state))),
        )?;
        gauges(
            enc,
            "libvirt_domain_info_maximum_memory",
            "Maximum allowed memory of an active domain (Debian's prometheus-libvirt-exporter's name).",
            Some(&bytes),
            active
                .iter()
                .map(|d| (d.compat_labels(), kib(d.row.memory_max_kib))),
        )?;
        gauges(
            enc,
            "libvirt_domain_info_memory_usage",
            "Memory usage of an active domain (Debian's prometheus-libvirt-exporter's name).",
            Some(&bytes),
            active
                .iter()
                .map(|d| (d.compat_labels(), kib(d.row.memory_used_kib))),
        )?;
        gauges(
            enc,
            "libvirt_domain_info_virtual_cpus",
            "Number of virtual CPUs of an active domain (Debian's prometheus-libvirt-exporter's name).",
            None,
            active
                .iter()
                .map(|d| (d.compat_labels(), i64::from(d.row.vcpus))),
        )?;
        counters(
            enc,
            "libvirt_domain_info_cpu_time",
            "CPU time used by an active domain (Debian's prometheus-libvirt-exporter's name).",
            Some(&seconds),
            active
                .iter()
                .map(|d| (d.compat_labels(), d.row.cpu_time_seconds)),
        )?;
    }

    if fam.block {
        encode_block(enc, &doms)?;
    }
    if fam.interface {
        encode_interface(enc, &doms)?;
    }
    if fam.balloon {
        encode_balloon(enc, &doms)?;
    }
    if fam.vcpu {
        encode_vcpu(enc, &doms)?;
    }
    Ok(())
}

fn encode_block(enc: &mut DescriptorEncoder, doms: &[Domain]) -> Result<(), std::fmt::Error> {
    // Debian's exporter's labels: domain, uuid, source_file, target_device.
    let compat = |d: &Domain, b: &BlockStats| -> Labels {
        let source = b
            .path
            .as_deref()
            .or(d.disk(&b.name).map(|x| x.source.as_str()))
            .unwrap_or("");
        let mut l = d.compat_labels();
        l.push(("source_file", label_value(source)));
        l.push(("target_device", label_value(&b.name)));
        l
    };
    let ident = |d: &Domain, b: &BlockStats| -> Labels {
        let mut l = d.labels();
        l.push(("target_device", label_value(&b.name)));
        l
    };
    let per_device = |pick: Pick<BlockStats, u64>,
                      labels: &dyn Fn(&Domain, &BlockStats) -> Labels| {
        doms.iter()
            .flat_map(move |d| {
                d.blocks()
                    .into_iter()
                    .filter_map(move |b| Some((labels(d, b), pick(b)?)))
            })
            .collect::<Vec<_>>()
    };
    let seconds = Unit::Seconds;
    let bytes = Unit::Bytes;

    gauges(
        enc,
        "libvirt_domain_block_stats_info",
        "One series per disk device of the domain XML (CD-ROMs and floppies included), always 1; the labels describe it.",
        None,
        doms.iter().flat_map(|d| {
            d.tel.disks.iter().map(move |x| {
                let mut l = d.labels();
                for (k, v) in [
                    ("target_device", &x.target),
                    ("target_bus", &x.bus),
                    ("device", &x.device),
                    ("disk_type", &x.disk_type),
                    ("source_file", &x.source),
                    ("source_protocol", &x.source_protocol),
                    ("driver_name", &x.driver_name),
                    ("driver_type", &x.driver_type),
                    ("driver_cache", &x.driver_cache),
                    ("driver_discard", &x.driver_discard),
                    ("serial", &x.serial),
                ] {
                    l.push((k, label_value(v)));
                }
                (l, 1i64)
            })
        }),
    )?;
    let compat_counts: [Family<BlockStats, u64>; 5] = [
        (
            "libvirt_domain_block_stats_read",
            "Number of bytes read from a block device.",
            Some(&bytes),
            |b| b.rd_bytes,
        ),
        (
            "libvirt_domain_block_stats_read_requests",
            "Number of read requests from a block device.",
            None,
            |b| b.rd_reqs,
        ),
        (
            "libvirt_domain_block_stats_write",
            "Number of bytes written to a block device.",
            Some(&bytes),
            |b| b.wr_bytes,
        ),
        (
            "libvirt_domain_block_stats_write_requests",
            "Number of write requests to a block device.",
            None,
            |b| b.wr_reqs,
        ),
        (
            "libvirt_domain_block_stats_flush_requests",
            "Number of flush requests to a block device.",
            None,
            |b| b.fl_reqs,
        ),
    ];
    for (name, help, unit, pick) in compat_counts {
        counters(enc, name, help, unit, per_device(pick, &compat))?;
    }
    let compat_times: [Plain<BlockStats, u64>; 3] = [
        (
            "libvirt_domain_block_stats_read",
            "Time spent reading from a block device.",
            |b| b.rd_times_ns,
        ),
        (
            "libvirt_domain_block_stats_write",
            "Time spent writing to a block device.",
            |b| b.wr_times_ns,
        ),
        (
            "libvirt_domain_block_stats_flush",
            "Time spent flushing a block device.",
            |b| b.fl_times_ns,
        ),
    ];
    for (name, help, pick) in compat_times {
        let series: Vec<(Labels, f64)> = per_device(pick, &compat)
            .into_iter()
            .map(|(l, ns)| (l, secs(ns)))
            .collect();
        counters(enc, name, help, Some(&seconds), series)?;
    }
    let sizes: [Plain<BlockStats, u64>; 3] = [
        (
            "libvirt_domain_block_stats_capacity",
            "Logical size of the block device: what the guest sees.",
            |b| b.capacity,
        ),
        (
            "libvirt_domain_block_stats_allocation",
            "Host storage the block device's image occupies (its highest written offset for a block device).",
            |b| b.allocation,
        ),
        (
            "libvirt_domain_block_stats_physical",
            "Physical size of the block device's container (the file or device size).",
            |b| b.physical,
        ),
    ];
    for (name, help, pick) in sizes {
        gauges(enc, name, help, Some(&bytes), per_device(pick, &ident))?;
    }
    Ok(())
}

fn encode_interface(enc: &mut DescriptorEncoder, doms: &[Domain]) -> Result<(), std::fmt::Error> {
    gauges(
        enc,
        "libvirt_domain_interface_stats_info",
        "One series per network interface of the domain XML, always 1; the labels describe it (target_device is empty for an interface without a host-side device, e.g. user networking).",
        None,
        doms.iter().flat_map(|d| {
            d.tel.interfaces.iter().map(move |n| {
                let mut l = d.labels();
                for (k, v) in [
                    ("target_device", &n.target),
                    ("interface_type", &n.interface_type),
                    ("mac_address", &n.mac),
                    ("model_type", &n.model),
                    ("mtu_size", &n.mtu),
                    ("source_bridge", &n.source_bridge),
                    ("source_network", &n.source_network),
                ] {
                    l.push((k, label_value(v)));
                }
                (l, 1i64)
            })
        }),
    )?;
    // Debian's exporter's labels: domain, uuid, source_bridge, target_device.
    let labels = |d: &Domain, i: &InterfaceStats| -> Labels {
        let bridge = d
            .nic(&i.name)
            .map(|n| n.source_bridge.as_str())
            .unwrap_or("");
        let mut l = d.compat_labels();
        l.push(("source_bridge", label_value(bridge)));
        l.push(("target_device", label_value(&i.name)));
        l
    };
    let bytes = Unit::Bytes;
    let families: [Family<InterfaceStats, u64>; 8] = [
        (
            "libvirt_domain_interface_stats_receive",
            "Number of bytes received on a network interface.",
            Some(&bytes),
            |i| i.rx_bytes,
        ),
        (
            "libvirt_domain_interface_stats_receive_packets",
            "Number of packets received on a network interface.",
            None,
            |i| i.rx_pkts,
        ),
        (
            "libvirt_domain_interface_stats_receive_errors",
            "Number of packet receive errors on a network interface.",
            None,
            |i| i.rx_errs,
        ),
        (
            "libvirt_domain_interface_stats_receive_drops",
            "Number of packet receive drops on a network interface.",
            None,
            |i| i.rx_drop,
        ),
        (
            "libvirt_domain_interface_stats_transmit",
            "Number of bytes transmitted on a network interface.",
            Some(&bytes),
            |i| i.tx_bytes,
        ),
        (
            "libvirt_domain_interface_stats_transmit_packets",
            "Number of packets transmitted on a network interface.",
            None,
            |i| i.tx_pkts,
        ),
        (
            "libvirt_domain_interface_stats_transmit_errors",
            "Number of packet transmit errors on a network interface.",
            None,
            |i| i.tx_errs,
        ),
        (
            "libvirt_domain_interface_stats_transmit_drops",
            "Number of packet transmit drops on a network interface.",
            None,
            |i| i.tx_drop,
        ),
    ];
    for (name, help, unit, pick) in families {
        counters(
            enc,
            name,
            help,
            unit,
            doms.iter().flat_map(|d| {
                d.interfaces()
                    .into_iter()
                    .filter_map(move |i| Some((labels(d, i), pick(i)?)))
            }),
        )?;
    }
    Ok(())
}

fn encode_balloon(enc: &mut DescriptorEncoder, doms: &[Domain]) -> Result<(), std::fmt::Error> {
    let bytes = Unit::Bytes;
    let per_domain = |pick: Pick<DomainStats, u64>| {
        doms.iter()
            .filter_map(move |d| Some((d.labels(), pick(d.stats()?)?)))
    };
    let sizes: [Plain<DomainStats, u64>; 9] = [
        (
            "libvirt_domain_memory_stats_current_balloon",
            "Current balloon size: the memory the domain has now.",
            |s| s.balloon.current_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_maximum",
            "Maximum memory the domain may balloon to.",
            |s| s.balloon.maximum_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_swap_in",
            "Memory the guest has read from swap since boot (guest's balloon driver).",
            |s| s.balloon.swap_in_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_swap_out",
            "Memory the guest has written to swap since boot (guest's balloon driver).",
            |s| s.balloon.swap_out_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_unused",
            "Memory the guest leaves unused (guest's balloon driver).",
            |s| s.balloon.unused_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_available",
            "Memory the guest sees as its total (guest's balloon driver).",
            |s| s.balloon.available_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_usable",
            "Memory the guest could use without swapping, as MemAvailable in /proc/meminfo (guest's balloon driver).",
            |s| s.balloon.usable_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_rss",
            "Resident set size of the domain's process on the host.",
            |s| s.balloon.rss_kib.map(kib),
        ),
        (
            "libvirt_domain_memory_stats_disk_caches",
            "Memory the guest can reclaim without I/O: its disk caches (guest's balloon driver).",
            |s| s.balloon.disk_caches_kib.map(kib),
        ),
    ];
    for (name, help, pick) in sizes {
        gauges(enc, name, help, Some(&bytes), per_domain(pick))?;
    }
    counters(
        enc,
        "libvirt_domain_memory_stats_major_fault",
        "Page faults the guest served with disk I/O (guest's balloon driver).",
        None,
        per_domain(|s| s.balloon.major_fault),
    )?;
    counters(
        enc,
        "libvirt_domain_memory_stats_minor_fault",
        "Page faults the guest served without disk I/O (guest's balloon driver).",
        None,
        per_domain(|s| s.balloon.minor_fault),
    )?;
    Ok(())
}

fn encode_vcpu(enc: &mut DescriptorEncoder, doms: &[Domain]) -> Result<(), std::fmt::Error> {
    let per_domain = |pick: Pick<DomainStats, u64>| {
        doms.iter()
            .filter_map(move |d| Some((d.labels(), pick(d.stats()?)?)))
    };
    gauges(
        enc,
        "libvirt_domain_vcpu_current",
        "Number of vCPUs online in the domain.",
        None,
        per_domain(|s| s.vcpu.current),
    )?;
    gauges(
        enc,
        "libvirt_domain_vcpu_maximum",
        "Maximum number of vCPUs of the domain.",
        None,
        per_domain(|s| s.vcpu.maximum),
    )?;
    let vcpu_labels = |d: &Domain, id: u32| -> Labels {
        let mut l = d.labels();
        l.push(("vcpu", id.to_string()));
        l
    };
    gauges(
        enc,
        "libvirt_domain_vcpu_state",
        "State of the vCPU: 0 offline, 1 running, 2 blocked.",
        None,
        doms.iter().flat_map(|d| {
            d.stats()
                .into_iter()
                .flat_map(|s| &s.vcpu.vcpus)
                .filter_map(move |v| Some((vcpu_labels(d, v.id), v.state?)))
        }),
    )?;
    let seconds = Unit::Seconds;
    let times: [Plain<crate::hypervisor::VcpuStat, u64>; 3] = [
        ("libvirt_domain_vcpu_time", "Time the vCPU has run.", |v| {
            v.time_ns
        }),
        (
            "libvirt_domain_vcpu_wait",
            "Time the vCPU wanted to run but waited on I/O or the host scheduler (vcpu.N.wait).",
            |v| v.wait_ns,
        ),
        (
            "libvirt_domain_vcpu_delay",
            "Time the vCPU waited in the host's run queue: the steal time the guest sees.",
            |v| v.delay_ns,
        ),
    ];
    for (name, help, pick) in times {
        counters(
            enc,
            name,
            help,
            Some(&seconds),
            doms.iter().flat_map(|d| {
                d.stats()
                    .into_iter()
                    .flat_map(|s| &s.vcpu.vcpus)
                    .filter_map(move |v| Some((vcpu_labels(d, v.id), secs(pick(v)?))))
            }),
        )?;
    }
    Ok(())
}
