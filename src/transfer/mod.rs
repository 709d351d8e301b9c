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
//! [`replace_verified`] reads the file back, compares hashes, and on any failure after the
//! guest file was opened for writing (so truncated) writes the original bytes back from a
//! local backup and reports whether that worked. What decides the rollback is what was
//! done to the file, not what kind of error ended the upload.
//!
//! Why a clock: the guest decides how fast its agent answers, so every transfer has an
//! overall budget and a progress floor ([`Pace`]); each agent call gets at most what is
//! left of the budget. An interrupt ([`Cancel`]) stops a transfer between two chunks; an
//! upload it stops is rolled back, and a second interrupt abandons the rollback.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::agent::Agent;
use crate::config::DEFAULT_MAX_SIZE;
use crate::hypervisor::{find_domain, DomainState, HvError, Hypervisor};
use crate::term::interrupt::Cancel;
use crate::term::progress::{Meter, ProgressSink};
use crate::units;

/// The most bytes one guest-file-read moves.
pub const CHUNK: usize = 1 << 20;

/// The most bytes one guest-file-write moves (see the module notes for why it is small).
pub const WRITE_CHUNK: usize = 128 << 10;

/// The most libvirt waits for one agent call of a transfer (a 1 MiB chunk on a slow
/// guest); never more than what is left of the transfer's budget.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a transfer may take, and how slow it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The whole transfer (one download or one upload, each read-back included).
    pub budget: Duration,
    /// Bytes per second that must move, measured over every `window`.
    pub min_rate: u64,
    pub window: Duration,
}

impl Default for Pace {
    /// Sized for a 64 MiB file on a slow guest: a TCG guest through the virsh backend
    /// moves about 250 KB/s (measured), so 64 MiB takes about 4 min of the 10 allowed;
    /// a guest that moves less than 32 KiB in 30 s is stuck or lying.
    fn default() -> Pace {
        Pace {
            budget: Duration::from_secs(600),
            min_rate: 32 << 10,
            window: Duration::from_secs(30),
        }
    }
}

/// What every transfer of one command shares: the size limit, the pace, where progress
/// is drawn and who may stop it.
#[derive(Clone)]
pub struct Transfer {
    pub limit: u64,
    pub pace: Pace,
    pub progress: ProgressSink,
    pub cancel: Cancel,
}

impl Default for Transfer {
    fn default() -> Transfer {
        Transfer {
            limit: DEFAULT_MAX_SIZE,
            pace: Pace::default(),
            progress: ProgressSink::none(),
            cancel: Cancel::none(),
        }
    }
}

/// One transfer's clock: its deadline and the progress floor.
struct Clock {
    pace: Pace,
    deadline: Instant,
    window_start: Instant,
    window_bytes: u64,
}

impl Clock {
    /// The timeout for a call that must be tried even when the budget is short.
    fn call_timeout_or_min(&self) -> Duration {
        self.call_timeout().unwrap_or(Duration::from_secs(1))
    }

    fn start(pace: Pace) -> Clock {
        let now = Instant::now();
        Clock {
            pace,
            deadline: now + pace.budget,
            window_start: now,
            window_bytes: 0,
        }
    }

    /// The timeout for the next agent call: what is left of the budget, at most
    /// [`IO_TIMEOUT`]; `Err` when nothing is left.
    fn call_timeout(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(500) {
            return Err(format!(
                "it did not finish within {}",
                units::seconds(self.pace.budget)
            ));
        }
        Ok(left.min(IO_TIMEOUT))
    }

