//! Many hosts at once: which hosts a command line chooses (`-c` given more than once,
//! `--hosts NAME,…`, `--all-hosts` over the config file's `[hosts.NAME]`), and one piece of
//! work per host run in parallel under one deadline.
//!
//! Each host gets a thread of its own that opens its connection and does the work; the
//! caller waits for all of them or for the deadline, whichever comes first. A host that
//! hangs (libvirt has no connect timeout; a TCP peer that accepts and never answers holds
//! `virConnectOpen` forever) is given up at the deadline and becomes one error line with
//! the others' results complete; its thread is left behind and ends with the process.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::GlobalArgs;
use crate::config::{HostConfig, HostTuning, Settings};
use crate::hypervisor::{self, Access, Backend, Hypervisor};

/// One chosen host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its name in the config file, else the URI as given.
    pub name: String,
    pub uri: String,
    pub backend: Backend,
    /// Its own timeouts and TTLs from its `[hosts.NAME]` table.
    pub tuning: HostTuning,
}

impl Target {
    /// The config file's host `name`.
    pub fn configured(name: &str, h: &HostConfig, settings: &Settings) -> Target {
        Target {
            name: name.to_string(),
            uri: h.uri.clone(),
            backend: h.backend.unwrap_or(settings.backend),
            // Checked when the settings were resolved.
            tuning: h.tuning().unwrap_or_default(),
        }
    }

    /// `base` for this host: its URI, backend, timeouts and TTLs.
    pub fn settings(&self, base: &Settings) -> Settings {
        base.for_host(&self.uri, self.backend, &self.tuning)
    }

    /// The longest connect timeout of `targets` (`base`'s when there are none).
    pub fn slowest_connect(targets: &[Target], base: &Settings) -> Duration {
        targets
            .iter()
            .map(|t| t.settings(base).connect_timeout)
            .max()
            .unwrap_or(base.connect_timeout)
    }

    /// What a fleet command over `targets` may take in all: the slowest host's connect
    /// timeout and scan deadline, plus 1 s.
    pub fn limit(targets: &[Target], base: &Settings) -> Duration {
        targets
            .iter()
            .map(|t| t.settings(base))
            .chain(std::iter::once(base.clone()))
            .map(|s| s.connect_timeout + s.scan_deadline)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(1)
    }

    /// How error lines name it: `NAME (URI)`, or the URI alone when that is its name.
    pub fn shown(&self) -> String {
        if self.name == self.uri {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, self.uri)
        }
    }
}

/// `settings` with each TTL the longest any of `targets` has: what a cache shared by
/// them keeps when saved.
pub fn widest(settings: &Settings, targets: &[Target]) -> Settings {
    let mut wide = settings.clone();
    for t in targets {
        let s = t.settings(settings);
        wide.cache_ttl = wide.cache_ttl.max(s.cache_ttl);
        wide.definition_ttl = wide.definition_ttl.max(s.definition_ttl);
        wide.stats_ttl = wide.stats_ttl.max(s.stats_ttl);
    }
    wide
}

