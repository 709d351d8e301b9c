//! Bulk domain statistics — one `virConnectGetAllDomainStats` (native) or one
//! `virsh domstats --raw` (virsh) for every domain — as plain typed data.
//!
//! libvirt hands out statistics as flat `key=value` parameters (`block.0.rd.bytes`,
//! `vcpu.1.time`, …). Both adapters feed theirs through [`DomainStats::from_fields`], so
//! what a key means is decided once, here; the native adapter's values arrive typed, the
//! virsh adapter's as text, and [`StatValue`] reads both the same way.

use std::collections::BTreeMap;

use super::DomainState;

/// The statistics groups asked for besides `state` and `cpu-total`, which are always
/// asked for (they are cheap and need no domain job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsGroups {
    pub balloon: bool,
    pub vcpu: bool,
    pub interface: bool,
    pub block: bool,
}

impl StatsGroups {
    /// Every group.
    pub const ALL: StatsGroups = StatsGroups {
        balloon: true,
        vcpu: true,
        interface: true,
        block: true,
    };

    /// `virsh domstats` flags for these groups, `--state --cpu-total` first.
    pub fn virsh_flags(self) -> Vec<&'static str> {
        let mut flags = vec!["--state", "--cpu-total"];
        for (on, flag) in [
            (self.balloon, "--balloon"),
            (self.vcpu, "--vcpu"),
            (self.interface, "--interface"),
            (self.block, "--block"),
        ] {
            if on {
                flags.push(flag);
            }
        }
        flags
    }
}

/// One parameter's value, as an adapter received it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatValue<'a> {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    /// A string parameter, or any value as `virsh --raw` prints it.
    Text(&'a str),
}

impl StatValue<'_> {
    /// A non-negative integer (counters, sizes, times in nanoseconds).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            StatValue::UInt(v) => Some(v),
            StatValue::Int(v) => u64::try_from(v).ok(),
            StatValue::Text(t) => t.trim().parse().ok(),
            StatValue::Float(_) | StatValue::Bool(_) => None,
        }
    }

    /// A signed integer (the vCPU state).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            StatValue::Int(v) => Some(v),
            StatValue::UInt(v) => i64::try_from(v).ok(),
            StatValue::Text(t) => t.trim().parse().ok(),
            StatValue::Float(_) | StatValue::Bool(_) => None,
        }
    }

    /// A string parameter (device names and paths).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            StatValue::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// The `balloon.*` group. Sizes in KiB, as libvirt reports them; every field is absent
/// when libvirt did not report it (shut-off domains report current and maximum only;
/// without a balloon driver in the guest, or when the domain's job was busy, the
/// guest-side figures are missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStats {
    pub current_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    pub swap_in_kib: Option<u64>,
    pub swap_out_kib: Option<u64>,
    pub major_fault: Option<u64>,
    pub minor_fault: Option<u64>,
    pub unused_kib: Option<u64>,
    pub available_kib: Option<u64>,
    pub usable_kib: Option<u64>,
    pub rss_kib: Option<u64>,
    pub disk_caches_kib: Option<u64>,
}

/// One virtual CPU (`vcpu.N.*`). Times in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VcpuStat {
    pub id: u32,
    /// libvirt's `virVcpuState`: 0 offline, 1 running, 2 blocked.
    pub state: Option<i64>,
    pub time_ns: Option<u64>,
    pub wait_ns: Option<u64>,
    pub delay_ns: Option<u64>,
}

/// The `vcpu.*` group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VcpuStats {
    pub current: Option<u64>,
    pub maximum: Option<u64>,
    /// By vCPU number.
    pub vcpus: Vec<VcpuStat>,
}

/// One block device (`block.N.*`). Times in nanoseconds, sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// The target device (`vda`, `sda`): what the domain XML calls `<target dev>`.
    pub name: String,
    /// The source the device reads (image file, block device); absent for an empty
    /// CD-ROM drive and for network disks.
    pub path: Option<String>,
    pub rd_reqs: Option<u64>,
    pub rd_bytes: Option<u64>,
    pub rd_times_ns: Option<u64>,
    pub wr_reqs: Option<u64>,
    pub wr_bytes: Option<u64>,
    pub wr_times_ns: Option<u64>,
    pub fl_reqs: Option<u64>,
    pub fl_times_ns: Option<u64>,
    pub capacity: Option<u64>,
    pub allocation: Option<u64>,
    pub physical: Option<u64>,
}

