//! `top`: the live table on a terminal (ratatui over crossterm), or `--batch` records on
//! stdout. The collector thread scans; this thread draws and handles keys. What a key
//! asks for runs through the same flows as the commands: a dismount is `eject VM`'s
//! ([`media::eject_one`]), a mount is `mount VM ISO`'s ([`media::mount_cmd`]), on a
//! worker thread so the screen stays live; an edit is `edit VM PATH`'s, with the screen
//! suspended while the editor and its questions own the terminal.
//!
//! The terminal is restored on every way out: quit keys, errors (a guard's `Drop`), a
//! panic (a hook that restores before the message), SIGTERM, SIGINT and SIGHUP (counted,
//! and the loop ends at the next tick).

use std::io::{self, BufRead, IsTerminal, Stdout, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::app::App;
use crate::cli::{EditArgs, MountArgs, TopArgs, TopFormat};
use crate::commands::{edit as edit_cmd, media};
use crate::edit::ExternalEditor;
use crate::exit::{self, Failure};
use crate::media::iso::uri_is_local;
use crate::probe::{ProbeManager, ProbeSettings};
use crate::render::media::eject_line;
use crate::render::text::terminal_line;
use crate::snapshot::telemetry::Families;
use crate::term::interrupt::Interrupts;
use crate::term::progress::ProgressSink;
use crate::top::batch::{self, Format};
use crate::top::collector::{self, Update};
use crate::top::model::{self, Column, Sample};
use crate::top::state::{Action, Ui};
use crate::top::view;

/// The statistics `top` reads: disks, interfaces and the balloon (CPU time is always in).
pub const FAMILIES: Families = Families {
    block: true,
    interface: true,
    balloon: true,
    vcpu: false,
    compat: false,
};

/// `top [-d SECS] [--sort FIELD] [--filter TEXT] [--batch …]`.
pub fn run(app: App, args: &TopArgs) -> Result<u8, Failure> {
    if !(0.2..=3600.0).contains(&args.delay) || args.delay.is_nan() {
        return Err(Failure::usage(format!(
            "-d/--delay: {} is not between 0.2 and 3600 seconds",
            args.delay
        )));
    }
    let sort = match &args.sort {
        Some(s) => Some(Column::parse(s).map_err(|e| Failure::usage(format!("--sort: {e}")))?),
        None => None,
    };
    let interval = Duration::from_secs_f64(args.delay);
    let probes = Arc::new(ProbeManager::new(
        Arc::clone(&app.hv),
        ProbeSettings {
            collect: FAMILIES,
            ..app.probes.settings().clone()
        },
    ));
    let host_cpus = host_cpus(&app.uri()).or_else(|| app.hv.host_cpus());
    let filter = args.filter.clone().unwrap_or_default();
    if args.batch {
        let format = match args.format {
            TopFormat::Csv => Format::Csv,
            TopFormat::Jsonl => Format::Jsonl,
        };
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        return run_batch(
            probes,
            interval,
            &BatchSpec {
                format,
                iterations: args.iterations,
                sort: sort.unwrap_or(Column::Vm),
                filter,
                host_cpus,
            },
            &mut out,
            &mut io::stderr(),
        );
    }
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(Failure::usage(
            "top needs a terminal; for a pipe or a file use `top --batch`",
        ));
    }
    let mut ui = Ui::new(app.uri(), args.delay, host_cpus, color_wanted());
    if let Some(s) = sort {
        ui.sort = s;
    }
    ui.filter = filter;
    let rx = collector::spawn(probes, interval);
    interactive(Arc::new(app), ui, rx)
}

/// The host's CPU count, for a connection to this machine's libvirt (a remote host's
/// comes from libvirt's node info).
pub fn host_cpus(uri: &str) -> Option<u32> {
    if !uri_is_local(uri) {
        return None;
    }
    thread::available_parallelism().ok().map(|n| n.get() as u32)
}

/// Colours unless `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn color_wanted() -> bool {
    !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty())
}

