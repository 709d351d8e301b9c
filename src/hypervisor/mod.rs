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

pub mod fake;
#[cfg(feature = "native")]
pub mod libvirt;
pub mod virsh;

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
    #[error("the guest agent of {0:?} did not answer in time")]
    AgentTimeout(String),
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
                | HvError::BackendUnavailable(..)
        )
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

/// Open a connection with the chosen adapter. `uri` `None` means libvirt's default.
pub fn open(backend: Backend, uri: Option<&str>) -> HvResult<Box<dyn Hypervisor>> {
    match backend {
        #[cfg(feature = "native")]
        Backend::Native => Ok(Box::new(libvirt::NativeHypervisor::open(uri)?)),
        #[cfg(not(feature = "native"))]
        Backend::Native => Err(HvError::BackendUnavailable(
            "native",
            "this build was made without the `native` cargo feature; use --backend virsh or rebuild with default features".to_string(),
        )),
        Backend::Virsh => Ok(Box::new(virsh::VirshHypervisor::open(uri)?)),
    }
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
    if lower.contains("not connected")
        || lower.contains("agent is not configured")
        || lower.contains("agent disappeared")
        || lower.contains("not available due to an error")
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
            message: message.trim().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for gone in [
            "argument unsupported: QEMU guest agent is not configured",
            "Guest agent is not responding: QEMU guest agent is not available due to an error",
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
        for code in 0..8 {
            let s = DomainState::from_libvirt(code);
            assert!(!s.as_str().is_empty());
        }
        assert!(DomainState::Running.agent_may_answer());
        assert!(!DomainState::Paused.agent_may_answer());
        assert!(DomainState::Paused.is_active());
        assert!(!DomainState::ShutOff.is_active());
    }
}
