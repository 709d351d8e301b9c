//! The hypervisor port: the one narrow trait through which the rest of the tool talks to
//! libvirt, and the plain types it speaks in.
//!
//! Everything above this port (OS detection, media policy, chunked file transfer, the
//! renderers) is written once and works for every adapter. Adapters translate their own
//! world (the `virt` crate, `virsh` text, an in-memory fake) into these types and classify
//! their errors into [`HvError`] so callers can decide on meaning, not on message text.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exit::{self, Failure};
use crate::units::clip;

#[cfg(any(test, feature = "test-support"))]
pub mod fake;
#[cfg(feature = "native")]
pub mod native;
pub mod remote;
pub mod stats;
pub mod virsh;

pub use stats::{
    BalloonStats, BlockStats, DomainStats, InterfaceStats, StatsGroups, VcpuStat, VcpuStats,
};

/// Run state of a domain, as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    PmSuspended,
}

impl DomainState {
    /// The words `virsh list` uses, so operators recognise them.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::NoState => "no state",
            DomainState::Running => "running",
            DomainState::Blocked => "blocked",
            DomainState::Paused => "paused",
            DomainState::ShuttingDown => "shutting down",
            DomainState::ShutOff => "shut off",
            DomainState::Crashed => "crashed",
            DomainState::PmSuspended => "pmsuspended",
        }
    }

    /// Whether a guest agent inside could possibly answer: only a guest whose vCPUs run.
    /// Paused, suspended and stopped guests get no agent calls.
    pub fn agent_may_answer(self) -> bool {
        matches!(self, DomainState::Running | DomainState::Blocked)
    }

    /// Whether the domain has a live (running or paused) definition.
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            DomainState::ShutOff | DomainState::NoState | DomainState::Crashed
        )
    }

    /// Map libvirt's numeric `virDomainState`.
    pub fn from_libvirt(code: u32) -> DomainState {
        match code {
            1 => DomainState::Running,
            2 => DomainState::Blocked,
            3 => DomainState::Paused,
            4 => DomainState::ShuttingDown,
            5 => DomainState::ShutOff,
            6 => DomainState::Crashed,
            7 => DomainState::PmSuspended,
            _ => DomainState::NoState,
        }
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cheap, always-fresh facts about one domain (what `virsh dominfo` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    pub persistent: bool,
    pub vcpus: u32,
    /// Maximum memory ("Max memory" in dominfo), KiB.
    pub memory_max_kib: u64,
    /// Current allocation ("Used memory" in dominfo), KiB.
    pub memory_used_kib: u64,
    /// Total CPU time consumed, nanoseconds.
    pub cpu_time_ns: u64,
    /// A digest of what the bulk statistics say about a shut-off domain's definition
    /// (memory, vCPUs, every disk's target and source; see [`definition_tag`]): when it is
    /// unchanged, so is the XML as far as those go, and a scan may reuse facts it read
    /// before. `None` (running domains, drivers without the figures): read the XML.
    #[serde(skip)]
    pub definition_tag: Option<u64>,
}

/// Whether a bulk statistics field tells something about a shut-off domain's definition.
/// Left out: the CPU times (libvirt 9.0 reports a drifting `cpu.time` for a shut-off
/// domain) and the image sizes (`capacity`, `allocation`, `physical` follow the files).
fn describes_definition(key: &str) -> bool {
    !(key.starts_with("cpu.")
        || key.ends_with(".capacity")
        || key.ends_with(".allocation")
        || key.ends_with(".physical"))
}

/// The digest behind [`DomainInfo::definition_tag`]: FNV-1a over `key=value` lines of the
/// fields that describe the definition, in the order given (libvirt's, which is stable).
/// Stable across processes and builds, because it is stored in the cache file.
pub fn definition_tag<'a>(fields: impl IntoIterator<Item = (&'a str, String)>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in fields {
        if !describes_definition(key) {
            continue;
        }
        for b in key
            .bytes()
            .chain([b'='])
            .chain(value.bytes())
            .chain([b'\n'])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Which definition of a domain to read or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlScope {
    /// The running definition when the domain is active, else the persistent one.
    Current,
    /// The persistent (inactive) definition: what the domain boots with next time.
    Persistent,
}

/// Where a device change applies. At least one of the two must be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChangeScope {
    pub live: bool,
    pub config: bool,
}

