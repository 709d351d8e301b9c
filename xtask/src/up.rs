//! `up`: bring every guest to its promised state, repairing what tests left behind —
//! a changed definition is redefined, a stopped guest started, a paused one resumed, a
//! guest whose agent hangs rebooted once, the promised disc put back into `sda`, the
//! hostile guest's agent switched back to honest — then wait for the agents (all guests
//! at once), freeze the frozen guest's agent, pause the paused one. `down`: destroy and
//! undefine every harness domain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dismount_iso_qemu::agent::Agent;
use dismount_iso_qemu::domxml::{self, MediaSource};
use dismount_iso_qemu::hypervisor::{ChangeScope, DomainState, HvError, XmlScope};

use crate::guests::{data_disk, domain_xml, Cdrom, Expect, Guest, GUESTS, HARNESS_ISO, PREFIX};
use crate::hostile;
use crate::lifecycle::{define, qemu_age, qemu_instance, state, virsh};
use crate::{msg, Harness};

/// The image the guests boot.
pub struct Image {
    pub emulator: PathBuf,
    pub hash: String,
}

/// What a guest-ping says about a guest's agent, by the tool's own classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping {
    Ok,
    NotConnected,
    Timeout,
    NotRunning,
    Error(String),
}

pub fn ping(h: &Harness, name: &str, timeout: Duration) -> Ping {
    match Agent::new(h.hv.as_ref(), name, timeout).ping() {
        Ok(()) => Ping::Ok,
        Err(HvError::AgentNotConnected(_)) => Ping::NotConnected,
        Err(HvError::AgentTimeout(_)) => Ping::Timeout,
        Err(HvError::DomainNotRunning(_)) => Ping::NotRunning,
        Err(e) => Ping::Error(e.to_string()),
    }
}

fn logs_hint(h: &Harness, name: &str) -> String {
    format!(
        "console log: {}/console/{name}.log, QEMU log: {}/cache/libvirt/qemu/log/{name}.log",
        h.dir.display(),
        h.dir.display()
    )
}

fn frozen_marker(h: &Harness, name: &str) -> PathBuf {
    h.dir.join("state").join(format!("{name}.frozen"))
}

/// The data disk of guest `name`: 16 MiB of zeros (sparse), made once, owned like the
/// `disks` folder scripts/harness.sh gives the harness user.
fn ensure_data_disk(dir: &Path, name: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let path = data_disk(dir, name);
    if path.exists() {
        return Ok(());
    }
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let folder = std::fs::metadata(dir.join("disks")).map_err(err)?;
    let f = std::fs::File::create(&path).map_err(err)?;
    f.set_len(16 << 20).map_err(err)?;
    std::os::unix::fs::chown(&path, Some(folder.uid()), Some(folder.gid())).map_err(err)
}

/// One run of `up`: when each guest was (re)started by it.
struct Run<'h> {
    h: &'h Harness,
    started: BTreeMap<&'static str, Instant>,
    first_ping: BTreeMap<&'static str, f64>,
}

