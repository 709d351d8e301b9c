//! What `top` shows, computed from the collector's samples: per VM its figures (rates
//! from two samples over the collector's own timestamps), each either a value or why it
//! has none; the columns, their order and how rows sort and filter. Plain data: the views
//! (the screen, the batch records) only read it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::hypervisor::{DomainState, DomainStats};
use crate::snapshot::telemetry::DomainTelemetry;
use crate::snapshot::{AgentStatus, Snapshot, VmRow};

/// One scan of the collector, stamped when it started (the counters are read at its
/// start; a scan that waits for slow guest agents does not stretch the interval).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// Unix seconds of the same moment (batch records carry it).
    pub unix: f64,
    pub snapshot: Snapshot,
    /// The host's logical CPU count, when known (what HOST% is measured against).
    pub host_cpus: Option<u32>,
}

/// Why a cell shows `-`. The legend names every reason on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Why {
    /// The VM is not running (shut off, crashed, …).
    NotRunning,
    /// The VM is paused: its guest answers nothing.
    Paused,
    /// Rates need two samples; this VM has one so far (or its counters restarted).
    FirstSample,
    /// libvirt gave no statistics for this VM in this scan.
    NoStats,
    /// libvirt skipped this VM's disk and balloon figures this time: another job held the
    /// VM, and the collector never waits for one (a frozen VM would freeze the screen).
    Busy,
    /// The guest reports no memory figures (no balloon driver, or no stats period).
    NoBalloon,
    /// No guest agent answers.
    NoAgent,
    /// The guest agent did not answer in time.
    AgentTimeout,
    /// The guest agent's allow list blocks what is needed.
    AgentDisabled,
    /// The guest agent failed otherwise.
    AgentError,
    /// The VM has no disk.
    NoDisk,
    /// The VM has no network interface.
    NoNic,
    /// The host's CPU count is unknown (the driver cannot say).
    HostCpusUnknown,
    /// This scan could not read the VM's XML.
    XmlUnknown,
}

impl Why {
    pub fn text(self) -> &'static str {
        match self {
            Why::NotRunning => "not running",
            Why::Paused => "paused",
            Why::FirstSample => "first sample",
            Why::NoStats => "no stats from libvirt",
            Why::Busy => "VM busy in libvirt, not waited for",
            Why::NoBalloon => "no balloon driver",
            Why::NoAgent => "no agent",
            Why::AgentTimeout => "agent timeout",
            Why::AgentDisabled => "agent command disabled",
            Why::AgentError => "agent error",
            Why::NoDisk => "no disk",
            Why::NoNic => "no NIC",
            Why::HostCpusUnknown => "host CPUs unknown",
            Why::XmlUnknown => "XML late",
        }
    }

    /// The stable word batch records use.
    pub fn key(self) -> &'static str {
        match self {
            Why::NotRunning => "not-running",
            Why::Paused => "paused",
            Why::FirstSample => "first-sample",
            Why::NoStats => "no-stats",
            Why::Busy => "vm-busy",
            Why::NoBalloon => "no-balloon",
            Why::NoAgent => "no-agent",
            Why::AgentTimeout => "agent-timeout",
            Why::AgentDisabled => "agent-disabled",
            Why::AgentError => "agent-error",
            Why::NoDisk => "no-disk",
            Why::NoNic => "no-nic",
            Why::HostCpusUnknown => "host-cpus-unknown",
            Why::XmlUnknown => "xml-unknown",
        }
    }
}

/// A figure or why there is none.
pub type Fig<T> = Result<T, Why>;

/// One VM's line: the scan's row and the figures computed for it.
#[derive(Debug, Clone)]
pub struct Line {
    /// The host's name, with several hosts (the HOST column); `None` with one.
    pub host: Option<Arc<str>>,
    pub row: VmRow,
    /// Percent of its own vCPUs (100: every vCPU busy all the time).
    pub cpu_pct: Fig<f64>,
    /// Percent of the host's CPUs.
    pub host_pct: Fig<f64>,
    /// Memory the guest uses (its balloon figures), KiB.
    pub mem_used_kib: Fig<u64>,
    pub rd_bps: Fig<f64>,
    pub wr_bps: Fig<f64>,
    pub rx_bps: Fig<f64>,
    pub tx_bps: Fig<f64>,
    /// Why the OS column is empty, when it is.
    pub os_why: Option<Why>,
    /// Each disk: target, source, read and write bytes per second.
    pub disks: Vec<DeviceRate>,
    /// Each interface: host device, MAC, received and sent bytes per second.
    pub nics: Vec<DeviceRate>,
}