impl ChangeScope {
    pub const LIVE: ChangeScope = ChangeScope {
        live: true,
        config: false,
    };
    pub const CONFIG: ChangeScope = ChangeScope {
        live: false,
        config: true,
    };
    pub const BOTH: ChangeScope = ChangeScope {
        live: true,
        config: true,
    };

    /// "live", "config" or "live and config": used in every message that says what changed.
    pub fn describe(self) -> &'static str {
        match (self.live, self.config) {
            (true, true) => "live and config",
            (true, false) => "live",
            (false, true) => "config",
            (false, false) => "nothing",
        }
    }
}

/// A volume of a storage pool (used to offer ISO images).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageVolume {
    pub pool: String,
    pub name: String,
    pub path: String,
    pub capacity_bytes: Option<u64>,
}

/// Errors of the port, classified so callers decide on meaning, not on message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HvError {
    #[error("cannot reach libvirt at {uri}: {detail} (is libvirtd running?)")]
    Unreachable { uri: String, detail: String },
    #[error(
        "permission denied connecting to {uri}: join the 'libvirt' group (then log in again), run as root, or use qemu:///session"
    )]
    PermissionDenied { uri: String, detail: String },
    #[error("libvirt does not accept the URI {uri:?}: {detail}")]
    BadUri { uri: String, detail: String },
    #[error("no answer from {uri} within {seconds} s: is the host up and reachable, and libvirtd running there? (--connect-timeout SECS waits longer)")]
    ConnectTimeout { uri: String, seconds: String },
    #[error("ssh cannot reach the host of {uri}: {detail} (is the host up, its name right, and sshd listening on that port?)")]
    SshUnreachable { uri: String, detail: String },
    /// `keyscan` is the `ssh-keyscan` command line for the host (and port).
    #[error("ssh does not know the host key of {uri} (or the key has changed): after checking it, add it to ~/.ssh/known_hosts, e.g. `{keyscan} >> ~/.ssh/known_hosts` (ssh said: {detail})")]
    SshHostKey {
        uri: String,
        keyscan: String,
        detail: String,
    },
    #[error("ssh authentication as {login} was refused for {uri}: use a key the host accepts, e.g. pass keyfile=PATH in the URI or add the key to ssh-agent (passwords are never asked) (ssh said: {detail})")]
    SshAuth {
        uri: String,
        login: String,
        detail: String,
    },
    #[error("the {0} backend is not available: {1}")]
    BackendUnavailable(&'static str, String),
    #[error("no VM named {0:?} on this connection (`dismount_iso_qemu scan` lists them)")]
    NoSuchDomain(String),
    #[error("VM {0:?} is not running")]
    DomainNotRunning(String),
    #[error(
        "the guest agent of {0:?} is not connected (is qemu-guest-agent running inside the guest?)"
    )]
    AgentNotConnected(String),
    #[error("the guest agent of {0:?} sent a reply libvirt could not read, and libvirt ignores it until the guest reopens its channel (restart qemu-guest-agent in the guest)")]
    AgentBroken(String),
    #[error("the guest agent of {0:?} did not answer in time")]
    AgentTimeout(String),
    #[error("{program} did not finish within {seconds} s in {domain:?} (the guest agent answers; the program keeps running)")]
    ExecUnfinished {
        domain: String,
        program: String,
        seconds: u64,
    },
    #[error("the guest agent of {domain:?} has {command} disabled (see qemu-ga's --allow-rpcs/--block-rpcs in the guest)")]
    AgentCommandDisabled { domain: String, command: String },
    #[error("guest agent command {command} failed in {domain:?}: {message}")]
    AgentCommandFailed {
        domain: String,
        command: String,
        message: String,
    },
    #[error("the guest holds the tray of {drive} in {domain:?} locked (the disc is in use inside the guest)")]
    TrayLocked { domain: String, drive: String },
    #[error("{operation} failed: {detail}")]
    Failed {
        operation: &'static str,
        detail: String,
    },
}

