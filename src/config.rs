//! Settings, resolved once: flags beat environment beat the config file beat defaults.
//!
//! The config file is TOML in the user's config directory
//! (`$XDG_CONFIG_HOME/dismount_iso_qemu/config.toml`, or `--config FILE`):
//!
//! ```toml
//! uri = "qemu:///system"
//! backend = "native"      # or "virsh"
//! probe_timeout = 5       # seconds: the scan's deadline for guest agents
//! agent_timeout = 5       # seconds: one agent call of mount/eject/edit/cat/pull/push
//! connect_timeout = 10    # seconds an open of the connection may take
//! cache_ttl = 60          # seconds an OS answer is reused
//! definition_ttl = 600    # seconds a shut-off VM's XML facts are reused (0: never)
//! stats_ttl = 0           # seconds a host's VM list, states, memory and CPU times are
//!                         # reused by scan (0: asked every scan)
//! jobs = 32
//! max_size = "64M"        # largest file edit/cat/pull/push move through the agent
//! transfer_timeout = 600  # seconds one download or upload may take in all
//! min_rate = "32K"        # bytes per second a transfer must keep up (over 30 s)
//! web_config_file = "web.yml"  # serve: TLS and basic auth (relative to this file)
//! collect = ["block", "interface", "balloon", "vcpu", "compat"]  # serve's families
//!
//! [hosts.kvm1]            # a fleet: `--hosts kvm1,kvm2` or `--all-hosts` choose among them
//! uri = "qemu+ssh://root@kvm1/system"
//! [hosts.kvm2]
//! uri = "qemu+ssh://root@kvm2/system"
//! backend = "virsh"       # optional, per host; so are connect_timeout, probe_timeout,
//! connect_timeout = 30    # agent_timeout, cache_ttl, definition_ttl and stats_ttl
//! ```
//!
//! The timeouts are named for what they bound: `scan_deadline` (`--probe-timeout`) is the
//! whole scan's wait for guest agents (scan, the menu's table, each background scan of
//! `serve`); `agent_timeout` is what libvirt may wait for one agent call a command makes
//! before it touches anything (the capability check of edit/cat/pull/push, every call of
//! an eject's guest-side unmount), so a frozen agent fails fast. `serve`'s staleness
//! threshold is its own flag, derived from its interval and the scan deadline by default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::hypervisor::Backend;
use crate::snapshot::telemetry::Families;
use crate::units;

pub const DEFAULT_SCAN_DEADLINE_SECS: f64 = 5.0;
pub const DEFAULT_AGENT_TIMEOUT_SECS: f64 = 5.0;
pub const DEFAULT_CACHE_TTL_SECS: u64 = 60;
pub const DEFAULT_JOBS: usize = 32;
/// How long a shut-off domain's XML facts are reused by default, seconds. Its definition
/// tag already catches every change of a drive, its ISO, memory or vCPUs; the TTL bounds
/// what the tag cannot see (the libosinfo id, a device's bus or model, interface details).
pub const DEFAULT_DEFINITION_TTL_SECS: u64 = 600;
/// Default size limit of a file moved through the agent.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;
/// Default budget of one transfer, seconds (see `transfer::Pace`).
pub const DEFAULT_TRANSFER_TIMEOUT_SECS: u64 = 600;
/// Default progress floor of a transfer, bytes per second.
pub const DEFAULT_MIN_RATE: u64 = 32 << 10;
/// The config keys, for error messages.
const KEYS: &str = "uri, backend, probe_timeout, agent_timeout, connect_timeout, cache_ttl, definition_ttl, stats_ttl, jobs, max_size, transfer_timeout, min_rate, web_config_file, collect, hosts";

/// The settings a user can give — in the config file, or as flags and environment
/// variables. Unknown keys in the file are an error, so typos are noticed.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub uri: Option<String>,
    pub backend: Option<Backend>,
    pub probe_timeout: Option<f64>,
    pub agent_timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
    pub cache_ttl: Option<u64>,
    pub definition_ttl: Option<u64>,
    pub stats_ttl: Option<u64>,
    pub jobs: Option<usize>,
    pub max_size: Option<String>,
    pub transfer_timeout: Option<u64>,
    pub min_rate: Option<String>,
    /// `serve`'s web configuration file (TLS, basic auth); `serve --web.config.file`
    /// beats it. A relative path is taken from the config file's folder.
    pub web_config_file: Option<PathBuf>,
    /// `serve`'s metric families (`block`, `interface`, `balloon`, `vcpu`, `compat`,
    /// `all`, `none`); `serve --collect` beats it. Default: all.
    pub collect: Option<Vec<String>>,
    /// Named hosts (`[hosts.NAME]`), for `--hosts` and `--all-hosts`.
    pub hosts: Option<BTreeMap<String, HostConfig>>,
}