/// One disk or interface of the details view.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRate {
    pub name: String,
    pub about: String,
    pub a_bps: Fig<f64>,
    pub b_bps: Fig<f64>,
}

/// One device's two counters: (name, read or received, written or sent).
type Dev = (String, Option<u64>, Option<u64>);

/// Counters of one VM in one sample.
#[derive(Debug, Clone, Default)]
struct Counters {
    cpu_ns: Option<u64>,
    blocks: Vec<Dev>,
    nics: Vec<Dev>,
}

fn counters(row: &VmRow, stats: Option<&DomainStats>) -> Counters {
    let cpu_ns = stats
        .and_then(|s| s.cpu_time_ns)
        .or(Some((row.cpu_time_seconds * 1e9) as u64));
    match stats {
        Some(s) => Counters {
            cpu_ns,
            blocks: s
                .blocks
                .iter()
                .map(|b| (b.name.clone(), b.rd_bytes, b.wr_bytes))
                .collect(),
            nics: s
                .interfaces
                .iter()
                .map(|i| (i.name.clone(), i.rx_bytes, i.tx_bytes))
                .collect(),
        },
        None => Counters {
            cpu_ns,
            ..Counters::default()
        },
    }
}

/// Per second, from two readings `dt` seconds apart; a counter that went back (the VM
/// restarted) has no rate.
fn rate(prev: Option<u64>, cur: Option<u64>, dt: f64) -> Fig<f64> {
    match (prev, cur) {
        (Some(p), Some(c)) if c >= p && dt > 0.0 => Ok((c - p) as f64 / dt),
        (_, None) => Err(Why::NoStats),
        _ => Err(Why::FirstSample),
    }
}

fn sum_rate(prev: Option<&[Dev]>, cur: &[Dev], dt: f64, pick: fn(&Dev) -> Option<u64>) -> Fig<f64> {
    let Some(prev) = prev else {
        return Err(Why::FirstSample);
    };
    let mut total = 0.0;
    for c in cur {
        let p = prev.iter().find(|p| p.0 == c.0).and_then(pick);
        total += rate(p, pick(c), dt)?;
    }
    Ok(total)
}

/// Why a running-only figure of this row is missing, when the VM is not running.
fn inactive(state: DomainState) -> Option<Why> {
    match state {
        DomainState::Running | DomainState::Blocked | DomainState::ShuttingDown => None,
        DomainState::Paused | DomainState::PmSuspended => Some(Why::Paused),
        _ => Some(Why::NotRunning),
    }
}

/// The guest's own memory use from its balloon figures: total minus what it could use
/// (`usable`, which counts reclaimable cache as free), else minus what is unused.
pub fn balloon_used(s: &DomainStats) -> Option<u64> {
    let total = s.balloon.available_kib?;
    let free = s.balloon.usable_kib.or(s.balloon.unused_kib)?;
    Some(total.saturating_sub(free))
}

fn os_why(row: &VmRow) -> Option<Why> {
    if row.os.text.is_some() {
        return None;
    }
    if let Some(w) = inactive(row.state) {
        return Some(w);
    }
    Some(match row.agent {
        AgentStatus::Absent => Why::NoAgent,
        AgentStatus::Timeout => Why::AgentTimeout,
        AgentStatus::Disabled => Why::AgentDisabled,
        _ => Why::AgentError,
    })
}

impl Line {
    /// How commands and the screen name the VM: `HOST:VM` with several hosts, else its
    /// name.
    pub fn label(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}:{}", self.row.name),
            None => self.row.name.clone(),
        }
    }

    /// What tells this VM from every other on the screen: its UUID, and with several
    /// hosts its host's name too (two names for one host share UUIDs).
    pub fn key(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}\u{0}{}", self.row.uuid),
            None => self.row.uuid.clone(),
        }
    }
}