impl HvError {
    /// A connection-level failure: the command cannot run at all (exit code 2).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            HvError::Unreachable { .. }
                | HvError::PermissionDenied { .. }
                | HvError::BadUri { .. }
                | HvError::ConnectTimeout { .. }
                | HvError::SshHostKey { .. }
                | HvError::SshAuth { .. }
                | HvError::SshUnreachable { .. }
                | HvError::BackendUnavailable(..)
        )
    }

    /// The same error about `uri` instead of the URI the adapter was given (the port adds
    /// parameters the user never wrote; the line names the URI as they gave it).
    fn about(self, uri: &str) -> HvError {
        let uri = uri.to_string();
        match self {
            HvError::Unreachable { detail, .. } => HvError::Unreachable { uri, detail },
            HvError::PermissionDenied { detail, .. } => HvError::PermissionDenied { uri, detail },
            HvError::BadUri { detail, .. } => HvError::BadUri { uri, detail },
            HvError::ConnectTimeout { seconds, .. } => HvError::ConnectTimeout { uri, seconds },
            HvError::SshHostKey {
                keyscan, detail, ..
            } => HvError::SshHostKey {
                uri,
                keyscan,
                detail,
            },
            HvError::SshAuth { login, detail, .. } => HvError::SshAuth { uri, login, detail },
            HvError::SshUnreachable { detail, .. } => HvError::SshUnreachable { uri, detail },
            other => other,
        }
    }

    /// The exit code this failure ends a command with: no connection, or a VM that does
    /// not exist, is bad input (2); anything else happened while working (1).
    /// A connection lost after the work began says so: "the connection was lost while
    /// {what}: …". Other errors are unchanged.
    pub fn during(self, what: &str) -> HvError {
        match self {
            HvError::Unreachable { uri, detail } => HvError::Unreachable {
                uri,
                detail: format!("the connection was lost while {what}: {detail}"),
            },
            other => other,
        }
    }

    pub fn exit_code(&self) -> u8 {
        if self.is_connection() || matches!(self, HvError::NoSuchDomain(_)) {
            exit::USAGE
        } else {
            exit::PARTIAL
        }
    }
}