/// One `[hosts.NAME]` table of the config file. Every optional setting is this host's
/// own and beats the global one, flags included (a host's known needs — virsh where the
/// native library cannot go, a longer connect over a slow link — are not undone by a
/// flag meant for the rest).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub uri: String,
    pub backend: Option<Backend>,
    pub connect_timeout: Option<f64>,
    pub probe_timeout: Option<f64>,
    pub agent_timeout: Option<f64>,
    pub cache_ttl: Option<u64>,
    pub definition_ttl: Option<u64>,
    pub stats_ttl: Option<u64>,
}

/// The keys of a `[hosts.NAME]` table.
const HOST_KEYS: &str =
    "uri, backend, connect_timeout, probe_timeout, agent_timeout, cache_ttl, definition_ttl, stats_ttl";

/// A host's own timeouts and TTLs, checked ([`HostConfig`] gives them): `None` keeps the
/// global setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTuning {
    pub connect_timeout: Option<Duration>,
    pub scan_deadline: Option<Duration>,
    pub agent_timeout: Option<Duration>,
    pub cache_ttl: Option<Duration>,
    pub definition_ttl: Option<Duration>,
    pub stats_ttl: Option<Duration>,
}

impl HostConfig {
    /// Its timeouts and TTLs, each checked like the global one.
    pub fn tuning(&self) -> Result<HostTuning, String> {
        let secs = |what: &str, v: Option<f64>| v.map(|v| seconds(what, v)).transpose();
        let ttl = |what: &str, v: Option<u64>| v.map(|v| ttl(what, v)).transpose();
        Ok(HostTuning {
            connect_timeout: secs("connect timeout", self.connect_timeout)?,
            scan_deadline: secs("probe timeout", self.probe_timeout)?,
            agent_timeout: secs("agent timeout", self.agent_timeout)?,
            cache_ttl: ttl("cache TTL", self.cache_ttl)?,
            definition_ttl: ttl("definition TTL", self.definition_ttl)?,
            stats_ttl: ttl("statistics TTL", self.stats_ttl)?,
        })
    }
}

impl Settings {
    /// These settings for one host: its URI and backend, and its own timeouts and TTLs
    /// where it has them.
    pub fn for_host(&self, uri: &str, backend: Backend, t: &HostTuning) -> Settings {
        Settings {
            uri: Some(uri.to_string()),
            backend,
            connect_timeout: t.connect_timeout.unwrap_or(self.connect_timeout),
            scan_deadline: t.scan_deadline.unwrap_or(self.scan_deadline),
            agent_timeout: t.agent_timeout.unwrap_or(self.agent_timeout),
            cache_ttl: t.cache_ttl.unwrap_or(self.cache_ttl),
            definition_ttl: t.definition_ttl.unwrap_or(self.definition_ttl),
            stats_ttl: t.stats_ttl.unwrap_or(self.stats_ttl),
            ..self.clone()
        }
    }
}

/// The settings given on the command line or in the environment (clap reads both), and
/// which config file to read.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub values: FileConfig,
    pub config_file: Option<PathBuf>,
}

/// The resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None`: libvirt's own default.
    pub uri: Option<String>,
    pub backend: Backend,
    /// How long a scan waits for guest agents before it prints without them.
    pub scan_deadline: Duration,
    /// What libvirt may wait for one agent call of a command (mount, eject, edit, cat,
    /// pull, push) before anything is changed.
    pub agent_timeout: Duration,
    /// What opening the connection may take (libvirt itself has no limit: a host that
    /// accepts and never answers would hold the open forever).
    pub connect_timeout: Duration,
    pub cache_ttl: Duration,
    /// How long a shut-off domain's XML facts are reused while its definition tag holds.
    pub definition_ttl: Duration,
    /// How long `scan` reuses a host's domain list and statistics (0: never).
    pub stats_ttl: Duration,
    pub jobs: usize,
    pub cache_path: Option<PathBuf>,
    /// Largest file moved through the guest agent, bytes.
    pub max_size: u64,
    /// What one download or upload may take in all.
    pub transfer_timeout: Duration,
    /// Bytes per second a transfer must keep up, measured over 30 s.
    pub min_rate: u64,
    /// `serve`'s web configuration file from the config file, if any.
    pub web_config_file: Option<PathBuf>,
    /// `serve`'s metric families from the config file (all unless it says otherwise).
    pub collect: Families,
    /// The config file's named hosts, by name.
    pub hosts: BTreeMap<String, HostConfig>,
}

