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
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::app::{App, Host, OpenHosts};
use crate::cli::{EditArgs, MountArgs, TopArgs, TopFormat};
use crate::commands::{edit as edit_cmd, media};
use crate::edit::ExternalEditor;
use crate::exit::{self, Failure};
use crate::media::iso::uri_is_local;
use crate::probe::cache::OsCache;
use crate::probe::{save_cache, ProbeManager, ProbeSettings};
use crate::render::media::eject_line;
use crate::render::text::terminal_line;
use crate::snapshot::telemetry::Families;
use crate::term::interrupt::Interrupts;
use crate::term::progress::ProgressSink;
use crate::top::batch::{self, Format};
use crate::top::collector::{self, Source, Update};
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

/// The hosts `top` watches: with several, VMs are `HOST:VM` and the table has its HOST
/// column; the hosts' probe managers share one cache, saved when `top` ends.
pub struct Watched {
    pub hosts: Vec<Host>,
    /// With several hosts (and only then): the cache they share and how to save it.
    pub shared: Option<(Arc<Mutex<OsCache>>, ProbeSettings)>,
    /// Hosts that could not be opened, and why (each already said on stderr).
    pub unopened: Vec<(String, String)>,
}

impl Watched {
    /// Several hosts, as [`crate::app::open_hosts`] opened them.
    pub fn several_of(open: OpenHosts) -> Watched {
        Watched {
            hosts: open.hosts,
            shared: Some((open.cache, open.saving)),
            unopened: open.unopened,
        }
    }

    /// Whether several hosts were chosen (even if only one of them could be opened).
    fn several(&self) -> bool {
        self.shared.is_some()
    }

    /// One host.
    pub fn one(app: App) -> Watched {
        Watched {
            hosts: vec![Host {
                name: app.uri(),
                app,
            }],
            shared: None,
            unopened: Vec::new(),
        }
    }

    /// The app on the host a VM label names, and the VM's name there: `HOST:VM` with
    /// several hosts (the longest host name that prefixes it wins), else the name as is.
    /// A label naming no host watched is refused, never guessed at.
    fn on_host(&self, label: &str) -> Result<(App, String), String> {
        if !self.several() {
            return Ok((self.hosts[0].app.clone(), label.to_string()));
        }
        self.hosts
            .iter()
            .filter_map(|h| {
                let vm = label.strip_prefix(h.name.as_str())?.strip_prefix(':')?;
                Some((h, vm))
            })
            .max_by_key(|(h, _)| h.name.len())
            .map(|(h, vm)| (h.app.clone(), vm.to_string()))
            .ok_or_else(|| format!("{label}: error: no host watched by top holds this VM"))
    }

    /// Save the shared cache (several hosts), once, when `top` ends.
    fn save_cache(&self) {
        if let Some((cache, saving)) = &self.shared {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            let _ = save_cache(&mut cache, saving);
        }
    }

    /// A collector source per host, with `top`'s statistics families.
    fn sources(&self) -> Vec<Source> {
        self.hosts
            .iter()
            .map(|h| {
                let settings = ProbeSettings {
                    collect: FAMILIES,
                    ..h.app.probes.settings().clone()
                };
                let hv = Arc::clone(&h.app.hv);
                let probes = Arc::new(match &self.shared {
                    Some((cache, _)) => {
                        ProbeManager::with_cache(Arc::clone(&hv), settings, Arc::clone(cache))
                    }
                    None => ProbeManager::new(Arc::clone(&hv), settings),
                });
                let uri = h.app.uri();
                Source {
                    probes,
                    host_cpus: Box::new(move || host_cpus(&uri).or_else(|| hv.host_cpus())),
                }
            })
            .collect()
    }

    /// The HOST column's names, in the collectors' order (none with one host).
    fn names(&self) -> Vec<String> {
        if self.several() {
            self.hosts.iter().map(|h| h.name.clone()).collect()
        } else {
            Vec::new()
        }
    }
}