/// The lines of sample `cur`, with rates against `prev` (the sample before it, of the
/// same host); `host` names that host when there are several.
pub fn lines(prev: Option<&Sample>, cur: &Sample, host: Option<&Arc<str>>) -> Vec<Line> {
    let host_cpus = cur.host_cpus;
    let dt = prev.map_or(0.0, |p| {
        cur.at.saturating_duration_since(p.at).as_secs_f64()
    });
    let empty = DomainTelemetry::default();
    fn tel(s: &Sample, i: usize) -> Option<&DomainTelemetry> {
        s.snapshot.telemetry.as_ref().and_then(|t| t.domains.get(i))
    }
    let mut before: HashMap<&str, Counters> = HashMap::new();
    if let Some(p) = prev {
        for (i, row) in p.snapshot.vms.iter().enumerate() {
            if row.state.is_active() {
                let stats = tel(p, i).and_then(|t| t.stats.as_ref());
                before.insert(row.uuid.as_str(), counters(row, stats));
            }
        }
    }
    cur.snapshot
        .vms
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let t = tel(cur, i).unwrap_or(&empty);
            let stats = t.stats.as_ref();
            let now = counters(row, stats);
            let was = before.get(row.uuid.as_str());
            let off = if row.state.is_active() {
                None
            } else {
                Some(Why::NotRunning)
            };
            let cpu_ns_rate = match off {
                Some(w) => Err(w),
                None => rate(was.and_then(|w| w.cpu_ns), now.cpu_ns, dt),
            };
            let vcpus = f64::from(row.vcpus.max(1));
            let cpu_pct = cpu_ns_rate.map(|r| r / 1e9 / vcpus * 100.0);
            let host_pct = match host_cpus {
                None => cpu_ns_rate.and(Err(Why::HostCpusUnknown)),
                Some(n) => cpu_ns_rate.map(|r| r / 1e9 / f64::from(n.max(1)) * 100.0),
            };
            let busy = stats.is_some_and(DomainStats::job_skipped);
            let mem_used_kib = match inactive(row.state) {
                Some(w) => Err(w),
                None => match stats {
                    None => Err(Why::NoStats),
                    Some(s) => balloon_used(s).ok_or(if busy { Why::Busy } else { Why::NoBalloon }),
                },
            };
            let io =
                |list: &[Dev], prev: Option<&[Dev]>, none: Why, pick: fn(&Dev) -> Option<u64>| {
                    if let Some(w) = off {
                        return Err(w);
                    }
                    if stats.is_none() {
                        return Err(Why::NoStats);
                    }
                    if busy && list.iter().all(|d| pick(d).is_none()) {
                        return Err(Why::Busy);
                    }
                    if list.is_empty() {
                        return Err(none);
                    }
                    sum_rate(prev, list, dt, pick)
                };
            let pb = was.map(|w| w.blocks.as_slice());
            let pn = was.map(|w| w.nics.as_slice());
            let rd_bps = io(&now.blocks, pb, Why::NoDisk, |b| b.1);
            let wr_bps = io(&now.blocks, pb, Why::NoDisk, |b| b.2);
            let rx_bps = io(&now.nics, pn, Why::NoNic, |b| b.1);
            let tx_bps = io(&now.nics, pn, Why::NoNic, |b| b.2);
            let dev = |list: &[Dev], prev: Option<&[Dev]>, about: &dyn Fn(&str) -> String| {
                list.iter()
                    .map(|c| {
                        let p = prev.and_then(|p| p.iter().find(|p| p.0 == c.0));
                        let (a, b) = match (off, p) {
                            (Some(w), _) => (Err(w), Err(w)),
                            (None, None) => (Err(Why::FirstSample), Err(Why::FirstSample)),
                            (None, Some(p)) => (rate(p.1, c.1, dt), rate(p.2, c.2, dt)),
                        };
                        let skipped = |r: Fig<f64>| match r {
                            Err(Why::NoStats) if busy => Err(Why::Busy),
                            r => r,
                        };
                        let (a, b) = (skipped(a), skipped(b));
                        DeviceRate {
                            name: c.0.clone(),
                            about: about(&c.0),
                            a_bps: a,
                            b_bps: b,
                        }
                    })
                    .collect()
            };
            let disk_about = |name: &str| {
                t.disks
                    .iter()
                    .find(|d| d.target == name)
                    .map(|d| format!("{} {} {}", d.device, d.bus, d.source))
                    .unwrap_or_default()
            };
            let nic_about = |name: &str| {
                t.interfaces
                    .iter()
                    .find(|n| n.target == name)
                    .map(|n| format!("{} {} {}", n.mac, n.model, n.interface_type))
                    .unwrap_or_default()
            };
            Line {
                host: host.cloned(),
                cpu_pct,
                host_pct,
                mem_used_kib,
                rd_bps,
                wr_bps,
                rx_bps,
                tx_bps,
                os_why: os_why(row),
                disks: dev(&now.blocks, pb, &disk_about),
                nics: dev(&now.nics, pn, &nic_about),
                row: row.clone(),
            }
        })
        .collect()
}

