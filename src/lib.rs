//! dismount_iso_qemu: scan libvirt/QEMU VMs, manage their ISO media, edit files inside
//! guests and export the same facts as Prometheus metrics.
//!
//! `main` parses arguments and calls [`run`]; everything else is here so tests can drive
//! it. The modules stand on floors ([`FLOORS`]): a module imports only from its own floor
//! or the ones below, and no two modules import each other (`tests/architecture.rs`
//! checks both). Data flows one way: the hypervisor port gives raw facts, the domain
//! modules turn them into plain data ([`snapshot`]), and the renderers only read that.

pub mod agent;
pub mod app;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domxml;
pub mod edit;
pub mod exit;
pub mod fleet;
pub mod hypervisor;
pub mod media;
pub mod probe;
pub mod render;
pub mod serve;
pub mod snapshot;
pub mod term;
pub mod top;
pub mod transfer;
pub mod units;

use std::io::{self, IsTerminal};

use app::App;
use cli::{Cli, Command};
use commands::{
    completions, edit as edit_cmd, files, fleet as fleet_cmd, manpage, media as media_cmd, menu,
    recovery, scan, serve as serve_cmd, top as top_cmd,
};
use exit::Failure;
use term::progress::ProgressSink;

/// The floors, top to bottom. `lib` itself (this file: [`run`]) stands above them all.
pub const FLOORS: &[&[&str]] = &[
    &["commands"],
    &["cli", "app", "fleet"],
    &["probe", "media", "transfer", "edit", "serve", "top"],
    &["agent", "snapshot", "render", "config", "term", "audit"],
    &["hypervisor", "domxml"],
    &["exit", "units"],
];

