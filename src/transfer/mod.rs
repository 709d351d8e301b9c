//! Chunked, byte-exact file transfer through the guest agent, written once above the port
//! so `edit`, `cat`, `pull` and `push` (and every backend) share it.
//!
//! Why chunks: libvirt caps an agent reply at 10 MiB and an RPC string at 4 MiB, and base64
//! grows data by a third, so reads above ~3 MiB fail in practice: every guest-file-read
//! moves at most [`CHUNK`] bytes. Writes are smaller still ([`WRITE_CHUNK`]): qemu-ga 7.2
//! parses the whole request, and on a slow (TCG) guest a guest-file-write of 256 KiB took
//! 0.8 s while one of 384 KiB ran 80 s into a JSON parse error and left the agent
//! unresponsive for a minute. Data streams between a guest handle
//! and a local reader or writer through a SHA-256 hasher, so a large file is never held
//! whole in memory, and every transfer ends with the hash of exactly the bytes moved.
//!
//! Why "verify and roll back": qemu-ga can only truncate-and-write a file (there is no
//! rename without guest-exec), so a failed upload could leave the guest file half written.
//! [`replace_verified`] reads the file back, compares hashes, and on any failure writes the
//! original bytes back from a local backup and reports whether that worked.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::agent::Agent;
use crate::hypervisor::{find_domain, DomainState, HvError, Hypervisor};
use crate::term::progress::{Meter, ProgressSink};
use crate::units;

/// The most bytes one guest-file-read moves.
pub const CHUNK: usize = 1 << 20;

/// The most bytes one guest-file-write moves (see the module notes for why it is small).
pub const WRITE_CHUNK: usize = 128 << 10;

/// Time libvirt waits for one agent call of a transfer (a 1 MiB chunk on a slow guest).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The guest-file commands every transfer needs.
pub const READ_COMMANDS: &[&str] = &["guest-file-open", "guest-file-read", "guest-file-close"];
/// What a transfer into the guest needs besides [`READ_COMMANDS`].
pub const WRITE_COMMANDS: &[&str] = &["guest-file-write", "guest-file-flush"];

pub type Sha256Sum = [u8; 32];

/// Size and SHA-256 of exactly the bytes one transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub size: u64,
    pub sha256: Sha256Sum,
}

impl Summary {
    /// The summary of no bytes at all (a new, empty file).
    pub fn empty() -> Summary {
        Summary {
            size: 0,
            sha256: Sha256::digest([]).into(),
        }
    }

    pub fn of_bytes(data: &[u8]) -> Summary {
        Summary {
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }
    }

    /// Hash a local file by streaming it.
    pub fn of_file(path: &Path) -> io::Result<Summary> {
        let mut f = File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Summary {
            size,
            sha256: h.finalize().into(),
        })
    }

    pub fn hex(&self) -> String {
        hex(&self.sha256)
    }
}

