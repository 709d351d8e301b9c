//! Running one `virsh` child: argument vector only (never a shell), `C` locale, stdin
//! closed unless we feed it, stdout and stderr captured, and a wall-clock limit after
//! which the child's whole process group is killed, so a hung virsh (or an ssh it
//! started for a remote URI) never hangs the tool.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What a finished child left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Why a child gave no [`Finished`].
#[derive(Debug)]
pub enum RunError {
    /// The program does not exist (or is not executable).
    NotFound(io::Error),
    /// Spawning failed for another reason.
    Spawn(io::Error),
    /// The wall-clock limit passed; the child was killed.
    TimedOut(Duration),
}

/// One child run: program, arguments, optional stdin text, wall-clock limit.
pub struct Invocation<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    pub stdin: Option<String>,
    pub limit: Duration,
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error (the child was killed mid-write) keeps what arrived so far.
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn kill_group(child: &mut Child) {
    // The child leads its own process group (see `setsid` below), so this also
    // reaches anything it started (ssh for qemu+ssh://) that would keep our pipes open.
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is
        // touched. The group id is our own child's pid, which we have not reaped yet, so
        // it cannot have been reused.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Run the child to completion or until its limit, whichever comes first.
pub fn run(inv: Invocation<'_>) -> Result<Finished, RunError> {
    let started = Instant::now();
    let mut cmd = Command::new(inv.program);
    cmd.args(&inv.args)
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env_remove("LANGUAGE")
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A session of its own, without a controlling terminal: virsh then never tries to
    // start a polkit agent on our terminal ("Authorization not available…" on stderr) or
    // to prompt there for a password we could not show; and the child leads its own
    // process group, so a kill reaches everything it started.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => RunError::NotFound(e),
        _ => RunError::Spawn(e),
    })?;

    // Feed stdin from its own thread: a child that writes a lot before reading all of its
    // input would otherwise deadlock against us.
    if let (Some(text), Some(mut pipe)) = (inv.stdin, child.stdin.take()) {
        thread::spawn(move || {
            // EPIPE when virsh exits early is not our error to report; its stderr is.
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let stdout_rx = spawn_reader(child.stdout.take().expect("stdout is piped"));
    let stderr_rx = spawn_reader(child.stderr.take().expect("stderr is piped"));

    let deadline = started + inv.limit;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Err(RunError::Spawn(e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(&mut child);
            return Err(RunError::TimedOut(inv.limit));
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    };

    // virsh has exited; a grandchild could still hold the pipes. Wait for the text only
    // until the same deadline, then take what arrived.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now());
        let bytes = rx
            .recv_timeout(left.max(Duration::from_millis(50)))
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let stdout = collect(stdout_rx);
    let stderr = collect(stderr_rx);
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}