/// What `--batch` prints.
pub struct BatchSpec {
    pub format: Format,
    pub iterations: Option<u64>,
    pub sort: Column,
    pub filter: String,
    pub host_cpus: Option<u32>,
}

/// `top --batch`: records from the second sample on (every rate needs two), one set per
/// interval. A failed first scan is the command's error; later ones are a line on
/// `warnings` each. A closed stdout (`| head`) ends it quietly.
pub fn run_batch(
    probes: Arc<ProbeManager>,
    interval: Duration,
    spec: &BatchSpec,
    out: &mut dyn Write,
    warnings: &mut dyn Write,
) -> Result<u8, Failure> {
    let rx = collector::spawn(probes, interval);
    let mut prev: Option<Sample> = None;
    let mut n = 0u64;
    let mut header = false;
    let quiet_pipe = |e: io::Error| -> Result<u8, Failure> {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Ok(exit::OK)
        } else {
            Err(Failure::from(e))
        }
    };
    for update in rx.iter() {
        match update {
            Update::Failed(e) if prev.is_none() && !header => {
                return Err(Failure::usage(format!("top: {e}")));
            }
            Update::Failed(e) => {
                let _ = writeln!(
                    warnings,
                    "{}",
                    terminal_line(&format!("top: scan failed: {e}"))
                );
            }
            Update::Sample(s) => {
                if !header {
                    header = true;
                    if let Err(e) = batch::write_header(out, spec.format) {
                        return quiet_pipe(e);
                    }
                }
                if let Some(p) = &prev {
                    n += 1;
                    let mut lines: Vec<model::Line> = model::lines(Some(p), &s, spec.host_cpus)
                        .into_iter()
                        .filter(|l| model::matches(l, &spec.filter))
                        .collect();
                    model::sort(&mut lines, spec.sort, false);
                    if let Err(e) = batch::write_records(out, spec.format, s.unix, n, &lines) {
                        return quiet_pipe(e);
                    }
                    if spec.iterations.is_some_and(|max| n >= max) {
                        return Ok(exit::OK);
                    }
                }
                prev = Some(*s);
            }
        }
    }
    Ok(exit::OK)
}

type Term = Terminal<CrosstermBackend<Stdout>>;