/// Run one invocation on the process's standard streams; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Failure> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let progress = ProgressSink::stderr_if_terminal();
    // Settings and the hosts the command line chooses; more than one host only for the
    // commands that cover a fleet.
    let chosen = || -> Result<(config::Settings, Vec<fleet::Target>), Failure> {
        let settings = app::resolve(&cli.global)?;
        let targets = fleet::targets(&cli.global, &settings).map_err(Failure::usage)?;
        Ok((settings, targets))
    };
    // A command about one VM: the host `HOST:VM` names, or the one chosen host that has
    // the VM; the app on that host and the VM's name there.
    let on_vm_host = |vm: &str| -> Result<(App, String), Failure> {
        let (settings, targets) = chosen()?;
        // `--host NAME VM` is `NAME:VM`.
        let vm = match &cli.global.host {
            Some(h) => format!("{h}:{vm}"),
            None => vm.to_string(),
        };
        let vm = vm.as_str();
        let limit = settings.connect_timeout + settings.scan_deadline;
        let (target, name) =
            fleet::host_of_vm(&targets, &settings, vm, limit).map_err(Failure::usage)?;
        let app = App::connect_to(settings, target.as_slice(), false)?;
        Ok((app, name))
    };
    if !matches!(
        cli.command,
        Some(Command::Recovery(_) | Command::Completions(_) | Command::Manpage(_))
    ) {
        recovery::remind(&mut stderr.lock());
    }
    match &cli.command {
        None | Some(Command::Menu) => {
            let (mut settings, targets) = chosen()?;
            // The menu shows the user's own changes: never a kept listing.
            settings.stats_ttl = std::time::Duration::ZERO;
            let session = if targets.len() > 1 {
                match menu::Session::connect(&settings, &targets, &mut stderr.lock())? {
                    Some(s) => s,
                    None => return Ok(exit::USAGE),
                }
            } else {
                menu::Session::one(App::connect_to(settings, &targets, false)?)
            };
            let stdin = io::stdin();
            menu::run(
                &session,
                &mut stdin.lock(),
                &mut stdout.lock(),
                &mut stderr.lock(),
                &progress,
            )
        }
        Some(Command::Scan(args)) => {
            let (settings, targets) = chosen()?;
            // Buffered: a JSON document of hundreds of VMs is otherwise thousands of writes.
            let mut out = io::BufWriter::new(stdout.lock());
            if targets.len() > 1 {
                return fleet_cmd::scan(&settings, &targets, args, &mut out, &mut stderr.lock());
            }
            let app = App::connect_to(settings, &targets, args.no_cache)?;
            scan::run(&app, args, &mut out, &mut stderr.lock(), progress)
        }
        Some(Command::Isos(args)) => {
            let (settings, targets) = chosen()?;
            let mut out = io::BufWriter::new(stdout.lock());
            if targets.len() > 1 {
                return fleet_cmd::isos(&settings, &targets, args, &mut out, &mut stderr.lock());
            }
            media_cmd::isos(&App::connect_to(settings, &targets, false)?, args, &mut out)
        }
        Some(Command::Mount(args)) => {
            let (app, vm) = on_vm_host(&args.vm)?;
            let args = cli::MountArgs { vm, ..args.clone() };
            media_cmd::mount_cmd(&app, &args, &mut stdout.lock())
        }
        Some(Command::Eject(args)) => match &args.vm {
            Some(vm) => {
                let (app, vm) = on_vm_host(vm)?;
                let args = cli::EjectArgs {
                    vm: Some(vm),
                    ..args.clone()
                };
                media_cmd::eject(&app, &args, &mut stdout.lock())
            }
            None => {
                let (settings, targets) = chosen()?;
                if targets.len() > 1 {
                    let mut ask = |question: &str| confirm(question);
                    let ask: fleet_cmd::Ask = if io::stdin().is_terminal() {
                        Some(&mut ask)
                    } else {
                        None
                    };
                    return fleet_cmd::eject(
                        &settings,
                        &targets,
                        args,
                        &mut stdout.lock(),
                        &mut stderr.lock(),
                        ask,
                    );
                }
                let app = App::connect_to(settings, &targets, false)?;
                media_cmd::eject(&app, args, &mut stdout.lock())
            }
        },
        Some(Command::Serve(args)) => serve_cmd::run(&cli.global, args),
        Some(Command::Top(args)) => {
            let (settings, targets) = chosen()?;
            let watched = if targets.len() > 1 {
                match app::open_hosts(&settings, &targets, &mut stderr.lock())? {
                    Some(o) => top_cmd::Watched::several_of(o),
                    None => return Ok(exit::USAGE),
                }
            } else {
                top_cmd::Watched::one(App::connect_to(settings, &targets, false)?)
            };
            top_cmd::run(watched, args)
        }
        Some(Command::Edit(args)) => {
            let (app, vm) = on_vm_host(&args.vm)?;
            let args = &cli::EditArgs { vm, ..args.clone() };
            let guard = edit_cmd::interrupts()?;
            let interactive = io::stdin().is_terminal();
            let opts = edit_cmd::options(&app, args, interactive, &progress, guard.cancel())?;
            let mut editor = edit::ExternalEditor::from_env().map_err(Failure::usage)?;
            let stdin = io::stdin();
            edit_cmd::run(
                &app,
                &opts,
                &mut editor,
                &mut stdin.lock(),
                &mut stdout.lock(),
                &mut stderr.lock(),
            )
        }
        Some(Command::Cat(args)) => {
            let (app, vm) = on_vm_host(&args.vm)?;
            let args = cli::CatArgs { vm, ..args.clone() };
            files::cat(&app, &args, &mut stdout.lock(), &progress)
        }
        Some(Command::Pull(args)) => {
            let (app, vm) = on_vm_host(&args.vm)?;
            let args = cli::PullArgs { vm, ..args.clone() };
            files::pull(&app, &args, &mut stdout.lock(), &progress)
        }
        Some(Command::Recovery(args)) => recovery::run(args, &mut stdout.lock()),
        Some(Command::Completions(args)) => completions::print(args, &mut stdout.lock()),
        Some(Command::Manpage(args)) => manpage::run(args, &mut stdout.lock()),
        Some(Command::Push(args)) => {
            let (app, vm) = on_vm_host(&args.vm)?;
            let args = cli::PushArgs { vm, ..args.clone() };
            files::push(
                &app,
                &args,
                &mut stdout.lock(),
                &mut stderr.lock(),
                &progress,
            )
        }
    }
}

/// Ask `question` on the terminal (stderr, then a line of stdin); only `y` or `yes` is
/// a yes.
fn confirm(question: &str) -> io::Result<bool> {
    use std::io::Write;
    let mut err = io::stderr().lock();
    write!(err, "{}", render::text::terminal_line(question))?;
    err.flush()?;
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
