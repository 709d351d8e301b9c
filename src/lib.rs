//! dismount_iso_qemu: scan libvirt/QEMU VMs, manage their ISO media, edit files inside
//! guests and export the same facts as Prometheus metrics.
//!
//! `main` parses arguments and calls [`run`]; everything else is here so tests can drive
//! it. Data flows one way: the hypervisor port gives raw facts, the probe manager turns
//! them into a [`snapshot::Snapshot`], and the renderers only read that.

pub mod agent;
pub mod cli;
pub mod config;
pub mod domxml;
pub mod edit;
pub mod hypervisor;
pub mod media;
pub mod probe;
pub mod render;
pub mod serve;
pub mod snapshot;
pub mod transfer;

use std::io::{self, Write};
use std::sync::Arc;

use cli::{Cli, Command, ScanArgs};
use config::Settings;
use hypervisor::{HvError, Hypervisor};
use probe::{ProbeManager, ProbeSettings, Progress};

/// Exit codes: what scripts can rely on.
pub mod exit {
    /// Everything worked.
    pub const OK: u8 = 0;
    /// The command ran, but some targets failed.
    pub const PARTIAL: u8 = 1;
    /// Usage or connection error: nothing was done.
    pub const USAGE: u8 = 2;
}

/// A failure that ends the command: one line for the user, and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    pub fn partial(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::PARTIAL,
            message: message.into(),
        }
    }
}

impl From<HvError> for Failure {
    fn from(e: HvError) -> Failure {
        Failure {
            code: if e.is_connection() {
                exit::USAGE
            } else {
                exit::PARTIAL
            },
            message: e.to_string(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away (`| head`): nothing left to say, and not a failure.
            return Failure {
                code: exit::OK,
                message: String::new(),
            };
        }
        Failure {
            code: exit::PARTIAL,
            message: e.to_string(),
        }
    }
}

/// What a command needs: settings, the open connection and the probe manager over it.
pub struct App {
    pub settings: Settings,
    pub hv: Arc<dyn Hypervisor>,
    pub probes: Arc<ProbeManager>,
}

impl App {
    /// Resolve settings and connect.
    pub fn connect(cli: &Cli, no_cache: bool) -> Result<App, Failure> {
        let settings = config::resolve(&cli.global.overrides()).map_err(Failure::usage)?;
        let hv: Arc<dyn Hypervisor> =
            Arc::from(hypervisor::open(settings.backend, settings.uri.as_deref())?);
        Ok(App::from_parts(settings, hv, no_cache))
    }

    /// An app over an already open hypervisor (tests use the fake).
    pub fn from_parts(settings: Settings, hv: Arc<dyn Hypervisor>, no_cache: bool) -> App {
        let probes = Arc::new(ProbeManager::new(
            Arc::clone(&hv),
            ProbeSettings {
                timeout: settings.probe_timeout,
                cache_ttl: settings.cache_ttl,
                jobs: settings.jobs,
                no_cache,
                cache_path: settings.cache_path.clone(),
            },
        ));
        App {
            settings,
            hv,
            probes,
        }
    }

    /// One scan with a progress line on a terminal.
    pub fn scan(&self) -> Result<snapshot::Snapshot, Failure> {
        let progress = Arc::new(Progress::default());
        let _spinner = cli::spinner::Spinner::start("scanning VMs…", Arc::clone(&progress));
        Ok(self.probes.scan_with_progress(&progress)?)
    }
}

/// Run one invocation; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Failure> {
    match &cli.command {
        None | Some(Command::Menu) => {
            let app = App::connect(&cli, false)?;
            cli::menu::run_stdio(&app)
        }
        Some(Command::Scan(args)) => {
            let app = App::connect(&cli, args.no_cache)?;
            // Buffered: a JSON document of hundreds of VMs is otherwise thousands of writes.
            scan(&app, args, &mut io::BufWriter::new(io::stdout().lock()))
        }
        Some(Command::Isos(args)) => {
            let out = &mut io::BufWriter::new(io::stdout().lock());
            media::cmd::isos(&App::connect(&cli, false)?, args, out)
        }
        Some(Command::Mount(args)) => {
            media::cmd::mount(&App::connect(&cli, false)?, args, &mut io::stdout().lock())
        }
        Some(Command::Eject(args)) => {
            media::cmd::eject(&App::connect(&cli, false)?, args, &mut io::stdout().lock())
        }
        Some(Command::Serve(args)) => serve::run(&cli, args),
        Some(Command::Edit(args)) => edit::run_cli(&App::connect(&cli, false)?, args),
        Some(Command::Cat(args)) => transfer::commands::cat(&App::connect(&cli, false)?, args),
        Some(Command::Pull(args)) => transfer::commands::pull(&App::connect(&cli, false)?, args),
        Some(Command::Push(args)) => transfer::commands::push(&App::connect(&cli, false)?, args),
    }
}

/// `scan`: the table (or JSON) once. Per-VM problems go to stderr after the table.
pub fn scan(app: &App, args: &ScanArgs, out: &mut impl Write) -> Result<u8, Failure> {
    let snap = app.scan()?;
    if args.json {
        render::json::write_json(out, &snap)?;
    } else {
        render::table::write_table(out, &snap)?;
    }
    out.flush()?;
    for e in &snap.errors {
        eprintln!("warning: {}", render::text::sanitize(e));
    }
    Ok(exit::OK)
}
