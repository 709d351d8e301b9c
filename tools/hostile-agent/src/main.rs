//! `diq-hostile-agent`: a QEMU guest agent of the test harness's own that lies on
//! purpose, so the end-to-end tests can show that dismount_iso_qemu survives hostile
//! guests over the real transport (libvirt, QEMU's virtio-serial chardev, the guest's
//! `/dev/vportNpM`). It runs in the harness guest `diq-hostile` instead of qemu-ga
//! (kernel parameter `diq.agent=hostile`; scripts/harness.sh builds it with
//! `cargo build --release -p hostile-agent` and copies it into the initramfs).
//!
//! Usage: `diq-hostile-agent --agent-port DEV [--control-port DEV] [--scratch DIR]
//! [--mode MODE]`
//!
//! # Protocol
//!
//! QGA over the agent port (`org.qemu.guest_agent.0`): JSON objects one after another
//! from the host (a 0xFF byte discards a half-read one); each reply is one JSON object
//! followed by `\n`, which is how libvirt splits replies. `guest-sync` answers
//! `{"return": ID}`; `guest-sync-delimited` the same after a 0xFF byte. The commands:
//! guest-sync, guest-sync-delimited, guest-ping, guest-info (every command here listed
//! enabled), guest-get-osinfo, guest-get-host-name, guest-get-time, guest-exec,
//! guest-exec-status (base64 out-data/err-data), guest-file-open/read/write/seek/flush/
//! close (buf-b64, count, eof, position; handles from 1000), guest-get-fsinfo. Any other
//! command gets `{"error":{"class":"CommandNotFound","desc":"The command X has not been
//! found"}}`; error texts are qemu-ga's.
//!
//! # Modes
//!
//! The mode is switched while the agent runs, over the control port
//! (`org.dismount-iso-qemu.control.0`; on the host a unix socket,
//! `$HARNESS_DIR/run/agent/diq-hostile.control.sock`): a line `MODE` or `MODE ARG`
//! switches and is answered `ok MODE\n` (`error TEXT\n` for a line it does not take);
//! `status` answers `ok MODE` with the current mode; `reconnect` closes and reopens the
//! agent port (see below) and answers `ok reconnect`. guest-sync is never lied about
//! (libvirt's handshake is not what is under test), so a lie always reaches the command
//! it is for.
//!
//! - `honest`: a normal Linux agent — real files for guest-file-*, real programs for
//!   guest-exec (PATH searched, killed after 300 s), guest-get-fsinfo from
//!   /proc/self/mounts with bus addresses from sysfs (the CD-ROM `sr0` on `sata`),
//!   osinfo from /etc/os-release and the kernel.
//! - `escapes`: a ~100 KB string full of terminal escapes (CSI, OSC title and clipboard
//!   writes, a terminal query, C1 CSI), bidi overrides, a zero-width space, CR, LF, TAB,
//!   BS and DEL, ending in a NUL and `<after-nul>`, in every string field: every osinfo member, the host name, guest-info's version (and
//!   one more command whose name is such a string), fsinfo (two more file systems: one
//!   on /dev/sr0 whose mount point is `/` + such a string, one whose every field is),
//!   exec stdout (before and after the real output, and as a PRETTY_NAME line) and
//!   stderr (before the real one), and every error's desc. File contents stay true.
//!   libvirt keeps agent strings as C strings: it cuts each at the NUL, so its clients
//!   get the 100 KB without the tail (exec output is base64 and keeps it).
//! - `endless-read`: guest-file-read returns one byte ("A"), count 1, eof false,
//!   forever.
//! - `count-lies [more|less]`: guest-file-read and guest-file-write report a count that
//!   is the real one + 4096 (`more`, the default) or half of it (`less`); the data
//!   itself is true.
//! - `exec-never-exits`: guest-exec starts nothing and returns a made-up pid;
//!   guest-exec-status of any known pid says `exited: false` forever.
//! - `many-mounts [N]`: guest-get-fsinfo adds N (default 5000, at most 60000: a 14 MB
//!   reply, past libvirt's 10 MiB limit) file systems on /dev/sr0
//!   (the CD-ROM's real sata address) at /media/cdrom00000…; `cat /proc/mounts`
//!   through guest-exec lists them too; `umount` of one of them succeeds and it is gone
//!   from then on (a new switch to many-mounts brings them all back).
//! - `slow N`: every reply but guest-sync's is sent N seconds (a decimal) late; tests
//!   pick N just under the timeout they test. A mode switch ends a pending delay.
//! - `bad-json [syntax|utf8|truncated|not-object|unknown]`: replies that libvirt
//!   cannot take: not JSON (`syntax`, the default: a member without a value), JSON
//!   whose strings carry bytes that are not UTF-8 (`utf8`: 0xFF, an overlong and a
//!   truncated sequence, a UTF-16 surrogate; objects get a `diq-junk` member too), the
//!   first half of the reply (`truncated`), an array around the reply (`not-object`),
//!   or an object with neither return nor error (`unknown`).
//! - `windows [osinfo|no-osinfo]`: a Windows guest's agent: osinfo id mswindows,
//!   pretty-name "Windows 10 Pro", version-id "10", kernel-release "22631" (a Windows 11
//!   build) — or, with `no-osinfo`, guest-get-osinfo disabled (CommandDisabled, listed
//!   disabled by guest-info) so a tool has to ask `cmd.exe /c ver`; guest-exec runs
//!   only `cmd.exe /c ver|echo|type` (ver prints "Microsoft Windows [Version
//!   10.0.22631.4460]"), other programs do not exist; fsinfo has `C:\` (NTFS) and
//!   `D:\` (CDFS, the CD-ROM's sata address); guest-file-* take only drive paths
//!   (`C:\x`, mapped onto `<scratch>/windows/C/x`; D: is read-only and holds
//!   HELLO.TXT as the harness disc does).
//!
//! # libvirt and broken replies
//!
//! A reply libvirt cannot parse marks its agent connection broken: every later call
//! fails ("QEMU guest agent is not available due to an error") until the guest side of
//! the port closes and reopens. So when a mode is switched after such a reply went out
//! (a bad-json reply, or one over libvirt's 10 MiB limit), the agent closes and reopens
//! the agent port and answers the switch only once libvirt has attached again.

