//! The context every command runs in: the resolved settings, the open connection, and
//! the probe manager over it. Built once per invocation from the command line; the
//! domain modules below never see it — commands hand them what they need.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{GlobalArgs, ServeArgs};
use crate::config::{self, Settings};
use crate::exit::Failure;
use crate::fleet::{self, widest, Target};
use crate::hypervisor::{self, Hypervisor};
use crate::probe::cache::OsCache;
use crate::probe::{ProbeManager, ProbeSettings};
use crate::render;
use crate::snapshot::telemetry::Families;
use crate::term::interrupt::Cancel;
use crate::term::progress::ProgressSink;
use crate::transfer::{Pace, Transfer};

/// What a command needs: settings, the open connection and the probe manager over it.
#[derive(Clone)]
pub struct App {
    pub settings: Settings,
    pub hv: Arc<dyn Hypervisor>,
    pub probes: Arc<ProbeManager>,
}

impl App {
    /// Resolve settings (flags > environment > config file > defaults) and connect.
    pub fn connect(global: &GlobalArgs, no_cache: bool) -> Result<App, Failure> {
        App::connect_to(resolve(global)?, &[], no_cache)
    }

    /// Connect to the one host chosen (`targets` as [`fleet::targets`] gives them; none:
    /// the settings' URI). Several hosts are a usage error: the commands that cover a
    /// fleet open its hosts themselves.
    pub fn connect_to(
        mut settings: Settings,
        targets: &[Target],
        no_cache: bool,
    ) -> Result<App, Failure> {
        match targets {
            [] => {}
            [one] => settings = one.settings(&settings),
            many => {
                let names: Vec<&str> = many.iter().map(|t| t.name.as_str()).collect();
                return Err(Failure::usage(format!(
                    "this command works on one host and {} were chosen ({}): choose one with \
                     -c URI or --hosts NAME (scan, isos, eject --iso/--all, the menu and top cover \
                     several)",
                    many.len(),
                    names.join(", ")
                )));
            }
        }
        let hv: Arc<dyn Hypervisor> = Arc::from(hypervisor::open_within(
            settings.backend,
            settings.uri.as_deref(),
            hypervisor::Access::ReadWrite,
            settings.connect_timeout,
        )?);
        Ok(App::from_parts(settings, hv, no_cache))
    }

    /// How this command's transfers go: the settings' limits, and the given progress
    /// sink and interrupt token.
    pub fn transfer(&self, progress: &ProgressSink, cancel: Cancel) -> Transfer {
        Transfer {
            limit: self.settings.max_size,
            pace: Pace {
                budget: self.settings.transfer_timeout,
                min_rate: self.settings.min_rate,
                ..Pace::default()
            },
            progress: progress.clone(),
            cancel,
        }
    }

    /// The URI the connection reached, for audit lines and records.
    pub fn uri(&self) -> String {
        self.hv.uri()
    }

    /// An app over an already open hypervisor (tests use the fake).
    pub fn from_parts(settings: Settings, hv: Arc<dyn Hypervisor>, no_cache: bool) -> App {
        let probes = Arc::new(ProbeManager::new(
            Arc::clone(&hv),
            probe_settings(&settings, no_cache),
        ));
        App {
            settings,
            hv,
            probes,
        }
    }
}

/// One host of a command that keeps several open (the menu, `top`): its name (the config
/// file's, or the URI given) and the app on it.
pub struct Host {
    pub name: String,
    pub app: App,
}

/// The hosts that opened, and the cache their probe managers share: it is saved whole by
/// its owner (see [`crate::probe::save_cache`]) with `saving`, the widest TTLs of them all.
pub struct OpenHosts {
    pub hosts: Vec<Host>,
    /// The hosts that could not be opened (their names), and why.
    pub unopened: Vec<(String, String)>,
    pub cache: Arc<Mutex<OsCache>>,
    pub saving: ProbeSettings,
}

/// Open every target in parallel, each within its connect timeout. Each host that could
/// not be opened is one `error: host …` line in `warnings`; `None` when no host could.
pub fn open_hosts(
    settings: &Settings,
    targets: &[Target],
    warnings: &mut dyn Write,
) -> Result<Option<OpenHosts>, Failure> {
    let limit = Target::slowest_connect(targets, settings) + Duration::from_secs(1);
    let opened = fleet::each_host(targets, settings.connect_timeout, limit, |_, hv| Ok(hv));
    let saving = probe_settings(&widest(settings, targets), false);
    let cache = Arc::new(Mutex::new(ProbeManager::load_cache(&saving)));
    let (mut hosts, mut unopened) = (Vec::new(), Vec::new());
    for o in opened {
        match o.result {
            Ok(hv) => {
                let settings = o.target.settings(settings);
                let probes = Arc::new(ProbeManager::with_cache(
                    Arc::clone(&hv),
                    probe_settings(&settings, false),
                    Arc::clone(&cache),
                ));
                let app = App {
                    settings,
                    hv,
                    probes,
                };
                hosts.push(Host {
                    name: o.target.name,
                    app,
                });
            }
            Err(e) => {
                render::text::write_line(
                    warnings,
                    &format!("error: host {}: {e}", o.target.shown()),
                )?;
                unopened.push((o.target.name, e));
            }
        }
    }
    Ok((!hosts.is_empty()).then_some(OpenHosts {
        hosts,
        unopened,
        cache,
        saving,
    }))
}

impl Host {
    /// A host over a fake hypervisor, with no cache file and a short scan deadline (tests).
    #[cfg(test)]
    pub fn fake(name: &str, hv: &crate::hypervisor::fake::FakeHypervisor) -> Host {
        let mut settings = config::resolve_with(
            &config::Overrides::default(),
            None,
            config::FileConfig::default(),
        )
        .unwrap();
        settings.cache_path = None;
        settings.scan_deadline = Duration::from_millis(500);
        Host {
            name: name.to_string(),
            app: App::from_parts(settings, Arc::new(hv.clone()), false),
        }
    }
}

/// The settings alone, for commands that open connections themselves (`serve`).
pub fn resolve(global: &GlobalArgs) -> Result<Settings, Failure> {
    config::resolve(&global.overrides()).map_err(Failure::usage)
}

/// What the probe manager takes from the settings.
pub fn probe_settings(settings: &Settings, no_cache: bool) -> ProbeSettings {
    ProbeSettings {
        deadline: settings.scan_deadline,
        cache_ttl: settings.cache_ttl,
        jobs: settings.jobs,
        no_cache,
        cache_path: settings.cache_path.clone(),
        collect: Families::NONE,
        ask_agents: true,
        definition_ttl: settings.definition_ttl,
        stats_ttl: settings.stats_ttl,
    }
}

/// `probe` (what [`probe_settings`] gives) with `serve`'s metric families: `--collect`
/// beats the config file's `collect`; every family is on by default.
pub fn collecting(
    probe: ProbeSettings,
    settings: &Settings,
    args: &ServeArgs,
) -> Result<ProbeSettings, Failure> {
    let collect = match &args.collect {
        Some(list) => Families::parse([list.as_str()])
            .map_err(|e| Failure::usage(format!("--collect: {e}")))?,
        None => settings.collect,
    };
    Ok(ProbeSettings { collect, ..probe })
}