/// Puts the terminal back however the screen ends.
struct Screen {
    term: Term,
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        enable_raw_mode()?;
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        let term = match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e);
            }
        };
        Ok(Screen { term })
    }

    /// Give the terminal back for a while (the editor), then take it again.
    fn suspended<T>(&mut self, f: impl FnOnce() -> T) -> io::Result<T> {
        restore();
        let out = f();
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        self.term.clear()?;
        Ok(out)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// What a worker thread reports back.
enum Done {
    Line(String),
    Isos(String, Vec<String>),
}

fn interactive(
    app: Arc<App>,
    mut ui: Ui,
    rx: crossbeam_channel::Receiver<Update>,
) -> Result<u8, Failure> {
    let signals = Interrupts::install()
        .map_err(|e| Failure::usage(format!("cannot install signal handlers: {e}")))?;
    let mut cancel = signals.cancel();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    let mut screen = Screen::enter()?;
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    loop {
        while let Ok(u) = rx.try_recv() {
            match u {
                Update::Sample(s) => ui.take(*s),
                Update::Failed(e) => ui.collector_error = Some(e),
            }
            dirty = true;
        }
        while let Ok(d) = done_rx.try_recv() {
            match d {
                Done::Line(l) => ui.done(l),
                Done::Isos(vm, items) => ui.pick_iso(vm, items),
            }
            dirty = true;
        }
        if cancel.count() > 0 {
            break;
        }
        // The header says how old the sample is: redraw at least once a second.
        if dirty || last_draw.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            screen.term.draw(|f| view::draw(f, &mut ui))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
        if !event::poll(Duration::ZERO)? {
            // Wait for input ourselves: a terminal that hung up (its window closed) is
            // readable for ever and would keep crossterm's reader spinning.
            if terminal_gone(Duration::from_millis(100)) {
                break;
            }
            continue;
        }
        dirty = true;
        let Event::Key(k) = event::read()? else {
            // Resize and the rest: the next draw fits the new size.
            continue;
        };
        if k.kind != KeyEventKind::Press {
            continue;
        }
        match ui.key(k) {
            Action::None => {}
            Action::Quit => break,
            Action::Eject { vm } => {
                let (app, tx) = (Arc::clone(&app), done_tx.clone());
                thread::spawn(move || {
                    let line = match media::eject_one(&app, &vm, None, false) {
                        Ok(report) => eject_line(&report),
                        Err(f) => format!("{vm}: error: {}", f.message),
                    };
                    let _ = tx.send(Done::Line(line));
                });
            }
            Action::ListIsos { vm } => {
                let (app, tx) = (Arc::clone(&app), done_tx.clone());
                thread::spawn(move || {
                    let _ = match media::iso_volumes(&app) {
                        Ok(v) => tx.send(Done::Isos(vm, v.into_iter().map(|v| v.path).collect())),
                        Err(e) => tx.send(Done::Isos(
                            vm,
                            vec![format!("(cannot list storage pools: {e})")],
                        )),
                    };
                });
            }
            Action::Mount { vm, iso } => {
                let (app, tx) = (Arc::clone(&app), done_tx.clone());
                thread::spawn(move || {
                    let args = MountArgs {
                        vm: vm.clone(),
                        iso: PathBuf::from(&iso),
                        drive: None,
                        live_only: false,
                        config_only: false,
                    };
                    let mut out = Vec::new();
                    let line = match media::mount_cmd(&app, &args, &mut out) {
                        Ok(_) => String::from_utf8_lossy(&out).trim().to_string(),
                        Err(f) => format!("{vm}: error: {}", f.message),
                    };
                    let _ = tx.send(Done::Line(line));
                });
            }
            Action::Edit { vm, path } => {
                let before = cancel.count();
                let line = screen.suspended(|| edit_in_guest(&app, &vm, &path))?;
                // Interrupts during the edit were the edit's, not a request to quit.
                cancel = cancel.after(cancel.count() - before);
                ui.done(line);
            }
        }
    }
    drop(screen);
    drop(signals);
    Ok(exit::OK)
}

/// Wait up to `timeout` for input on stdin; `true` when the terminal hung up.
fn terminal_gone(timeout: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and its count.
    let r = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    r > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// `edit VM PATH` on the plain terminal, then a pause so its last words can be read.
fn edit_in_guest(app: &App, vm: &str, path: &str) -> String {
    let mut stdout = io::stdout();
    let _ = writeln!(
        stdout,
        "{}",
        terminal_line(&format!("editing {path} in {vm}"))
    );
    let result = (|| -> Result<u8, Failure> {
        let guard = edit_cmd::interrupts()?;
        let args = EditArgs {
            vm: vm.to_string(),
            remote_path: path.to_string(),
            local: None,
            yes: false,
            force: false,
            mode: None,
        };
        let progress = ProgressSink::stderr_if_terminal();
        let opts = edit_cmd::options(app, &args, true, &progress, guard.cancel())?;
        let mut editor = ExternalEditor::from_env().map_err(Failure::usage)?;
        let stdin = io::stdin();
        edit_cmd::run(
            app,
            &opts,
            &mut editor,
            &mut stdin.lock(),
            &mut io::stdout().lock(),
            &mut io::stderr().lock(),
        )
    })();
    let line = match result {
        Ok(_) => format!("edit of {path} in {vm}: done"),
        Err(f) => format!("edit of {path} in {vm}: {}", f.message),
    };
    let _ = writeln!(stdout, "{}", terminal_line(&line));
    let _ = write!(stdout, "Press Enter to go back to top. ");
    let _ = stdout.flush();
    let mut answer = String::new();
    let _ = io::stdin().lock().read_line(&mut answer);
    line
}