mod agent;
mod b64;
mod fsinfo;
mod mode;
mod port;
mod stream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use agent::{Agent, Outcome};
use mode::{BadJson, Mode};
use port::{Got, Port};
use stream::{Piece, Splitter};

/// libvirt gives up on a reply longer than this (QEMU_AGENT_MAX_RESPONSE).
const LIBVIRT_MAX_REPLY: usize = 10 * 1024 * 1024;
/// How long a reply may wait for a host side that is there but does not take it.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);

fn log(text: &str) {
    eprintln!("diq-hostile-agent: {text}");
}

/// What the control thread and the agent loop share.
struct Shared {
    mode: Mutex<(Mode, u64)>,
    /// Counts mode switches, so a pending `slow` delay sees one.
    generation: AtomicU64,
    /// Set when a reply libvirt rejects went out since the port was last opened.
    tainted: AtomicBool,
    /// A reconnect the control thread asked for, answered when done.
    reconnect: Mutex<Option<mpsc::Sender<String>>>,
}

impl Shared {
    fn mode(&self) -> (Mode, u64) {
        self.mode.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_mode(&self, m: Mode) -> Mode {
        let mut g = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        std::mem::replace(&mut *g, (m, generation)).0
    }
}

struct Options {
    agent_port: PathBuf,
    control_port: Option<PathBuf>,
    scratch: PathBuf,
    mode: Mode,
}

fn usage() -> &'static str {
    "usage: diq-hostile-agent --agent-port DEV [--control-port DEV] [--scratch DIR] [--mode 'MODE [ARG]']\n\
     The harness's lying QEMU guest agent; its modes are listed in tools/hostile-agent/src/main.rs."
}