/// The columns, in the order the table shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Vm,
    Os,
    State,
    Cpu,
    Host,
    Mem,
    Read,
    Write,
    Rx,
    Tx,
    Agent,
    Iso,
    /// The host's name: shown first, and only with several hosts.
    HostName,
}

impl Column {
    /// Every column but [`Column::HostName`], in table order (the number keys sort by
    /// these).
    pub const ALL: [Column; 12] = [
        Column::Vm,
        Column::Os,
        Column::State,
        Column::Cpu,
        Column::Host,
        Column::Mem,
        Column::Read,
        Column::Write,
        Column::Rx,
        Column::Tx,
        Column::Agent,
        Column::Iso,
    ];

    /// The name `--sort` takes.
    pub fn key(self) -> &'static str {
        match self {
            Column::Vm => "vm",
            Column::Os => "os",
            Column::State => "state",
            Column::Cpu => "cpu",
            Column::Host => "host",
            Column::Mem => "mem",
            Column::Read => "read",
            Column::Write => "write",
            Column::Rx => "rx",
            Column::Tx => "tx",
            Column::Agent => "agent",
            Column::Iso => "iso",
            Column::HostName => "hostname",
        }
    }

    pub fn header(self) -> &'static str {
        match self {
            Column::Vm => "VM",
            Column::Os => "OS",
            Column::State => "STATE",
            Column::Cpu => "CPU%",
            Column::Host => "HOST%",
            Column::Mem => "MEM USE/MAX",
            Column::Read => "RD/s",
            Column::Write => "WR/s",
            Column::Rx => "RX/s",
            Column::Tx => "TX/s",
            Column::Agent => "AGENT",
            Column::Iso => "ISO",
            Column::HostName => "HOST",
        }
    }

    pub fn parse(s: &str) -> Result<Column, String> {
        let s = s.trim().to_ascii_lowercase();
        let every = || Column::ALL.into_iter().chain([Column::HostName]);
        every().find(|c| c.key() == s).ok_or_else(|| {
            let keys: Vec<&str> = every().map(|c| c.key()).collect();
            format!("unknown sort field {s:?} (fields: {})", keys.join(", "))
        })
    }

    /// Where the column stands in the table: the host first, then [`Column::ALL`]'s order.
    pub fn position(self) -> usize {
        match self {
            Column::HostName => 0,
            c => 1 + Column::ALL.iter().position(|x| *x == c).unwrap_or(0),
        }
    }

    /// Figures sort largest first; text sorts A to Z.
    pub fn numeric(self) -> bool {
        matches!(
            self,
            Column::Cpu
                | Column::Host
                | Column::Mem
                | Column::Read
                | Column::Write
                | Column::Rx
                | Column::Tx
        )
    }
}

/// The ISO column's text: every drive's image, `-` when all are empty.
pub fn iso_text(row: &VmRow) -> String {
    let isos: Vec<&str> = row
        .media
        .iter()
        .filter_map(|d| d.source.as_deref())
        .collect();
    if isos.is_empty() {
        "-".to_string()
    } else {
        isos.join(", ")
    }
}

fn num(f: &Fig<f64>) -> Option<f64> {
    f.as_ref().ok().copied()
}

