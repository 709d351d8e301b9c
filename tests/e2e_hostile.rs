//! The hostile guest's matrix: the real tool against `diq-hostile`, whose guest agent is
//! our own lying program (tools/hostile-agent), in each mode it lies in. Every row of
//! [`MATRIX`] is one command in one mode, with what a user should get: the exit code and
//! the words that say why. Whatever the row, every run must also
//!
//! - end within its deadline, computed from the flags in [`flags`], plus a margin;
//! - print no raw control character (only `\n`), DEL, C1 control, bidi control or
//!   zero-width/format character, on stdout or stderr (`cat` writes the file's bytes to
//!   stdout by design: there only stderr is checked);
//! - print no stderr line over 4 KiB (nor stdout line, for the commands that write text
//!   for people): a lying guest must not flood the terminal;
//! - stay under 64 MiB + `--max-size` of peak RSS (`ru_maxrss` from wait4);
//! - leave every guest file unchanged or as the tool said it left it: checked afterwards
//!   through the honest agent.
//!
//! The whole matrix runs before anything is asserted; then a table of every run (mode,
//! backend, command, exit code, seconds, peak RSS, the first line the user saw) goes to
//! stderr (`--nocapture` shows it), and the test fails listing every row that broke a rule.
//!
//! The frozen harness guest would cost every scan its whole probe timeout. So each run
//! starts with an OS cache of the other guests' answers (from one scan at the start, with
//! diq-hostile's entry taken out, kept valid by `--cache-ttl`): a scan waits only for the
//! hostile guest, which is what is under test.
//!
//! Only diq-hostile is touched: files under a scratch directory of its /tmp (and of its
//! Windows persona's C:), its disc (put back after each eject) and its mode (honest again
//! at the end, also when the test fails).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::child::local_sha;
use common::guest::{guest_put, guest_text};
use common::hostile::{self, HOSTILE as VM};
use common::*;

// ------------------------------------------------------------------ deadlines and limits

/// `--probe-timeout`: how long a scan waits for agents.
const PROBE_S: u64 = 3;
/// `--agent-timeout`: one agent call of a command.
const AGENT_S: u64 = 3;
/// `--transfer-timeout`: one download or upload. The progress floor (`--min-rate`) has a
/// 30 s window, so this is the deadline that binds here.
const TRANSFER_S: u64 = 20;
/// `--max-size`, and the same in KiB for the memory limit.
const MAX_SIZE: &str = "2M";
const MAX_SIZE_KIB: i64 = 2 << 10;
/// Peak RSS allowed: 64 MiB + `--max-size`.
const RSS_LIMIT_KIB: i64 = (64 << 10) + MAX_SIZE_KIB;
/// `--cache-ttl`: long enough for the seeded OS cache to outlive the matrix.
const CACHE_TTL_S: u64 = 3600;

/// libvirt waits up to 5 s for the agent's guest-sync before each command, whatever the
/// command's own timeout (scripts/harness.sh, diq-frozen): the floor of one agent call.
const LIBVIRT_SYNC_S: u64 = 5;
/// The tool's own bound on eject's guest-side step in one VM (src/media/eject.rs:
/// at most 8 unmounts, 30 s per VM).
const EJECT_GUEST_S: u64 = 30;
/// How long libvirt waits for a guest to open a locked tray before it gives up.
const TRAY_S: u64 = 5;
/// `serve` stops within about 2 s of SIGTERM (README).
const SERVE_STOP_S: u64 = 2;
/// What a run may take beyond its deadlines: connecting, listing, starting virsh.
const MARGIN_S: u64 = 5;
/// The longest line a lying guest may make the tool print.
const LINE_CAP: usize = 4096;
/// The whole file must stay under this.
const FILE_BUDGET: Duration = Duration::from_secs(8 * 60);

/// The flags every run gets (before the command).
fn flags() -> Vec<String> {
    [
        ("--probe-timeout", PROBE_S.to_string()),
        ("--agent-timeout", AGENT_S.to_string()),
        ("--transfer-timeout", TRANSFER_S.to_string()),
        ("--max-size", MAX_SIZE.to_string()),
        ("--cache-ttl", CACHE_TTL_S.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

// ------------------------------------------------------------------------- the matrix

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Scan,
    ScanJson,
    Isos,
    IsosJson,
    Eject,
    Cat,
    /// `cat` of a guest path that does not exist: the agent's error text reaches the user.
    CatMissing,
    Pull,
    Edit,
    Push,
    /// `push` to a guest path that does not exist yet (created 0644 through guest-exec
    /// `chmod`, removed again if the upload fails).
    PushNew,
    Serve,
}
use Cmd::*;

impl Cmd {
    fn label(self) -> &'static str {
        match self {
            Scan => "scan",
            ScanJson => "scan --json",
            Isos => "isos",
            IsosJson => "isos --json",
            Eject => "eject",
            Cat => "cat",
            CatMissing => "cat (missing)",
            Pull => "pull",
            Edit => "edit --yes",
            Push => "push",
            PushNew => "push (new file)",
            Serve => "serve",
        }
    }

    /// The deadline of one run, from the flags, and how it is made up.
    fn bound(self) -> (Duration, String) {
        let call = AGENT_S.max(LIBVIRT_SYNC_S);
        let (s, how) = match self {
            Scan | ScanJson => (PROBE_S, format!("--probe-timeout {PROBE_S} s")),
            Isos | IsosJson => (0, "no agent call".to_string()),
            Eject => (
                EJECT_GUEST_S + TRAY_S,
                format!("guest-side step {EJECT_GUEST_S} s + locked tray {TRAY_S} s"),
            ),
            Cat | CatMissing | Pull => (
                call + TRANSFER_S,
                format!("capability check {call} s + one transfer {TRANSFER_S} s"),
            ),
            Push | PushNew => (
                call + 3 * TRANSFER_S,
                format!(
                    "capability check {call} s + 3 transfers (backup, upload, rollback) of {TRANSFER_S} s"
                ),
            ),
            Edit => (
                call + 4 * TRANSFER_S,
                format!(
                    "capability check {call} s + 4 transfers (download, re-check, upload, rollback) of {TRANSFER_S} s"
                ),
            ),
            Serve => (
                PROBE_S + SERVE_STOP_S + MARGIN_S,
                format!("first scan {PROBE_S} s + stop {SERVE_STOP_S} s + margin"),
            ),
        };
        (
            Duration::from_secs(s + MARGIN_S),
            format!("{how} + margin {MARGIN_S} s = {} s", s + MARGIN_S),
        )
    }

    /// Commands whose stdout is text for people (capped lines); not cat (the file's
    /// bytes), not JSON (a document for programs).
    fn stdout_is_text(self) -> bool {
        !matches!(self, Cat | CatMissing | ScanJson | IsosJson)
    }
}

const N: &str = "native";
const V: &str = "virsh";

/// mode, backend, command, exit code, words stderr must hold, words stdout must hold.
type Row = (
    &'static str,
    &'static str,
    Cmd,
    i32,
    &'static [&'static str],
    &'static [&'static str],
);