fn parse_options() -> Result<Options, String> {
    let mut agent_port = None;
    let mut control_port = None;
    let mut scratch = PathBuf::from("/run/diq-hostile");
    let mut mode = Mode::Honest;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--agent-port" => agent_port = Some(PathBuf::from(value()?)),
            "--control-port" => control_port = Some(PathBuf::from(value()?)),
            "--scratch" => scratch = PathBuf::from(value()?),
            "--mode" => mode = Mode::parse(&value()?)?,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Options {
        agent_port: agent_port.ok_or("--agent-port is required")?,
        control_port,
        scratch,
        mode,
    })
}

fn main() {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("diq-hostile-agent: {e}\n{}", usage());
            std::process::exit(2);
        }
    };
    let _ = std::fs::create_dir_all(&opts.scratch);
    let shared = Arc::new(Shared {
        mode: Mutex::new((opts.mode.clone(), 0)),
        generation: AtomicU64::new(0),
        tainted: AtomicBool::new(false),
        reconnect: Mutex::new(None),
    });
    let port = match Port::open(&opts.agent_port) {
        Ok(p) => p,
        Err(e) => {
            log(&format!("cannot open {}: {e}", opts.agent_port.display()));
            std::process::exit(1);
        }
    };
    if let Some(control) = opts.control_port.clone() {
        let shared = shared.clone();
        std::thread::spawn(move || control_loop(&control, &shared));
    }
    log(&format!(
        "serving QGA on {} in mode {} (control: {})",
        opts.agent_port.display(),
        opts.mode,
        opts.control_port
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    ));
    AgentLoop {
        port,
        splitter: Splitter::default(),
        agent: Agent::new(opts.scratch),
        shared,
    }
    .run();
}

// -------------------------------------------------------------------- the agent port

struct AgentLoop {
    port: Port,
    splitter: Splitter,
    agent: Agent,
    shared: Arc<Shared>,
}