fn sort_text(l: &Line, c: Column) -> String {
    match c {
        Column::Vm => l.row.name.to_lowercase(),
        Column::Os => l.row.os.text.clone().unwrap_or_default().to_lowercase(),
        Column::State => l.row.state.as_str().to_string(),
        Column::Agent => l.row.agent.as_str().to_string(),
        Column::Iso => iso_text(&l.row).to_lowercase(),
        Column::HostName => l.host.as_deref().unwrap_or_default().to_lowercase(),
        _ => String::new(),
    }
}

fn sort_num(l: &Line, c: Column) -> Option<f64> {
    match c {
        Column::Cpu => num(&l.cpu_pct),
        Column::Host => num(&l.host_pct),
        Column::Mem => l.mem_used_kib.as_ref().ok().map(|v| *v as f64),
        Column::Read => num(&l.rd_bps),
        Column::Write => num(&l.wr_bps),
        Column::Rx => num(&l.rx_bps),
        Column::Tx => num(&l.tx_bps),
        _ => None,
    }
}

/// Sort by `col` (figures largest first, text A to Z; `reverse` turns that round). A
/// cell without a figure sorts last either way; ties go by name.
pub fn sort(lines: &mut [Line], col: Column, reverse: bool) {
    lines.sort_by(|a, b| {
        use std::cmp::Ordering;
        let primary = if col.numeric() {
            match (sort_num(a, col), sort_num(b, col)) {
                (Some(x), Some(y)) => {
                    let o = y.partial_cmp(&x).unwrap_or(Ordering::Equal);
                    if reverse {
                        o.reverse()
                    } else {
                        o
                    }
                }
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        } else {
            let o = sort_text(a, col).cmp(&sort_text(b, col));
            if reverse {
                o.reverse()
            } else {
                o
            }
        };
        primary
            .then_with(|| a.row.name.cmp(&b.row.name))
            .then_with(|| a.host.cmp(&b.host))
    });
}

/// Does the line match the filter (case-insensitive, in the name, OS, state, ISO or host)?
pub fn matches(l: &Line, filter: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let f = filter.to_lowercase();
    [
        l.row.name.to_lowercase(),
        l.row.os.text.clone().unwrap_or_default().to_lowercase(),
        l.row.state.as_str().to_string(),
        iso_text(&l.row).to_lowercase(),
        l.host.as_deref().unwrap_or_default().to_lowercase(),
    ]
    .iter()
    .any(|s| s.contains(&f))
}

/// One point of a VM's history (for the details view's sparklines).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    pub cpu_pct: Option<f64>,
    pub mem_kib: Option<u64>,
    pub disk_bps: Option<f64>,
    pub net_bps: Option<f64>,
}

/// How many points each VM keeps: ten minutes at one sample a second.
pub const HISTORY: usize = 600;

/// The last [`HISTORY`] points of every VM, by [`Line::key`].
#[derive(Debug, Default)]
pub struct History {
    by_key: HashMap<String, VecDeque<Point>>,
}

impl History {
    /// A point for each of `lines` (one host's newest sample).
    pub fn push(&mut self, lines: &[Line]) {
        for l in lines {
            let both = |a: &Fig<f64>, b: &Fig<f64>| match (num(a), num(b)) {
                (None, None) => None,
                (x, y) => Some(x.unwrap_or(0.0) + y.unwrap_or(0.0)),
            };
            let p = Point {
                cpu_pct: num(&l.cpu_pct),
                mem_kib: l.mem_used_kib.as_ref().ok().copied(),
                disk_bps: both(&l.rd_bps, &l.wr_bps),
                net_bps: both(&l.rx_bps, &l.tx_bps),
            };
            let q = self.by_key.entry(l.key()).or_default();
            if q.len() == HISTORY {
                q.pop_front();
            }
            q.push_back(p);
        }
    }

    /// Forget the VMs `lines` (every host's) no longer has.
    pub fn keep_only(&mut self, lines: &[Line]) {
        let seen: std::collections::HashSet<String> = lines.iter().map(Line::key).collect();
        self.by_key.retain(|k, _| seen.contains(k));
    }

    pub fn of(&self, key: &str) -> Option<&VecDeque<Point>> {
        self.by_key.get(key)
    }
}
