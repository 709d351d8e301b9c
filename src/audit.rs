//! What an operator must be able to find out later: one line in the system log for
//! every change the tool makes (mount, eject, edit, push, each rollback) — who ran it, on
//! which host and VM, what changed, the result — and a recovery record for every guest
//! file an upload may have left damaged, which each later run of the tool reports until
//! somebody says it is dealt with (`dismount_iso_qemu recovery --done ID`).
//!
//! The system log is the `/dev/log` socket (RFC 3164 datagrams, facility auth-priv's
//! neighbour `user`, as logger(1) sends them); where nothing listens there the audit
//! line is dropped, the tool's output already says what happened.
//! `DISMOUNT_ISO_QEMU_SYSLOG_SOCKET` names another socket (tests listen on their own).

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::render::text::{sanitize, terminal_line};

/// Who runs the tool: the login behind sudo when there is one, and the uid.
fn who() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".to_string());
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    format!("user={} uid={uid}", sanitize(&user))
}

fn syslog_socket() -> PathBuf {
    std::env::var_os("DISMOUNT_ISO_QEMU_SYSLOG_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/log"))
}

/// Send one line to the system log (severity: `notice` for changes, `crit` for data at
/// risk). Every value is escaped: no guest string can forge a log line.
fn send(severity: u8, line: &str) {
    send_to(&syslog_socket(), severity, line);
}

fn send_to(socket: &std::path::Path, severity: u8, line: &str) {
    const FACILITY_USER: u8 = 1;
    let pri = FACILITY_USER * 8 + severity;
    let msg = format!(
        "<{pri}>dismount_iso_qemu[{}]: {}",
        std::process::id(),
        terminal_line(line)
    );
    // Never blocking: a log daemon that stopped reading (its queue holds only
    // net.unix.max_dgram_qlen datagrams, 10 on some hosts) must not hang the command; the
    // line is then lost, the change itself is not.
    if let Ok(sock) = UnixDatagram::unbound() {
        if sock.set_nonblocking(true).is_ok() {
            let _ = sock.send_to(msg.as_bytes(), socket);
        }
    }
}

/// One change the tool made (or tried to).
pub struct Change<'a> {
    /// `mount`, `eject`, `edit`, `push`, `rollback`.
    pub action: &'a str,
    pub uri: &'a str,
    pub vm: &'a str,
    /// What changed: drive and disc, file path…
    pub what: &'a str,
    /// `ok`, `failed: …`, `locked`…
    pub result: &'a str,
}

/// Write the audit line of `change`.
pub fn log_change(change: &Change) {
    let severity = if change.result == "ok" { 5 } else { 4 };
    send(
        severity,
        &format!(
            "{} action={} host={} vm={:?} what={:?} result={:?}",
            who(),
            change.action,
            change.uri,
            change.vm,
            change.what,
            change.result
        ),
    );
}

/// A guest file an upload may have left damaged, and where the copies are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub uri: String,
    pub vm: String,
    pub path: String,
    /// What happened, one line.
    pub what: String,
    /// The guest's original bytes, saved before the upload.
    pub original: Option<PathBuf>,
    /// The user's edited copy (or the file pushed).
    pub edited: Option<PathBuf>,
}

impl Recovery {
    /// The line each run of the tool prints while the record exists.
    pub fn reminder(&self) -> String {
        let mut line = format!(
            "recovery needed: {}:{} on {} may be damaged ({})",
            self.vm, self.path, self.uri, self.what
        );
        if let Some(o) = &self.original {
            line.push_str(&format!("; the original is saved at {}", o.display()));
        }
        if let Some(e) = &self.edited {
            line.push_str(&format!("; the new content is at {}", e.display()));
        }
        line.push_str(&format!(
            "; once dealt with: dismount_iso_qemu recovery --done {}",
            self.id
        ));
        line
    }
}