impl From<HvError> for Failure {
    fn from(e: HvError) -> Failure {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

pub type HvResult<T> = Result<T, HvError>;

/// The port. Implementations must be usable from many probe threads at once.
pub trait Hypervisor: Send + Sync {
    /// The URI of the open connection, as libvirt names it (e.g. `qemu:///system`).
    fn uri(&self) -> String;

    /// Every domain (running, paused, shut off, all) with its cheap facts, one bulk call.
    fn list_domains(&self) -> HvResult<Vec<DomainInfo>>;

    /// The domain XML of one domain.
    fn domain_xml(&self, domain: &str, scope: XmlScope) -> HvResult<String>;

    /// Domain XML for many domains; adapters for which one call per domain is costly
    /// (a process per call) override this with a batch.
    fn domain_xmls(&self, domains: &[String], scope: XmlScope) -> Vec<HvResult<String>> {
        domains.iter().map(|d| self.domain_xml(d, scope)).collect()
    }

    /// One raw guest agent call. `command` is the whole QGA request
    /// (`{"execute": ..., "arguments": ...}`); the result is the reply's `return` member.
    /// `timeout` is handed to libvirt (rounded up to whole seconds); the caller
    /// enforces its own deadline on top.
    fn agent_command(
        &self,
        domain: &str,
        command: &serde_json::Value,
        timeout: Duration,
    ) -> HvResult<serde_json::Value>;

    /// Change a device in place (media change of a CD-ROM: insert or eject).
    /// `force` forces the tray open even when the guest has locked it.
    fn update_device(
        &self,
        domain: &str,
        device_xml: &str,
        scope: ChangeScope,
        force: bool,
    ) -> HvResult<()>;

    /// Add a device (a CD-ROM drive to a VM that has none).
    fn attach_device(&self, domain: &str, device_xml: &str, scope: ChangeScope) -> HvResult<()>;

    /// Volumes of every active storage pool.
    fn list_volumes(&self) -> HvResult<Vec<StorageVolume>>;

    /// The host's logical CPU count (`virNodeGetInfo`, `virsh nodeinfo`): what shares
    /// of the host are measured against, on a remote host too. `None` when the driver
    /// cannot say.
    fn host_cpus(&self) -> Option<u32> {
        None
    }

    /// Statistics of every domain in one bulk call: `state` and `cpu-total` plus
    /// `groups`. libvirt is told not to wait for a domain whose job is busy
    /// (`VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT`): such a domain comes back with the
    /// figures that need no job, and the others are not held up. A domain libvirt could
    /// not read at all is missing from the result.
    ///
    /// The default serves adapters without a bulk call: the listing's facts (state, CPU
    /// time, memory, vCPU count) and nothing the groups add.
    fn domain_stats(&self, groups: StatsGroups) -> HvResult<Vec<DomainStats>> {
        Ok(self
            .list_domains()?
            .iter()
            .map(|d| DomainStats::from_info(d, groups))
            .collect())
    }
}

/// Which adapter to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// libvirt's C API through the `virt` crate: one connection, no process per VM.
    Native,
    /// The `virsh` command (LC_ALL=C), for hosts or builds without the native library.
    Virsh,
}

impl Backend {
    /// Native when this build has it, else virsh.
    pub fn default_for_build() -> Backend {
        if cfg!(feature = "native") {
            Backend::Native
        } else {
            Backend::Virsh
        }
    }
}

/// How a connection is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Read-write: what every command but `serve --read-only` uses.
    #[default]
    ReadWrite,
    /// libvirt's read-only connection (`virConnectOpenReadOnly`, `virsh -r`): listing,
    /// XML and statistics work; guest agent calls and device changes are refused.
    ReadOnly,
}

/// Open a read-write connection with the chosen adapter. `uri` `None` means libvirt's
/// default.
pub fn open(backend: Backend, uri: Option<&str>) -> HvResult<Box<dyn Hypervisor>> {
    open_with(backend, uri, Access::ReadWrite)
}

/// Open a connection with the chosen adapter and access, within
/// [`remote::DEFAULT_CONNECT_TIMEOUT`].
pub fn open_with(
    backend: Backend,
    uri: Option<&str>,
    access: Access,
) -> HvResult<Box<dyn Hypervisor>> {
    open_within(backend, uri, access, remote::DEFAULT_CONNECT_TIMEOUT)
}

/// Open a connection with the chosen adapter and access; an open that takes longer than
/// `connect_timeout` fails with [`HvError::ConnectTimeout`]. A URI whose transport runs
/// `ssh` gets `no_tty=1` unless it sets `no_tty` (see [`remote`]): ssh never prompts.
pub fn open_within(
    backend: Backend,
    uri: Option<&str>,
    access: Access,
    connect_timeout: Duration,
) -> HvResult<Box<dyn Hypervisor>> {
    let given = uri;
    let uri = uri.map(remote::without_prompts);
    let uri = uri.as_deref();
    let opened: HvResult<Box<dyn Hypervisor>> = match backend {
        #[cfg(feature = "native")]
        Backend::Native => native::NativeHypervisor::open_within(uri, access, connect_timeout)
            .map(|h| Box::new(h) as Box<dyn Hypervisor>),
        #[cfg(not(feature = "native"))]
        Backend::Native => Err(HvError::BackendUnavailable(
            "native",
            "this build was made without the `native` cargo feature; use --backend virsh or rebuild with default features".to_string(),
        )),
        Backend::Virsh => virsh::VirshHypervisor::open_within(uri, access, connect_timeout)
            .map(|h| Box::new(h) as Box<dyn Hypervisor>),
    };
    match (given, uri) {
        (Some(given), Some(used)) if given != used => opened.map_err(|e| e.about(given)),
        _ => opened,
    }
}

