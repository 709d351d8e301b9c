//! The plain data every view reads: one `Snapshot` of `VmRow`s, and the media facts in
//! [`media`]. The table, `scan --json`, the menu and `/metrics` are views of this; none of
//! them calls libvirt itself.

pub mod media;
pub mod telemetry;

use serde::{Deserialize, Serialize};

use crate::domxml::CdromDrive;
use crate::hypervisor::{DomainState, MAX_DETAIL};
use crate::units::clip;

/// The most characters of a guest's OS name or id kept.
pub const MAX_OS_TEXT: usize = 200;
/// The most characters of why a guest's OS is unknown.
const MAX_REASON: usize = MAX_DETAIL;

/// Where an OS answer came from (the JSON spells these exactly so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OsSource {
    #[serde(rename = "guest-get-osinfo")]
    GuestGetOsinfo,
    #[serde(rename = "guest-exec")]
    GuestExec,
    #[serde(rename = "libosinfo-metadata")]
    LibosinfoMetadata,
}

impl OsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OsSource::GuestGetOsinfo => "guest-get-osinfo",
            OsSource::GuestExec => "guest-exec",
            OsSource::LibosinfoMetadata => "libosinfo-metadata",
        }
    }
}

/// What the guest agent did for this scan — the `agent` field in JSON and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentStatus {
    /// Answered (now, or within the cache TTL).
    Ok,
    /// Did not answer before the deadline.
    Timeout,
    /// The agent runs but the commands we need are disabled by its allow/block list.
    Disabled,
    /// No agent connected (not installed, not started, no channel).
    Absent,
    /// The agent answered with an error we could not classify.
    Error,
    /// Not asked: the VM is not running.
    NotAsked,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Ok => "ok",
            AgentStatus::Timeout => "timeout",
            AgentStatus::Disabled => "disabled",
            AgentStatus::Absent => "absent",
            AgentStatus::Error => "error",
            AgentStatus::NotAsked => "not-asked",
        }
    }
}

/// The guest OS: text plus its source, or, when unknown, the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsAnswer {
    /// Readable OS name, untrusted (it may come from inside the guest).
    pub text: Option<String>,
    /// The OS id (os-release `ID`, osinfo `id`, or the libosinfo URI), untrusted.
    pub id: Option<String>,
    pub source: Option<OsSource>,
    /// Why `text` is missing (or why the agent could not be used, when the answer came
    /// from a fallback).
    pub reason: Option<String>,
    /// The answer was served from the cache, not asked during this scan.
    pub cached: bool,
}

impl OsAnswer {
    /// A guest's answer, bounded: OS names are short, and a guest that sends 100 KB for
    /// one gets the first [`MAX_OS_TEXT`] characters shown.
    pub fn known(text: String, id: Option<String>, source: OsSource) -> OsAnswer {
        OsAnswer {
            text: Some(clip(&text, MAX_OS_TEXT)),
            id: id.map(|i| clip(&i, MAX_OS_TEXT)),
            source: Some(source),
            reason: None,
            cached: false,
        }
    }

    pub fn unknown(reason: impl Into<String>) -> OsAnswer {
        OsAnswer {
            text: None,
            id: None,
            source: None,
            reason: Some(clip(&reason.into(), MAX_REASON)),
            cached: false,
        }
    }
}

/// One VM of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRow {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    pub persistent: bool,
    pub vcpus: u32,
    pub memory_used_kib: u64,
    pub memory_max_kib: u64,
    pub cpu_time_seconds: f64,
    /// CD-ROM drives of the running (or, when off, the persistent) definition.
    pub media: Vec<CdromDrive>,
    /// Why `media` (and the XML metadata) is unknown in this scan, when it is.
    #[serde(default)]
    pub media_error: Option<String>,
    pub os: OsAnswer,
    pub agent: AgentStatus,
    /// How long this scan's agent probe took, when one ran.
    pub probe_ms: Option<u64>,
    /// How old each part of the row is (parts come from the cache while their TTL holds).
    #[serde(default)]
    pub ages: FactAges,
}

/// How old each part of a row is, in seconds (JSON `ages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactAges {
    /// The OS answer (or a remembered agent timeout): 0 when asked in this scan, `None`
    /// when no agent answer stands behind it (VM not running, read-only, …).
    pub os_seconds: Option<u64>,
    /// Drives, ISOs and metadata from the XML: 0 when read in this scan, more when a
    /// shut-off VM's facts were reused (`--definition-ttl`).
    pub definition_seconds: u64,
    /// State, memory and CPU time: read in every scan.
    pub statistics_seconds: u64,
}

/// One scan of one connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub uri: String,
    /// Unix time (seconds) the scan finished.
    pub taken_at: u64,
    pub duration_ms: u64,
    /// Sorted by name.
    pub vms: Vec<VmRow>,
    /// Per-VM problems that are not about the guest agent (e.g. unreadable XML).
    pub errors: Vec<String>,
    /// `serve`'s statistics and device descriptions, when the scan collected them (never
    /// for `scan`: not part of its JSON).
    #[serde(skip)]
    pub telemetry: Option<telemetry::Telemetry>,
}