/// The hosts the command line chooses. Empty: none was chosen beyond the one connection
/// every command has (`-c` once, the environment, the config file's `uri`).
pub fn targets(global: &GlobalArgs, settings: &Settings) -> Result<Vec<Target>, String> {
    let named = |name: &str| -> Result<Target, String> {
        let h = settings.hosts.get(name).ok_or_else(|| {
            if settings.hosts.is_empty() {
                format!(
                    "no host named \"{name}\": the config file names no hosts (add a \
                     [hosts.{name}] table with a uri)"
                )
            } else {
                let known: Vec<&str> = settings.hosts.keys().map(String::as_str).collect();
                format!(
                    "no host named \"{name}\" in the config file (its hosts: {})",
                    known.join(", ")
                )
            }
        })?;
        Ok(Target::configured(name, h, settings))
    };
    let mut out: Vec<Target> = Vec::new();
    if global.all_hosts {
        if settings.hosts.is_empty() {
            return Err(
                "--all-hosts: the config file names no hosts (add [hosts.NAME] tables with a \
                 uri)"
                    .to_string(),
            );
        }
        for name in settings.hosts.keys() {
            out.push(named(name)?);
        }
    }
    for name in global.hosts.iter().chain(&global.host) {
        let name = name.trim();
        if name.is_empty() {
            return Err("--hosts: an empty host name (give NAME,NAME,…)".to_string());
        }
        out.push(named(name)?);
    }
    // `-c` once without --hosts is the ordinary single connection; given more than once,
    // or beside --hosts, each URI is a host of the fleet.
    if global.connect.len() > 1 || (!global.connect.is_empty() && !out.is_empty()) {
        for uri in &global.connect {
            if uri.trim().is_empty() {
                return Err("-c/--connect: an empty URI".to_string());
            }
            // A URI the config file names is that host, with its own settings.
            let target = match settings.hosts.iter().find(|(_, h)| h.uri == *uri) {
                Some((name, h)) => Target::configured(name, h, settings),
                None => Target {
                    name: uri.clone(),
                    uri: uri.clone(),
                    backend: settings.backend,
                    tuning: HostTuning::default(),
                },
            };
            out.push(target);
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert((t.name.clone(), t.uri.clone())));
    Ok(out)
}

/// What one host gave.
#[derive(Debug)]
pub struct HostOutcome<T> {
    pub target: Target,
    pub result: Result<T, String>,
    /// How long it took (the deadline's length for a host given up).
    pub took: Duration,
}

impl<T> HostOutcome<T> {
    pub fn error(&self) -> Option<&str> {
        self.result.as_ref().err().map(String::as_str)
    }
}

/// Open every target (each open bounded by `connect_timeout`) and run `work` on it, all
/// in parallel; whatever has not finished within `limit` is an error saying so. Results
/// come in the targets' order.
pub fn each_host<T: Send + 'static>(
    targets: &[Target],
    connect_timeout: Duration,
    limit: Duration,
    work: impl Fn(&Target, Arc<dyn Hypervisor>) -> Result<T, String> + Send + Sync + 'static,
) -> Vec<HostOutcome<T>> {
    let started = Instant::now();
    let deadline = started + limit;
    let work = Arc::new(work);
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, t) in targets.iter().enumerate() {
        let (t, done, work) = (t.clone(), tx.clone(), Arc::clone(&work));
        let spawned = thread::Builder::new()
            .name(format!("host-{i}"))
            .spawn(move || {
                let t0 = Instant::now();
                let result = hypervisor::open_within(
                    t.backend,
                    Some(&t.uri),
                    Access::ReadWrite,
                    t.tuning.connect_timeout.unwrap_or(connect_timeout),
                )
                .map_err(|e| e.to_string())
                .and_then(|hv| work(&t, Arc::from(hv)));
                let _ = done.send((i, result, t0.elapsed()));
            });
        if let Err(e) = spawned {
            let _ = tx.send((
                i,
                Err(format!("could not start a thread: {e}")),
                Duration::ZERO,
            ));
        }
    }
    drop(tx);
    let mut results: Vec<Option<(Result<T, String>, Duration)>> =
        targets.iter().map(|_| None).collect();
    let mut pending = targets.len();
    while pending > 0 {
        match rx.recv_deadline(deadline) {
            Ok((i, r, took)) => {
                results[i] = Some((r, took));
                pending -= 1;
            }
            Err(_) => break,
        }
    }
    targets
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let (result, took) = r.unwrap_or_else(|| {
                (
                    Err(format!(
                        "no answer within {:.1} s: the host hangs or is too slow (connecting \
                         and reading it)",
                        limit.as_secs_f64()
                    )),
                    limit,
                )
            });
            HostOutcome {
                target: t.clone(),
                result,
                took,
            }
        })
        .collect()
}