/// Where recovery records live: `$XDG_STATE_HOME/dismount_iso_qemu/recovery`.
pub fn recovery_dir() -> Option<PathBuf> {
    std::env::var_os("DISMOUNT_ISO_QEMU_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::state_dir().map(|d| d.join("dismount_iso_qemu")))
        .map(|d| d.join("recovery"))
}

/// Record `r` (a private file, created exclusively) and send it to the system log.
/// Returns where it was written, or why it could not be.
pub fn record_recovery(r: &Recovery) -> Result<PathBuf, String> {
    send(2, &r.reminder());
    let dir = recovery_dir().ok_or("no state directory (HOME unset)")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.json", r.id));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A new record id: time and VM, readable in `ls`.
pub fn new_id(vm: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let clean: String = vm
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("{}-{:09}-{clean}", t.as_secs(), t.subsec_nanos())
}

/// Read one record: a regular file, not followed through a link, at most 64 KiB.
fn read_record(path: &Path) -> Option<Recovery> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(64 << 10).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// The records not yet dealt with, oldest first.
pub fn pending() -> Vec<Recovery> {
    let Some(dir) = recovery_dir() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<Recovery> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| read_record(&e.path()))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Mark record `id` as dealt with (remove it). `Err` when there is no such record.
pub fn done(id: &str) -> Result<Recovery, String> {
    let r = pending().into_iter().find(|r| r.id == id).ok_or_else(|| {
        format!("no recovery record {id:?} (`dismount_iso_qemu recovery` lists them)")
    })?;
    let dir = recovery_dir().ok_or("no state directory")?;
    fs::remove_file(dir.join(format!("{id}.json"))).map_err(|e| e.to_string())?;
    send(
        5,
        &format!(
            "{} recovery record {id} dealt with ({}:{})",
            who(),
            r.vm,
            r.path
        ),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log daemon that never reads: its queue fills, and sending goes on at once.
    #[test]
    fn a_log_daemon_that_stops_reading_never_blocks_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deaf");
        let deaf = UnixDatagram::bind(&path).unwrap();
        let t = std::time::Instant::now();
        // Far beyond any receive queue: with a blocking socket this never returns.
        for i in 0..1000 {
            send_to(&path, 5, &format!("line {i}"));
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // What fitted in the queue did arrive.
        let mut buf = [0u8; 256];
        let n = deaf.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("line 0"));
    }

    /// The syslog socket and state directory are process-wide: one test covers both.
    #[test]
    fn records_persist_until_done_and_lines_reach_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("log");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        std::env::set_var("DISMOUNT_ISO_QEMU_SYSLOG_SOCKET", &sock_path);
        std::env::set_var("DISMOUNT_ISO_QEMU_STATE_DIR", dir.path().join("state"));

        log_change(&Change {
            action: "eject",
            uri: "qemu:///system",
            vm: "web\x1b[2J01",
            what: "sda /isos/a.iso",
            result: "ok",
        });
        // Other tests of this process may log meanwhile (the socket is process-wide).
        let mut buf = [0u8; 2048];
        let mut next_line = |wanted: &str| loop {
            let n = sock.recv(&mut buf).unwrap();
            let line = String::from_utf8_lossy(&buf[..n]).to_string();
            if line.contains(wanted) {
                break line;
            }
        };
        let line = next_line("vm=\"web");
        assert!(line.starts_with("<13>dismount_iso_qemu["), "{line}");
        assert!(
            line.contains(r#"action=eject host=qemu:///system vm="web\u{1b}[2J01""#),
            "{line}"
        );
        assert!(!line.contains('\x1b'));

        let r = Recovery {
            id: new_id("vm/1"),
            created: 1,
            uri: "qemu:///system".into(),
            vm: "vm/1".into(),
            path: "/etc/f".into(),
            what: "ROLLBACK FAILED".into(),
            original: Some(PathBuf::from("/tmp/x/guest-original")),
            edited: None,
        };
        let at = record_recovery(&r).unwrap();
        assert!(next_line("vm/1").starts_with("<10>"));
        assert!(record_recovery(&r).is_err(), "never overwritten");
        assert_eq!(pending(), vec![r.clone()]);
        assert!(r.reminder().contains(&format!("recovery --done {}", r.id)));
        assert!(done("nope").is_err());
        done(&r.id).unwrap();
        assert!(pending().is_empty());
        assert!(!at.exists());
        // A link or a FIFO planted as a record is not read.
        let rec = recovery_dir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", rec.join("x.json")).unwrap();
        assert!(pending().is_empty());
    }
}