/// `top [-d SECS] [--sort FIELD] [--filter TEXT] [--batch …]` on the hosts `watched`.
pub fn run(watched: Watched, args: &TopArgs) -> Result<u8, Failure> {
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
    let filter = args.filter.clone().unwrap_or_default();
    if args.batch {
        let format = match args.format {
            TopFormat::Csv => Format::Csv,
            TopFormat::Jsonl => Format::Jsonl,
        };
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        let code = run_batch(
            watched.sources(),
            interval,
            &BatchSpec {
                format,
                iterations: args.iterations,
                sort: sort.unwrap_or(Column::Vm),
                filter,
                hosts: watched.names(),
            },
            &mut out,
            &mut io::stderr(),
        );
        watched.save_cache();
        return match code {
            Ok(exit::OK) if !watched.unopened.is_empty() => Ok(exit::PARTIAL),
            other => other,
        };
    }
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(Failure::usage(
            "top needs a terminal; for a pipe or a file use `top --batch`",
        ));
    }
    let mut ui = if watched.several() {
        let mut names = watched.names();
        names.extend(watched.unopened.iter().map(|(n, _)| n.clone()));
        let title = format!("{} hosts", names.len());
        let mut ui = Ui::of_hosts(title, &names, args.delay, color_wanted());
        for (i, (_, e)) in watched.unopened.iter().enumerate() {
            ui.failed(watched.hosts.len() + i, format!("cannot be opened: {e}"));
        }
        ui
    } else {
        Ui::new(watched.hosts[0].app.uri(), args.delay, color_wanted())
    };
    if let Some(s) = sort {
        ui.sort = s;
    }
    ui.filter = filter;
    let rx = collector::spawn(watched.sources(), interval);
    let code = interactive(&watched, ui, rx);
    watched.save_cache();
    match code {
        Ok(exit::OK) if !watched.unopened.is_empty() => Ok(exit::PARTIAL),
        other => other,
    }
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
    /// The hosts' names, in the sources' order, with several hosts (none with one).
    pub hosts: Vec<String>,
}

