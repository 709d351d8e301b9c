//! A guest of the test's own: a transient copy of diq-media-a's definition under another
//! name, booted in the harness's daemon. It can be destroyed or frozen half-way through a
//! command without touching the shared guests, and it leaves libvirt when it is destroyed
//! (at the latest when it is dropped).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::harness_uri;

/// The shared guest whose definition is copied.
const TEMPLATE: &str = "diq-media-a";

fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .env("LC_ALL", "C")
        .arg("-c")
        .arg(harness_uri())
        .args(args)
        .output()
        .expect("virsh runs")
}

fn virsh_ok(args: &[&str]) -> String {
    let out = virsh(args);
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct ScratchVm {
    /// Leaked once per VM, so guest helpers that take `&'static str` accept them.
    pub name: &'static str,
    /// What raw virsh calls should address it by: a numeric name would be taken as an id.
    pub uuid: &'static str,
    console: String,
}

impl ScratchVm {
    /// Define and start a transient guest named `diq-scratch-TAG-PID`; returns once its
    /// agent answers (a TCG boot takes 10–30 s).
    pub fn boot(tag: &str) -> ScratchVm {
        ScratchVm::boot_named(&format!("diq-scratch-{tag}-{}", std::process::id()))
    }

    /// The same under exactly `name`.
    pub fn boot_named(name: &str) -> ScratchVm {
        ScratchVm::boot_with(name, None)
    }

    /// `diq-scratch-TAG-PID` with `iso` (readable by the harness's daemon user) in its
    /// CD-ROM drive instead of the harness's disc.
    pub fn boot_holding(tag: &str, iso: &std::path::Path) -> ScratchVm {
        let name = format!("diq-scratch-{tag}-{}", std::process::id());
        ScratchVm::boot_with(&name, Some(iso))
    }

    fn boot_with(name: &str, iso: Option<&std::path::Path>) -> ScratchVm {
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        let uuid: &'static str = Box::leak(fresh_uuid().into_boxed_str());
        let template = virsh_ok(&["dumpxml", "--inactive", TEMPLATE]);
        let mut xml = String::new();
        for line in template.lines() {
            if line.trim_start().starts_with("<uuid>") {
                xml.push_str(&format!("  <uuid>{uuid}</uuid>\n"));
                continue;
            }
            xml.push_str(line);
            xml.push('\n');
        }
        let xml = xml
            .replace(
                &format!("<name>{TEMPLATE}</name>"),
                &format!("<name>{name}</name>"),
            )
            .replace(
                &format!("diq.hostname={TEMPLATE}"),
                &format!("diq.hostname={name}"),
            )
            .replace(&format!("/{TEMPLATE}.sock"), &format!("/{name}.sock"))
            .replace(&format!("/{TEMPLATE}.log"), &format!("/{name}.log"));
        let xml = match iso {
            Some(iso) => {
                let disc = xml
                    .split("<source file='")
                    .nth(1)
                    .and_then(|s| s.split('\'').next())
                    .expect("the template holds a disc")
                    .to_string();
                xml.replace(&disc, &iso.display().to_string())
            }
            None => xml,
        };
        let console = xml
            .split("<source path='")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .unwrap_or_default()
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("domain.xml");
        std::fs::write(&file, &xml).unwrap();
        virsh_ok(&["create", file.to_str().unwrap()]);
        let vm = ScratchVm {
            name,
            uuid,
            console,
        };
        let end = Instant::now() + Duration::from_secs(180);
        loop {
            let ping = virsh(&["qemu-agent-command", uuid, r#"{"execute":"guest-ping"}"#]);
            if ping.status.success() {
                break;
            }
            assert!(
                Instant::now() < end,
                "{name}: the agent did not answer within 180 s of boot"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        vm
    }

    /// Pull the plug (`virsh destroy`): the transient VM leaves libvirt.
    pub fn destroy(&self) {
        virsh_ok(&["destroy", self.uuid]);
    }

    /// Freeze it: its agent stops answering, libvirt stays.
    pub fn suspend(&self) {
        virsh_ok(&["suspend", self.uuid]);
    }

    pub fn resume(&self) {
        virsh_ok(&["resume", self.uuid]);
    }
}

/// A random version-4 UUID, from the kernel's generator.
fn fresh_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("the kernel's UUID generator")
        .trim()
        .to_string()
}

impl Drop for ScratchVm {
    fn drop(&mut self) {
        // Best effort, never a panic while unwinding.
        let _ = virsh(&["destroy", self.uuid]);
        if !self.console.is_empty() {
            let _ = std::fs::remove_file(&self.console);
        }
    }
}