/// The default config file location.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("dismount_iso_qemu").join("config.toml"))
}

/// Read a config file. A missing default file is fine; a missing explicit one, or a file
/// that does not parse, is an error naming the file.
pub fn read_file(path: &Path, explicit: bool) -> Result<FileConfig, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            format!(
                "config file {}{}: {} (keys: {KEYS})",
                path.display(),
                line.map(|l| format!(" line {l}")).unwrap_or_default(),
                e.message().replace('\n', " ")
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(format!("cannot read config file {}: {e}", path.display())),
    }
}

fn env_uri() -> Option<String> {
    ["LIBVIRT_URI", "LIBVIRT_DEFAULT_URI"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
}

/// Resolve: flag/env (already merged by clap) > libvirt's env > file > default.
pub fn resolve(o: &Overrides) -> Result<Settings, String> {
    let (path, explicit) = match &o.config_file {
        Some(p) => (Some(p.clone()), true),
        None => (default_config_path(), false),
    };
    let mut file = match &path {
        Some(p) => read_file(p, explicit)?,
        None => FileConfig::default(),
    };
    if let (Some(w), Some(dir)) = (
        &file.web_config_file,
        path.as_deref().and_then(Path::parent),
    ) {
        if w.is_relative() {
            file.web_config_file = Some(dir.join(w));
        }
    }
    resolve_with(o, env_uri(), file)
}

/// The pure part of [`resolve`].
pub fn resolve_with(
    o: &Overrides,
    env_uri: Option<String>,
    file: FileConfig,
) -> Result<Settings, String> {
    let o = &o.values;
    let scan_deadline = seconds(
        "probe timeout",
        o.probe_timeout
            .or(file.probe_timeout)
            .unwrap_or(DEFAULT_SCAN_DEADLINE_SECS),
    )?;
    let agent_timeout = seconds(
        "agent timeout",
        o.agent_timeout
            .or(file.agent_timeout)
            .unwrap_or(DEFAULT_AGENT_TIMEOUT_SECS),
    )?;
    let connect_timeout = seconds(
        "connect timeout",
        o.connect_timeout
            .or(file.connect_timeout)
            .unwrap_or(crate::hypervisor::remote::DEFAULT_CONNECT_TIMEOUT.as_secs_f64()),
    )?;
    let jobs = o.jobs.or(file.jobs).unwrap_or(DEFAULT_JOBS);
    if jobs == 0 || jobs > 1024 {
        return Err(format!("jobs must be between 1 and 1024, got {jobs}"));
    }
    let cache_ttl = o
        .cache_ttl
        .or(file.cache_ttl)
        .unwrap_or(DEFAULT_CACHE_TTL_SECS);
    let cache_ttl = ttl("cache TTL", cache_ttl)?;
    let definition_ttl = o
        .definition_ttl
        .or(file.definition_ttl)
        .unwrap_or(DEFAULT_DEFINITION_TTL_SECS);
    let definition_ttl = ttl("definition TTL", definition_ttl)?;
    let stats_ttl = ttl(
        "statistics TTL",
        o.stats_ttl.or(file.stats_ttl).unwrap_or(0),
    )?;
    Ok(Settings {
        uri: o.uri.clone().or(env_uri).or(file.uri),
        backend: o
            .backend
            .or(file.backend)
            .unwrap_or_else(Backend::default_for_build),
        scan_deadline,
        agent_timeout,
        connect_timeout,
        cache_ttl,
        definition_ttl,
        stats_ttl,
        jobs,
        cache_path: default_cache_path(),
        transfer_timeout: {
            let t = o
                .transfer_timeout
                .or(file.transfer_timeout)
                .unwrap_or(DEFAULT_TRANSFER_TIMEOUT_SECS);
            if !(1..=86_400).contains(&t) {
                return Err(format!(
                    "transfer timeout must be between 1 and 86400 seconds, got {t}"
                ));
            }
            Duration::from_secs(t)
        },
        min_rate: match o.min_rate.as_ref().or(file.min_rate.as_ref()) {
            Some(r) => units::parse_rate(r).map_err(|e| format!("min rate: {e}"))?,
            None => DEFAULT_MIN_RATE,
        },
        web_config_file: o.web_config_file.clone().or(file.web_config_file.clone()),
        collect: match o.collect.as_ref().or(file.collect.as_ref()) {
            Some(names) => Families::parse(names.iter().map(String::as_str))
                .map_err(|e| format!("collect: {e}"))?,
            None => Families::ALL,
        },
        hosts: checked_hosts(file.hosts.clone().unwrap_or_default())?,
        max_size: match (&o.max_size, &file.max_size) {
            (Some(m), _) => units::parse_size(m).map_err(|e| format!("--max-size: {e}"))?,
            (None, Some(m)) => {
                units::parse_size(m).map_err(|e| format!("config file max_size: {e}"))?
            }
            (None, None) => DEFAULT_MAX_SIZE,
        },
    })
}

/// Host names are typed in `--hosts a,b` and `HOST:VM`: no comma, colon or blank, and
/// each needs a URI.
fn checked_hosts(
    hosts: BTreeMap<String, HostConfig>,
) -> Result<BTreeMap<String, HostConfig>, String> {
    for (name, h) in &hosts {
        if name.is_empty()
            || name
                .chars()
                .any(|c| c == ',' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "config file: host name {name:?} may not be empty or hold a comma, colon or blank"
            ));
        }
        if h.uri.trim().is_empty() {
            return Err(format!("config file: host {name:?} has an empty uri"));
        }
        h.tuning()
            .map_err(|e| format!("config file: host {name:?}: {e} (its keys: {HOST_KEYS})"))?;
    }
    Ok(hosts)
}