/// `top --batch`: records from each host's second sample on (every rate needs two), one
/// set per host per interval. With one host a failed first scan is the command's error;
/// every other failed scan is a line on `warnings`. `--iterations N` gives each host N
/// intervals (a failed scan counts as one) and ends when every host has had them. A closed stdout (`| head`)
/// ends it quietly.
pub fn run_batch(
    sources: Vec<Source>,
    interval: Duration,
    spec: &BatchSpec,
    out: &mut dyn Write,
    warnings: &mut dyn Write,
) -> Result<u8, Failure> {
    let count = sources.len();
    let rx = collector::spawn(sources, interval);
    let names: Vec<Option<Arc<str>>> = if spec.hosts.is_empty() {
        vec![None; count]
    } else {
        spec.hosts
            .iter()
            .map(|n| Some(Arc::from(n.as_str())))
            .collect()
    };
    let mut prev: Vec<Option<Sample>> = vec![None; count];
    // Updates each host has sent; the first only primes the rates.
    let mut seen = vec![0u64; count];
    let mut header = false;
    let quiet_pipe = |e: io::Error| -> Result<u8, Failure> {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Ok(exit::OK)
        } else {
            Err(Failure::from(e))
        }
    };
    let done = |seen: &[u64]| {
        spec.iterations
            .is_some_and(|max| seen.iter().all(|&n| n > max))
    };
    for (h, update) in rx.iter() {
        let Some(name) = names.get(h) else {
            continue;
        };
        seen[h] += 1;
        match update {
            Update::Failed(e) if count == 1 && prev[h].is_none() && !header => {
                return Err(Failure::usage(format!("top: {e}")));
            }
            Update::Failed(e) => {
                let on = name
                    .as_ref()
                    .map(|n| format!("host {n}: "))
                    .unwrap_or_default();
                let _ = writeln!(
                    warnings,
                    "{}",
                    terminal_line(&format!("top: {on}scan failed: {e}"))
                );
            }
            Update::Sample(s) => {
                if !header {
                    header = true;
                    if let Err(e) = batch::write_header(out, spec.format, name.is_some()) {
                        return quiet_pipe(e);
                    }
                }
                // A host that has had its N intervals waits for the others in silence.
                let more = spec.iterations.is_none_or(|max| seen[h] <= max + 1);
                if let (Some(p), true) = (&prev[h], more) {
                    let mut lines: Vec<model::Line> = model::lines(Some(p), &s, name.as_ref())
                        .into_iter()
                        .filter(|l| model::matches(l, &spec.filter))
                        .collect();
                    model::sort(&mut lines, spec.sort, false);
                    let n = seen[h] - 1;
                    if let Err(e) = batch::write_records(out, spec.format, s.unix, n, &lines) {
                        return quiet_pipe(e);
                    }
                }
                prev[h] = Some(*s);
            }
        }
        if done(&seen) {
            return Ok(exit::OK);
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
    watched: &Watched,
    mut ui: Ui,
    rx: crossbeam_channel::Receiver<(usize, Update)>,
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
        while let Ok((h, u)) = rx.try_recv() {
            match u {
                Update::Sample(s) => ui.take_from(h, *s),
                Update::Failed(e) => ui.failed(h, e),
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
        let action = ui.key(k);
        // The host of the VM the action is about, and the VM's name there.
        let (app, vm) = match action.vm().map(|label| watched.on_host(label)) {
            None => (None, String::new()),
            Some(Ok((app, vm))) => (Some(app), vm),
            Some(Err(e)) => {
                ui.done(e);
                continue;
            }
        };
        let tx = done_tx.clone();
        match (action, app) {
            (Action::Quit, _) => break,
            (Action::Eject { vm: label }, Some(app)) => {
                thread::spawn(move || {
                    let line = match media::eject_one(&app, &vm, None, false) {
                        Ok(report) => on_host_line(&label, &vm, &eject_line(&report)),
                        Err(f) => format!("{label}: error: {}", f.message),
                    };
                    let _ = tx.send(Done::Line(line));
                });
            }
            (Action::ListIsos { vm: label }, Some(app)) => {
                thread::spawn(move || {
                    let _ = match media::iso_volumes(&app) {
                        Ok(v) => {
                            tx.send(Done::Isos(label, v.into_iter().map(|v| v.path).collect()))
                        }
                        Err(e) => tx.send(Done::Isos(
                            label,
                            vec![format!("(cannot list storage pools: {e})")],
                        )),
                    };
                });
            }
            (Action::Mount { vm: label, iso }, Some(app)) => {
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
                        Ok(_) => on_host_line(&label, &vm, String::from_utf8_lossy(&out).trim()),
                        Err(f) => format!("{label}: error: {}", f.message),
                    };
                    let _ = tx.send(Done::Line(line));
                });
            }
            (Action::Edit { vm: label, path }, Some(app)) => {
                let before = cancel.count();
                let line = screen.suspended(|| edit_in_guest(&app, &vm, &label, &path))?;
                // Interrupts during the edit were the edit's, not a request to quit.
                cancel = cancel.after(cancel.count() - before);
                ui.done(line);
            }
            _ => {}
        }
    }
    drop(screen);
    drop(signals);
    Ok(exit::OK)
}