/// The one way a command finds the VM it was asked about: by its exact name. An unknown
/// name is [`HvError::NoSuchDomain`], the same error (and exit code 2) for every command.
pub fn find_domain(hv: &dyn Hypervisor, name: &str) -> HvResult<DomainInfo> {
    hv.list_domains()?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| HvError::NoSuchDomain(name.to_string()))
}

/// The most characters of libvirt's or a guest's text an error carries: libvirt quotes a
/// reply it could not parse whole (up to 10 MiB), and a guest picks its error texts.
pub const MAX_DETAIL: usize = 1000;

/// The `return` member of a guest agent's reply text, as both adapters receive it from
/// libvirt. libvirt turns `error` replies into errors itself; one that slips through is
/// classified like libvirt's own messages, never mistaken for success.
pub fn agent_reply(domain: &str, command: &str, reply: &str) -> HvResult<serde_json::Value> {
    let failed = |message: String| HvError::AgentCommandFailed {
        domain: domain.to_string(),
        command: command.to_string(),
        message,
    };
    let trimmed = reply.trim();
    let mut value: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
        let shown: String = trimmed.chars().take(120).collect();
        failed(format!("the agent's reply is not JSON ({e}): {shown:?}"))
    })?;
    if let Some(ret) = value.get_mut("return") {
        return Ok(ret.take());
    }
    if let Some(err) = value.get("error") {
        let desc = err
            .get("desc")
            .and_then(|d| d.as_str())
            .or_else(|| err.get("class").and_then(|c| c.as_str()))
            .unwrap_or("unknown error");
        return Err(classify_agent_message(domain, command, desc));
    }
    Err(failed(
        "the agent's reply has no \"return\" member".to_string(),
    ))
}

/// The `<target dev='…'/>` of a `<disk>` device XML: the drive a media change is about.
pub fn device_target(device_xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(device_xml).ok()?;
    doc.root_element()
        .children()
        .find(|n| n.has_tag_name("target"))
        .and_then(|n| n.attribute("dev"))
        .map(str::to_string)
}

/// A failed media change that means the guest holds the tray locked, as
/// [`HvError::TrayLocked`]; `None` for any other failure. libvirt says "timed out waiting
/// to open tray of 'sda'"; QEMU says "Device '…' is locked and force was not specified,
/// wait for tray to open and try again". The drive comes from the device XML, else from
/// the message.
pub fn tray_locked(domain: &str, device_xml: &str, message: &str) -> Option<HvError> {
    let lower = message.to_lowercase();
    let locked = lower.contains("tray")
        && (lower.contains("timed out") || lower.contains("locked"))
        || (lower.contains("is locked") && lower.contains("force"));
    if !locked {
        return None;
    }
    let from_message = message
        .find("tray of '")
        .map(|i| &message[i + "tray of '".len()..])
        .and_then(|rest| rest.split_once('\'').map(|(d, _)| d.to_string()))
        .filter(|d| !d.is_empty());
    Some(HvError::TrayLocked {
        domain: domain.to_string(),
        drive: device_target(device_xml)
            .or(from_message)
            .unwrap_or_else(|| "the CD-ROM drive".to_string()),
    })
}

/// The agent timeout libvirt takes: whole seconds, rounded up, at least 1.
pub fn agent_timeout_secs(timeout: Duration) -> u32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    secs.clamp(1, i32::MAX as u64) as u32
}

/// Name of the QGA command in a request, for error messages.
pub fn command_name(command: &serde_json::Value) -> String {
    command
        .get("execute")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string()
}