/// One network interface (`net.N.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// The host-side device (`vnet0`, a tap): the domain XML's `<target dev>`.
    pub name: String,
    pub rx_bytes: Option<u64>,
    pub rx_pkts: Option<u64>,
    pub rx_errs: Option<u64>,
    pub rx_drop: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub tx_pkts: Option<u64>,
    pub tx_errs: Option<u64>,
    pub tx_drop: Option<u64>,
}

/// Everything one bulk call returned for one domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainStats {
    pub name: String,
    pub state: Option<DomainState>,
    /// `cpu.time`, nanoseconds. libvirt 9.0 reports a stale figure for some shut-off
    /// domains; readers use it for active domains only.
    pub cpu_time_ns: Option<u64>,
    pub balloon: BalloonStats,
    pub vcpu: VcpuStats,
    /// In libvirt's order (`block.0`, `block.1`, …); devices without a name are dropped.
    pub blocks: Vec<BlockStats>,
    /// In libvirt's order; interfaces without a name are dropped.
    pub interfaces: Vec<InterfaceStats>,
}

/// The most devices or vCPUs of one kind kept per domain: libvirt's own limits are far
/// below, so more can only be garbage, and garbage must not cost memory.
const MAX_INDEX: u32 = 4096;

/// `block.3.rd.bytes` → (3, "rd.bytes") for `prefix` "block.".
fn indexed<'a>(key: &'a str, prefix: &str) -> Option<(u32, &'a str)> {
    let rest = key.strip_prefix(prefix)?;
    let (index, field) = rest.split_once('.')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u32 = index.parse().ok().filter(|i| *i < MAX_INDEX)?;
    Some((index, field))
}