pub fn hex(sum: &Sha256Sum) -> String {
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

/// A path in Windows form (`C:\x`, `\\server\x`): no chmod, and no 0666 worry.
pub fn is_windows_path(path: &str) -> bool {
    let b = path.as_bytes();
    path.contains('\\') || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// Errors of a guest file operation: each is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Agent(HvError),
    #[error("VM {vm:?} is {state}: files move through its guest agent, so it must be running")]
    NotRunning { vm: String, state: DomainState },
    #[error("the guest agent of {vm:?} has {} disabled: allow it in the guest's qemu-ga settings (--allow-rpcs/--block-rpcs, e.g. in /etc/sysconfig/qemu-ga or /etc/qemu/qemu-ga.conf, then restart qemu-ga); nothing was changed", .commands.join(", "))]
    Disabled { vm: String, commands: Vec<String> },
    #[error("{} does not exist in {vm:?}", .path)]
    NotFound { vm: String, path: String },
    #[error("{} is a directory in {vm:?}, not a file", .path)]
    IsDirectory { vm: String, path: String },
    #[error("permission denied inside {vm:?}: cannot {action} {}", .path)]
    PermissionDenied {
        vm: String,
        path: String,
        action: &'static str,
    },
    #[error("{} is on a read-only file system in {vm:?}", .path)]
    ReadOnly { vm: String, path: String },
    #[error("{} in {vm:?} is {} or more, above the limit of {} (raise it with --max-size)", .path, units::bytes(*.size), units::bytes(*.limit))]
    TooLarge {
        vm: String,
        path: String,
        size: u64,
        limit: u64,
    },
    #[error("the guest agent of {vm:?} wrote {written} of {expected} bytes to {}", .path)]
    ShortWrite {
        vm: String,
        path: String,
        written: usize,
        expected: usize,
    },
    #[error("read-back of {} in {vm:?} does not match what was sent ({} bytes, sha256 {} expected; {} bytes, sha256 {} found)", .path, .sums.0.size, short(&.sums.0.sha256), .sums.1.size, short(&.sums.1.sha256))]
    VerifyMismatch {
        vm: String,
        path: String,
        /// What was sent, and what was read back.
        sums: Box<(Summary, Summary)>,
    },
    #[error("local file {path}: {message}")]
    Local { path: String, message: String },
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

fn short(sum: &Sha256Sum) -> String {
    hex(sum)[..12].to_string()
}

impl FileError {
    pub fn local(path: &Path, e: &io::Error) -> FileError {
        FileError::Local {
            path: path.display().to_string(),
            message: io_message(e),
        }
    }
}

/// An io::Error without Rust's " (os error N)" tail.
pub fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Turn an agent error about `path` into what it means for the user.
pub fn classify(vm: &str, path: &str, action: &'static str, e: HvError) -> FileError {
    if let HvError::AgentCommandDisabled { command, .. } = &e {
        return FileError::Disabled {
            vm: vm.to_string(),
            commands: vec![command.clone()],
        };
    }
    let HvError::AgentCommandFailed { message, .. } = &e else {
        return FileError::Agent(e);
    };
    let m = message.to_ascii_lowercase();
    let (vm, path) = (vm.to_string(), path.to_string());
    if m.contains("no such file or directory")
        || m.contains("cannot find the file")
        || m.contains("cannot find the path")
    {
        FileError::NotFound { vm, path }
    } else if m.contains("is a directory") {
        FileError::IsDirectory { vm, path }
    } else if m.contains("permission denied")
        || m.contains("access is denied")
        || m.contains("operation not permitted")
    {
        FileError::PermissionDenied { vm, path, action }
    } else if m.contains("read-only file system") {
        FileError::ReadOnly { vm, path }
    } else {
        FileError::Agent(e)
    }
}

/// Check that the VM exists and runs, before talking to its agent: the port's own errors
/// for this are right but do not say the state.
pub fn check_vm(hv: &dyn Hypervisor, vm: &str) -> Result<(), FileError> {
    let d = find_domain(hv, vm).map_err(FileError::Agent)?;
    if !d.state.agent_may_answer() {
        return Err(FileError::NotRunning {
            vm: vm.to_string(),
            state: d.state,
        });
    }
    Ok(())
}

/// Read `guest-info` (with a short timeout, so a frozen agent fails fast) and refuse when
/// a needed command is disabled by the guest's allow/block list. Returns whether
/// guest-exec is usable (for chmod and rollback of new files).
pub fn check_capabilities(
    hv: &dyn Hypervisor,
    vm: &str,
    first_call_timeout: Duration,
    needed: &[&str],
) -> Result<bool, FileError> {
    let info = Agent::new(hv, vm, first_call_timeout)
        .info()
        .map_err(FileError::Agent)?;
    let refused = info.refused(needed);
    if !refused.is_empty() {
        return Err(FileError::Disabled {
            vm: vm.to_string(),
            commands: refused,
        });
    }
    Ok(info.can_exec())
}

/// An open guest file handle; closed on drop so no handle leaks in the agent.
pub struct GuestFile<'a, 'b> {
    agent: &'b Agent<'a>,
    path: &'b str,
    handle: i64,
    open: bool,
}

/// Open `path` in the guest with an fopen mode ("r", "r+", "w").
pub fn open<'a, 'b>(
    agent: &'b Agent<'a>,
    path: &'b str,
    mode: &str,
) -> Result<GuestFile<'a, 'b>, FileError> {
    let action = if mode.starts_with('r') && !mode.contains('+') {
        "read"
    } else {
        "write"
    };
    let handle = agent
        .file_open(path, mode)
        .map_err(|e| classify(agent.domain(), path, action, e))?;
    Ok(GuestFile {
        agent,
        path,
        handle,
        open: true,
    })
}

impl GuestFile<'_, '_> {
    fn err(&self, action: &'static str, e: HvError) -> FileError {
        classify(self.agent.domain(), self.path, action, e)
    }

    /// The size, by seeking to the end and back. `None` when the agent cannot seek (a
    /// disabled guest-file-seek, a directory, a pipe); reading then finds out.
    pub fn size(&self) -> Result<Option<u64>, FileError> {
        let Ok(end) = self.agent.file_seek(self.handle, 0, "end") else {
            return Ok(None);
        };
        self.agent
            .file_seek(self.handle, 0, "set")
            .map_err(|e| self.err("read", e))?;
        Ok(Some(end))
    }

    /// Stream the whole file into `out`, at most `limit` bytes.
    pub fn read_all(
        &self,
        out: &mut dyn Write,
        limit: u64,
        meter: &mut Meter,
    ) -> Result<Summary, FileError> {
        let mut h = Sha256::new();
        let mut size = 0u64;
        loop {
            let (buf, eof) = self
                .agent
                .file_read(self.handle, CHUNK)
                .map_err(|e| self.err("read", e))?;
            size += buf.len() as u64;
            if size > limit {
                return Err(FileError::TooLarge {
                    vm: self.agent.domain().to_string(),
                    path: self.path.to_string(),
                    size,
                    limit,
                });
            }
            out.write_all(&buf).map_err(FileError::Output)?;
            h.update(&buf);
            meter.add(buf.len());
            if eof || buf.is_empty() {
                break;
            }
        }
        Ok(Summary {
            size,
            sha256: h.finalize().into(),
        })
    }

    /// Stream all of `input` into the file in chunks of at most [`WRITE_CHUNK`], then
    /// flush.
    pub fn write_all(
        &self,
        input: &mut dyn Read,
        input_name: &Path,
        meter: &mut Meter,
    ) -> Result<Summary, FileError> {
        let mut h = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; WRITE_CHUNK];
        loop {
            let n = read_full(input, &mut buf).map_err(|e| FileError::local(input_name, &e))?;
            if n == 0 {
                break;
            }
            let written = self
                .agent
                .file_write(self.handle, &buf[..n])
                .map_err(|e| self.err("write", e))?;
            if written != n {
                return Err(FileError::ShortWrite {
                    vm: self.agent.domain().to_string(),
                    path: self.path.to_string(),
                    written,
                    expected: n,
                });
            }
            h.update(&buf[..n]);
            size += n as u64;
            meter.add(n);
        }
        self.agent
            .file_flush(self.handle)
            .map_err(|e| self.err("write", e))?;
        Ok(Summary {
            size,
            sha256: h.finalize().into(),
        })
    }

    /// Close and report a failing close (for writes it can mean lost data).
    pub fn close(mut self) -> Result<(), FileError> {
        self.open = false;
        self.agent
            .file_close(self.handle)
            .map_err(|e| self.err("write", e))
    }
}

impl Drop for GuestFile<'_, '_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.agent.file_close(self.handle);
        }
    }
}

fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Stream a guest file into `out` (mode "r", or "r+" to also prove it is writable).
/// The size is checked against `limit` before the first byte moves when the agent can
/// seek, and while reading in any case.
pub fn download(
    agent: &Agent,
    path: &str,
    mode: &str,
    out: &mut dyn Write,
    limit: u64,
    label: &str,
    progress: &ProgressSink,
) -> Result<Summary, FileError> {
    let f = open(agent, path, mode)?;
    let size = f.size()?;
    if let Some(s) = size.filter(|s| *s > limit) {
        return Err(FileError::TooLarge {
            vm: agent.domain().to_string(),
            path: path.to_string(),
            size: s,
            limit,
        });
    }
    let mut meter = Meter::new(label, size, 2 * CHUNK as u64, progress);
    let sum = f.read_all(out, limit, &mut meter)?;
    meter.finish();
    f.close()?;
    Ok(sum)
}

/// The hash of the guest file now; `None` when it does not exist.
pub fn remote_summary(agent: &Agent, path: &str, limit: u64) -> Result<Option<Summary>, FileError> {
    match download(
        agent,
        path,
        "r",
        &mut io::sink(),
        limit,
        "checking",
        &ProgressSink::none(),
    ) {
        Ok(s) => Ok(Some(s)),
        Err(FileError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Truncate-and-write `path` from a local file, without verification.
fn write_file(
    agent: &Agent,
    path: &str,
    local: &Path,
    label: &str,
    progress: &ProgressSink,
) -> Result<Summary, FileError> {
    let mut input = File::open(local).map_err(|e| FileError::local(local, &e))?;
    let total = input.metadata().ok().map(|m| m.len());
    let f = open(agent, path, "w")?;
    let mut meter = Meter::new(label, total, 2 * CHUNK as u64, progress);
    let sum = f.write_all(&mut input, local, &mut meter)?;
    meter.finish();
    f.close()?;
    Ok(sum)
}

/// What the guest file was before an upload.
#[derive(Debug, Clone, Copy)]
pub enum Before<'p> {
    /// It existed with these bytes, kept locally in `backup`.
    Existing { backup: &'p Path, summary: Summary },
    /// It did not exist (it was created empty just before, to set its mode).
    Missing,
}

/// What happened to the guest file after a failed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// The guest file was never touched.
    NotNeeded,
    /// The original bytes are back, verified by hash.
    Restored,
    /// Restoring failed: the guest file may be damaged.
    Failed(String),
    /// The file did not exist before and was removed again.
    Removed,
    /// The file did not exist before and could not be removed.
    LeftBehind(String),
}

impl Rollback {
    /// One sentence for the user.
    pub fn describe(&self, path: &str) -> String {
        let p = path;
        match self {
            Rollback::NotNeeded => format!("{p} was not changed"),
            Rollback::Restored => {
                format!("rollback worked: {p} has its original content again (verified by sha256)")
            }
            Rollback::Failed(why) => {
                format!("ROLLBACK FAILED, {p} may be damaged in the guest: {why}")
            }
            Rollback::Removed => format!("rollback worked: the new file {p} was removed again"),
            Rollback::LeftBehind(why) => format!(
                "rollback incomplete: the new file {p} stays in the guest with unknown content ({why})"
            ),
        }
    }

    pub fn worked(&self) -> bool {
        matches!(
            self,
            Rollback::NotNeeded | Rollback::Restored | Rollback::Removed
        )
    }
}

/// A failed upload: why, and what the rollback did.
#[derive(Debug)]
pub struct UploadFailure {
    pub cause: FileError,
    pub rollback: Rollback,
}

/// Replace the guest file `path` with the local file `new`, read it back and compare
/// SHA-256; on any failure restore `before` and say whether that worked.
pub fn replace_verified(
    agent: &Agent,
    path: &str,
    new: &Path,
    before: Before,
    limit: u64,
    can_exec: bool,
    progress: &ProgressSink,
) -> Result<Summary, UploadFailure> {
    let result = write_file(agent, path, new, "uploading", progress).and_then(|sent| {
        let found = remote_summary(agent, path, limit.max(sent.size))?.unwrap_or(Summary::empty());
        if found == sent {
            Ok(sent)
        } else {
            Err(FileError::VerifyMismatch {
                vm: agent.domain().to_string(),
                path: path.to_string(),
                sums: Box::new((sent, found)),
            })
        }
    });
    let cause = match result {
        Ok(sum) => return Ok(sum),
        Err(e) => e,
    };
    // An open that failed never truncated the file: nothing to undo.
    let touched = !matches!(
        cause,
        FileError::NotFound { .. }
            | FileError::IsDirectory { .. }
            | FileError::PermissionDenied { .. }
            | FileError::ReadOnly { .. }
            | FileError::Disabled { .. }
            | FileError::Local { .. }
    );
    let rollback = if !touched {
        Rollback::NotNeeded
    } else {
        match before {
            Before::Existing { backup, summary } => {
                restore(agent, path, backup, summary, limit, progress)
            }
            Before::Missing => remove_new(agent, path, can_exec),
        }
    };
    Err(UploadFailure { cause, rollback })
}

fn restore(
    agent: &Agent,
    path: &str,
    backup: &Path,
    original: Summary,
    limit: u64,
    progress: &ProgressSink,
) -> Rollback {
    match write_file(agent, path, backup, "restoring", progress)
        .and_then(|_| remote_summary(agent, path, limit.max(original.size)))
    {
        Ok(Some(s)) if s == original => Rollback::Restored,
        Ok(Some(s)) => Rollback::Failed(format!(
            "read-back after restoring has sha256 {}, the original {}",
            short(&s.sha256),
            short(&original.sha256)
        )),
        Ok(None) => Rollback::Failed("the file is gone after restoring".to_string()),
        Err(e) => Rollback::Failed(e.to_string()),
    }
}

fn remove_new(agent: &Agent, path: &str, can_exec: bool) -> Rollback {
    if !can_exec || is_windows_path(path) {
        return Rollback::LeftBehind("guest-exec is not available to remove it".to_string());
    }
    match run_guest(agent, "rm", &["-f", path]) {
        Ok(()) => Rollback::Removed,
        Err(e) => Rollback::LeftBehind(e),
    }
}

/// Run a program in the guest (no shell) and wait up to 30 s; the error is one line.
pub fn run_guest(agent: &Agent, program: &str, args: &[&str]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = agent
        .exec(program, args, deadline)
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{program} exited with {}{}",
            out.exit_code
                .map(|c| format!("status {c}"))
                .unwrap_or_else(|| format!("signal {}", out.signal.unwrap_or(0))),
            match err.trim() {
                "" => String::new(),
                t => format!(": {t}"),
            }
        ))
    }
}

/// Create an empty guest file and give it `mode` before any content goes in: qemu-ga
/// creates files 0666 regardless of umask. `Ok(None)` when the mode was set,
/// `Ok(Some(reason))` when the file exists but its mode could not be set.
pub fn create_with_mode(
    agent: &Agent,
    path: &str,
    mode: u32,
    can_exec: bool,
) -> Result<Option<String>, FileError> {
    open(agent, path, "w")?.close()?;
    if is_windows_path(path) {
        return Ok(None);
    }
    if !can_exec {
        return Ok(Some(
            "guest-exec is disabled in the guest agent".to_string(),
        ));
    }
    let m = format!("{mode:o}");
    Ok(run_guest(agent, "chmod", &[&m, path]).err())
}

/// The loud warning for a new file left world-writable.
pub fn world_writable_warning(vm: &str, path: &str, mode: u32, reason: &str) -> String {
    format!(
        "WARNING: {path} in {vm:?} was created WORLD-WRITABLE (mode 0666: qemu-ga ignores the umask) and its mode could not be set ({reason}). Fix it inside the guest: chmod {mode:o} {path}"
    )
}

#[cfg(test)]
pub(crate) mod testfs;

#[cfg(test)]
mod tests;