/// Classify an agent-related libvirt error message. Both real adapters get text from
/// libvirt (the native one alongside an error code), so the wording rules live here once.
pub fn classify_agent_message(domain: &str, command: &str, message: &str) -> HvError {
    let lower = message.to_ascii_lowercase();
    // libvirt 9.0's wordings for "no agent to talk to" (none configured, none started,
    // gone mid-command, or marked broken after bad data until the guest reconnects).
    if lower.contains("not available due to an error")
        || lower.contains("cannot parse json")
        || lower.contains("isn't an object")
        || lower.contains("unknown json reply")
        || lower.contains("no complete agent response")
    {
        // Garbage from the guest: libvirt refused that reply and, after it, the agent.
        HvError::AgentBroken(domain.to_string())
    } else if lower.contains("not connected")
        || lower.contains("agent is not configured")
        || lower.contains("agent disappeared")
    {
        HvError::AgentNotConnected(domain.to_string())
    } else if lower.contains("has been disabled") || lower.contains("commanddisabled") {
        HvError::AgentCommandDisabled {
            domain: domain.to_string(),
            command: command.to_string(),
        }
    } else if lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("not available for now")
        || lower.contains("agent is not responding")
        || lower.contains("synchroniz")
        || lower.contains("resync")
        || lower.contains("unresponsive")
    {
        HvError::AgentTimeout(domain.to_string())
    } else if lower.contains("domain is not running") {
        HvError::DomainNotRunning(domain.to_string())
    } else if lower.contains("domain not found") || lower.contains("failed to get domain") {
        HvError::NoSuchDomain(domain.to_string())
    } else {
        HvError::AgentCommandFailed {
            domain: domain.to_string(),
            command: command.to_string(),
            message: clip(message.trim(), MAX_DETAIL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_name_the_uri_as_the_user_gave_it() {
        let given = "qemu+ssh://h/system";
        let used = "qemu+ssh://h/system?no_tty=1";
        let e = remote::classify(used, "Host key verification failed.")
            .unwrap()
            .about(given);
        assert!(e.to_string().contains("of qemu+ssh://h/system (or"), "{e}");
        assert!(!e.to_string().contains("no_tty"), "{e}");
        let e = remote::timed_out(used, Duration::from_secs(10)).about(given);
        assert!(
            !e.to_string().contains("no_tty") && e.is_connection(),
            "{e}"
        );
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn the_definition_tag_follows_drives_memory_and_vcpus_only() {
        let tag = |pairs: &[(&'static str, &str)]| {
            definition_tag(pairs.iter().map(|(k, v)| (*k, v.to_string())))
        };
        let base = [
            ("state.state", "5"),
            ("balloon.maximum", "131072"),
            ("vcpu.maximum", "1"),
            ("block.count", "1"),
            ("block.0.name", "sda"),
            ("block.0.path", "/isos/a.iso"),
            ("cpu.time", "20710000000"),
            ("block.0.capacity", "1000"),
        ];
        let t = tag(&base);
        let with = |key: &str, value: &'static str| {
            let mut v = base;
            v.iter_mut().find(|(k, _)| *k == key).unwrap().1 = value;
            tag(&v)
        };
        // Noise of a shut-off domain leaves it alone ...
        assert_eq!(with("cpu.time", "1"), t);
        assert_eq!(with("block.0.capacity", "2000"), t);
        // ... every change of what the definition says moves it.
        assert_ne!(with("block.0.path", "/isos/b.iso"), t);
        assert_ne!(with("block.0.name", "sdb"), t);
        assert_ne!(with("balloon.maximum", "262144"), t);
        assert_ne!(with("vcpu.maximum", "2"), t);
        // Key and value cannot trade characters unnoticed.
        assert_ne!(tag(&[("block.0.path", "x")]), tag(&[("block.0.pat", "hx")]));
        // Stable across runs: it is stored in the cache file.
        assert_eq!(tag(&[("a", "b")]), 0xec8b_8c82_c375_96fb);
    }

    #[test]
    fn unknown_vms_and_connections_are_usage_errors() {
        assert_eq!(
            Failure::from(HvError::NoSuchDomain("x".into())).code,
            exit::USAGE
        );
        let unreachable = HvError::Unreachable {
            uri: "qemu:///system".into(),
            detail: "no socket".into(),
        };
        assert_eq!(Failure::from(unreachable).code, exit::USAGE);
        assert_eq!(
            Failure::from(HvError::AgentTimeout("x".into())).code,
            exit::PARTIAL
        );
    }

    #[test]
    fn replies_yield_their_return_member() {
        assert_eq!(
            agent_reply("vm", "guest-ping", r#"{"return":{}}"#).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            agent_reply("vm", "guest-info", " {\"return\":{\"version\":\"7.2\"}}\n").unwrap()
                ["version"],
            "7.2"
        );
        assert!(matches!(
            agent_reply("vm", "guest-ping", "not json"),
            Err(HvError::AgentCommandFailed { .. })
        ));
        assert!(matches!(
            agent_reply("vm", "guest-ping", r#"{"nothing":1}"#),
            Err(HvError::AgentCommandFailed { .. })
        ));
        assert!(matches!(
            agent_reply(
                "vm",
                "guest-exec",
                r#"{"error":{"class":"GenericError","desc":"The command guest-exec has been disabled for this instance"}}"#
            ),
            Err(HvError::AgentCommandDisabled { .. })
        ));
        // A huge non-JSON reply is quoted only in part.
        let long = "x".repeat(10_000);
        let Err(HvError::AgentCommandFailed { message, .. }) = agent_reply("vm", "c", &long) else {
            panic!("not JSON must fail");
        };
        assert!(message.len() < 400, "{}", message.len());
    }

    #[test]
    fn tray_locks_are_recognised_once_for_every_adapter() {
        let drive = "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>";
        assert_eq!(
            tray_locked(
                "vm",
                drive,
                "internal error: timed out waiting to open tray of 'ua-sda'"
            ),
            Some(HvError::TrayLocked {
                domain: "vm".into(),
                drive: "sda".into()
            })
        );
        assert_eq!(
            tray_locked(
                "vm",
                "not xml",
                "error: internal error: timed out waiting to open tray of 'hdc'"
            ),
            Some(HvError::TrayLocked {
                domain: "vm".into(),
                drive: "hdc".into()
            })
        );
        assert!(tray_locked("vm", drive, "internal error: unable to execute QEMU command 'blockdev-open-tray': Device 'ua-sda' is locked and force was not specified, wait for tray to open and try again").is_some());
        assert_eq!(
            tray_locked(
                "vm",
                "<x/>",
                "Device 'x' is locked and force was not specified"
            ),
            Some(HvError::TrayLocked {
                domain: "vm".into(),
                drive: "the CD-ROM drive".into()
            })
        );
        assert_eq!(tray_locked("vm", drive, "Domain not found"), None);
        assert_eq!(device_target(drive).as_deref(), Some("sda"));
        assert_eq!(device_target("not xml"), None);
    }

    #[test]
    fn classifies_agent_messages() {
        let d = "vm";
        assert_eq!(
            classify_agent_message(
                d,
                "guest-ping",
                "Guest agent is not responding: QEMU guest agent is not connected"
            ),
            HvError::AgentNotConnected("vm".into())
        );
        assert!(matches!(
            classify_agent_message(
                d,
                "guest-exec",
                "internal error: unable to execute QEMU agent command 'guest-exec': The command guest-exec has been disabled for this instance"
            ),
            HvError::AgentCommandDisabled { command, .. } if command == "guest-exec"
        ));
        assert_eq!(
            classify_agent_message(
                d,
                "guest-ping",
                "Guest agent is not responding: Guest agent not available for now"
            ),
            HvError::AgentTimeout("vm".into())
        );
        assert_eq!(
            classify_agent_message(d, "guest-ping", "operation timed out: some reason"),
            HvError::AgentTimeout("vm".into())
        );
        assert!(matches!(
            classify_agent_message(d, "guest-file-open", "internal error: unable to execute QEMU agent command 'guest-file-open': failed to open file '/nope': No such file or directory"),
            HvError::AgentCommandFailed { .. }
        ));
        // Texts libvirt 9.0 printed through virsh on the harness, and from its sources.
        assert_eq!(
            classify_agent_message(
                d,
                "guest-ping",
                "Requested operation is not valid: domain is not running"
            ),
            HvError::DomainNotRunning("vm".into())
        );
        assert_eq!(
            classify_agent_message(d, "guest-ping", "failed to get domain 'vm'"),
            HvError::NoSuchDomain("vm".into())
        );
        // The agent went away mid-call (guest shutting down, qemu-ga restarted): the
        // agent is gone, not slow, even though one wording says "timed out".
        for text in [
            "Guest agent is not responding: Guest agent disappeared while executing command",
            "guest agent command timed out: Guest agent disappeared while executing command",
        ] {
            assert_eq!(
                classify_agent_message(d, "guest-ping", text),
                HvError::AgentNotConnected("vm".into())
            );
        }
        assert!(matches!(
            classify_agent_message(d, "guest-ping", "internal error: unable to execute QEMU agent command 'guest-ping': Parameter 'pad' is unexpected"),
            HvError::AgentCommandFailed { .. }
        ));
        assert!(matches!(
            classify_agent_message(d, "guest-ping", "this function is not supported by the connection driver: virDomainQemuAgentCommand"),
            HvError::AgentCommandFailed { .. }
        ));
    }

    #[test]
    fn classifies_libvirt_9_agent_wordings() {
        // Measured against the harness's lying agent (bad-json modes, a reply over 10 MiB).
        for broken in [
            "Guest agent is not responding: QEMU guest agent is not available due to an error",
            "internal error: cannot parse json {\"return\": [}: parse error: unallowed token at this point in JSON text",
            "internal error: Parsed JSON reply '[1]' isn't an object",
            "internal error: Unknown JSON reply '{\"x\": 1}'",
            "No complete agent response found in 10485760 bytes: Numerical result out of range",
        ] {
            assert_eq!(
                classify_agent_message("vm", "guest-ping", broken),
                HvError::AgentBroken("vm".into()),
                "{broken}"
            );
        }
        for gone in [
            "argument unsupported: QEMU guest agent is not configured",
            "internal error: Guest agent disappeared while executing command",
        ] {
            assert_eq!(
                classify_agent_message("vm", "guest-ping", gone),
                HvError::AgentNotConnected("vm".into()),
                "{gone}"
            );
        }
        assert_eq!(
            classify_agent_message(
                "vm",
                "guest-ping",
                "Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainQemuAgentCommand)"
            ),
            HvError::AgentTimeout("vm".into())
        );
        assert!(matches!(
            classify_agent_message(
                "vm",
                "guest-get-osinfo",
                "internal error: unable to execute QEMU agent command 'guest-get-osinfo': The command has been disabled for this instance"
            ),
            HvError::AgentCommandDisabled { .. }
        ));
        // qemu-ga 7.2 (--block-rpcs), as libvirt 9.0 relays it.
        assert!(matches!(
            classify_agent_message(
                "vm",
                "guest-get-osinfo",
                "internal error: unable to execute QEMU agent command 'guest-get-osinfo': Command guest-get-osinfo has been disabled"
            ),
            HvError::AgentCommandDisabled { .. }
        ));
    }

    #[test]
    fn state_codes_round_trip() {
        // Every libvirt code maps to its own state, and unknown codes to "no state".
        let states: Vec<DomainState> = (0..8).map(DomainState::from_libvirt).collect();
        for (i, a) in states.iter().enumerate() {
            for b in &states[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(states[1], DomainState::Running);
        assert_eq!(states[5], DomainState::ShutOff);
        assert_eq!(DomainState::from_libvirt(99), DomainState::NoState);
        assert!(DomainState::Running.agent_may_answer());
        assert!(!DomainState::Paused.agent_may_answer());
        assert!(DomainState::Paused.is_active());
        assert!(!DomainState::ShutOff.is_active());
    }
}