impl DomainStats {
    /// Build one domain's record from its parameters; unknown keys (new libvirt versions
    /// add some every release) and values of an unexpected type are skipped.
    pub fn from_fields<'a>(
        name: &str,
        fields: impl IntoIterator<Item = (&'a str, StatValue<'a>)>,
    ) -> DomainStats {
        let mut out = DomainStats {
            name: name.to_string(),
            ..DomainStats::default()
        };
        let mut vcpus: BTreeMap<u32, VcpuStat> = BTreeMap::new();
        let mut blocks: BTreeMap<u32, BlockStats> = BTreeMap::new();
        let mut nets: BTreeMap<u32, InterfaceStats> = BTreeMap::new();
        for (key, value) in fields {
            let n = value.as_u64();
            let b = &mut out.balloon;
            match key {
                "state.state" => {
                    out.state = value
                        .as_u64()
                        .and_then(|c| u32::try_from(c).ok())
                        .map(DomainState::from_libvirt)
                }
                "cpu.time" => out.cpu_time_ns = n,
                "balloon.current" => b.current_kib = n,
                "balloon.maximum" => b.maximum_kib = n,
                "balloon.swap_in" => b.swap_in_kib = n,
                "balloon.swap_out" => b.swap_out_kib = n,
                "balloon.major_fault" => b.major_fault = n,
                "balloon.minor_fault" => b.minor_fault = n,
                "balloon.unused" => b.unused_kib = n,
                "balloon.available" => b.available_kib = n,
                "balloon.usable" => b.usable_kib = n,
                "balloon.rss" => b.rss_kib = n,
                "balloon.disk_caches" => b.disk_caches_kib = n,
                "vcpu.current" => out.vcpu.current = n,
                "vcpu.maximum" => out.vcpu.maximum = n,
                _ => {
                    if let Some((i, field)) = indexed(key, "vcpu.") {
                        let v = vcpus.entry(i).or_insert_with(|| VcpuStat {
                            id: i,
                            ..VcpuStat::default()
                        });
                        match field {
                            "state" => v.state = value.as_i64(),
                            "time" => v.time_ns = n,
                            "wait" => v.wait_ns = n,
                            "delay" => v.delay_ns = n,
                            _ => {}
                        }
                    } else if let Some((i, field)) = indexed(key, "block.") {
                        let d = blocks.entry(i).or_default();
                        match field {
                            "name" => d.name = value.as_text().unwrap_or_default().to_string(),
                            "path" => d.path = value.as_text().map(str::to_string),
                            "rd.reqs" => d.rd_reqs = n,
                            "rd.bytes" => d.rd_bytes = n,
                            "rd.times" => d.rd_times_ns = n,
                            "wr.reqs" => d.wr_reqs = n,
                            "wr.bytes" => d.wr_bytes = n,
                            "wr.times" => d.wr_times_ns = n,
                            "fl.reqs" => d.fl_reqs = n,
                            "fl.times" => d.fl_times_ns = n,
                            "capacity" => d.capacity = n,
                            "allocation" => d.allocation = n,
                            "physical" => d.physical = n,
                            _ => {}
                        }
                    } else if let Some((i, field)) = indexed(key, "net.") {
                        let d = nets.entry(i).or_default();
                        match field {
                            "name" => d.name = value.as_text().unwrap_or_default().to_string(),
                            "rx.bytes" => d.rx_bytes = n,
                            "rx.pkts" => d.rx_pkts = n,
                            "rx.errs" => d.rx_errs = n,
                            "rx.drop" => d.rx_drop = n,
                            "tx.bytes" => d.tx_bytes = n,
                            "tx.pkts" => d.tx_pkts = n,
                            "tx.errs" => d.tx_errs = n,
                            "tx.drop" => d.tx_drop = n,
                            _ => {}
                        }
                    }
                }
            }
        }
        out.vcpu.vcpus = vcpus.into_values().collect();
        out.blocks = blocks
            .into_values()
            .filter(|d| !d.name.is_empty())
            .collect();
        out.interfaces = nets.into_values().filter(|d| !d.name.is_empty()).collect();
        out
    }

    /// What the listing's cheap facts say, as a record: state and CPU time, and the
    /// memory and vCPU counts when `groups` asks for balloon and vCPU figures.
    pub fn from_info(info: &super::DomainInfo, groups: StatsGroups) -> DomainStats {
        let mut s = DomainStats {
            name: info.name.clone(),
            state: Some(info.state),
            cpu_time_ns: Some(info.cpu_time_ns),
            ..DomainStats::default()
        };
        if groups.balloon {
            s.balloon.current_kib = Some(info.memory_used_kib);
            s.balloon.maximum_kib = Some(info.memory_max_kib);
        }
        if groups.vcpu {
            s.vcpu.current = Some(u64::from(info.vcpus));
            s.vcpu.maximum = Some(u64::from(info.vcpus));
        }
        s
    }

    /// Whether libvirt skipped this domain's monitor figures because another job held the
    /// domain (the NOWAIT flag): every block device is named but none has a counter. An
    /// empty CD-ROM drive still has its counters, so this tells busy from idle.
    pub fn job_skipped(&self) -> bool {
        !self.blocks.is_empty()
            && self
                .blocks
                .iter()
                .all(|b| b.rd_bytes.is_none() && b.wr_bytes.is_none() && b.rd_reqs.is_none())
    }

    /// This record as the listing's cheap facts, when it has all of them (the QEMU driver
    /// reports them for every domain; the test driver reports the state only). The CPU
    /// time of an inactive domain is 0, as `virDomainGetInfo` says.
    pub fn to_info(&self, uuid: &str, persistent: bool) -> Option<super::DomainInfo> {
        let state = self.state?;
        let max = self.balloon.maximum_kib?;
        let used = self.balloon.current_kib.unwrap_or(max);
        let vcpus = self.vcpu.current.and_then(|v| u32::try_from(v).ok())?;
        let cpu = match (state.is_active(), self.cpu_time_ns) {
            (true, Some(ns)) => ns,
            (true, None) => return None,
            (false, _) => 0,
        };
        Some(super::DomainInfo {
            name: self.name.clone(),
            uuid: uuid.to_string(),
            state,
            persistent,
            vcpus,
            memory_max_kib: max,
            memory_used_kib: used,
            cpu_time_ns: cpu,
            definition_tag: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(pairs: &[(&'static str, &'static str)]) -> DomainStats {
        DomainStats::from_fields("vm", pairs.iter().map(|(k, v)| (*k, StatValue::Text(v))))
    }

    #[test]
    fn every_family_is_read() {
        let s = text(&[
            ("state.state", "1"),
            ("cpu.time", "123"),
            ("balloon.current", "262144"),
            ("balloon.maximum", "524288"),
            ("balloon.swap_in", "1"),
            ("balloon.swap_out", "2"),
            ("balloon.major_fault", "3"),
            ("balloon.minor_fault", "4"),
            ("balloon.unused", "5"),
            ("balloon.available", "6"),
            ("balloon.usable", "7"),
            ("balloon.rss", "8"),
            ("balloon.disk_caches", "9"),
            ("balloon.last-update", "1796151105"),
            ("vcpu.current", "2"),
            ("vcpu.maximum", "4"),
            ("vcpu.1.state", "1"),
            ("vcpu.1.time", "10"),
            ("vcpu.0.state", "2"),
            ("vcpu.0.time", "11"),
            ("vcpu.0.wait", "12"),
            ("vcpu.0.delay", "13"),
            ("net.count", "1"),
            ("net.0.name", "vnet0"),
            ("net.0.rx.bytes", "100"),
            ("net.0.rx.pkts", "101"),
            ("net.0.rx.errs", "102"),
            ("net.0.rx.drop", "103"),
            ("net.0.tx.bytes", "104"),
            ("net.0.tx.pkts", "105"),
            ("net.0.tx.errs", "106"),
            ("net.0.tx.drop", "107"),
            ("block.count", "2"),
            ("block.1.name", "sda"),
            ("block.0.name", "vda"),
            ("block.0.path", "/img/a b.qcow2"),
            ("block.0.rd.reqs", "1"),
            ("block.0.rd.bytes", "2"),
            ("block.0.rd.times", "3"),
            ("block.0.wr.reqs", "4"),
            ("block.0.wr.bytes", "5"),
            ("block.0.wr.times", "6"),
            ("block.0.fl.reqs", "7"),
            ("block.0.fl.times", "8"),
            ("block.0.capacity", "9"),
            ("block.0.allocation", "10"),
            ("block.0.physical", "11"),
        ]);
        assert_eq!(s.state, Some(DomainState::Running));
        assert_eq!(s.cpu_time_ns, Some(123));
        assert_eq!(
            s.balloon,
            BalloonStats {
                current_kib: Some(262_144),
                maximum_kib: Some(524_288),
                swap_in_kib: Some(1),
                swap_out_kib: Some(2),
                major_fault: Some(3),
                minor_fault: Some(4),
                unused_kib: Some(5),
                available_kib: Some(6),
                usable_kib: Some(7),
                rss_kib: Some(8),
                disk_caches_kib: Some(9),
            }
        );
        assert_eq!(s.vcpu.current, Some(2));
        assert_eq!(s.vcpu.maximum, Some(4));
        // Ordered by vCPU number, whatever order libvirt sent them in.
        assert_eq!(
            s.vcpu.vcpus,
            vec![
                VcpuStat {
                    id: 0,
                    state: Some(2),
                    time_ns: Some(11),
                    wait_ns: Some(12),
                    delay_ns: Some(13)
                },
                VcpuStat {
                    id: 1,
                    state: Some(1),
                    time_ns: Some(10),
                    wait_ns: None,
                    delay_ns: None
                },
            ]
        );
        assert_eq!(s.interfaces.len(), 1);
        assert_eq!(s.interfaces[0].name, "vnet0");
        assert_eq!(s.interfaces[0].tx_drop, Some(107));
        assert_eq!(s.blocks.len(), 2);
        let vda = &s.blocks[0];
        assert_eq!(vda.name, "vda");
        assert_eq!(vda.path.as_deref(), Some("/img/a b.qcow2"));
        assert_eq!(
            (vda.rd_reqs, vda.rd_bytes, vda.rd_times_ns),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(
            (vda.wr_reqs, vda.wr_bytes, vda.wr_times_ns),
            (Some(4), Some(5), Some(6))
        );
        assert_eq!((vda.fl_reqs, vda.fl_times_ns), (Some(7), Some(8)));
        assert_eq!(
            (vda.capacity, vda.allocation, vda.physical),
            (Some(9), Some(10), Some(11))
        );
        assert_eq!(s.blocks[1].name, "sda");
        assert_eq!(s.blocks[1].rd_bytes, None);
    }

    #[test]
    fn typed_values_read_like_text() {
        let typed = DomainStats::from_fields(
            "vm",
            [
                ("state.state", StatValue::Int(5)),
                ("vcpu.current", StatValue::UInt(1)),
                ("vcpu.0.state", StatValue::Int(1)),
                ("block.0.name", StatValue::Text("sda")),
                ("block.0.capacity", StatValue::UInt(376_832)),
                // Wrong types are skipped, not guessed at.
                ("block.0.rd.bytes", StatValue::Float(1.5)),
                ("block.0.wr.bytes", StatValue::Int(-1)),
                ("balloon.rss", StatValue::Bool(true)),
            ],
        );
        assert_eq!(typed.state, Some(DomainState::ShutOff));
        assert_eq!(typed.vcpu.current, Some(1));
        assert_eq!(typed.vcpu.vcpus[0].state, Some(1));
        assert_eq!(typed.blocks[0].capacity, Some(376_832));
        assert_eq!(typed.blocks[0].rd_bytes, None);
        assert_eq!(typed.blocks[0].wr_bytes, None);
        assert_eq!(typed.balloon.rss_kib, None);
    }

    #[test]
    fn a_busy_domain_is_told_from_an_idle_one() {
        // What `domstats --nowait` printed for a running guest while another client's
        // job held it, and the same guest idle with its drive emptied.
        let busy = text(&[
            ("block.count", "1"),
            ("block.0.name", "sda"),
            ("block.0.path", "/iso/a.iso"),
            ("block.0.backingIndex", "1"),
        ]);
        assert!(busy.job_skipped());
        let empty_drive = text(&[
            ("block.0.name", "sda"),
            ("block.0.rd.reqs", "6"),
            ("block.0.rd.bytes", "2150"),
            ("block.0.wr.bytes", "0"),
        ]);
        assert!(!empty_drive.job_skipped());
        assert!(
            !text(&[("state.state", "1")]).job_skipped(),
            "no block group"
        );
    }

    #[test]
    fn garbage_keys_cost_nothing() {
        let s = text(&[
            ("block.x.name", "a"),
            ("block.99999999.name", "huge"),
            ("block.1", "no field"),
            ("block..name", "empty"),
            ("block.2.path", "/nameless"),
            ("net.0.rx.bytes", "5"),
            ("vcpu.4096.time", "1"),
            ("state.state", "nope"),
            ("cpu.time", "-3"),
        ]);
        assert!(s.blocks.is_empty(), "{s:?}");
        assert!(s.interfaces.is_empty(), "{s:?}");
        assert!(s.vcpu.vcpus.is_empty(), "{s:?}");
        assert_eq!(s.state, None);
        assert_eq!(s.cpu_time_ns, None);
    }

    #[test]
    fn info_needs_state_memory_and_vcpus() {
        let full = text(&[
            ("state.state", "5"),
            ("cpu.time", "184080000000"),
            ("balloon.current", "2097152"),
            ("balloon.maximum", "2097152"),
            ("vcpu.current", "2"),
        ]);
        let info = full.to_info("u", true).unwrap();
        assert_eq!(info.state, DomainState::ShutOff);
        // libvirt 9.0's stale CPU time of a shut-off domain is not reported.
        assert_eq!(info.cpu_time_ns, 0);
        assert_eq!(info.vcpus, 2);
        assert_eq!(text(&[("state.state", "1")]).to_info("u", true), None);
        let running_without_cpu = text(&[
            ("state.state", "1"),
            ("balloon.maximum", "1"),
            ("vcpu.current", "1"),
        ]);
        assert_eq!(running_without_cpu.to_info("u", true), None);
    }

    #[test]
    fn virsh_flags_follow_the_groups() {
        assert_eq!(
            StatsGroups::default().virsh_flags(),
            vec!["--state", "--cpu-total"]
        );
        assert_eq!(
            StatsGroups::ALL.virsh_flags(),
            vec![
                "--state",
                "--cpu-total",
                "--balloon",
                "--vcpu",
                "--interface",
                "--block"
            ]
        );
    }
}