/// A TTL in seconds, checked: at most a year.
fn ttl(what: &str, secs: u64) -> Result<Duration, String> {
    if secs > MAX_SECONDS as u64 {
        return Err(format!(
            "{what} must be at most {MAX_SECONDS} seconds (a year), got {secs}"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// The longest any seconds setting may be: a year.
pub const MAX_SECONDS: f64 = 365.0 * 86_400.0;

/// A timeout in seconds, checked: more than 0, at most 3600.
fn seconds(what: &str, secs: f64) -> Result<Duration, String> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!(
            "{what} must be between 0 and 3600 seconds, got {secs}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Where OS answers are cached between runs.
pub fn default_cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("dismount_iso_qemu").join("os-cache.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_their_tables_and_bad_names_are_refused() {
        let file: FileConfig = toml::from_str(
            "[hosts.kvm1]\nuri = \"qemu+ssh://root@kvm1/system\"\n\
             [hosts.kvm2]\nuri = \"test:///default\"\nbackend = \"virsh\"\n",
        )
        .unwrap();
        let s = resolve_with(&Overrides::default(), None, file).unwrap();
        assert_eq!(s.hosts.len(), 2);
        assert_eq!(s.hosts["kvm1"].uri, "qemu+ssh://root@kvm1/system");
        assert_eq!(s.hosts["kvm2"].backend, Some(Backend::Virsh));
        for bad in ["\"a,b\"", "\"a:b\"", "\"a b\""] {
            let file: FileConfig =
                toml::from_str(&format!("[hosts.{bad}]\nuri = \"test:///default\"\n")).unwrap();
            let e = resolve_with(&Overrides::default(), None, file).unwrap_err();
            assert!(e.contains("may not be empty or hold"), "{e}");
        }
        let file: FileConfig = toml::from_str("[hosts.x]\nuri = \" \"\n").unwrap();
        assert!(resolve_with(&Overrides::default(), None, file)
            .unwrap_err()
            .contains("empty uri"));
        // A host's own setting is checked like the global one, naming the host.
        let file: FileConfig =
            toml::from_str("[hosts.far]\nuri = \"test:///default\"\nconnect_timeout = 0\n")
                .unwrap();
        let e = resolve_with(&Overrides::default(), None, file).unwrap_err();
        assert!(
            e.starts_with("config file: host \"far\": connect timeout must be between 0 and 3600"),
            "{e}"
        );
        assert!(e.contains("its keys: uri, backend, connect_timeout"), "{e}");
        // A typo in a host table is noticed, like anywhere else in the file.
        assert!(toml::from_str::<FileConfig>("[hosts.x]\nurl = \"test:///default\"\n").is_err());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = FileConfig {
            uri: Some("qemu:///session".into()),
            backend: Some(Backend::Virsh),
            probe_timeout: Some(9.0),
            agent_timeout: Some(2.0),
            connect_timeout: Some(3.5),
            cache_ttl: Some(10),
            definition_ttl: Some(0),
            stats_ttl: Some(30),
            jobs: Some(3),
            max_size: Some("1G".into()),
            transfer_timeout: Some(30),
            min_rate: Some("1K".into()),
            web_config_file: Some("web.yml".into()),
            collect: Some(vec!["block".into(), "vcpu".into()]),
            hosts: None,
        };
        let none = Overrides::default();
        let s = resolve_with(&none, None, FileConfig::default()).unwrap();
        assert_eq!(s.uri, None);
        assert_eq!(s.backend, Backend::default_for_build());
        assert_eq!(s.scan_deadline, Duration::from_secs(5));
        assert_eq!(s.agent_timeout, Duration::from_secs(5));
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.cache_ttl, Duration::from_secs(60));
        assert_eq!(s.definition_ttl, Duration::from_secs(600));
        assert_eq!(s.stats_ttl, Duration::ZERO);
        assert_eq!(s.max_size, DEFAULT_MAX_SIZE);
        assert_eq!(s.collect, Families::ALL);

        let s = resolve_with(&none, None, file).unwrap();
        assert_eq!(s.definition_ttl, Duration::ZERO);
        assert_eq!(s.stats_ttl, Duration::from_secs(30));
        assert_eq!(s.max_size, 1 << 30);
        assert_eq!(s.scan_deadline, Duration::from_secs(9));
        assert_eq!(s.agent_timeout, Duration::from_secs(2));
        assert_eq!(s.connect_timeout, Duration::from_millis(3500));
        assert_eq!(s.transfer_timeout, Duration::from_secs(30));
        assert_eq!(s.min_rate, 1024);
        assert_eq!(s.uri.as_deref(), Some("qemu:///session"));
        assert_eq!(s.backend, Backend::Virsh);
        assert_eq!(s.jobs, 3);
        assert_eq!(s.web_config_file, Some(PathBuf::from("web.yml")));
        assert_eq!(
            s.collect,
            Families {
                block: true,
                vcpu: true,
                ..Families::NONE
            }
        );

        let file = FileConfig {
            uri: Some("qemu:///session".into()),
            ..FileConfig::default()
        };
        let s = resolve_with(&none, Some("test:///default".into()), file).unwrap();
        assert_eq!(s.uri.as_deref(), Some("test:///default"));

        let flags = Overrides {
            values: FileConfig {
                uri: Some("qemu:///system".into()),
                probe_timeout: Some(0.5),
                max_size: Some("2M".into()),
                ..FileConfig::default()
            },
            config_file: None,
        };
        let s = resolve_with(
            &flags,
            Some("test:///default".into()),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(s.uri.as_deref(), Some("qemu:///system"));
        assert_eq!(s.scan_deadline, Duration::from_millis(500));
        assert_eq!(s.max_size, 2 << 20);
    }

    #[test]
    fn bad_values_are_one_clear_line() {
        let o = Overrides {
            values: FileConfig {
                connect_timeout: Some(-1.0),
                ..FileConfig::default()
            },
            config_file: None,
        };
        assert!(resolve_with(&o, None, FileConfig::default())
            .unwrap_err()
            .contains("connect timeout"));
        let o = Overrides {
            values: FileConfig {
                probe_timeout: Some(0.0),
                ..FileConfig::default()
            },
            config_file: None,
        };
        assert!(resolve_with(&o, None, FileConfig::default())
            .unwrap_err()
            .contains("probe timeout"));
        let o = Overrides {
            values: FileConfig {
                agent_timeout: Some(f64::NAN),
                ..FileConfig::default()
            },
            config_file: None,
        };
        assert!(resolve_with(&o, None, FileConfig::default())
            .unwrap_err()
            .contains("agent timeout"));
        let o = Overrides {
            values: FileConfig {
                cache_ttl: Some(u64::MAX),
                ..FileConfig::default()
            },
            config_file: None,
        };
        assert!(resolve_with(&o, None, FileConfig::default())
            .unwrap_err()
            .contains("cache TTL"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "uri = \"x\"\nprobe_timout = 3\n").unwrap();
        let e = read_file(&p, true).unwrap_err();
        assert!(e.contains("probe_timout"), "{e}");
        assert!(!e.contains('\n'));
        assert!(read_file(&dir.path().join("missing.toml"), true).is_err());
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "web_config_file = \"web.yml\"\n").unwrap();
        let o = Overrides {
            config_file: Some(p.clone()),
            ..Overrides::default()
        };
        // Relative to the config file, like the paths inside a web config.
        assert_eq!(
            resolve(&o).unwrap().web_config_file,
            Some(dir.path().join("web.yml"))
        );
        std::fs::write(&p, "collect = [\"block\", \"disks\"]\n").unwrap();
        let e = resolve(&o).unwrap_err();
        assert!(e.contains("collect") && e.contains("\"disks\""), "{e}");
        std::fs::write(&p, "web_config_file = 3\n").unwrap();
        assert!(read_file(&p, true).unwrap_err().contains("web_config_file"));
        assert_eq!(
            read_file(&dir.path().join("missing.toml"), false).unwrap(),
            FileConfig::default()
        );
    }
}
