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

use crate::app::{open_hosts, App, Host};
use crate::config::Settings;
use crate::edit::{self, EditError, EditOptions, ExternalEditor};
use crate::exit::{self, Failure};
use crate::fleet::Target;
use crate::hypervisor::{DomainInfo, DomainState, HvResult};
use crate::media::guest::some_of;
use crate::probe::cache::OsCache;
use crate::probe::{save_cache, ProbeManager, ProbeSettings};
use crate::render;
use crate::snapshot::Snapshot;
use crate::term::progress::{Progress, ProgressSink};
use crate::term::prompt::Prompter;

pub const MENU: &str =
    "--- MENU ---\n1) Mount ISO\n2) Scan mounted ISOs\n3) Modify file in VM\n4) Exit\n";
pub const PROMPT: &str = "Select option: ";

/// A snapshot younger than this is shown at once by option 2.
const FRESH_ENOUGH: Duration = Duration::from_secs(10);

/// The hosts the menu works on. With one, every list and table is the single-host one;
/// with several, the table gets a HOST column and every VM is shown as `HOST:VM`.
pub struct Session {
    hosts: Vec<Host>,
    /// With several hosts: the cache their scans share, and its TTLs (saved once a scan).
    shared: Option<(Arc<Mutex<OsCache>>, ProbeSettings)>,
    /// Several hosts were chosen: VMs are `HOST:VM` and the table has its HOST column,
    /// even when only one of them could be opened.
    named: bool,
}