/// A result line that starts with VM `vm`'s name, as the screen names it (`label`: with
/// several hosts `HOST:VM`, so the line starts `HOST:`).
fn on_host_line(label: &str, vm: &str, line: &str) -> String {
    let host = label.strip_suffix(vm).unwrap_or_default();
    format!("{host}{line}")
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
/// `label`: how the screen names the VM (`HOST:VM` with several hosts).
fn edit_in_guest(app: &App, vm: &str, label: &str, path: &str) -> String {
    let mut stdout = io::stdout();
    let _ = writeln!(
        stdout,
        "{}",
        terminal_line(&format!("editing {path} in {label}"))
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
        Ok(_) => format!("edit of {path} in {label}: done"),
        Err(f) => format!("edit of {path} in {label}: {}", f.message),
    };
    let _ = writeln!(stdout, "{}", terminal_line(&line));
    let _ = write!(stdout, "Press Enter to go back to top. ");
    let _ = stdout.flush();
    let mut answer = String::new();
    let _ = io::stdin().lock().read_line(&mut answer);
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
    use crate::hypervisor::{DomainState, HvError};

    fn watched(hosts: Vec<Host>) -> Watched {
        let saving = ProbeSettings::default();
        Watched {
            hosts,
            shared: Some((Arc::new(Mutex::new(OsCache::in_memory())), saving)),
            unopened: Vec::new(),
        }
    }

    #[test]
    fn a_vm_label_goes_to_the_host_it_names() {
        let hv = FakeHypervisor::new();
        let w = watched(vec![Host::fake("a", &hv), Host::fake("a:b", &hv)]);
        let at = |label: &str| {
            let (app, vm) = w.on_host(label)?;
            let h = w
                .hosts
                .iter()
                .position(|h| Arc::ptr_eq(&h.app.probes, &app.probes));
            Ok::<_, String>((h, vm))
        };
        assert_eq!(at("a:web"), Ok((Some(0), "web".to_string())));
        assert_eq!(
            at("a:b:web"),
            Ok((Some(1), "web".to_string())),
            "the longest name"
        );
        assert_eq!(at("a:b:c"), Ok((Some(1), "c".to_string())));
        assert_eq!(
            at("z:web"),
            Err("z:web: error: no host watched by top holds this VM".to_string()),
            "never another host's VM"
        );
    }

    #[test]
    fn batch_over_two_hosts_prints_each_hosts_records_and_says_which_failed() {
        let one = FakeHypervisor::new()
            .with_domain(FakeDomain::new("web01", DomainState::Running))
            .with_domain(FakeDomain::new("db01", DomainState::ShutOff));
        let two = FakeHypervisor::new().with_domain(FakeDomain::new("web01", DomainState::Running));
        let three = FakeHypervisor::new();
        three.fail_listing(HvError::Unreachable {
            uri: "fake:///three".into(),
            detail: "gone".into(),
        });
        let w = watched(vec![
            Host::fake("kvm1", &one),
            Host::fake("kvm2", &two),
            Host::fake("kvm3", &three),
        ]);
        let (mut out, mut warnings) = (Vec::new(), Vec::new());
        let code = run_batch(
            w.sources(),
            Duration::from_millis(200),
            &BatchSpec {
                format: Format::Jsonl,
                iterations: Some(2),
                sort: Column::Vm,
                filter: String::new(),
                hosts: w.names(),
            },
            &mut out,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(code, exit::OK);
        let records: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let of = |host: &str, vm: &str, it: u64| {
            records
                .iter()
                .filter(|r| r["host"] == host && r["vm"] == vm && r["iteration"] == it)
                .count()
        };
        assert!(records
            .iter()
            .all(|r| r["iteration"] == 1 || r["iteration"] == 2));
        for it in [1, 2] {
            assert_eq!(of("kvm1", "web01", it), 1, "{records:?}");
            assert_eq!(of("kvm1", "db01", it), 1, "{records:?}");
            assert_eq!(of("kvm2", "web01", it), 1, "{records:?}");
        }
        assert!(records.iter().all(|r| r["host"] != "kvm3"));
        let warnings = String::from_utf8(warnings).unwrap();
        assert!(
            warnings.contains("top: host kvm3: scan failed: cannot reach libvirt"),
            "{warnings}"
        );
        assert!(
            !warnings.contains("kvm1") && !warnings.contains("kvm2"),
            "{warnings}"
        );
    }
}