    /// `n` more bytes moved; `Err` when the floor was not kept over the last window.
    fn moved(&mut self, n: u64) -> Result<(), String> {
        self.window_bytes += n;
        let elapsed = self.window_start.elapsed();
        if elapsed < self.pace.window {
            return Ok(());
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        if rate < self.pace.min_rate as f64 {
            return Err(format!(
                "only {} moved in the last {}, below the floor of {}/s",
                units::bytes(self.window_bytes),
                units::seconds(Duration::from_secs(elapsed.as_secs().max(1))),
                units::bytes(self.pace.min_rate)
            ));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

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
    #[error("the transfer of {path} in {vm:?} was stopped: {why} (a guest that is overloaded or lies; --transfer-timeout and --min-rate set the limits)")]
    TooSlow {
        vm: String,
        path: String,
        why: String,
    },
    #[error("the transfer of {path} in {vm:?} was stopped by {signal}")]
    Interrupted {
        vm: String,
        path: String,
        signal: &'static str,
    },
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

/// Open `path` in the guest with an fopen mode ("r", "r+", "w"), the call bounded by
/// `timeout`.
fn open<'a, 'b>(
    agent: &'b Agent<'a>,
    path: &'b str,
    mode: &str,
    timeout: Duration,
) -> Result<GuestFile<'a, 'b>, FileError> {
    let action = if mode.starts_with('r') && !mode.contains('+') {
        "read"
    } else {
        "write"
    };
    let handle = agent
        .with_timeout(timeout)
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

    fn too_slow(&self, why: String) -> FileError {
        FileError::TooSlow {
            vm: self.agent.domain().to_string(),
            path: self.path.to_string(),
            why,
        }
    }

    /// Stop when the user interrupted, or the clock ran out; else the next call's agent.
    fn next_call(&self, clock: &Clock, cancel: &Cancel) -> Result<Agent<'_>, FileError> {
        if let Some(signal) = cancel.signal() {
            return Err(FileError::Interrupted {
                vm: self.agent.domain().to_string(),
                path: self.path.to_string(),
                signal,
            });
        }
        let t = clock.call_timeout().map_err(|w| self.too_slow(w))?;
        Ok(self.agent.with_timeout(t))
    }

    /// The size, by seeking to the end and back. `None` when the agent cannot seek (a
    /// disabled guest-file-seek, a directory, a pipe); reading then finds out.
    fn size(&self, clock: &Clock) -> Result<Option<u64>, FileError> {
        let t = clock.call_timeout().map_err(|w| self.too_slow(w))?;
        let agent = self.agent.with_timeout(t);
        let Ok(end) = agent.file_seek(self.handle, 0, "end") else {
            return Ok(None);
        };
        agent
            .file_seek(self.handle, 0, "set")
            .map_err(|e| self.err("read", e))?;
        Ok(Some(end))
    }

    /// Stream the whole file into `out`, at most `limit` bytes.
    fn read_all(
        &self,
        out: &mut dyn Write,
        t: &Transfer,
        clock: &mut Clock,
        meter: &mut Meter,
    ) -> Result<Summary, FileError> {
        let mut h = Sha256::new();
        let mut size = 0u64;
        loop {
            let agent = self.next_call(clock, &t.cancel)?;
            let (buf, eof) = agent
                .file_read(self.handle, CHUNK)
                .map_err(|e| self.err("read", e))?;
            size += buf.len() as u64;
            if size > t.limit {
                return Err(FileError::TooLarge {
                    vm: self.agent.domain().to_string(),
                    path: self.path.to_string(),
                    size,
                    limit: t.limit,
                });
            }
            out.write_all(&buf).map_err(FileError::Output)?;
            h.update(&buf);
            meter.add(buf.len());
            clock
                .moved(buf.len() as u64)
                .map_err(|w| self.too_slow(w))?;
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
    fn write_all(
        &self,
        input: &mut dyn Read,
        input_name: &Path,
        t: &Transfer,
        clock: &mut Clock,
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
            let agent = self.next_call(clock, &t.cancel)?;
            let written = agent
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
            clock.moved(n as u64).map_err(|w| self.too_slow(w))?;
        }
        self.next_call(clock, &Cancel::none())?
            .file_flush(self.handle)
            .map_err(|e| self.err("write", e))?;
        Ok(Summary {
            size,
            sha256: h.finalize().into(),
        })
    }

    /// Close and report a failing close (for writes it can mean lost data).
    fn close(mut self, clock: &Clock) -> Result<(), FileError> {
        self.open = false;
        let t = clock.call_timeout().map_err(|w| self.too_slow(w))?;
        self.agent
            .with_timeout(t)
            .file_close(self.handle)
            .map_err(|e| self.err("write", e))
    }
}

impl Drop for GuestFile<'_, '_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self
                .agent
                .with_timeout(Duration::from_secs(5))
                .file_close(self.handle);
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
/// The size is checked against the limit before the first byte moves when the agent
/// can seek, and while reading in any case.
pub fn download(
    agent: &Agent,
    path: &str,
    mode: &str,
    out: &mut dyn Write,
    label: &str,
    t: &Transfer,
) -> Result<Summary, FileError> {
    let mut clock = Clock::start(t.pace);
    let f = open(agent, path, mode, clock.call_timeout_or_min())?;
    let size = f.size(&clock)?;
    if let Some(s) = size.filter(|s| *s > t.limit) {
        return Err(FileError::TooLarge {
            vm: agent.domain().to_string(),
            path: path.to_string(),
            size: s,
            limit: t.limit,
        });
    }
    let mut meter = Meter::new(label, size, 2 * CHUNK as u64, &t.progress);
    let sum = f.read_all(out, t, &mut clock, &mut meter)?;
    meter.finish();
    f.close(&clock)?;
    Ok(sum)
}

/// The hash of the guest file now; `None` when it does not exist.
pub fn remote_summary(
    agent: &Agent,
    path: &str,
    t: &Transfer,
) -> Result<Option<Summary>, FileError> {
    let quiet = Transfer {
        progress: ProgressSink::none(),
        ..t.clone()
    };
    match download(agent, path, "r", &mut io::sink(), "checking", &quiet) {
        Ok(s) => Ok(Some(s)),
        Err(FileError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A failed write, and whether the guest file had been opened for writing (so
/// truncated) before it failed.
struct WriteFailure {
    error: FileError,
    touched: bool,
}

/// Truncate-and-write `path` from a local file, without verification.
fn write_file(
    agent: &Agent,
    path: &str,
    local: &Path,
    label: &str,
    t: &Transfer,
) -> Result<Summary, WriteFailure> {
    let untouched = |error| WriteFailure {
        error,
        touched: false,
    };
    // Never through a link (a file swapped for one after the caller checked it).
    let mut input = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(local)
        .map_err(|e| untouched(FileError::local(local, &e)))?;
    let total = input.metadata().ok().map(|m| m.len());
    let mut clock = Clock::start(t.pace);
    if let Some(signal) = t.cancel.signal() {
        return Err(untouched(FileError::Interrupted {
            vm: agent.domain().to_string(),
            path: path.to_string(),
            signal,
        }));
    }
    let f = open(agent, path, "w", clock.call_timeout_or_min()).map_err(untouched)?;
    // From here on the guest file is truncated: any failure leaves it changed.
    let touched = |error| WriteFailure {
        error,
        touched: true,
    };
    let mut meter = Meter::new(label, total, 2 * CHUNK as u64, &t.progress);
    let sum = f
        .write_all(&mut input, local, t, &mut clock, &mut meter)
        .map_err(touched)?;
    meter.finish();
    f.close(&clock).map_err(touched)?;
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
    /// A second interrupt stopped the restore: the guest file may be damaged.
    Abandoned(&'static str),
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
            Rollback::Abandoned(signal) => format!(
                "ROLLBACK ABANDONED by a second {signal}: {p} may be damaged in the guest"
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
/// SHA-256; on any failure after the guest file was opened for writing, restore `before`
/// and say whether that worked. An interrupt stops the upload between chunks and starts
/// the rollback; a second one abandons the rollback.
pub fn replace_verified(
    agent: &Agent,
    path: &str,
    new: &Path,
    before: Before,
    can_exec: bool,
    t: &Transfer,
) -> Result<Summary, UploadFailure> {
    let result = write_file(agent, path, new, "uploading", t).and_then(|sent| {
        let check = Transfer {
            limit: t.limit.max(sent.size),
            ..t.clone()
        };
        let touched = |error| WriteFailure {
            error,
            touched: true,
        };
        let found = remote_summary(agent, path, &check)
            .map_err(touched)?
            .unwrap_or(Summary::empty());
        if found == sent {
            Ok(sent)
        } else {
            Err(touched(FileError::VerifyMismatch {
                vm: agent.domain().to_string(),
                path: path.to_string(),
                sums: Box::new((sent, found)),
            }))
        }
    });
    let failure = match result {
        Ok(sum) => return Ok(sum),
        Err(f) => f,
    };
    let rollback = match before {
        // A new file was created (empty) before the upload: it goes again either way.
        Before::Missing => remove_new(agent, path, can_exec),
        Before::Existing { .. } if !failure.touched => Rollback::NotNeeded,
        Before::Existing { backup, summary } => restore(agent, path, backup, summary, t),
    };
    Err(UploadFailure {
        cause: failure.error,
        rollback,
    })
}

/// Write the original back from its backup and verify it. It runs on a fresh budget
/// (the upload may have used up its own) and ignores the first interrupt — that one is
/// why it runs; a second abandons it.
fn restore(agent: &Agent, path: &str, backup: &Path, original: Summary, t: &Transfer) -> Rollback {
    let restoring = Transfer {
        limit: t.limit.max(original.size),
        cancel: t.cancel.after(1),
        ..t.clone()
    };
    match write_file(agent, path, backup, "restoring", &restoring)
        .map_err(|f| f.error)
        .and_then(|_| remote_summary(agent, path, &restoring))
    {
        Ok(Some(s)) if s == original => Rollback::Restored,
        Ok(Some(s)) => Rollback::Failed(format!(
            "read-back after restoring has sha256 {}, the original {}",
            short(&s.sha256),
            short(&original.sha256)
        )),
        Ok(None) => Rollback::Failed("the file is gone after restoring".to_string()),
        Err(FileError::Interrupted { signal, .. }) => Rollback::Abandoned(signal),
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

/// Run a small program in the guest (no shell: `chmod`, `rm`) and wait twice the agent's
/// call timeout for it to end (5–30 s): a guest whose program never exits cannot hold
/// the command longer. The error is one line.
pub fn run_guest(agent: &Agent, program: &str, args: &[&str]) -> Result<(), String> {
    let wait = (agent.timeout() * 2).clamp(Duration::from_secs(5), Duration::from_secs(30));
    let deadline = Instant::now() + wait;
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
    let clock = Clock::start(Pace::default());
    open(agent, path, "w", clock.call_timeout_or_min())?.close(&clock)?;
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
        "WARNING: {path} in {vm:?} may be WORLD-WRITABLE (qemu-ga creates files with mode 0666, whatever the umask) and its mode could not be set ({reason}). Fix it inside the guest: chmod {mode:o} {path}"
    )
}

#[cfg(test)]
pub(crate) mod testfs;

#[cfg(test)]
mod tests;
