//! Lifecycle operations the tool's port does not have (define, start, destroy, undefine,
//! suspend, resume), through `virsh` with argument vectors, and what a guest's QEMU
//! process says about when it started.

use std::path::Path;
use std::process::Command;

use dismount_iso_qemu::hypervisor::{DomainState, Hypervisor};

/// `virsh -q -c URI ARGS…`; the error is virsh's message as one line.
pub fn virsh(uri: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .arg("-q")
        .arg("-c")
        .arg(uri)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .map_err(|e| format!("cannot run virsh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "virsh {}: {}",
            args.first().unwrap_or(&""),
            err.trim().trim_start_matches("error: ").replace('\n', " ")
        ))
    }
}

/// Define a domain from its XML (written next to the stored copies).
pub fn define(uri: &str, dir: &Path, name: &str, xml: &str) -> Result<(), String> {
    let file = dir.join("domains").join(format!(".{name}.define.xml"));
    std::fs::write(&file, xml).map_err(|e| format!("{}: {e}", file.display()))?;
    let r = virsh(uri, &["define", &file.to_string_lossy()]).map(|_| ());
    let _ = std::fs::remove_file(&file);
    r
}

/// The state of a domain, `None` when it is not defined.
pub fn state(hv: &dyn Hypervisor, name: &str) -> Option<DomainState> {
    hv.list_domains()
        .ok()?
        .into_iter()
        .find(|d| d.name == name)
        .map(|d| d.state)
}

fn qemu_pid(dir: &Path, name: &str) -> Option<u32> {
    let pidfile = dir.join("run/libvirt/qemu/run").join(format!("{name}.pid"));
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// QEMU's pid and start time: changes whenever the guest is started anew.
pub fn qemu_instance(dir: &Path, name: &str) -> Option<String> {
    let pid = qemu_pid(dir, name)?;
    Some(format!("{pid}:{}", start_ticks(pid)?))
}

/// Seconds since the guest's QEMU process started (0 when unknown).
pub fn qemu_age(dir: &Path, name: &str) -> u64 {
    let Some(start) = qemu_pid(dir, name).and_then(start_ticks) else {
        return 0;
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        v if v > 0 => v,
        _ => 100,
    };
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (uptime - start as f64 / hz as f64).max(0.0) as u64
}