/// `f` on every item, each on a thread of its own (one item: on this one), results in the
/// items' order. A panic in `f` is a panic here, as it would be without the threads.
fn in_parallel<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    if let [one] = items {
        return vec![f(one)];
    }
    thread::scope(|s| {
        let f = &f;
        let running: Vec<_> = items.iter().map(|i| s.spawn(move || f(i))).collect();
        running
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Domains with the index of their host.
type Listed = Vec<(usize, DomainInfo)>;

/// Each host's name and what its scan gave.
type Scanned = Vec<(String, Result<Snapshot, String>)>;

impl Session {
    /// The session over one host.
    pub fn one(app: App) -> Session {
        let name = app.uri();
        Session {
            hosts: vec![Host { name, app }],
            shared: None,
            named: false,
        }
    }

    /// Open every target in parallel (see [`open_hosts`]); `None` when no host could be.
    pub fn connect(
        settings: &Settings,
        targets: &[Target],
        warnings: &mut dyn Write,
    ) -> Result<Option<Session>, Failure> {
        Ok(open_hosts(settings, targets, warnings)?.map(|o| Session {
            hosts: o.hosts,
            shared: Some((o.cache, o.saving)),
            named: true,
        }))
    }

    /// A session over hosts already open (tests).
    #[cfg(test)]
    pub fn of(hosts: Vec<Host>, shared: Option<(Arc<Mutex<OsCache>>, ProbeSettings)>) -> Session {
        let named = hosts.len() > 1;
        Session {
            hosts,
            shared,
            named,
        }
    }

    fn several(&self) -> bool {
        self.named
    }

    /// How the menu shows VM `vm` of host `h`: `HOST:VM` with several hosts (what the
    /// commands take), the bare name with one.
    fn label(&self, h: usize, vm: &str) -> String {
        format!("{}{vm}", self.prefix(h))
    }

    /// `read` on every host in parallel, in the hosts' order.
    fn each<T: Send>(&self, read: impl Fn(&App) -> T + Sync) -> Vec<T> {
        in_parallel(&self.hosts, |h| read(&h.app))
    }

    /// Every host's domains, and the URIs of the hosts that answered; a host that fails
    /// is one line on `p`.
    fn domains(&self, p: &mut Prompter) -> Result<(Listed, Vec<String>), Failure> {
        let listed: Vec<HvResult<Vec<DomainInfo>>> = self.each(|app| app.hv.list_domains());
        let (mut all, mut answered) = (Vec::new(), Vec::new());
        for (h, r) in listed.into_iter().enumerate() {
            match r {
                Ok(ds) => {
                    answered.push(self.hosts[h].app.hv.uri());
                    all.extend(ds.into_iter().map(|d| (h, d)));
                }
                Err(e) => p.say(&format!("{}cannot list VMs: {e}", self.on(h)))?,
            }
        }
        Ok((all, answered))
    }

    /// `HOST:` before a VM's lines when there are several hosts.
    fn prefix(&self, h: usize) -> String {
        if self.several() {
            format!("{}:", self.hosts[h].name)
        } else {
            String::new()
        }
    }

    /// `host NAME: ` before a line about one host when there are several.
    fn on(&self, h: usize) -> String {
        if self.several() {
            format!("host {}: ", self.hosts[h].name)
        } else {
            String::new()
        }
    }

    /// What the background refresher runs: every host's scan, in parallel.
    fn scanner(&self) -> impl Fn() -> Scanned + Send + 'static {
        let hosts: Vec<(String, Arc<ProbeManager>)> = self
            .hosts
            .iter()
            .map(|h| (h.name.clone(), Arc::clone(&h.app.probes)))
            .collect();
        let shared = self.shared.clone();
        move || {
            let scanned: Scanned = in_parallel(&hosts, |(name, probes)| {
                // A scan that panics is that host's error, not the end of the refresher
                // (the menu would wait for it forever).
                let scan = std::panic::AssertUnwindSafe(|| {
                    probes.scan_with_progress(&Progress::default())
                });
                let r = match std::panic::catch_unwind(scan) {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("the scan stopped unexpectedly".to_string()),
                };
                (name.clone(), r)
            });
            if let Some((cache, settings)) = &shared {
                // The cache only saves time: a failed save costs the next scan, no more.
                let _ = save_cache(&mut lock(cache), settings);
            }
            scanned
        }
    }
}

#[derive(Default)]
struct Shared {
    latest: Option<(Scanned, Instant)>,
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
    pub fn start(scan: impl Fn() -> Scanned + Send + 'static) -> Refresher {
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
                let result = scan();
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
    pub fn get(&self, max_age: Duration) -> Option<Scanned> {
        let (m, cv) = &*self.shared;
        let mut s = lock(m);
        if let Some((snap, at)) = &s.latest {
            if at.elapsed() <= max_age {
                return Some(snap.clone());
            }
        }
        if !s.pending {
            s.pending = true;
            cv.notify_all();
        }
        while s.pending {
            s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.latest.as_ref().map(|(snap, _)| snap.clone())
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
    session: &Session,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    warnings: &mut dyn Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    let refresher = Refresher::start(session.scanner());
    let mut p = Prompter::new(input, output);
    loop {
        write!(p.out(), "{MENU}")?;
        let Some(choice) = p.ask(PROMPT)? else {
            return Ok(exit::OK);
        };
        match choice.trim() {
            "1" => {
                media::mount_flow(session, &mut p)?;
                refresher.refresh();
            }
            "2" => {
                show_scan(&refresher, session.several(), &mut p)?;
                media::dismount_offer(session, &mut p)?;
                refresher.refresh();
            }
            "3" => modify_file(session, &mut p, warnings, progress)?,
            "4" => return Ok(exit::OK),
            other => p.say(&format!("{other:?} is not an option: type 1, 2, 3 or 4."))?,
        }
    }
}

/// Option 3: the seed's prompts (VM, remote path, local path), then the edit flow. A
/// failure is one line and the menu comes back.
fn modify_file(
    session: &Session,
    p: &mut Prompter,
    warnings: &mut dyn Write,
    progress: &ProgressSink,
) -> Result<(), Failure> {
    let (domains, answered) = session.domains(p)?;
    if domains.is_empty() {
        if !answered.is_empty() {
            p.say(&format!("no VMs on {}", answered.join(", ")))?;
        }
        return Ok(());
    }
    // Files move through the guest agent: only a running VM can be edited. The others
    // are named apart, with why, instead of sitting in the list like the rest.
    let (mut running, mut others): (Vec<_>, Vec<_>) = domains
        .into_iter()
        .partition(|(_, d)| d.state == DomainState::Running);
    let labelled = |v: &mut Vec<(usize, DomainInfo)>| -> Vec<(usize, String, DomainInfo)> {
        let mut v: Vec<_> = v
            .drain(..)
            .map(|(h, d)| (h, session.label(h, &d.name), d))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    };
    let running = labelled(&mut running);
    let others = labelled(&mut others);
    if !others.is_empty() {
        let mut by_state: Vec<(&str, Vec<String>)> = Vec::new();
        for (_, label, d) in &others {
            match by_state.iter_mut().find(|(s, _)| *s == d.state.as_str()) {
                Some((_, v)) => v.push(label.clone()),
                None => by_state.push((d.state.as_str(), vec![label.clone()])),
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
    if running.is_empty() {
        p.say("No VM is running, so none can be edited.")?;
        return Ok(());
    }
    let names: Vec<String> = running.iter().map(|(_, l, _)| l.clone()).collect();
    const CANCELLED: &str = "Cancelled; nothing was changed.";
    let Some(i) = p.choose("Running VMs:", &names)? else {
        p.say(CANCELLED)?;
        return Ok(());
    };
    let (h, _, chosen) = &running[i];
    let app = &session.hosts[*h].app;
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
        vm: chosen.name.clone(),
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

/// Option 2's table: the one-host table, or with `named` hosts the HOST column and one
/// line per host whose scan failed.
fn show_scan(refresher: &Refresher, named: bool, p: &mut Prompter) -> Result<(), Failure> {
    let scanned = refresher.get(FRESH_ENOUGH).unwrap_or_default();
    let mut buf = Vec::new();
    match &scanned[..] {
        [] => p.say("scan failed: no scan result")?,
        [(_, Err(e))] if !named => p.say(&format!("scan failed: {e}"))?,
        [(_, Ok(snap))] if !named => {
            render::table::write_table(&mut buf, snap)?;
            p.out().write_all(&buf)?;
            for e in &snap.errors {
                p.say(&format!("warning: {e}"))?;
            }
        }
        several => {
            let snaps: Vec<(&str, &Snapshot)> = several
                .iter()
                .filter_map(|(host, r)| Some((host.as_str(), r.as_ref().ok()?)))
                .collect();
            render::table::write_fleet_table(&mut buf, &snaps)?;
            p.out().write_all(&buf)?;
            for (host, r) in several {
                match r {
                    Ok(snap) => {
                        for e in &snap.errors {
                            p.say(&format!("warning: {host}: {e}"))?;
                        }
                    }
                    Err(e) => p.say(&format!("error: host {host}: {e}"))?,
                }
            }
        }
    }
    // Keep the next view fresh without making the user wait for it.
    refresher.refresh();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
    use crate::hypervisor::DomainState;

    fn app(hv: FakeHypervisor) -> App {
        Host::fake("fake", &hv).app
    }

    fn drive(app: App, input: &str) -> (u8, String) {
        drive_session(&Session::one(app), input)
    }

    pub(super) fn drive_session(session: &Session, input: &str) -> (u8, String) {
        let mut inp = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut out = Vec::new();
        let code = run(
            session,
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
        let (code, out) = drive(app(FakeHypervisor::new()), "4\n");
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "--- MENU ---\n1) Mount ISO\n2) Scan mounted ISOs\n3) Modify file in VM\n4) Exit\nSelect option: "
        );
    }

    #[test]
    fn scan_invalid_input_and_end_of_input() {
        let hv = FakeHypervisor::new().with_domain(FakeDomain::new("web01", DomainState::ShutOff));
        let (code, out) = drive(app(hv), "2\nfoo\n2\n");
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
            app(hv),
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
        let (_, out) = drive(app(FakeHypervisor::new()), "2\n");
        assert!(out.contains("no VMs on fake:///test"));
    }
}

#[cfg(test)]
mod several_hosts {
    use super::tests::drive_session;
    use super::*;
    use crate::hypervisor::fake::{Call, FakeDomain, FakeHypervisor};
    use crate::hypervisor::{DomainState, StorageVolume};
    use crate::media::testkit::iso_file;

    const ISO_XML: &str = "<domain><devices><disk type='file' device='cdrom'>\
        <source file='/isos/a.iso'/><target dev='sda' bus='sata'/></disk></devices></domain>";
    const EMPTY_XML: &str = "<domain><devices><disk type='file' device='cdrom'>\
        <target dev='sda' bus='sata'/></disk></devices></domain>";

    /// Host "kvm1" with web01 (shut off, holding a.iso) and db01 (running, empty drive);
    /// host "kvm2" with web01 (running, holding a.iso) and an ISO volume in its pool.
    fn fleet() -> (FakeHypervisor, FakeHypervisor, Session, tempfile::TempDir) {
        let (dir, iso) = iso_file();
        let one = FakeHypervisor::new()
            .with_domain(FakeDomain::new("web01", DomainState::ShutOff).with_xml(ISO_XML))
            .with_domain(FakeDomain::new("db01", DomainState::Running).with_xml(EMPTY_XML));
        let two = FakeHypervisor::new()
            .with_domain(FakeDomain::new("web01", DomainState::Running).with_xml(ISO_XML))
            .with_volume(StorageVolume {
                pool: "isos".into(),
                name: "b.iso".into(),
                path: iso.display().to_string(),
                capacity_bytes: None,
            });
        let session = Session::of(
            vec![Host::fake("kvm1", &one), Host::fake("kvm2", &two)],
            None,
        );
        (one, two, session, dir)
    }

    fn changes(hv: &FakeHypervisor) -> Vec<Call> {
        hv.calls()
            .into_iter()
            .filter(|c| matches!(c, Call::UpdateDevice { .. } | Call::AttachDevice { .. }))
            .collect()
    }

    #[test]
    fn the_table_has_a_host_column_and_every_hosts_vms() {
        let (_, _, session, _dir) = fleet();
        let (code, out) = drive_session(&session, "2\n\n4\n");
        assert_eq!(code, 0);
        let header = out
            .lines()
            .find(|l| l.contains("Memory (used/max)"))
            .unwrap();
        assert!(header.contains(": HOST VM "), "{out}");
        for row in ["kvm1 ", "kvm2 "] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(row) && l.contains("web01")),
                "{out}"
            );
        }
        // The dismount offer names each drive by HOST:VM, and the ISO across hosts.
        assert!(out.contains(") kvm1:web01 sda: /isos/a.iso"), "{out}");
        assert!(out.contains(") kvm2:web01 sda: /isos/a.iso"), "{out}");
        assert!(
            out.contains(") /isos/a.iso from all 2 VMs holding it"),
            "{out}"
        );
    }

    #[test]
    fn an_iso_is_dismounted_from_every_host_holding_it() {
        let (one, two, session, _dir) = fleet();
        let (_, out) = drive_session(&session, "2\n/isos/a.iso from all\n4\n");
        assert_eq!(changes(&one).len(), 1, "{out}");
        assert_eq!(changes(&two).len(), 1, "{out}");
        assert!(out.contains("kvm1:web01: sda ejected /isos/a.iso"), "{out}");
        assert!(out.contains("kvm2:web01: sda ejected /isos/a.iso"), "{out}");
    }

    #[test]
    fn option_1_lists_host_vm_and_mounts_on_the_host_chosen() {
        let (one, two, session, _dir) = fleet();
        // kvm2's web01 holds a.iso: "Mount another ISO", kvm2's pool offers b.iso.
        let (_, out) = drive_session(&session, "1\nkvm2:web01\n2\n1\ny\n4\n");
        assert!(out.contains(") kvm1:db01 (running)"), "{out}");
        assert!(out.contains(") kvm2:web01 (running)"), "{out}");
        assert!(
            out.contains("CD-ROM drives of kvm2:web01 (running):"),
            "{out}"
        );
        assert!(out.contains(" into kvm2:web01 sda?"), "{out}");
        assert!(changes(&one).is_empty(), "{out}");
        assert_eq!(changes(&two).len(), 1, "{out}");
        assert!(out.contains("] kvm2:web01 sda: mounted "), "{out}");
    }

    #[test]
    fn option_3_offers_running_vms_of_every_host_by_host_vm() {
        let (_, _, session, _dir) = fleet();
        let (_, out) = drive_session(&session, "3\n\n4\n");
        assert!(
            out.contains(
                "Not offered, files move through the guest agent of a running VM: \
                 1 shut off (kvm1:web01)\nRunning VMs:\n  1) kvm1:db01\n  2) kvm2:web01\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_host_gone_mid_session_is_one_line_and_the_others_still_work() {
        let (one, _, session, _dir) = fleet();
        one.fail_listing(crate::hypervisor::HvError::Unreachable {
            uri: "fake:///test".into(),
            detail: "connection lost".into(),
        });
        let (code, out) = drive_session(&session, "3\n\n2\n\n4\n");
        assert_eq!(code, 0);
        assert!(out.contains("host kvm1: cannot list VMs: "), "{out}");
        assert!(!out.contains("no VMs on"), "{out}");
        assert!(out.contains("Running VMs:\n  1) kvm2:web01\n"), "{out}");
        assert!(out.contains("error: host kvm1: "), "{out}");
        assert!(out.lines().any(|l| l.starts_with("kvm2 web01 ")), "{out}");
    }

    #[test]
    fn hosts_stay_named_when_only_one_of_those_chosen_could_be_opened() {
        let (_, two, _, _dir) = fleet();
        let session = Session {
            hosts: vec![Host::fake("kvm2", &two)],
            shared: None,
            named: true,
        };
        let (_, out) = drive_session(&session, "1\nkvm2:web01\n\n\n2\n\n4\n");
        assert!(out.contains("  1) kvm2:web01 (running)"), "{out}");
        assert!(
            out.contains("CD-ROM drives of kvm2:web01 (running):"),
            "{out}"
        );
        assert!(out.contains(": HOST VM "), "{out}");
    }
}
