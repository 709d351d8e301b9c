//! The context every command runs in: the resolved settings, the open connection, and
//! the probe manager over it. Built once per invocation from the command line; the
//! domain modules below never see it — commands hand them what they need.

use std::sync::Arc;

use crate::cli::{GlobalArgs, ServeArgs};
use crate::config::{self, Settings};
use crate::exit::Failure;
use crate::fleet::Target;
use crate::hypervisor::{self, Hypervisor};
use crate::probe::{ProbeManager, ProbeSettings};
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
                     -c URI or --hosts NAME (scan, isos, eject --iso/--all and the menu cover \
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