/// Rows run in this order, a mode's rows together. Words in stdout are looked for in
/// what concerns diq-hostile: its line of `scan`, its entry of `scan --json` (compact
/// JSON), its lines of serve's /metrics; elsewhere the whole stdout.
///
/// Exit codes: 0 done; 1 the command ran but failed (a lie detected, a deadline hit, a
/// locked tray); 2 usage or connection errors, which no lie of a guest may cause.
#[rustfmt::skip] // a table: one row per line
const MATRIX: &[Row] = &[
    // honest: the baseline; everything works.
    ("honest", N, Scan, 0, &[], &["Alpine Linux"]),
    ("honest", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("honest", N, Isos, 0, &[], &["harness.iso"]),
    ("honest", N, IsosJson, 0, &[], &[]),
    ("honest", N, Cat, 0, &[], &[]),
    ("honest", N, CatMissing, 1, &["does not exist"], &[]),
    ("honest", N, Pull, 0, &[], &["Copied"]),
    ("honest", N, Edit, 0, &[], &["Uploaded"]),
    ("honest", N, Push, 0, &[], &["Uploaded"]),
    ("honest", N, PushNew, 0, &[], &["Uploaded"]),
    ("honest", N, Eject, 0, &[], &["ejected"]),
    ("honest", N, Serve, 0, &[], &[r#"status="ok""#]),
    ("honest", V, Scan, 0, &[], &["Alpine Linux"]),
    ("honest", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("honest", V, Cat, 0, &[], &[]),
    ("honest", V, Push, 0, &[], &["Uploaded"]),
    // escapes: ~100 KB of terminal escapes, bidi and zero-width characters in every string
    // the agent sends; file contents stay true, so the file commands work.
    ("escapes", N, Scan, 0, &[], &[r"<pretty-name>\x1b[2J"]),
    ("escapes", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("escapes", N, Isos, 0, &[], &["harness.iso"]),
    ("escapes", N, IsosJson, 0, &[], &[]),
    ("escapes", N, Cat, 0, &[], &[]),
    // The error text is hostile and cut at its NUL by libvirt, "No such file" with it.
    ("escapes", N, CatMissing, 1, &["guest-file-open failed", r"<desc>\x1b[2J"], &[]),
    ("escapes", N, Pull, 0, &[], &["Copied"]),
    ("escapes", N, Edit, 0, &[], &["Uploaded"]),
    ("escapes", N, Push, 0, &[], &["Uploaded"]),
    // The same: the tool cannot tell the file is missing, refuses, and creates nothing.
    ("escapes", N, PushNew, 1, &["guest-file-open failed"], &[]),
    // The agent reports the disc mounted at "/" + escapes: that umount fails, the eject
    // goes ahead and says so.
    ("escapes", N, Eject, 0, &[], &["ejected", "not unmounted inside the guest"]),
    ("escapes", N, Serve, 0, &[], &[r#"status="ok""#]),
    ("escapes", V, Scan, 0, &[], &[r"<pretty-name>\x1b[2J"]),
    ("escapes", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("escapes", V, Cat, 0, &[], &[]),
    ("escapes", V, CatMissing, 1, &["guest-file-open failed", r"<desc>\x1b[2J"], &[]),
    ("escapes", V, Push, 0, &[], &["Uploaded"]),
    // endless-read: every read gives one byte and "not at the end yet", forever. Only
    // --transfer-timeout stops a download; nothing in the guest changes. (Each row costs
    // the whole deadline: pull, and push on virsh, are left to the other modes.)
    ("endless-read", N, Scan, 0, &[], &["Alpine Linux"]),
    ("endless-read", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("endless-read", N, Isos, 0, &[], &["harness.iso"]),
    ("endless-read", N, IsosJson, 0, &[], &[]),
    ("endless-read", N, Cat, 1, &["did not finish within 20 s"], &[]),
    ("endless-read", N, Edit, 1, &["did not finish within 20 s"], &[]),
    // push reads the original first (its backup) and is stopped there.
    ("endless-read", N, Push, 1, &["did not finish within 20 s"], &[]),
    // A new file has no backup: the upload goes in, its read-back never ends, and the
    // new file is removed again.
    ("endless-read", N, PushNew, 1, &["did not finish within 20 s", "removed again"], &[]),
    ("endless-read", N, Eject, 0, &[], &["ejected"]),
    ("endless-read", N, Serve, 0, &[], &[r#"status="ok""#]),
    ("endless-read", V, Scan, 0, &[], &["Alpine Linux"]),
    ("endless-read", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("endless-read", V, Cat, 1, &["did not finish within 20 s"], &[]),
    // count-lies more: reads and writes report 4096 bytes more than they moved.
    ("count-lies more", N, Scan, 0, &[], &["Alpine Linux"]),
    ("count-lies more", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("count-lies more", N, Isos, 0, &[], &["harness.iso"]),
    ("count-lies more", N, IsosJson, 0, &[], &[]),
    ("count-lies more", N, Cat, 1, &["the reply says"], &[]),
    ("count-lies more", N, Pull, 1, &["the reply says"], &[]),
    ("count-lies more", N, Edit, 1, &["the reply says"], &[]),
    ("count-lies more", N, Push, 1, &["the reply says"], &[]),
    ("count-lies more", N, PushNew, 1, &["wrote", "rollback worked"], &[]),
    ("count-lies more", N, Eject, 0, &[], &["ejected"]),
    ("count-lies more", N, Serve, 0, &[], &[r#"status="ok""#]),
    ("count-lies more", V, Scan, 0, &[], &["Alpine Linux"]),
    ("count-lies more", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("count-lies more", V, Cat, 1, &["the reply says"], &[]),
    ("count-lies more", V, Push, 1, &["the reply says"], &[]),
    // count-lies less: they report half of it.
    ("count-lies less", N, Scan, 0, &[], &["Alpine Linux"]),
    ("count-lies less", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("count-lies less", N, Isos, 0, &[], &["harness.iso"]),
    ("count-lies less", N, IsosJson, 0, &[], &[]),
    ("count-lies less", N, Cat, 1, &["the reply says"], &[]),
    ("count-lies less", N, Pull, 1, &["the reply says"], &[]),
    ("count-lies less", N, Edit, 1, &["the reply says"], &[]),
    ("count-lies less", N, Push, 1, &["the reply says"], &[]),
    ("count-lies less", N, PushNew, 1, &["wrote", "rollback worked"], &[]),
    ("count-lies less", N, Eject, 0, &[], &["ejected"]),
    ("count-lies less", N, Serve, 0, &[], &[r#"status="ok""#]),
    ("count-lies less", V, Scan, 0, &[], &["Alpine Linux"]),
    ("count-lies less", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("count-lies less", V, Cat, 1, &["the reply says"], &[]),
    ("count-lies less", V, Push, 1, &["the reply says"], &[]),
    // exec-never-exits: guest-exec starts nothing and its status says "running" forever.
    ("exec-never-exits", N, Scan, 0, &[], &["Alpine Linux"]),
    ("exec-never-exits", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("exec-never-exits", N, Isos, 0, &[], &["harness.iso"]),
    ("exec-never-exits", N, IsosJson, 0, &[], &[]),
    ("exec-never-exits", N, Cat, 0, &[], &[]),
    ("exec-never-exits", N, Pull, 0, &[], &["Copied"]),
    ("exec-never-exits", N, Edit, 0, &[], &["Uploaded"]),
    ("exec-never-exits", N, Push, 0, &[], &["Uploaded"]),
    // The new file's chmod never ends: uploaded, with the loud warning that it is 0666.
    ("exec-never-exits", N, PushNew, 0, &["WORLD-WRITABLE"], &["Uploaded"]),
    // The disc is mounted inside the guest (the test mounts it) and umount never ends:
    // the tray stays locked, nothing changes, and the line says the program hung, not
    // that the agent did not answer.
    ("exec-never-exits", N, Eject, 1, &[], &["locked", "did not finish"]),
    ("exec-never-exits", N, Serve, 0, &[], &[r#"status="ok""#]),
    ("exec-never-exits", V, Scan, 0, &[], &["Alpine Linux"]),
    ("exec-never-exits", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("exec-never-exits", V, Cat, 0, &[], &[]),
    ("exec-never-exits", V, Push, 0, &[], &["Uploaded"]),
    // many-mounts 5000: the agent reports 5000 mounts of the disc; at most 8 are unmounted.
    ("many-mounts 5000", N, Scan, 0, &[], &["Alpine Linux"]),
    ("many-mounts 5000", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("many-mounts 5000", N, Isos, 0, &[], &["harness.iso"]),
    ("many-mounts 5000", N, IsosJson, 0, &[], &[]),
    ("many-mounts 5000", N, Cat, 0, &[], &[]),
    ("many-mounts 5000", N, Pull, 0, &[], &["Copied"]),
    ("many-mounts 5000", N, Edit, 0, &[], &["Uploaded"]),
    ("many-mounts 5000", N, Push, 0, &[], &["Uploaded"]),
    ("many-mounts 5000", N, Eject, 0, &[], &["ejected", "5000 mounts", "at most 8"]),
    ("many-mounts 5000", N, Serve, 0, &[], &[r#"status="ok""#]),
    ("many-mounts 5000", V, Scan, 0, &[], &["Alpine Linux"]),
    ("many-mounts 5000", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("many-mounts 5000", V, Cat, 0, &[], &[]),
    ("many-mounts 5000", V, Push, 0, &[], &["Uploaded"]),
    // many-mounts 60000: a 14 MB fsinfo reply, past libvirt's 10 MiB: libvirt drops it
    // and ignores the agent from then on (until the guest reopens its port).
    ("many-mounts 60000", N, Eject, 0, &[], &["ejected", "could not read"]),
    ("many-mounts 60000", N, ScanJson, 0, &[], &[r#""agent":"error""#]),
    ("many-mounts 60000", N, Cat, 1, &["could not read"], &[]),
    ("many-mounts 60000", V, ScanJson, 0, &[], &[r#""agent":"error""#]),
    ("many-mounts 60000", V, Cat, 1, &["could not read"], &[]),
    ("many-mounts 60000", V, Push, 1, &["could not read"], &[]),
    // slow 2: every reply 2 s late, under --agent-timeout: slow, but it all works. (The
    // agent answers one call at a time: other runs scanning the shared harness meanwhile
    // queue their calls in it too.)
    ("slow 2", N, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("slow 2", N, Cat, 0, &[], &[]),
    ("slow 2", N, Push, 0, &[], &["Uploaded"]),
    ("slow 2", V, ScanJson, 0, &[], &[r#""agent":"ok""#]),
    ("slow 2", V, Cat, 0, &[], &[]),
    // slow 4: every reply 4 s late, past --agent-timeout and --probe-timeout: the agent
    // counts as timed out, commands fail at once, the eject goes ahead without it.
    ("slow 4", N, Scan, 0, &[], &[]),
    ("slow 4", N, ScanJson, 0, &[], &[r#""agent":"timeout""#]),
    ("slow 4", N, Isos, 0, &[], &["harness.iso"]),
    ("slow 4", N, Cat, 1, &["did not answer in time"], &[]),
    ("slow 4", N, Pull, 1, &["did not answer in time"], &[]),
    ("slow 4", N, Edit, 1, &["did not answer in time"], &[]),
    ("slow 4", N, Push, 1, &["did not answer in time"], &[]),
    ("slow 4", N, Eject, 0, &[], &["ejected", "did not answer in time"]),
    ("slow 4", N, Serve, 0, &[], &[r#"status="timeout""#]),
    ("slow 4", V, ScanJson, 0, &[], &[r#""agent":"timeout""#]),
    ("slow 4", V, Cat, 1, &["did not answer in time"], &[]),
    ("slow 4", V, Push, 1, &["did not answer in time"], &[]),
    // bad-json: replies libvirt cannot take. It drops the reply and ignores the agent
    // until the guest reopens its port: the agent is in error, not absent.
    ("bad-json syntax", N, Scan, 0, &[], &[]),
    ("bad-json syntax", N, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json syntax", N, Isos, 0, &[], &["harness.iso"]),
    ("bad-json syntax", N, IsosJson, 0, &[], &[]),
    ("bad-json syntax", N, Cat, 1, &["could not read"], &[]),
    ("bad-json syntax", N, Pull, 1, &["could not read"], &[]),
    ("bad-json syntax", N, Edit, 1, &["could not read"], &[]),
    ("bad-json syntax", N, Push, 1, &["could not read"], &[]),
    ("bad-json syntax", N, Eject, 0, &[], &["ejected", "could not read"]),
    ("bad-json syntax", N, Serve, 0, &[], &[r#"status="error""#]),
    ("bad-json syntax", V, Scan, 0, &[], &[]),
    ("bad-json syntax", V, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json syntax", V, Cat, 1, &["could not read"], &[]),
    ("bad-json syntax", V, Push, 1, &["could not read"], &[]),
    ("bad-json utf8", N, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json utf8", N, Isos, 0, &[], &["harness.iso"]),
    ("bad-json utf8", N, Cat, 1, &["could not read"], &[]),
    ("bad-json utf8", N, Pull, 1, &["could not read"], &[]),
    ("bad-json utf8", N, Edit, 1, &["could not read"], &[]),
    ("bad-json utf8", N, Push, 1, &["could not read"], &[]),
    ("bad-json utf8", N, Eject, 0, &[], &["ejected", "could not read"]),
    ("bad-json utf8", N, Serve, 0, &[], &[r#"status="error""#]),
    ("bad-json utf8", V, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json utf8", V, Cat, 1, &["could not read"], &[]),
    ("bad-json utf8", V, Push, 1, &["could not read"], &[]),
    ("bad-json truncated", N, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json truncated", N, Isos, 0, &[], &["harness.iso"]),
    ("bad-json truncated", N, Cat, 1, &["could not read"], &[]),
    ("bad-json truncated", N, Pull, 1, &["could not read"], &[]),
    ("bad-json truncated", N, Edit, 1, &["could not read"], &[]),
    ("bad-json truncated", N, Push, 1, &["could not read"], &[]),
    ("bad-json truncated", N, Eject, 0, &[], &["ejected", "could not read"]),
    ("bad-json truncated", N, Serve, 0, &[], &[r#"status="error""#]),
    ("bad-json truncated", V, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json truncated", V, Cat, 1, &["could not read"], &[]),
    ("bad-json truncated", V, Push, 1, &["could not read"], &[]),
    ("bad-json not-object", N, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json not-object", N, Isos, 0, &[], &["harness.iso"]),
    ("bad-json not-object", N, Cat, 1, &["could not read"], &[]),
    ("bad-json not-object", N, Pull, 1, &["could not read"], &[]),
    ("bad-json not-object", N, Edit, 1, &["could not read"], &[]),
    ("bad-json not-object", N, Push, 1, &["could not read"], &[]),
    ("bad-json not-object", N, Eject, 0, &[], &["ejected", "could not read"]),
    ("bad-json not-object", N, Serve, 0, &[], &[r#"status="error""#]),
    ("bad-json not-object", V, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json not-object", V, Cat, 1, &["could not read"], &[]),
    ("bad-json not-object", V, Push, 1, &["could not read"], &[]),
    ("bad-json unknown", N, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json unknown", N, Isos, 0, &[], &["harness.iso"]),
    ("bad-json unknown", N, Cat, 1, &["could not read"], &[]),
    ("bad-json unknown", N, Pull, 1, &["could not read"], &[]),
    ("bad-json unknown", N, Edit, 1, &["could not read"], &[]),
    ("bad-json unknown", N, Push, 1, &["could not read"], &[]),
    ("bad-json unknown", N, Eject, 0, &[], &["ejected", "could not read"]),
    ("bad-json unknown", N, Serve, 0, &[], &[r#"status="error""#]),
    ("bad-json unknown", V, ScanJson, 0, &[], &[r#""agent":"error""#, "could not read"]),
    ("bad-json unknown", V, Cat, 1, &["could not read"], &[]),
    ("bad-json unknown", V, Push, 1, &["could not read"], &[]),
    // windows: a Windows agent (Windows 11 behind "Windows 10" in osinfo; files on drive
    // paths, here C:\…; the disc is D:\, which needs no unmount).
    ("windows", N, Scan, 0, &[], &["Windows 11 Pro"]),
    ("windows", N, ScanJson, 0, &[], &[r#""agent":"ok""#, "Windows 11 Pro"]),
    ("windows", N, Isos, 0, &[], &["harness.iso"]),
    ("windows", N, IsosJson, 0, &[], &[]),
    ("windows", N, Cat, 0, &[], &[]),
    ("windows", N, Pull, 0, &[], &["Copied"]),
    ("windows", N, Edit, 0, &[], &["Uploaded"]),
    ("windows", N, Push, 0, &[], &["Uploaded"]),
    ("windows", N, PushNew, 0, &[], &["Uploaded"]),
    ("windows", N, Eject, 0, &[], &["ejected"]),
    ("windows", N, Serve, 0, &[], &["Windows 11 Pro"]),
    ("windows", V, Scan, 0, &[], &["Windows 11 Pro"]),
    ("windows", V, ScanJson, 0, &[], &[r#""agent":"ok""#, "Windows 11 Pro"]),
    ("windows", V, Cat, 0, &[], &[]),
    ("windows", V, Push, 0, &[], &["Uploaded"]),
    // windows no-osinfo: guest-get-osinfo disabled, so the OS comes from `cmd.exe /c ver`.
    ("windows no-osinfo", N, Scan, 0, &[], &["Microsoft Windows 11"]),
    ("windows no-osinfo", N, ScanJson, 0, &[], &[r#""agent":"ok""#, "Windows 11"]),
    ("windows no-osinfo", N, Isos, 0, &[], &["harness.iso"]),
    ("windows no-osinfo", N, IsosJson, 0, &[], &[]),
    ("windows no-osinfo", N, Cat, 0, &[], &[]),
    ("windows no-osinfo", N, Pull, 0, &[], &["Copied"]),
    ("windows no-osinfo", N, Edit, 0, &[], &["Uploaded"]),
    ("windows no-osinfo", N, Push, 0, &[], &["Uploaded"]),
    ("windows no-osinfo", N, PushNew, 0, &[], &["Uploaded"]),
    ("windows no-osinfo", N, Eject, 0, &[], &["ejected"]),
    ("windows no-osinfo", N, Serve, 0, &[], &["Microsoft Windows 11"]),
    ("windows no-osinfo", V, Scan, 0, &[], &["Microsoft Windows 11"]),
    ("windows no-osinfo", V, ScanJson, 0, &[], &[r#""agent":"ok""#, "Windows 11"]),
    ("windows no-osinfo", V, Cat, 0, &[], &[]),
    ("windows no-osinfo", V, Push, 0, &[], &["Uploaded"]),
];

// ------------------------------------------------------------------- guest files

/// What every file the tool reads starts as: guest-controlled bytes, escapes included
/// (edit's diff must show them escaped; cat passes them through, by design).
const ORIGINAL: &[u8] =
    b"original line of the hostile matrix\n\x1b[31mred\x1b[0m \xe2\x80\xae-bidi \xe2\x80\x8b-zw\n";
/// What push sends.
const PUSHED: &[u8] = b"pushed by the hostile matrix\n";
/// What the test's editor appends.
const EDITOR_LINE: &[u8] = b"appended by the editor of the hostile matrix\n";

/// Where the `windows` persona keeps drive C: inside the guest (scripts/harness.sh starts
/// the agent with `--scratch /run/diq-hostile`; `C:\x` is `<scratch>/windows/C/x`).
const WINDOWS_C: &str = "/run/diq-hostile/windows/C";

fn is_windows(mode: &str) -> bool {
    mode.starts_with("windows")
}

/// The scratch directory of this run in the guest's /tmp.
fn guest_dir() -> String {
    format!("/tmp/diq-hostile-{}", std::process::id())
}

/// A guest file of one mode's block: the path the tool is given, and the same file as
/// the honest agent sees it.
#[derive(Debug, Clone)]
struct GuestFile {
    tool: String,
    honest: String,
}

fn guest_file(mode: &str, backend: &str, role: &str) -> GuestFile {
    let slug: String = mode
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = format!("{slug}-{backend}-{role}.txt");
    if is_windows(mode) {
        let name = format!("diq-hostile-{}-{name}", std::process::id());
        GuestFile {
            tool: format!("C:\\{name}"),
            honest: format!("{WINDOWS_C}/{name}"),
        }
    } else {
        let p = format!("{}/{name}", guest_dir());
        GuestFile {
            tool: p.clone(),
            honest: p,
        }
    }
}

/// The file a command works on, if any.
fn target(mode: &str, backend: &str, cmd: Cmd) -> Option<GuestFile> {
    let role = match cmd {
        Cat | Pull => "read",
        Edit => "edit",
        Push => "push",
        PushNew => "new",
        _ => return None,
    };
    Some(guest_file(mode, backend, role))
}

/// SHA-256 of each guest file (None: missing), in one guest-exec through the honest agent.
fn guest_shas(paths: &[&str]) -> HashMap<String, Option<String>> {
    let script: Vec<String> = paths
        .iter()
        .map(|p| format!("if [ -e '{p}' ]; then sha256sum '{p}'; else echo 'missing {p}'; fi"))
        .collect();
    let text = guest_text(VM, &script.join("; "));
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("missing ") {
            out.insert(p.to_string(), None);
        } else if let Some((sha, p)) = line.split_once("  ") {
            out.insert(p.to_string(), Some(sha.to_string()));
        }
    }
    out
}

// ------------------------------------------------------------------ running the tool

/// One run, measured.
#[derive(Debug, Default)]
struct Measured {
    code: i32,
    out: Vec<u8>,
    err: Vec<u8>,
    secs: f64,
    rss_kib: i64,
    /// Set when the run was killed at the hard limit.
    killed: bool,
    /// serve only: /metrics as scraped, and its own findings.
    metrics: Vec<u8>,
    serve_problems: Vec<String>,
}

/// Everything the matrix shares.
struct Ctx {
    /// The test's own directory on the host (editor script, pushed file).
    dir: tempfile::TempDir,
    editor: PathBuf,
    local: PathBuf,
    /// The OS cache every run starts with (None: none could be made; scans then wait
    /// for the frozen guest too, which costs time, not correctness).
    seed: Option<Vec<u8>>,
    iso: String,
}

impl Ctx {
    /// A fresh home (cache, config, temporary files, recovery records, log socket)
    /// holding the seeded OS cache.
    fn home(&self) -> tempfile::TempDir {
        let home = tempfile::tempdir_in(self.dir.path()).unwrap();
        if let Some(seed) = &self.seed {
            let d = home.path().join("dismount_iso_qemu");
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            let f = d.join("os-cache.json");
            std::fs::write(&f, seed).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        home
    }
}

fn spawn_tool(home: &Path, backend: &str, args: &[String], editor: Option<&Path>) -> Child {
    let mut c = tool_process(home);
    c.args(["-c", harness_uri(), "--backend", backend])
        .args(flags())
        .args(args)
        .env("DISMOUNT_ISO_QEMU_STATE_DIR", home.join("state"))
        .env("DISMOUNT_ISO_QEMU_SYSLOG_SOCKET", home.join("log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(e) = editor {
        c.env("EDITOR", e);
    }
    // fork, not vfork: a child started with posix_spawn (vfork) execs from this process's
    // memory, and the kernel starts its ru_maxrss at this process's own high-water mark;
    // a forked child starts at this process's current RSS (a few MB), below the tool's.
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe {
        c.pre_exec(|| Ok(()));
    }
    c.spawn().unwrap()
}

/// Read a pipe to its end on a thread; the bytes so far are visible meanwhile.
fn drain(mut r: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let t = std::thread::spawn(move || {
        let mut chunk = [0u8; 64 * 1024];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, t)
}

/// Wait for `pid` with wait4 (killed at `limit`): exit code (-signal when killed by
/// one), peak RSS in KiB, and whether the test killed it.
fn reap(pid: i32, limit: Duration) -> (i32, i64, bool) {
    let end = Instant::now() + limit;
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                -libc::WTERMSIG(status)
            } else {
                -1
            };
            return (code, usage.ru_maxrss, killed);
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!("wait4({pid}): {}", std::io::Error::last_os_error());
        }
        if !killed && Instant::now() > end {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long past its bound a run may go before the test kills it.
const HARD_EXTRA: Duration = Duration::from_secs(60);

#[allow(
    clippy::zombie_processes,
    reason = "reaped by reap() with wait4, which also gives the peak RSS"
)]
fn run_tool(
    home: &Path,
    backend: &str,
    args: &[String],
    editor: Option<&Path>,
    limit: Duration,
) -> Measured {
    let t0 = Instant::now();
    let mut child = spawn_tool(home, backend, args, editor);
    let pid = child.id() as i32;
    let (out, t_out) = drain(child.stdout.take().unwrap());
    let (err, t_err) = drain(child.stderr.take().unwrap());
    let (code, rss_kib, killed) = reap(pid, limit + HARD_EXTRA);
    let secs = t0.elapsed().as_secs_f64();
    let _ = t_out.join();
    let _ = t_err.join();
    let out = std::mem::take(&mut *out.lock().unwrap());
    let err = std::mem::take(&mut *err.lock().unwrap());
    Measured {
        code,
        out,
        err,
        secs,
        rss_kib,
        killed,
        ..Measured::default()
    }
}

/// One HTTP/1.0 GET: status and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of the HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// `serve` on a free loopback port: wait for its first scan (/healthz 200), scrape
/// /metrics, stop it with SIGTERM.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by reap() with wait4, which also gives the peak RSS"
)]
fn run_serve(home: &Path, backend: &str) -> Measured {
    let t0 = Instant::now();
    let args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--interval", "2"]
        .map(String::from)
        .to_vec();
    let mut child = spawn_tool(home, backend, &args, None);
    let pid = child.id() as i32;
    let (out, t_out) = drain(child.stdout.take().unwrap());
    let (err, t_err) = drain(child.stderr.take().unwrap());
    let mut problems = Vec::new();
    let mut metrics = Vec::new();

    let ready_by = t0 + Duration::from_secs(PROBE_S + MARGIN_S);
    let mut addr: Option<SocketAddr> = None;
    while addr.is_none() && Instant::now() < ready_by {
        let text = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
        addr = text.split("listening on http://").nth(1).and_then(|rest| {
            rest.split(['/', ' ', '\n'])
                .next()
                .and_then(|a| a.parse().ok())
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(addr) = addr {
        let healthy = loop {
            match http_get(addr, "/healthz") {
                Ok((200, _)) => break true,
                _ if Instant::now() > ready_by => break false,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        if !healthy {
            problems.push(format!(
                "/healthz not 200 within {} s of the start (--probe-timeout {PROBE_S} s + margin {MARGIN_S} s)",
                PROBE_S + MARGIN_S
            ));
        }
        match http_get(addr, "/metrics") {
            Ok((200, body)) => metrics = body,
            Ok((st, body)) => problems.push(format!(
                "/metrics answered {st}: {}",
                shown(&String::from_utf8_lossy(&body), 100)
            )),
            Err(e) => problems.push(format!("/metrics: {e}")),
        }
    } else {
        problems.push(format!(
            "no \"listening on\" line within {} s",
            PROBE_S + MARGIN_S
        ));
    }
    let t_stop = Instant::now();
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let (code, rss_kib, killed) = reap(
        pid,
        Duration::from_secs(SERVE_STOP_S + MARGIN_S) + HARD_EXTRA,
    );
    let stop = t_stop.elapsed();
    if stop > Duration::from_secs(SERVE_STOP_S + MARGIN_S) {
        problems.push(format!(
            "stopped {:.1} s after SIGTERM, over {SERVE_STOP_S} s + margin {MARGIN_S} s",
            stop.as_secs_f64()
        ));
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = t_out.join();
    let _ = t_err.join();
    let out = std::mem::take(&mut *out.lock().unwrap());
    let err = std::mem::take(&mut *err.lock().unwrap());
    Measured {
        code,
        out,
        err,
        secs,
        rss_kib,
        killed,
        metrics,
        serve_problems: problems,
    }
}

// ------------------------------------------------------------------- what is checked

/// Characters no output may carry raw: controls but `\n`, DEL, C1, bidi controls,
/// zero-width and other format characters.
fn forbidden(c: char) -> bool {
    let u = c as u32;
    (u < 0x20 && c != '\n')
        || u == 0x7f
        || (0x80..=0x9f).contains(&u)
        || (0x200b..=0x200f).contains(&u)
        || (0x202a..=0x202e).contains(&u)
        || u == 0x2028
        || u == 0x2029
        || (0x2060..=0x2064).contains(&u)
        || (0x2066..=0x2069).contains(&u)
        || u == 0xfeff
}

/// What is wrong with `bytes` as terminal output: forbidden characters (how many of
/// each, where the first is) or bytes that are not UTF-8.
fn raw_controls(bytes: &[u8]) -> Option<String> {
    let mut problems = Vec::new();
    if let Err(e) = std::str::from_utf8(bytes) {
        problems.push(format!("not UTF-8 at byte {}", e.valid_up_to()));
    }
    let text = String::from_utf8_lossy(bytes);
    let mut seen: Vec<(char, usize, usize)> = Vec::new();
    for (at, c) in text.char_indices().filter(|(_, c)| forbidden(*c)) {
        match seen.iter_mut().find(|(k, _, _)| *k == c) {
            Some(e) => e.2 += 1,
            None => seen.push((c, at, 1)),
        }
    }
    for (c, at, n) in seen.iter().take(8) {
        problems.push(format!("{n}× U+{:04X} (first at byte {at})", *c as u32));
    }
    if seen.len() > 8 {
        problems.push(format!("{} more kinds", seen.len() - 8));
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

fn longest_line(bytes: &[u8]) -> usize {
    bytes
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// Text safe to print here: forbidden characters as escapes, at most `max` characters.
fn shown(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if forbidden(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// What of stdout concerns diq-hostile (see [`MATRIX`]).
fn hostile_view(cmd: Cmd, m: &Measured) -> Result<String, String> {
    let out = String::from_utf8_lossy(&m.out);
    match cmd {
        Scan => Ok(out
            .lines()
            .filter(|l| l.starts_with(&format!("{VM} ")))
            .collect::<Vec<_>>()
            .join("\n")),
        ScanJson => {
            let doc: Value = serde_json::from_str(&out)
                .map_err(|e| format!("stdout is not one JSON document: {e}"))?;
            let vm = doc["vms"]
                .as_array()
                .and_then(|vms| vms.iter().find(|v| v["name"] == VM))
                .ok_or_else(|| format!("{VM} is not among the scanned VMs"))?;
            Ok(vm.to_string())
        }
        Serve => Ok(String::from_utf8_lossy(&m.metrics)
            .lines()
            .filter(|l| l.contains(&format!("domain=\"{VM}\"")))
            .collect::<Vec<_>>()
            .join("\n")),
        _ => Ok(out.into_owned()),
    }
}

/// Every rule the run broke (the files in the guest are checked after the mode's block).
fn judge(row: &Row, m: &Measured, pulled_dir: Option<&Path>) -> Vec<String> {
    let (_, _, cmd, exit, err_words, out_words) = *row;
    let mut p = Vec::new();
    let (limit, how) = cmd.bound();
    if m.killed {
        p.push(format!(
            "killed after {:.1} s: it did not end within its deadline ({how}) + {} s",
            m.secs,
            HARD_EXTRA.as_secs()
        ));
    } else if cmd != Serve && m.secs > limit.as_secs_f64() {
        p.push(format!("took {:.1} s, over its deadline: {how}", m.secs));
    }
    p.extend(m.serve_problems.iter().cloned());
    if m.code != exit {
        p.push(format!("exit code {} where {exit} was expected", m.code));
    }
    let err = String::from_utf8_lossy(&m.err);
    for w in err_words {
        if !err.contains(w) {
            p.push(format!("stderr lacks {w:?}"));
        }
    }
    match hostile_view(cmd, m) {
        Ok(view) => {
            for w in out_words {
                if !view.contains(w) {
                    p.push(format!(
                        "stdout lacks {w:?} (looked in: {})",
                        shown(&view, 200)
                    ));
                }
            }
        }
        Err(e) => p.push(e),
    }
    if let Some(bad) = raw_controls(&m.err) {
        p.push(format!("raw control characters on stderr: {bad}"));
    }
    if cmd == CatMissing && !m.out.is_empty() {
        p.push(format!(
            "cat of a missing file printed {} bytes",
            m.out.len()
        ));
    }
    if cmd != Cat {
        if let Some(bad) = raw_controls(&m.out) {
            p.push(format!("raw control characters on stdout: {bad}"));
        }
    }
    if cmd == Serve {
        if let Some(bad) = raw_controls(&m.metrics) {
            p.push(format!("raw control characters in /metrics: {bad}"));
        }
        if longest_line(&m.metrics) > LINE_CAP {
            p.push(format!(
                "a /metrics line of {} bytes (cap {LINE_CAP})",
                longest_line(&m.metrics)
            ));
        }
    }
    if longest_line(&m.err) > LINE_CAP {
        p.push(format!(
            "a stderr line of {} bytes (cap {LINE_CAP})",
            longest_line(&m.err)
        ));
    }
    if cmd.stdout_is_text() && longest_line(&m.out) > LINE_CAP {
        p.push(format!(
            "a stdout line of {} bytes (cap {LINE_CAP})",
            longest_line(&m.out)
        ));
    }
    if m.rss_kib > RSS_LIMIT_KIB {
        p.push(format!(
            "peak RSS {} KiB, over 64 MiB + --max-size {MAX_SIZE} = {RSS_LIMIT_KIB} KiB",
            m.rss_kib
        ));
    }
    if cmd == Cat && m.code == 0 && m.out != ORIGINAL {
        p.push(format!(
            "cat exited 0 but printed {} bytes that are not the file",
            m.out.len()
        ));
    }
    if let Some(dir) = pulled_dir {
        let left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if m.code == 0 {
            match std::fs::read(dir.join("pulled.txt")) {
                Ok(data) if data == ORIGINAL && left.len() == 1 => {}
                Ok(data) if data == ORIGINAL => {
                    p.push(format!("pull left more than its file behind: {left:?}"))
                }
                Ok(data) => p.push(format!(
                    "pull exited 0 but wrote {} bytes that are not the file",
                    data.len()
                )),
                Err(e) => p.push(format!("pull exited 0 but its file is not there: {e}")),
            }
        } else if !left.is_empty() {
            p.push(format!("a failed pull left files behind: {left:?}"));
        }
    }
    p
}

/// What a guest file must be after its command, judged by what the tool said.
fn expected_after(cmd: Cmd, m: &Measured) -> Result<Option<Vec<u8>>, &'static str> {
    let err = String::from_utf8_lossy(&m.err);
    // The tool may admit that it left the file damaged: then any content matches what
    // it said (and the row fails on its exit code or words instead).
    if err.contains("may be damaged") || err.contains("stays in the guest") {
        return Err("the tool says the file may be damaged");
    }
    Ok(match (cmd, m.code) {
        (Cat | Pull, _) => Some(ORIGINAL.to_vec()),
        (Edit, 0) => Some([ORIGINAL, EDITOR_LINE].concat()),
        (Push | PushNew, 0) => Some(PUSHED.to_vec()),
        (Edit | Push, _) => Some(ORIGINAL.to_vec()),
        (PushNew, _) => None,
        _ => unreachable!("{cmd:?} has no file"),
    })
}

// --------------------------------------------------------------- the hostile guest

/// diq-hostile's disc in sda (live), from `isos --json`.
fn hostile_disc(home: &Path) -> Result<Option<String>, String> {
    let out = tool_process(home)
        .args(["-c", harness_uri(), "isos", "--json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("isos --json: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    let vm = doc["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|v| v["name"] == VM))
        .ok_or_else(|| format!("{VM} is not in isos --json"))?;
    let sda = vm["drives"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["target"] == "sda"))
        .ok_or_else(|| format!("{VM} has no drive sda"))?;
    Ok(sda["live"]["source"].as_str().map(str::to_string))
}

/// Put the harness disc back into diq-hostile's sda when it is out.
fn put_disc_back(home: &Path, iso: &str) -> Result<(), String> {
    if hostile_disc(home)?.is_some() {
        return Ok(());
    }
    let out = tool_process(home)
        .args(["-c", harness_uri(), "mount", VM, iso, "--drive", "sda"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "mount {VM} {iso} --drive sda: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// One line to the hostile agent's control channel, and its answer line (at most `wait`).
fn control(line: &str, wait: Duration) -> Result<String, String> {
    let path = hostile::control_socket();
    let mut s = UnixStream::connect(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let io = |e: std::io::Error| e.to_string();
    s.set_write_timeout(Some(wait)).map_err(io)?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    let end = Instant::now() + wait;
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while !answer.contains(&b'\n') {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {} s", wait.as_secs()));
        }
        s.set_read_timeout(Some(left)).map_err(io)?;
        match s.read(&mut buf) {
            Ok(0) => return Err("the control socket closed before the answer".to_string()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(io(e)),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// How long a switch's answer may take: after a reply libvirt rejected (bad-json,
/// many-mounts 60000) the agent reopens its port first and answers once libvirt is
/// attached again (1-5 s here).
const SWITCH_ACK: Duration = Duration::from_secs(15);

/// Switch the hostile agent, as common's `set_mode` does, but without its panic: its
/// answer is sometimes lost (about once per run of this matrix: the agent logs the
/// switch, the "ok" never arrives). Then ask which mode it is in; when it is the one
/// asked for, go on (after a switch to honest, once libvirt reaches the agent again).
fn try_switch(mode: &str) -> Result<(), String> {
    let mut why = String::new();
    for _ in 0..3 {
        match control(mode, SWITCH_ACK) {
            Ok(a) if a == format!("ok {mode}") => return Ok(()),
            Ok(a) => return Err(format!("the agent refused mode {mode:?}: {a:?}")),
            Err(e) => why = e,
        }
        if control("status", SWITCH_ACK).ok() == Some(format!("ok {mode}")) {
            eprintln!("{VM}: the switch to {mode:?} was not answered ({why}); the agent says it is in that mode");
            if mode == "honest" {
                wait_for_agent();
            }
            return Ok(());
        }
    }
    Err(format!("cannot switch {VM} to {mode:?}: {why}"))
}

fn switch(mode: &str) {
    if let Err(e) = try_switch(mode) {
        panic!("{e}");
    }
}

/// Wait (at most 20 s) until libvirt reaches the honest agent: after a reopened port it
/// takes a moment to attach again.
fn wait_for_agent() {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let ok = std::process::Command::new("virsh")
            .env("LC_ALL", "C")
            .args(["-c", harness_uri(), "qemu-agent-command", VM])
            .arg(r#"{"execute":"guest-ping"}"#)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A shell command in the guest through raw virsh, not waited for, never panicking.
fn guest_sh_quietly(script: &str) {
    let cmd = serde_json::json!({"execute": "guest-exec", "arguments": {
        "path": "/bin/sh", "arg": ["-c", script]}});
    let _ = std::process::Command::new("virsh")
        .env("LC_ALL", "C")
        .args([
            "-c",
            harness_uri(),
            "qemu-agent-command",
            VM,
            &cmd.to_string(),
        ])
        .output();
}

/// The mount point of the disc inside the guest, for the exec-never-exits eject.
fn guest_cd() -> String {
    format!("{}/cd", guest_dir())
}

/// Leaves diq-hostile as the harness promises it, also when the test fails: honest, the
/// disc in sda, no scratch files. Best effort, never a panic.
struct Restore {
    iso: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = try_switch("honest") {
            eprintln!("could not switch {VM} back to honest: {e}");
        }
        guest_sh_quietly(&format!(
            "umount '{}' 2>/dev/null; rm -rf '{}' {WINDOWS_C}/diq-hostile-{}-*",
            guest_cd(),
            guest_dir(),
            std::process::id()
        ));
        let Ok(home) = tempfile::tempdir() else {
            return;
        };
        if let Err(e) = put_disc_back(home.path(), &self.iso) {
            eprintln!("could not put the disc back into {VM}: {e}");
        }
    }
}

// ------------------------------------------------------------------------ the test

/// One run of the matrix, for the table.
struct Record {
    row: Row,
    m: Measured,
    problems: Vec<String>,
}

/// The OS cache every run starts with: one scan's, without diq-hostile's entry.
fn seed_cache(ctx_dir: &Path) -> Option<Vec<u8>> {
    let home = tempfile::tempdir_in(ctx_dir).ok()?;
    let m = run_tool(
        home.path(),
        N,
        &["scan".to_string()],
        None,
        Duration::from_secs(PROBE_S + MARGIN_S),
    );
    if m.code != 0 {
        eprintln!(
            "no OS cache seed (scan exited {}): scans will wait for every agent",
            m.code
        );
        return None;
    }
    let raw = std::fs::read(home.path().join("dismount_iso_qemu/os-cache.json")).ok()?;
    let mut doc: Value = serde_json::from_slice(&raw).ok()?;
    doc.get_mut("entries")?
        .as_object_mut()?
        .retain(|_, e| e["name"] != VM);
    serde_json::to_vec(&doc).ok()
}

#[test]
fn hostile_guest_matrix() {
    if !harness_available() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();

    switch("honest");
    let dir = tempfile::tempdir().unwrap();
    let iso = hostile_disc(dir.path()).unwrap().unwrap_or_else(|| {
        panic!("{VM} has no disc in sda; the harness gives it one (scripts/harness.sh up)")
    });
    let _restore = Restore { iso: iso.clone() };
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nprintf '%s\\n' '{}' >> \"$1\"\n",
            String::from_utf8_lossy(EDITOR_LINE).trim_end()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let local = dir.path().join("pushed.txt");
    std::fs::write(&local, PUSHED).unwrap();
    let seed = seed_cache(dir.path());
    let ctx = Ctx {
        dir,
        editor,
        local,
        seed,
        iso,
    };
    guest_text(VM, &format!("mkdir -p '{}'", guest_dir()));

    // HOSTILE_MATRIX_MODES="slow 4,windows" runs only those modes' rows (to work on one).
    let only: Option<Vec<String>> = std::env::var("HOSTILE_MATRIX_MODES")
        .ok()
        .map(|v| v.split(',').map(|m| m.trim().to_string()).collect());
    let mut records: Vec<Record> = Vec::new();
    let mut broken: Vec<String> = Vec::new();
    let mut i = 0;
    while i < MATRIX.len() {
        let mode = MATRIX[i].0;
        let block: Vec<Row> = MATRIX[i..]
            .iter()
            .take_while(|r| r.0 == mode)
            .copied()
            .collect();
        i += block.len();
        if only.as_ref().is_some_and(|o| !o.iter().any(|m| m == mode)) {
            continue;
        }
        // A block that cannot run (the guest misbehaves beyond its mode) is reported,
        // and the next one still runs.
        match std::panic::catch_unwind(AssertUnwindSafe(|| run_block(&ctx, mode, &block))) {
            Ok(r) => records.extend(r),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                broken.push(format!("mode {mode}: the block stopped: {why}"));
                let _ = try_switch("honest");
                let _ = put_disc_back(ctx.dir.path(), &ctx.iso);
            }
        }
    }
    switch("honest");

    let took = started.elapsed();
    print_table(&records, took);
    let mut failures: Vec<String> = records
        .iter()
        .flat_map(|r| {
            let (mode, backend, cmd, ..) = r.row;
            r.problems
                .iter()
                .map(move |p| format!("{mode} / {backend} / {}: {p}", cmd.label()))
        })
        .collect();
    failures.extend(broken);
    if took > FILE_BUDGET {
        failures.push(format!(
            "the matrix took {:.0} s, over its budget of {} s",
            took.as_secs_f64(),
            FILE_BUDGET.as_secs()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} problems in the hostile matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One mode's rows: seed its files (honest), switch, run, switch back, check the files
/// and put the disc back.
fn run_block(ctx: &Ctx, mode: &str, block: &[Row]) -> Vec<Record> {
    switch("honest");
    for &(_, backend, cmd, ..) in block {
        if let Some(f) = target(mode, backend, cmd) {
            if cmd != PushNew {
                guest_put(VM, &f.honest, ORIGINAL);
            }
        }
    }
    // The exec-never-exits eject needs a disc the guest has mounted (so the tray is
    // locked until the umount that never ends).
    let mount_cd = mode == "exec-never-exits" && block.iter().any(|r| r.2 == Eject);
    if mount_cd {
        let cd = guest_cd();
        let (code, text) = common::guest::guest_sh(
            VM,
            &format!("mkdir -p '{cd}'; for i in 1 2 3 4 5 6 7 8 9 10; do mount -t iso9660 -o ro /dev/sr0 '{cd}' 2>/dev/null && break; sleep 0.5; done; grep ' {cd} ' /proc/mounts"),
        );
        assert_eq!(
            code,
            0,
            "mounting the disc inside {VM}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    switch(mode);

    let mut records = Vec::new();
    for row in block {
        let (_, backend, cmd, ..) = *row;
        let home = ctx.home();
        let file = target(mode, backend, cmd);
        let file_arg = || file.as_ref().unwrap().tool.clone();
        let pulled_dir = home.path().join("pull");
        let (args, editor): (Vec<String>, Option<&Path>) = match cmd {
            Scan => (vec!["scan".into()], None),
            ScanJson => (vec!["scan".into(), "--json".into()], None),
            Isos => (vec!["isos".into()], None),
            IsosJson => (vec!["isos".into(), "--json".into()], None),
            Eject => (vec!["eject".into(), VM.into()], None),
            Cat => (vec!["cat".into(), VM.into(), file_arg()], None),
            CatMissing => (
                vec![
                    "cat".into(),
                    VM.into(),
                    guest_file(mode, backend, "missing").tool,
                ],
                None,
            ),
            Pull => {
                std::fs::create_dir(&pulled_dir).unwrap();
                let to = pulled_dir.join("pulled.txt");
                (
                    vec![
                        "pull".into(),
                        VM.into(),
                        file_arg(),
                        to.display().to_string(),
                    ],
                    None,
                )
            }
            Edit => (
                vec!["edit".into(), VM.into(), file_arg(), "--yes".into()],
                Some(ctx.editor.as_path()),
            ),
            Push | PushNew => (
                vec![
                    "push".into(),
                    VM.into(),
                    ctx.local.display().to_string(),
                    file_arg(),
                ],
                None,
            ),
            Serve => (Vec::new(), None),
        };
        let m = if cmd == Serve {
            run_serve(home.path(), backend)
        } else {
            run_tool(home.path(), backend, &args, editor, cmd.bound().0)
        };
        let problems = judge(row, &m, (cmd == Pull).then_some(pulled_dir.as_path()));
        eprintln!(
            "{mode} / {backend} / {}: exit {} in {:.1} s{}",
            cmd.label(),
            m.code,
            m.secs,
            if problems.is_empty() { "" } else { " (FAIL)" }
        );
        records.push(Record {
            row: *row,
            m,
            problems,
        });
    }

    switch("honest");
    if mount_cd {
        common::guest::guest_sh(VM, &format!("umount '{}' 2>/dev/null; true", guest_cd()));
    }
    // Nothing may have been written to a guest that lied, beyond what the tool said.
    let files: Vec<(usize, GuestFile)> = records
        .iter()
        .enumerate()
        .filter_map(|(k, r)| target(mode, r.row.1, r.row.2).map(|f| (k, f)))
        .collect();
    let paths: Vec<&str> = files.iter().map(|(_, f)| f.honest.as_str()).collect();
    let shas = guest_shas(&paths);
    for (k, f) in &files {
        let r = &mut records[*k];
        let Ok(want) = expected_after(r.row.2, &r.m) else {
            continue;
        };
        let have = shas.get(&f.honest).cloned().flatten();
        let want_sha = want.as_deref().map(local_sha);
        if have != want_sha {
            let what = |sha: &Option<String>| match sha {
                None => "missing".to_string(),
                Some(s) if *s == local_sha(ORIGINAL) => "the original".to_string(),
                Some(s) if *s == local_sha(PUSHED) => "the pushed file".to_string(),
                Some(s) => format!("sha256 {}", &s[..12]),
            };
            r.problems.push(format!(
                "{} in the guest is {}, where the tool's exit {} says it is {}",
                f.tool,
                what(&have),
                r.m.code,
                what(&want_sha)
            ));
        }
    }
    if let Err(e) = put_disc_back(ctx.dir.path(), &ctx.iso) {
        panic!("putting the disc back after mode {mode}: {e}");
    }
    records
}

/// What a scan or serve run showed about diq-hostile, for the table.
fn seen_by_user(cmd: Cmd, m: &Measured) -> String {
    let view = hostile_view(cmd, m).unwrap_or_else(|e| e);
    match cmd {
        ScanJson => match serde_json::from_str::<Value>(&view) {
            Ok(v) => format!(
                "agent {}, os {}, reason {}",
                v["agent"], v["os"]["text"], v["os"]["reason"]
            ),
            Err(_) => view,
        },
        Serve => view
            .lines()
            .find(|l| l.contains("agent_status"))
            .unwrap_or("(no agent_status line)")
            .to_string(),
        _ => view,
    }
}

fn print_table(records: &[Record], took: Duration) {
    let mut t = String::new();
    // A forked child's ru_maxrss starts at this process's RSS: no figure is below it.
    let own = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l["VmRSS:".len()..].trim().to_string())
        })
        .unwrap_or_default();
    t.push_str(&format!(
        "\nhostile matrix: {} runs in {:.0} s (flags: {}; this test's own RSS: {own})\n",
        records.len(),
        took.as_secs_f64(),
        flags().join(" ")
    ));
    t.push_str(&format!(
        "{:<20} {:<7} {:<16} {:>4} {:>6} {:>5} {:>8}  {:<4}  {}\n",
        "mode",
        "backend",
        "command",
        "exit",
        "s",
        "bound",
        "RSS KiB",
        "",
        "first line the user saw"
    ));
    for r in records {
        let (mode, backend, cmd, exit, ..) = r.row;
        let exit_cell = if r.m.code == exit {
            r.m.code.to_string()
        } else {
            format!("{}≠{exit}", r.m.code)
        };
        let err = String::from_utf8_lossy(&r.m.err);
        let out = String::from_utf8_lossy(&r.m.out);
        let first = match (cmd, err.lines().next()) {
            (Scan | ScanJson | Serve, _) => seen_by_user(cmd, &r.m),
            (_, Some(l)) => l.to_string(),
            (_, None) => format!("out: {}", out.lines().next().unwrap_or("")),
        };
        t.push_str(&format!(
            "{:<20} {:<7} {:<16} {:>4} {:>6.1} {:>5} {:>8}  {:<4}  {}\n",
            mode,
            backend,
            cmd.label(),
            exit_cell,
            r.m.secs,
            cmd.bound().0.as_secs(),
            r.m.rss_kib,
            if r.problems.is_empty() { "ok" } else { "FAIL" },
            shown(&first, 100)
        ));
    }
    eprintln!("{t}");
}
