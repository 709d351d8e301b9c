//! The interactive menu. Its text is the seed's, exactly. The session keeps the latest
//! snapshot and refreshes it in a background thread that never prints: everything the
//! user sees is written by the menu loop itself, between prompts. The menu is not only a
//! view of that snapshot: options 1 and 3 and the dismount offer read and change VMs
//! directly, as the commands do.

pub(crate) mod media;

use std::io::{BufRead, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::edit::{self, EditError, EditOptions, ExternalEditor};
use crate::exit::{self, Failure};
use crate::hypervisor::DomainState;
use crate::media::guest::some_of;
use crate::probe::ProbeManager;
use crate::render;
use crate::snapshot::Snapshot;
use crate::term::progress::{Progress, ProgressSink};
use crate::term::prompt::Prompter;

pub const MENU: &str =
    "--- MENU ---\n1) Mount ISO\n2) Scan mounted ISOs\n3) Modify file in VM\n4) Exit\n";
pub const PROMPT: &str = "Select option: ";

/// A snapshot younger than this is shown at once by option 2.
const FRESH_ENOUGH: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Shared {
    latest: Option<(Result<Snapshot, String>, Instant)>,
    /// A refresh was asked for and has not finished yet.
    pending: bool,
    closing: bool,
}

/// Background refresher of the session's snapshot.
pub struct Refresher {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Refresher {
    pub fn start(probes: Arc<ProbeManager>) -> Refresher {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let bg = Arc::clone(&shared);
        {
            let mut s = lock(&shared.0);
            s.pending = true;
        }
        let handle = thread::spawn(move || {
            let (m, cv) = &*bg;
            loop {
                {
                    let mut s = lock(m);
                    while !s.pending && !s.closing {
                        s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
                    }
                    if s.closing {
                        return;
                    }
                }
                let result = probes
                    .scan_with_progress(&Progress::default())
                    .map_err(|e| e.to_string());
                let mut s = lock(m);
                s.latest = Some((result, Instant::now()));
                s.pending = false;
                cv.notify_all();
            }
        });
        Refresher {
            shared,
            handle: Some(handle),
        }
    }

    /// Ask for a new snapshot without waiting for it.
    pub fn refresh(&self) {
        let (m, cv) = &*self.shared;
        lock(m).pending = true;
        cv.notify_all();
    }

    /// A snapshot no older than `max_age`: the latest when fresh enough, else wait for
    /// the refresh under way (starting one when none is).
    pub fn get(&self, max_age: Duration) -> Result<Snapshot, String> {
        let (m, cv) = &*self.shared;
        let mut s = lock(m);
        if let Some((snap, at)) = &s.latest {
            if at.elapsed() <= max_age {
                return snap.clone();
            }
        }
        if !s.pending {
            s.pending = true;
            cv.notify_all();
        }
        while s.pending {
            s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        match &s.latest {
            Some((snap, _)) => snap.clone(),
            None => Err("no scan result".to_string()),
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        let (m, cv) = &*self.shared;
        lock(m).closing = true;
        cv.notify_all();
        // A scan in progress may wait for a frozen agent; do not block the exit on it.
        drop(self.handle.take());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The menu loop over any input/output; loud warnings also go to `warnings` (stderr).
/// Option 4 or end of input exits 0.
pub fn run(
    app: &App,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    warnings: &mut dyn Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    let refresher = Refresher::start(Arc::clone(&app.probes));
    let mut p = Prompter::new(input, output);
    loop {
        write!(p.out(), "{MENU}")?;
        let Some(choice) = p.ask(PROMPT)? else {
            return Ok(exit::OK);
        };
        match choice.trim() {
            "1" => {
                media::mount_flow(app, &mut p)?;
                refresher.refresh();
            }
            "2" => {
                show_scan(&refresher, &mut p)?;
                media::dismount_offer(app, &mut p)?;
                refresher.refresh();
            }
            "3" => modify_file(app, &mut p, warnings, progress)?,
            "4" => return Ok(exit::OK),
            other => p.say(&format!("{other:?} is not an option: type 1, 2, 3 or 4."))?,
        }
    }
}

/// Option 3: the seed's prompts (VM, remote path, local path), then the edit flow. A
/// failure is one line and the menu comes back.
fn modify_file(
    app: &App,
    p: &mut Prompter,
    warnings: &mut dyn Write,
    progress: &ProgressSink,
) -> Result<(), Failure> {
    let domains = match app.hv.list_domains() {
        Ok(d) => d,
        Err(e) => {
            p.say(&format!("cannot list VMs: {e}"))?;
            return Ok(());
        }
    };
    if domains.is_empty() {
        p.say(&format!("no VMs on {}", app.hv.uri()))?;
        return Ok(());
    }
    // Files move through the guest agent: only a running VM can be edited. The others
    // are named apart, with why, instead of sitting in the list like the rest.
    let (mut running, mut others): (Vec<_>, Vec<_>) = domains
        .into_iter()
        .partition(|d| d.state == DomainState::Running);
    running.sort_by(|a, b| a.name.cmp(&b.name));
    others.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = running.into_iter().map(|d| d.name).collect();
    if !others.is_empty() {
        let mut by_state: Vec<(&str, Vec<String>)> = Vec::new();
        for d in &others {
            match by_state.iter_mut().find(|(s, _)| *s == d.state.as_str()) {
                Some((_, v)) => v.push(d.name.clone()),
                None => by_state.push((d.state.as_str(), vec![d.name.clone()])),
            }
        }
        let parts: Vec<String> = by_state
            .iter()
            .map(|(state, vms)| format!("{} {state} ({})", vms.len(), some_of(vms, 5)))
            .collect();
        p.say(&format!(
            "Not offered, files move through the guest agent of a running VM: {}",
            parts.join("; ")
        ))?;
    }
    if names.is_empty() {
        p.say("No VM is running, so none can be edited.")?;
        return Ok(());
    }
    const CANCELLED: &str = "Cancelled; nothing was changed.";
    let Some(i) = p.choose("Running VMs:", &names)? else {
        p.say(CANCELLED)?;
        return Ok(());
    };
    let remote = match p.ask("Path of the file inside the VM: ")? {
        Some(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            p.say(CANCELLED)?;
            return Ok(());
        }
    };
    let Some(local) = p.ask("Local copy (empty for a private temporary file): ")? else {
        p.say(CANCELLED)?;
        return Ok(());
    };
    let guard = super::edit::interrupts()?;
    let opts = EditOptions {
        vm: names[i].clone(),
        remote_path: remote,
        local: Some(local.trim())
            .filter(|l| !l.is_empty())
            .map(std::path::PathBuf::from),
        yes: false,
        force: false,
        mode: edit::DEFAULT_NEW_MODE,
        transfer: app.transfer(progress, guard.cancel()),
        interactive: true,
        agent_timeout: app.settings.agent_timeout,
    };
    let result = match ExternalEditor::from_env() {
        Ok(mut editor) => edit::edit(app.hv.as_ref(), &opts, &mut editor, p),
        Err(e) => {
            p.say(&format!("error: {e}"))?;
            return Ok(());
        }
    };
    match result {
        Ok(done) => {
            if done.uploaded {
                super::edit::audit_edit(app, &opts.vm, &opts.remote_path, "ok");
            }
            if let Some(w) = done.warning {
                render::text::write_line(warnings, &w)?;
            }
        }
        Err(e) => {
            if let EditError::RolledBack(m) | EditError::Damaged { message: m, .. } = &e {
                super::edit::audit_edit(app, &opts.vm, &opts.remote_path, m);
            }
            super::edit::note_damage(app, &opts.vm, &opts.remote_path, &e, warnings)?;
            p.say(&format!("error: {e}"))?;
        }
    }
    Ok(())
}

fn show_scan(refresher: &Refresher, p: &mut Prompter) -> Result<(), Failure> {
    match refresher.get(FRESH_ENOUGH) {
        Ok(snap) => {
            let mut buf = Vec::new();
            render::table::write_table(&mut buf, &snap)?;
            p.out().write_all(&buf)?;
            for e in &snap.errors {
                p.say(&format!("warning: {e}"))?;
            }
        }
        Err(e) => p.say(&format!("scan failed: {e}"))?,
    }
    // Keep the next view fresh without making the user wait for it.
    refresher.refresh();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve_with, FileConfig, Overrides};
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
    use crate::hypervisor::DomainState;

    fn app(hv: FakeHypervisor) -> App {
        let mut settings =
            resolve_with(&Overrides::default(), None, FileConfig::default()).unwrap();
        settings.cache_path = None;
        settings.scan_deadline = Duration::from_millis(500);
        App::from_parts(settings, Arc::new(hv), false)
    }

    fn drive(app: &App, input: &str) -> (u8, String) {
        let mut inp = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut out = Vec::new();
        let code = run(
            app,
            &mut inp,
            &mut out,
            &mut Vec::new(),
            &ProgressSink::none(),
        )
        .unwrap();
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn menu_text_is_the_seeds_exactly() {
        let (code, out) = drive(&app(FakeHypervisor::new()), "4\n");
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "--- MENU ---\n1) Mount ISO\n2) Scan mounted ISOs\n3) Modify file in VM\n4) Exit\nSelect option: "
        );
    }

    #[test]
    fn scan_invalid_input_and_end_of_input() {
        let hv = FakeHypervisor::new().with_domain(FakeDomain::new("web01", DomainState::ShutOff));
        let (code, out) = drive(&app(hv), "2\nfoo\n2\n");
        assert_eq!(code, 0);
        assert_eq!(out.matches("--- MENU ---").count(), 4);
        assert_eq!(out.matches("web01").count(), 2);
        assert!(out.contains("\"foo\" is not an option: type 1, 2, 3 or 4."));
        assert!(out.contains("Memory (used/max)"));
    }

    #[test]
    fn modify_file_prompts_and_comes_back_with_one_line() {
        let hv = FakeHypervisor::new()
            .with_domain(FakeDomain::new("web01", DomainState::ShutOff))
            .with_domain(FakeDomain::new("db01", DomainState::Running));
        // By number, then by name; a stopped VM is not offered, and says why.
        let (code, out) = drive(
            &app(hv),
            "3\n1\n/etc/hosts\n\n3\ndb01\n/etc/hosts\n\n3\n\n4\n",
        );
        assert_eq!(code, 0);
        assert!(out.contains("Not offered, files move through the guest agent of a running VM: 1 shut off (web01)\nRunning VMs:\n  1) db01\n"), "{out}");
        assert!(!out.contains(") web01"), "{out}");
        assert!(
            out.contains("error: the guest agent of \"db01\" is not connected"),
            "{out}"
        );
        assert!(
            out.contains("Cancelled; nothing was changed.\n--- MENU ---"),
            "{out}"
        );
        assert_eq!(out.matches("--- MENU ---").count(), 4);
    }

    #[test]
    fn empty_host_says_no_vms() {
        let (_, out) = drive(&app(FakeHypervisor::new()), "2\n");
        assert!(out.contains("no VMs on fake:///test"));
    }
}