/// Which host a command about one VM goes to, and the VM's name there.
///
/// `HOST:VM`, with HOST a chosen host or one the config file names, goes to that host.
/// A bare name with one host (or none) chosen goes where it always went. A bare name with
/// several hosts chosen is looked up on all of them (in parallel, within `limit`): held by
/// one, it goes there; held by several or none, the error names the hosts.
pub fn host_of_vm(
    targets: &[Target],
    settings: &Settings,
    vm: &str,
    limit: Duration,
) -> Result<(Option<Target>, String), String> {
    if let Some((host, name)) = vm.split_once(':') {
        let chosen = targets.iter().find(|t| t.name == host).cloned();
        let configured = settings
            .hosts
            .get(host)
            .map(|h| Target::configured(host, h, settings));
        if let Some(t) = chosen.or(configured) {
            if name.is_empty() {
                return Err(format!(
                    "\"{vm}\" names host {host} but no VM: give HOST:VM"
                ));
            }
            return Ok((Some(t), name.to_string()));
        }
    }
    if targets.len() <= 1 {
        return Ok((targets.first().cloned(), vm.to_string()));
    }
    let wanted = vm.to_string();
    let found = each_host(targets, settings.connect_timeout, limit, move |_, hv| {
        Ok(hv
            .list_domains()
            .map_err(|e| e.to_string())?
            .iter()
            .any(|d| d.name == wanted))
    });
    let holding: Vec<&Target> = found
        .iter()
        .filter(|o| o.result == Ok(true))
        .map(|o| &o.target)
        .collect();
    let names = |ts: &[&Target]| {
        ts.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match holding.as_slice() {
        [one] => Ok((Some((*one).clone()), vm.to_string())),
        [] => {
            let all: Vec<&Target> = targets.iter().collect();
            let mut e = format!("no VM named \"{vm}\" on the hosts chosen ({})", names(&all));
            let silent: Vec<&Target> = found
                .iter()
                .filter(|o| o.result.is_err())
                .map(|o| &o.target)
                .collect();
            if !silent.is_empty() {
                e.push_str(&format!("; not answering: {}", names(&silent)));
            }
            // `typo:vm` is more likely a host name mistyped than a VM named so.
            if let Some((host, _)) = vm.split_once(':') {
                e.push_str(&format!(
                    "; \"{host}\" is not a host chosen or configured either"
                ));
            }
            Err(e)
        }
        many => Err(format!(
            "VM \"{vm}\" is on {} hosts ({}): say which with HOST:VM, e.g. {}:{vm}",
            many.len(),
            names(many),
            many[0].name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["dismount_iso_qemu"];
        argv.extend_from_slice(args);
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    fn settings() -> Settings {
        let file = toml::from_str(
            "[hosts.kvm1]\nuri = \"qemu+ssh://kvm1/system\"\n\
             [hosts.kvm2]\nuri = \"test:///default\"\nbackend = \"virsh\"\n\
             connect_timeout = 30\nprobe_timeout = 2.5\nstats_ttl = 120\n",
        )
        .unwrap();
        crate::config::resolve_with(&crate::config::Overrides::default(), None, file).unwrap()
    }

    #[test]
    fn a_hosts_own_settings_apply_to_it_alone() {
        let base = settings();
        let all = targets(&global(&["--all-hosts"]), &base).unwrap();
        let (kvm1, kvm2) = (all[0].settings(&base), all[1].settings(&base));
        assert_eq!(kvm1.uri.as_deref(), Some("qemu+ssh://kvm1/system"));
        assert_eq!(kvm1.connect_timeout, base.connect_timeout);
        assert_eq!(kvm1.stats_ttl, Duration::ZERO);
        assert_eq!(kvm2.uri.as_deref(), Some("test:///default"));
        assert_eq!(kvm2.backend, Backend::Virsh);
        assert_eq!(kvm2.connect_timeout, Duration::from_secs(30));
        assert_eq!(kvm2.scan_deadline, Duration::from_millis(2500));
        assert_eq!(kvm2.stats_ttl, Duration::from_secs(120));
        assert_eq!(kvm2.agent_timeout, base.agent_timeout);
        // The fleet waits for its slowest host: kvm2's 30 s connect + 2.5 s scan, + 1 s.
        assert_eq!(Target::limit(&all, &base), Duration::from_millis(33_500));
        // A URI given with -c that the config file names is that host, settings and all.
        let by_uri = targets(&global(&["-c", "test:///default", "-c", "x:///"]), &base).unwrap();
        assert_eq!(by_uri[0].name, "kvm2");
        assert_eq!(
            by_uri[0].tuning.connect_timeout,
            Some(Duration::from_secs(30))
        );
        assert_eq!(by_uri[1].tuning, HostTuning::default());
    }

    fn names(args: &[&str]) -> Result<Vec<String>, String> {
        targets(&global(args), &settings()).map(|t| t.into_iter().map(|t| t.name).collect())
    }

    #[test]
    fn the_command_line_chooses_the_hosts() {
        assert_eq!(names(&[]).unwrap(), Vec::<String>::new());
        // One -c is the ordinary single connection.
        assert_eq!(
            names(&["-c", "qemu:///system"]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&["-c", "qemu:///system", "-c", "test:///default"]).unwrap(),
            ["qemu:///system", "kvm2"]
        );
        assert_eq!(names(&["--hosts", "kvm2,kvm1"]).unwrap(), ["kvm2", "kvm1"]);
        assert_eq!(names(&["--host", "kvm2"]).unwrap(), ["kvm2"]);
        assert_eq!(names(&["--all-hosts"]).unwrap(), ["kvm1", "kvm2"]);
        assert_eq!(
            names(&["--hosts", "kvm1", "-c", "qemu:///system"]).unwrap(),
            ["kvm1", "qemu:///system"]
        );
        // Named twice: once.
        assert_eq!(
            names(&["--all-hosts", "--hosts", "kvm1"]).unwrap(),
            ["kvm1", "kvm2"]
        );
        let e = names(&["--hosts", "kvm3"]).unwrap_err();
        assert_eq!(
            e,
            "no host named \"kvm3\" in the config file (its hosts: kvm1, kvm2)"
        );
        let mut empty = settings();
        empty.hosts.clear();
        let e = targets(&global(&["--all-hosts"]), &empty).unwrap_err();
        assert!(e.contains("names no hosts"), "{e}");
    }

    #[test]
    fn a_hanging_host_is_given_up_at_the_deadline() {
        let t = |name: &str| Target {
            name: name.to_string(),
            uri: "test:///default".to_string(),
            backend: Backend::default_for_build(),
            tuning: HostTuning::default(),
        };
        let started = Instant::now();
        let out = each_host(
            &[t("quick"), t("stuck")],
            Duration::from_secs(5),
            Duration::from_millis(300),
            |t, _hv| {
                if t.name == "stuck" {
                    thread::sleep(Duration::from_secs(30));
                }
                Ok(t.name.clone())
            },
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(out[0].result.as_deref(), Ok("quick"));
        assert!(out[1].error().unwrap().contains("no answer within 0.3 s"));
    }

    #[test]
    fn a_mistyped_host_in_host_vm_is_named() {
        let t = |name: &str| Target {
            name: name.to_string(),
            uri: "test:///default".to_string(),
            backend: Backend::default_for_build(),
            tuning: HostTuning::default(),
        };
        let e = host_of_vm(
            &[t("a"), t("b")],
            &settings(),
            "kvm9:test",
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "no VM named \"kvm9:test\" on the hosts chosen (a, b); \"kvm9\" is not a host \
             chosen or configured either"
        );
    }
}