impl Run<'_> {
    fn start(&mut self, g: &Guest) -> Result<(), String> {
        msg(&format!("{}: starting", g.name));
        self.started.insert(g.name, Instant::now());
        virsh(&self.h.uri, &["start", g.name])
            .map(|_| ())
            .map_err(|e| format!("{}: {e} ({})", g.name, logs_hint(self.h, g.name)))
    }

    /// A guest found running in a bad state gets one reboot per run.
    fn restart(&mut self, g: &Guest, why: &str) -> Result<(), String> {
        msg(&format!("{}: restarting: {why}", g.name));
        let _ = virsh(&self.h.uri, &["destroy", g.name]);
        let _ = std::fs::remove_file(frozen_marker(self.h, g.name));
        self.start(g)
    }

    /// Define the guest when it is missing or its definition changed (restarting it when
    /// it was active).
    fn ensure_defined(&self, g: &Guest, xml: &str) -> Result<(), String> {
        let stored = self.h.dir.join("domains").join(format!("{}.xml", g.name));
        let exists = state(self.h.hv.as_ref(), g.name).is_some();
        if exists && std::fs::read_to_string(&stored).is_ok_and(|s| s == xml) {
            return Ok(());
        }
        if exists {
            msg(&format!("{}: definition changed, redefining", g.name));
            if state(self.h.hv.as_ref(), g.name) != Some(DomainState::ShutOff) {
                virsh(&self.h.uri, &["destroy", g.name])?;
            }
            // Defining over a domain an older harness made could clash on its UUID.
            virsh(&self.h.uri, &["undefine", g.name])?;
        } else {
            msg(&format!("{}: defining", g.name));
        }
        if g.data_devices {
            ensure_data_disk(&self.h.dir, g.name)?;
        }
        define(&self.h.uri, &self.h.dir, g.name, xml)?;
        std::fs::write(&stored, xml).map_err(|e| format!("{}: {e}", stored.display()))?;
        let _ = std::fs::remove_file(frozen_marker(self.h, g.name));
        Ok(())
    }

    /// Put back the disc (or the empty drive) `up` promises, in case a test changed it.
    fn ensure_media(&self, g: &Guest) -> Result<(), String> {
        let want = match g.cdrom {
            Cdrom::Harness => Some(self.h.iso(HARNESS_ISO).to_string_lossy().into_owned()),
            Cdrom::Empty => None,
            Cdrom::None => return Ok(()),
        };
        let hv = self.h.hv.as_ref();
        for (scope, xml_scope, change) in [
            ("live", XmlScope::Current, ChangeScope::LIVE),
            ("config", XmlScope::Persistent, ChangeScope::CONFIG),
        ] {
            if scope == "live" && state(hv, g.name) == Some(DomainState::ShutOff) {
                continue;
            }
            let xml = hv
                .domain_xml(g.name, xml_scope)
                .map_err(|e| e.to_string())?;
            let facts = domxml::parse(&xml)?;
            let Some(sda) = facts.cdroms.iter().find(|c| c.target == "sda") else {
                return Err(format!(
                    "{} has no drive sda ({scope}); a SATA drive cannot come back while it runs: run scripts/harness.sh down, then up",
                    g.name
                ));
            };
            if sda.source == want {
                continue;
            }
            msg(&format!(
                "{}: sda holds {:?} ({scope}), putting back {:?}",
                g.name, sda.source, want
            ));
            let device = domxml::cdrom_device_xml(
                "sda",
                Some("sata"),
                want.as_deref().map(MediaSource::File),
            )?;
            hv.update_device(g.name, &device, change, true)
                .map_err(|e| format!("{}: {e}", g.name))?;
        }
        Ok(())
    }

    /// Stop qemu-ga in the guest with SIGSTOP (after the reply has left), then wait
    /// until guest-ping times out.
    fn freeze(&self, g: &Guest) -> Result<(), String> {
        msg(&format!(
            "{}: stopping its agent with SIGSTOP (guest-exec)",
            g.name
        ));
        let agent = Agent::new(self.h.hv.as_ref(), g.name, Duration::from_secs(10));
        agent
            .exec_start("/bin/sh", &["-c", "sleep 2; kill -STOP $(pidof qemu-ga)"])
            .map_err(|e| format!("{}: guest-exec of the freeze failed: {e}", g.name))?;
        std::thread::sleep(Duration::from_millis(2500));
        let mut last = Ping::Ok;
        for _ in 0..5 {
            last = ping(self.h, g.name, Duration::from_secs(3));
            if last == Ping::Timeout {
                if let Some(i) = qemu_instance(&self.h.dir, g.name) {
                    let _ = std::fs::write(frozen_marker(self.h, g.name), i);
                }
                msg(&format!("{}: agent frozen (guest-ping times out)", g.name));
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(format!(
            "{}: guest-ping still gives {last:?} after the freeze, not a timeout; {}",
            g.name,
            logs_hint(self.h, g.name)
        ))
    }

    /// Bring `g` to its expected run state; `true` when its agent must be waited for.
    fn bring_up(&mut self, g: &'static Guest) -> Result<bool, String> {
        let st = state(self.h.hv.as_ref(), g.name);
        let wait = match (g.expect, st) {
            (Expect::Off, Some(DomainState::ShutOff)) => false,
            (Expect::Off, Some(s)) => {
                msg(&format!(
                    "{}: is {s}, must stay shut off: destroying",
                    g.name
                ));
                virsh(&self.h.uri, &["destroy", g.name])?;
                false
            }
            (_, Some(DomainState::ShutOff | DomainState::Crashed) | None) => {
                self.start(g)?;
                true
            }
            (Expect::Paused, Some(DomainState::Paused)) => false,
            (_, Some(DomainState::Paused)) => {
                msg(&format!("{}: resuming", g.name));
                virsh(&self.h.uri, &["resume", g.name])?;
                true
            }
            (_, Some(DomainState::Running)) => true,
            (_, Some(s)) => {
                self.restart(g, &format!("it is {s}"))?;
                true
            }
        };
        Ok(wait && g.has_agent())
    }

    /// Wait for the agents, all guests at once, repairing hung ones.
    fn wait_for_agents(
        &mut self,
        mut pending: Vec<&'static Guest>,
        timeout: Duration,
    ) -> Result<Vec<&'static Guest>, String> {
        let begun = Instant::now();
        let mut last_note = Instant::now();
        let mut last_err: BTreeMap<&str, String> = BTreeMap::new();
        let mut to_freeze = Vec::new();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for g in pending {
                let p = ping(self.h, g.name, Duration::from_secs(2));
                last_err.insert(g.name, format!("{p:?}"));
                let started_now = self.started.get(g.name).copied();
                match p {
                    Ping::Ok => {
                        if let Some(t) = started_now {
                            let secs = t.elapsed().as_secs_f64();
                            self.first_ping.insert(g.name, secs);
                            msg(&format!(
                                "{}: agent answers ({secs:.1} s after start)",
                                g.name
                            ));
                        }
                        if g.expect == Expect::Frozen {
                            to_freeze.push(g);
                        }
                    }
                    Ping::Timeout if g.expect == Expect::Frozen && started_now.is_none() => {
                        msg(&format!(
                            "{}: agent already frozen (guest-ping times out)",
                            g.name
                        ));
                        if let Some(i) = qemu_instance(&self.h.dir, g.name) {
                            let _ = std::fs::write(frozen_marker(self.h, g.name), i);
                        }
                    }
                    Ping::Timeout if started_now.is_none() => {
                        // Found running with a hung agent (a test may have stopped it).
                        self.restart(g, "its agent does not answer")?;
                        still.push(g);
                    }
                    Ping::NotConnected => {
                        let age = qemu_age(&self.h.dir, g.name);
                        if started_now.is_none() && age > 60 {
                            self.restart(
                                g,
                                &format!("it has run for {age} s and its agent never connected"),
                            )?;
                        }
                        still.push(g);
                    }
                    _ => still.push(g),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if begun.elapsed() >= timeout {
                for g in &pending {
                    msg(&format!(
                        "{}: agent did not answer guest-ping within {} s (last answer: {}); {}",
                        g.name,
                        timeout.as_secs(),
                        last_err.get(g.name).map(String::as_str).unwrap_or("none"),
                        logs_hint(self.h, g.name)
                    ));
                }
                let names: Vec<&str> = pending.iter().map(|g| g.name).collect();
                return Err(format!("guests not ready: {}", names.join(" ")));
            }
            if last_note.elapsed() >= Duration::from_secs(10) {
                let names: Vec<&str> = pending.iter().map(|g| g.name).collect();
                msg(&format!(
                    "waiting for agents ({:.1} s): {}",
                    begun.elapsed().as_secs_f64(),
                    names.join(" ")
                ));
                last_note = Instant::now();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(to_freeze)
    }
}

pub fn run(h: &Harness, image: &Image, boot_timeout: Duration) -> Result<(), String> {
    let mut run = Run {
        h,
        started: BTreeMap::new(),
        first_ping: BTreeMap::new(),
    };
    let mut pending = Vec::new();
    for g in GUESTS {
        let xml = domain_xml(g, &h.dir, &image.emulator, &image.hash);
        run.ensure_defined(g, &xml)?;
        if run.bring_up(g)? {
            pending.push(g);
        }
        run.ensure_media(g)?;
    }
    // A hostile guest a test left lying is made honest again (one just started is).
    for g in pending.iter().filter(|g| g.is_hostile()) {
        if run.started.contains_key(g.name) {
            continue;
        }
        match hostile::control(&h.dir, g.name, "honest", Duration::from_secs(20)) {
            Ok(_) => msg(&format!("{}: agent switched to honest", g.name)),
            Err(e) => msg(&format!(
                "{}: could not switch its agent to honest: {e}",
                g.name
            )),
        }
    }
    // A frozen guest whose QEMU instance is the one we froze needs no ping: every call to
    // a frozen agent costs libvirt's 5 s guest-sync timeout.
    pending.retain(|g| {
        !(g.expect == Expect::Frozen
            && std::fs::read_to_string(frozen_marker(h, g.name))
                .ok()
                .is_some_and(|m| qemu_instance(&h.dir, g.name).as_deref() == Some(m.as_str())))
    });
    for g in run.wait_for_agents(pending, boot_timeout)? {
        run.freeze(g)?;
    }
    for g in GUESTS.iter().filter(|g| g.expect == Expect::Paused) {
        if state(h.hv.as_ref(), g.name) == Some(DomainState::Running) {
            msg(&format!("{}: suspending", g.name));
            virsh(&h.uri, &["suspend", g.name])?;
        }
    }
    print_summary(&run);
    Ok(())
}

fn print_summary(run: &Run) {
    println!(
        "{:<15} {:<9} {:<8} {:<13} {:<18} NOTE",
        "DOMAIN", "STATE", "PERSONA", "AGENT", "CDROM"
    );
    for g in GUESTS {
        let st = state(run.h.hv.as_ref(), g.name)
            .map(|s| s.as_str().replace(' ', "-"))
            .unwrap_or_else(|| "missing".into());
        let media = match g.cdrom {
            Cdrom::Harness => "sda: harness.iso",
            Cdrom::Empty => "sda: empty",
            Cdrom::None => "-",
        };
        let mut note = run
            .first_ping
            .get(g.name)
            .map(|s| format!("agent up {s:.1} s after start"))
            .unwrap_or_default();
        if g.expect == Expect::Frozen {
            note = if note.is_empty() {
                "agent frozen".into()
            } else {
                format!("{note}; agent frozen")
            };
        }
        println!(
            "{:<15} {:<9} {:<8} {:<13} {:<18} {note}",
            g.name,
            st,
            g.persona.unwrap_or("-"),
            g.agent,
            media
        );
    }
}

/// Destroy (all at once: QEMU takes about 2 s to exit) and undefine every harness domain.
pub fn down(h: &Harness) -> Result<(), String> {
    let names: BTreeSet<String> =
        h.hv.list_domains()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|d| d.name.starts_with(PREFIX))
            .map(|d| d.name)
            .collect();
    std::thread::scope(|s| {
        for n in &names {
            if state(h.hv.as_ref(), n) != Some(DomainState::ShutOff) {
                s.spawn(|| {
                    let _ = virsh(&h.uri, &["destroy", n]);
                });
            }
        }
    });
    for n in &names {
        if let Some(st) = state(h.hv.as_ref(), n).filter(|s| *s != DomainState::ShutOff) {
            msg(&format!("down: {n} is still {st} after destroy"));
        }
        if let Err(e) = virsh(&h.uri, &["undefine", n]) {
            msg(&format!("down: {e}"));
        }
        let _ = std::fs::remove_file(h.dir.join("domains").join(format!("{n}.xml")));
        let _ = std::fs::remove_file(h.dir.join("state").join(format!("{n}.frozen")));
    }
    msg(&format!("down: {} guest(s) removed", names.len()));
    Ok(())
}