impl AgentLoop {
    fn run(&mut self) -> ! {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let asked = self
                .shared
                .reconnect
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(done) = asked {
                let (text, leftover) = self.reconnect();
                let _ = done.send(text);
                self.feed(&leftover);
                continue;
            }
            match self.port.read(&mut buf) {
                Ok(Got::Data(n)) => {
                    let data = buf[..n].to_vec();
                    self.feed(&data);
                }
                // Woken early by data; a reconnect request waits at most this long.
                Ok(Got::Idle) => self.port.wait(Duration::from_millis(250)),
                Ok(Got::HostAway) => {
                    // libvirt let go of the socket: whatever was half-read is gone, and
                    // so is any mark it had put on the connection.
                    self.splitter.reset();
                    self.shared.tainted.store(false, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    log(&format!("read {}: {e}", self.port.path().display()));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Close the port, give libvirt time to see the guest side go, open it again, and
    /// wait until libvirt has attached again: first the host side is away (a read
    /// gives 0), then it is back (a read would block, or brings data, which is kept).
    fn reconnect(&mut self) -> (String, Vec<u8>) {
        let t0 = Instant::now();
        self.port.close();
        self.splitter.reset();
        std::thread::sleep(Duration::from_secs(1));
        if let Err(e) = self.port.reopen() {
            log(&format!("reconnect: cannot reopen: {e}"));
            return (format!("cannot reopen the agent port: {e}"), Vec::new());
        }
        self.shared.tainted.store(false, Ordering::SeqCst);
        let mut seen_away = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let waited = t0.elapsed();
            match self.port.read(&mut buf) {
                Ok(Got::Data(n)) => {
                    log(&format!("reconnected in {:.1} s", waited.as_secs_f64()));
                    return ("reconnect".into(), buf[..n].to_vec());
                }
                Ok(Got::Idle) if seen_away || waited > Duration::from_secs(4) => {
                    log(&format!("reconnected in {:.1} s", waited.as_secs_f64()));
                    return ("reconnect".into(), Vec::new());
                }
                Ok(Got::HostAway) => seen_away = true,
                Ok(Got::Idle) | Err(_) => {}
            }
            if waited > Duration::from_secs(15) {
                log("reconnect: libvirt did not attach again within 15 s");
                return (
                    "reconnect (libvirt has not attached again)".into(),
                    Vec::new(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn feed(&mut self, data: &[u8]) {
        for piece in self.splitter.feed(data) {
            let (mode, generation) = self.shared.mode();
            let (reply, sync) = match piece {
                Piece::Garbage(_) => (
                    error_reply("GenericError", "JSON parse error, invalid token".into()),
                    false,
                ),
                Piece::Value(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                    Err(e) => (
                        error_reply("GenericError", format!("JSON parse error, {e}")),
                        false,
                    ),
                    Ok(req) => self.answer(&req, &mode, generation),
                },
            };
            if let Some(bytes) = reply {
                if !sync {
                    if let Mode::Slow(secs) = mode {
                        self.delay(secs, generation);
                    }
                }
                let bytes = if sync {
                    bytes
                } else {
                    self.frame_for(bytes, &mode)
                };
                if bytes.len() > LIBVIRT_MAX_REPLY {
                    self.shared.tainted.store(true, Ordering::SeqCst);
                }
                match self.port.write_all(&bytes, Instant::now() + WRITE_DEADLINE) {
                    Ok(true) => {}
                    Ok(false) => log("a reply was dropped: the host side did not take it"),
                    Err(e) => log(&format!("write: {e}")),
                }
            }
        }
    }

    /// The reply bytes for one request (None: no reply) and whether it is a sync's.
    fn answer(&mut self, req: &Value, mode: &Mode, generation: u64) -> (Option<Vec<u8>>, bool) {
        let id = req.get("id").cloned();
        let mut reply = match self.agent.handle(req, mode, generation) {
            Outcome::Sync { id, delimited } => {
                let mut out = Vec::new();
                if delimited {
                    out.push(0xFF);
                }
                out.extend(line(&json!({ "return": id })));
                return (Some(out), true);
            }
            Outcome::ReturnRaw(raw) => {
                let mut out = b"{\"return\":".to_vec();
                out.extend_from_slice(&raw);
                drop(raw);
                if let Some(id) = id {
                    out.extend_from_slice(b",\"id\":");
                    out.extend(serde_json::to_vec(&id).unwrap_or_default());
                }
                out.push(b'}');
                return (Some(out), false);
            }
            Outcome::Return(v) => json!({ "return": v }),
            Outcome::Error(e) => json!({"error": {"class": e.class, "desc": e.desc}}),
        };
        if let Some(id) = id {
            reply["id"] = id;
        }
        (Some(serde_json::to_vec(&reply).unwrap_or_default()), false)
    }

    /// Frame a reply (serialized without its newline) as the mode wants it.
    fn frame_for(&self, mut json: Vec<u8>, mode: &Mode) -> Vec<u8> {
        let Mode::BadJson(kind) = mode else {
            json.push(b'\n');
            return json;
        };
        self.shared.tainted.store(true, Ordering::SeqCst);
        let mut out = match kind {
            BadJson::Syntax => {
                // {"return": …, "diq-hostile": } — a member without a value.
                json.pop();
                json.extend_from_slice(b", \"diq-hostile\": }");
                json
            }
            BadJson::Utf8 => {
                let v: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
                let mut out = Vec::new();
                bad_utf8(&v, &mut out, true);
                out
            }
            BadJson::Truncated => {
                json.truncate(json.len() / 2);
                json
            }
            BadJson::NotObject => {
                let mut out = b"[".to_vec();
                out.extend_from_slice(&json);
                out.push(b']');
                out
            }
            BadJson::Unknown => {
                let mut out = b"{\"diq-hostile\": ".to_vec();
                out.extend_from_slice(&json);
                out.push(b'}');
                out
            }
        };
        out.push(b'\n');
        out
    }

    /// Wait `secs`, or less when the mode is switched meanwhile.
    fn delay(&self, secs: f64, generation: u64) {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            if self.shared.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }
}

fn line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

fn error_reply(class: &str, desc: String) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&json!({"error": {"class": class, "desc": desc}})).unwrap_or_default())
}

/// Bytes no UTF-8 decoder takes: a lone 0xFF, an overlong '/', a sequence cut short,
/// and a UTF-16 surrogate encoded as UTF-8 (CESU).
const NOT_UTF8: &[u8] = b"\xff\xc0\xaf\xe2\x82\xed\xa0\x80";

/// JSON with [`NOT_UTF8`] inside every string (and a `diq-junk` member in the reply's
/// objects, so replies without strings carry it too). Keys stay clean.
fn bad_utf8(v: &Value, out: &mut Vec<u8>, junk: bool) {
    match v {
        Value::String(s) => {
            let mut enc = serde_json::to_vec(s).unwrap_or_default();
            enc.pop();
            out.extend_from_slice(&enc);
            out.extend_from_slice(NOT_UTF8);
            out.push(b'"');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                bad_utf8(item, out, junk);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                bad_utf8(item, out, junk);
            }
            if junk {
                if !m.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"diq-junk\":\"");
                out.extend_from_slice(NOT_UTF8);
                out.push(b'"');
            }
            out.push(b'}');
        }
        other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
    }
}

// ------------------------------------------------------------------ the control port

fn control_loop(path: &std::path::Path, shared: &Shared) {
    let mut port = loop {
        match Port::open(path) {
            Ok(p) => break p,
            Err(e) => {
                log(&format!(
                    "cannot open the control port {}: {e}",
                    path.display()
                ));
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    };
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match port.read(&mut buf) {
            Ok(Got::Data(n)) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = pending.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&raw);
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    let answer = control_line(text, shared);
                    let _ = port.write_all(
                        format!("{answer}\n").as_bytes(),
                        Instant::now() + Duration::from_secs(2),
                    );
                }
                if pending.len() > 4096 {
                    pending.clear();
                }
            }
            Ok(Got::Idle) => port.wait(Duration::from_secs(1)),
            // No test holds the control socket (the usual case): look again now and then.
            Ok(Got::HostAway) => {
                pending.clear();
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Ask the agent loop to reconnect; its answer, or why there is none.
fn reconnect(shared: &Shared) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    *shared.reconnect.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    rx.recv_timeout(Duration::from_secs(20))
        .map_err(|_| "the agent loop did not reconnect within 20 s".to_string())
}

fn control_line(text: &str, shared: &Shared) -> String {
    match text {
        "status" => return format!("ok {}", shared.mode().0),
        "reconnect" => {
            return match reconnect(shared) {
                Ok(t) => format!("ok {t}"),
                Err(e) => format!("error {e}"),
            }
        }
        _ => {}
    }
    let m = match Mode::parse(text) {
        Ok(m) => m,
        Err(e) => return format!("error {e}"),
    };
    let previous = shared.set_mode(m.clone());
    log(&format!("mode {previous} -> {m}"));
    if shared.tainted.load(Ordering::SeqCst) {
        log("libvirt was sent a reply it rejects: reconnecting the agent port");
        if let Err(e) = reconnect(shared) {
            return format!("error {e}");
        }
    }
    format!("ok {m}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_utf8_breaks_every_string_but_stays_json_shaped() {
        let mut out = Vec::new();
        bad_utf8(
            &json!({"return": {"a": "x", "b": [1, "y"], "c": {}}}),
            &mut out,
            true,
        );
        assert!(std::str::from_utf8(&out).is_err());
        let lossy = String::from_utf8_lossy(&out);
        assert!(serde_json::from_str::<Value>(&lossy).is_ok(), "{lossy}");
        assert_eq!(
            out.windows(NOT_UTF8.len())
                .filter(|w| *w == NOT_UTF8)
                .count(),
            5
        );
    }
}
