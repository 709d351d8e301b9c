//! The QGA commands: what qemu-ga answers on Linux (honest mode), and each mode's lies.
//! [`Agent::handle`] turns one request into one reply value; how the reply is framed,
//! broken or delayed is the main loop's business.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::b64;
use crate::fsinfo;
use crate::mode::{hostile, Lie, Mode};

/// What `guest-info` lists (every one enabled), in qemu-ga's order.
pub const COMMANDS: &[&str] = &[
    "guest-get-osinfo",
    "guest-get-host-name",
    "guest-exec",
    "guest-exec-status",
    "guest-get-fsinfo",
    "guest-file-flush",
    "guest-file-seek",
    "guest-file-write",
    "guest-file-read",
    "guest-file-close",
    "guest-file-open",
    "guest-info",
    "guest-get-time",
    "guest-ping",
    "guest-sync",
    "guest-sync-delimited",
];

/// qemu-ga's limit for one guest-file-read.
const READ_COUNT_MAX: i64 = 48 * 1024 * 1024;
/// qemu-ga keeps at most this much of a process's stdout and of its stderr.
const EXEC_OUTPUT_MAX: usize = 16 * 1024 * 1024;
/// A program guest-exec started is killed after this long (qemu-ga has no limit; a
/// test harness should not collect processes that never end).
const EXEC_TIMEOUT: Duration = Duration::from_secs(300);
/// The first file handle (qemu-ga's first, too).
const FIRST_HANDLE: i64 = 1000;
/// guest-exec pids this agent makes up (for processes it does not start).
const FIRST_FAKE_PID: i64 = 70_000;

/// The build `windows` reports (Windows 11 23H2 behind a "Windows 10" product name).
pub const WINDOWS_BUILD: &str = "22631";
pub const WINDOWS_VER: &str = "Microsoft Windows [Version 10.0.22631.4460]";
pub const HARNESS_DISC_TEXT: &str = "Hello from the dismount_iso_qemu harness disc.\n";

/// An error reply: QMP's class and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QgaError {
    pub class: &'static str,
    pub desc: String,
}

fn generic(desc: impl Into<String>) -> QgaError {
    QgaError {
        class: "GenericError",
        desc: desc.into(),
    }
}

/// What a request gets.
#[derive(Debug)]
pub enum Outcome {
    Return(Value),
    /// A return value already serialized (many-mounts: 60000 file systems as a value
    /// tree would not fit the guest's memory).
    ReturnRaw(Vec<u8>),
    Error(QgaError),
    /// guest-sync / guest-sync-delimited: the id back (the latter after a 0xFF byte).
    Sync {
        id: Value,
        delimited: bool,
    },
}

/// An `std::io::Error` as strerror says it (no "(os error N)").
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The members of a request's `arguments`, checked the way QMP checks them.
struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    fn only(&self, allowed: &[&str]) -> Result<(), QgaError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(generic(format!("Parameter '{k}' is unexpected"))),
            None => Ok(()),
        }
    }

    fn get<'v, T>(
        &'v self,
        name: &str,
        kind: &str,
        f: impl Fn(&'v Value) -> Option<T>,
    ) -> Result<Option<T>, QgaError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                generic(format!(
                    "Invalid parameter type for '{name}', expected: {kind}"
                ))
            }),
        }
    }

    fn need<T>(&self, name: &str, v: Option<T>) -> Result<T, QgaError> {
        v.ok_or_else(|| generic(format!("Parameter '{name}' is missing")))
    }

    fn opt_str(&self, name: &str) -> Result<Option<&str>, QgaError> {
        self.get(name, "string", Value::as_str)
    }

    fn str(&self, name: &str) -> Result<&str, QgaError> {
        let v = self.opt_str(name)?;
        self.need(name, v)
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, QgaError> {
        self.get(name, "integer", Value::as_i64)
    }

    fn int(&self, name: &str) -> Result<i64, QgaError> {
        let v = self.opt_int(name)?;
        self.need(name, v)
    }

    fn opt_strings(&self, name: &str) -> Result<Option<Vec<String>>, QgaError> {
        self.get(name, "array", |v| {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    }
}

/// A finished process, as guest-exec-status reports it.
#[derive(Debug, Clone, Default)]
pub struct ExecDone {
    pub exitcode: Option<i32>,
    pub signal: Option<i32>,
    pub out: Vec<u8>,
    pub err: Vec<u8>,
    pub out_truncated: bool,
    pub err_truncated: bool,
}

impl ExecDone {
    fn exited(code: i32, out: impl Into<Vec<u8>>, err: impl Into<Vec<u8>>) -> ExecDone {
        ExecDone {
            exitcode: Some(code),
            out: out.into(),
            err: err.into(),
            ..ExecDone::default()
        }
    }
}

type ExecSlot = Arc<Mutex<Option<ExecDone>>>;

struct OpenFile {
    file: File,
}

pub struct Agent {
    /// Where the `windows` persona's drives live (`C:\x` is `<scratch>/windows/C/x`).
    scratch: PathBuf,
    files: HashMap<i64, OpenFile>,
    next_handle: i64,
    execs: HashMap<i64, ExecSlot>,
    next_fake_pid: i64,
    /// `many-mounts`: the mount points still reported, and for which mode generation.
    fake_mounts: Vec<String>,
    fake_mounts_generation: Option<u64>,
}

impl Agent {
    pub fn new(scratch: PathBuf) -> Agent {
        let a = Agent {
            scratch,
            files: HashMap::new(),
            next_handle: FIRST_HANDLE,
            execs: HashMap::new(),
            next_fake_pid: FIRST_FAKE_PID,
            fake_mounts: Vec::new(),
            fake_mounts_generation: None,
        };
        a.seed_windows();
        a
    }

    /// The files the `windows` persona starts with.
    fn seed_windows(&self) {
        let files: [(&str, &str); 3] = [
            (
                "C:\\Windows\\win.ini",
                "; for 16-bit app support\r\n[fonts]\r\n[extensions]\r\n[mci extensions]\r\n[files]\r\n[Mail]\r\nMAPI=1\r\n",
            ),
            (
                "C:\\Windows\\System32\\drivers\\etc\\hosts",
                "# Copyright (c) 1993-2009 Microsoft Corp.\r\n#\r\n# localhost name resolution is handled within DNS itself.\r\n#\t127.0.0.1       localhost\r\n",
            ),
            ("D:\\HELLO.TXT", HARNESS_DISC_TEXT),
        ];
        for (win, text) in files {
            if let Some(p) = self.windows_path(win) {
                if let Some(dir) = p.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                if !p.exists() {
                    let _ = std::fs::write(&p, text);
                }
            }
        }
    }

    /// `C:\a\b` (or `c:/a/b`) → `<scratch>/windows/C/a/b`; `None` for anything that is
    /// not a drive path or that climbs out with `..`.
    pub fn windows_path(&self, path: &str) -> Option<PathBuf> {
        let mut chars = path.chars();
        let letter = chars.next().filter(char::is_ascii_alphabetic)?;
        if chars.next() != Some(':') {
            return None;
        }
        let rest = chars.as_str().replace('\\', "/");
        let mut out = self
            .scratch
            .join("windows")
            .join(letter.to_ascii_uppercase().to_string());
        for c in Path::new(&rest).components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => return None,
            }
        }
        Some(out)
    }

    /// One request (already parsed) in `mode`; `generation` counts mode switches.
    pub fn handle(&mut self, request: &Value, mode: &Mode, generation: u64) -> Outcome {
        let Some(obj) = request.as_object() else {
            return Outcome::Error(generic("QMP input must be a JSON object"));
        };
        let Some(execute) = obj.get("execute").and_then(Value::as_str) else {
            return Outcome::Error(generic("QMP input lacks member 'execute'"));
        };
        let empty = Map::new();
        let args = match obj.get("arguments") {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Outcome::Error(generic("QMP input member 'arguments' must be an object"))
            }
        };
        let args = Args(args);
        let result = match execute {
            "guest-sync" | "guest-sync-delimited" => {
                return match args.only(&["id"]).and_then(|()| {
                    let id = args.0.get("id").cloned();
                    args.need("id", id)
                }) {
                    Ok(id) => Outcome::Sync {
                        id,
                        delimited: execute == "guest-sync-delimited",
                    },
                    Err(e) => Outcome::Error(e),
                }
            }
            "guest-ping" => args.only(&[]).map(|()| json!({})),
            "guest-info" => args.only(&[]).map(|()| self.info(mode)),
            "guest-get-osinfo" if *mode == (Mode::Windows { osinfo: false }) => Err(QgaError {
                class: "CommandDisabled",
                desc: "The command guest-get-osinfo has been disabled for this instance".into(),
            }),
            "guest-get-osinfo" => args.only(&[]).map(|()| osinfo(mode)),
            "guest-get-host-name" => args.only(&[]).map(|()| host_name(mode)),
            "guest-get-time" => args.only(&[]).map(|()| {
                let ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0);
                json!(ns)
            }),
            "guest-get-fsinfo" => match (mode, args.only(&[])) {
                (Mode::ManyMounts(n), Ok(())) => {
                    return Outcome::ReturnRaw(self.many_mounts_fsinfo(*n, generation))
                }
                (_, r) => r.map(|()| self.fsinfo(mode)),
            },
            "guest-exec" => self.exec(&args, mode, generation),
            "guest-exec-status" => self.exec_status(&args, mode),
            "guest-file-open" => self.file_open(&args, mode),
            "guest-file-close" => self.file_close(&args),
            "guest-file-read" => self.file_read(&args, mode),
            "guest-file-write" => self.file_write(&args, mode),
            "guest-file-seek" => self.file_seek(&args),
            "guest-file-flush" => self.file_flush(&args),
            other => Err(QgaError {
                class: "CommandNotFound",
                desc: format!("The command {other} has not been found"),
            }),
        };
        match result {
            Ok(v) => Outcome::Return(v),
            Err(mut e) => {
                if *mode == Mode::Escapes {
                    e.desc = format!("{}: {}", hostile("desc"), e.desc);
                }
                Outcome::Error(e)
            }
        }
    }

    fn info(&self, mode: &Mode) -> Value {
        let no_osinfo = *mode == (Mode::Windows { osinfo: false });
        let mut commands: Vec<Value> = COMMANDS
            .iter()
            .map(|&c| {
                let enabled = !(no_osinfo && c == "guest-get-osinfo");
                json!({"enabled": enabled, "name": c, "success-response": true})
            })
            .collect();
        let version = match mode {
            Mode::Escapes => {
                commands.push(
                    json!({"enabled": true, "name": hostile("command-name"), "success-response": true}),
                );
                hostile("version")
            }
            Mode::Windows { .. } => "107.0.1".to_string(),
            _ => format!("{} (diq-hostile-agent)", env!("CARGO_PKG_VERSION")),
        };
        json!({"version": version, "supported_commands": commands})
    }

    // ------------------------------------------------------------------------ fsinfo

    /// The real file systems, then one on /dev/sr0 per made-up mount point, written
    /// straight as JSON.
    fn many_mounts_fsinfo(&mut self, n: usize, generation: u64) -> Vec<u8> {
        self.refresh_fake_mounts(n, generation);
        let disk = fsinfo::sr0_disk().to_string();
        let real = Value::Array(fsinfo::real()).to_string();
        let mut out =
            String::with_capacity(real.len() + self.fake_mounts.len() * (120 + disk.len()));
        out.push_str(&real[..real.len() - 1]);
        let mut first = real.len() == 2;
        for mp in &self.fake_mounts {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(
                out,
                "{{\"name\":\"sr0\",\"mountpoint\":{},\"type\":\"iso9660\",\"used-bytes\":380928,\"total-bytes\":380928,\"disk\":[{disk}]}}",
                Value::from(mp.as_str())
            );
        }
        out.push(']');
        out.into_bytes()
    }

    fn fsinfo(&mut self, mode: &Mode) -> Value {
        match mode {
            Mode::Windows { .. } => windows_fsinfo(),
            Mode::Escapes => {
                let mut sr0 = fsinfo::sr0_disk();
                sr0["serial"] = json!(hostile("serial"));
                let mut all = fsinfo::real();
                all.push(json!({
                    "name": hostile("name"),
                    "mountpoint": format!("/{}", hostile("mountpoint")),
                    "type": hostile("type"),
                    "disk": [sr0],
                }));
                all.push(json!({
                    "name": hostile("name-2"),
                    "mountpoint": hostile("mountpoint-2"),
                    "type": hostile("type-2"),
                    "disk": [{"bus-type": hostile("bus-type"), "bus": 0, "target": 0, "unit": 0,
                              "dev": hostile("dev")}],
                }));
                Value::Array(all)
            }
            _ => Value::Array(fsinfo::real()),
        }
    }

    fn refresh_fake_mounts(&mut self, n: usize, generation: u64) {
        if self.fake_mounts_generation != Some(generation) {
            self.fake_mounts = (0..n).map(|i| format!("/media/cdrom{i:05}")).collect();
            self.fake_mounts_generation = Some(generation);
        }
    }

    // -------------------------------------------------------------------------- exec

    fn fake_pid(&mut self, done: Option<ExecDone>) -> i64 {
        let pid = self.next_fake_pid;
        self.next_fake_pid += 1;
        self.execs.insert(pid, Arc::new(Mutex::new(done)));
        pid
    }

    fn exec(&mut self, args: &Args, mode: &Mode, generation: u64) -> Result<Value, QgaError> {
        args.only(&["path", "arg", "env", "input-data", "capture-output"])?;
        let path = args.str("path")?.to_string();
        let argv = args.opt_strings("arg")?.unwrap_or_default();
        let env = args.opt_strings("env")?;
        let input = match args.opt_str("input-data")? {
            Some(s) => {
                Some(b64::decode(s).map_err(|e| generic(format!("Invalid input-data: {e}")))?)
            }
            None => None,
        };
        let capture = match args.0.get("capture-output") {
            None | Some(Value::Bool(false)) => Capture::None,
            Some(Value::Bool(true)) => Capture::Separated,
            Some(Value::String(s)) => match s.as_str() {
                "none" => Capture::None,
                "stdout" => Capture::Stdout,
                "stderr" => Capture::Stderr,
                "separated" => Capture::Separated,
                "merged" => Capture::Merged,
                other => {
                    return Err(generic(format!(
                        "Parameter 'capture-output' does not accept value '{other}'"
                    )))
                }
            },
            Some(_) => {
                return Err(generic(
                    "Invalid parameter type for 'capture-output', expected: boolean",
                ))
            }
        };
        let pid = match mode {
            Mode::ExecNeverExits => self.fake_pid(None),
            Mode::Windows { .. } => {
                let done = self.windows_exec(&path, &argv)?;
                self.fake_pid(Some(done))
            }
            Mode::ManyMounts(n) => {
                self.refresh_fake_mounts(*n, generation);
                match self.many_mounts_exec(&path, &argv) {
                    Some(done) => self.fake_pid(Some(done)),
                    None => self.spawn(&path, &argv, env, input, capture)?,
                }
            }
            _ => self.spawn(&path, &argv, env, input, capture)?,
        };
        Ok(json!({"pid": pid}))
    }

    /// `umount` of a made-up mount point succeeds (and the mount is gone from then on);
    /// `cat /proc/mounts` lists the made-up mounts after the real ones.
    fn many_mounts_exec(&mut self, path: &str, argv: &[String]) -> Option<ExecDone> {
        let program = path.rsplit('/').next().unwrap_or(path);
        match (program, argv) {
            ("umount", [mp]) if self.fake_mounts.contains(mp) => {
                self.fake_mounts.retain(|m| m != mp);
                Some(ExecDone::exited(0, "", ""))
            }
            ("cat", [file]) if file == "/proc/mounts" || file == "/proc/self/mounts" => {
                let mut text = std::fs::read_to_string(file).unwrap_or_default();
                for mp in &self.fake_mounts {
                    text.push_str(&format!("/dev/sr0 {mp} iso9660 ro,relatime 0 0\n"));
                }
                Some(ExecDone::exited(0, text, ""))
            }
            _ => None,
        }
    }

    /// The `windows` persona runs only `cmd.exe /c …` (ver, echo, type); anything else
    /// does not exist, as `cat` and `uname` do not on Windows.
    fn windows_exec(&self, path: &str, argv: &[String]) -> Result<ExecDone, QgaError> {
        let program = path
            .rsplit(['\\', '/'])
            .next()
            .unwrap_or(path)
            .to_ascii_lowercase();
        if program != "cmd.exe" && program != "cmd" {
            return Err(generic(format!(
                "Guest agent command failed, error was 'Failed to execute child process “{path}” (No such file or directory)'"
            )));
        }
        let Some(rest) = argv
            .first()
            .filter(|a| a.eq_ignore_ascii_case("/c"))
            .map(|_| argv[1..].join(" "))
        else {
            // An interactive cmd.exe would wait for input forever: say what it prints first.
            return Ok(ExecDone::exited(
                0,
                format!("{WINDOWS_VER}\r\n(c) Microsoft Corporation. All rights reserved.\r\n\r\nC:\\Windows\\system32>"),
                "",
            ));
        };
        let (verb, tail) = match rest.trim().split_once(' ') {
            Some((v, t)) => (v.to_ascii_lowercase(), t.trim().to_string()),
            None => (rest.trim().to_ascii_lowercase(), String::new()),
        };
        Ok(match verb.as_str() {
            "ver" => ExecDone::exited(0, format!("\r\n{WINDOWS_VER}\r\n"), ""),
            "echo" => ExecDone::exited(0, format!("{tail}\r\n"), ""),
            "type" => match self
                .windows_path(tail.trim_matches('"'))
                .and_then(|p| std::fs::read(p).ok())
            {
                Some(data) => ExecDone::exited(0, data, ""),
                None => ExecDone::exited(1, "", "The system cannot find the file specified.\r\n"),
            },
            _ => ExecDone::exited(
                1,
                "",
                format!("'{verb}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"),
            ),
        })
    }

    fn spawn(
        &mut self,
        path: &str,
        argv: &[String],
        env: Option<Vec<String>>,
        input: Option<Vec<u8>>,
        capture: Capture,
    ) -> Result<i64, QgaError> {
        let mut cmd = Command::new(path);
        cmd.args(argv);
        if let Some(env) = env {
            cmd.env_clear();
            for kv in env {
                if let Some((k, v)) = kv.split_once('=') {
                    cmd.env(k, v);
                }
            }
        }
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let (out, err) = match capture {
            Capture::None => (false, false),
            Capture::Stdout => (true, false),
            Capture::Stderr => (false, true),
            Capture::Separated | Capture::Merged => (true, true),
        };
        cmd.stdout(if out { Stdio::piped() } else { Stdio::null() });
        cmd.stderr(if err { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().map_err(|e| {
            generic(format!(
                "Guest agent command failed, error was 'Failed to execute child process “{path}” ({})'",
                strerror(&e)
            ))
        })?;
        let pid = i64::from(child.id());
        let slot: ExecSlot = Arc::new(Mutex::new(None));
        self.execs.insert(pid, slot.clone());
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let merged = capture == Capture::Merged;
        std::thread::spawn(move || {
            if let (Some(mut w), Some(data)) = (stdin, input) {
                std::thread::spawn(move || {
                    let _ = w.write_all(&data);
                });
            }
            let reader = |r: Option<Box<dyn Read + Send>>| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut truncated = false;
                    if let Some(mut r) = r {
                        let mut chunk = [0u8; 65536];
                        while let Ok(n) = r.read(&mut chunk) {
                            if n == 0 {
                                break;
                            }
                            let room = EXEC_OUTPUT_MAX.saturating_sub(buf.len());
                            truncated |= n > room;
                            buf.extend_from_slice(&chunk[..n.min(room)]);
                        }
                    }
                    (buf, truncated)
                })
            };
            let out_t = reader(stdout.map(|s| Box::new(s) as Box<dyn Read + Send>));
            let err_t = reader(stderr.map(|s| Box::new(s) as Box<dyn Read + Send>));
            let started = Instant::now();
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if started.elapsed() >= EXEC_TIMEOUT => {
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => break None,
                }
            };
            let (mut out, out_truncated) = out_t.join().unwrap_or_default();
            let (err, err_truncated) = err_t.join().unwrap_or_default();
            let mut done = ExecDone {
                exitcode: status.and_then(|s| s.code()),
                signal: status.and_then(|s| s.signal()),
                out_truncated,
                err_truncated,
                ..ExecDone::default()
            };
            if merged {
                out.extend_from_slice(&err);
                done.out = out;
            } else {
                done.out = out;
                done.err = err;
            }
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
        });
        Ok(pid)
    }

    fn exec_status(&mut self, args: &Args, mode: &Mode) -> Result<Value, QgaError> {
        args.only(&["pid"])?;
        let pid = args.int("pid")?;
        let slot = self
            .execs
            .get(&pid)
            .cloned()
            .ok_or_else(|| generic("Invalid parameter 'pid'"))?;
        if *mode == Mode::ExecNeverExits {
            return Ok(json!({"exited": false}));
        }
        let Some(mut done) = slot.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(json!({"exited": false}));
        };
        // The first reply that says exited is the last: qemu-ga forgets the process.
        self.execs.remove(&pid);
        if *mode == Mode::Escapes {
            let mut out = hostile("out-data").into_bytes();
            out.push(b'\n');
            out.extend_from_slice(&done.out);
            out.extend_from_slice(
                format!("PRETTY_NAME=\"{}\"\n", hostile("os-release")).as_bytes(),
            );
            done.out = out;
            let mut err = hostile("err-data").into_bytes();
            err.extend_from_slice(&done.err);
            done.err = err;
        }
        let mut r = Map::new();
        r.insert("exited".into(), json!(true));
        if let Some(c) = done.exitcode {
            r.insert("exitcode".into(), json!(c));
        }
        if let Some(s) = done.signal {
            r.insert("signal".into(), json!(s));
        }
        if !done.out.is_empty() {
            r.insert("out-data".into(), json!(b64::encode(&done.out)));
            if done.out_truncated {
                r.insert("out-truncated".into(), json!(true));
            }
        }
        if !done.err.is_empty() {
            r.insert("err-data".into(), json!(b64::encode(&done.err)));
            if done.err_truncated {
                r.insert("err-truncated".into(), json!(true));
            }
        }
        Ok(Value::Object(r))
    }

    // ------------------------------------------------------------------------- files

    fn file_open(&mut self, args: &Args, mode: &Mode) -> Result<Value, QgaError> {
        args.only(&["path", "mode"])?;
        let path = args.str("path")?;
        let fmode = args.opt_str("mode")?.unwrap_or("r");
        let fail = |why: &str| {
            generic(format!(
                "failed to open file '{path}' (mode: '{fmode}'): {why}"
            ))
        };
        let canonical: String = fmode.chars().filter(|&c| c != 'b').collect();
        let mut o = OpenOptions::new();
        match canonical.as_str() {
            "r" => o.read(true),
            "r+" => o.read(true).write(true),
            "w" => o.write(true).create(true).truncate(true),
            "w+" => o.read(true).write(true).create(true).truncate(true),
            "a" => o.append(true).create(true),
            "a+" => o.read(true).append(true).create(true),
            _ => return Err(generic(format!("invalid file open mode '{fmode}'"))),
        };
        o.mode(0o666);
        let file = if matches!(mode, Mode::Windows { .. }) {
            let Some(real) = self.windows_path(path) else {
                return Err(fail("The system cannot find the path specified."));
            };
            if path[..1].eq_ignore_ascii_case("d") && canonical != "r" {
                return Err(fail("Access is denied."));
            }
            o.open(real).map_err(|e| {
                fail(match e.kind() {
                    std::io::ErrorKind::NotFound => "The system cannot find the file specified.",
                    _ => "Access is denied.",
                })
            })?
        } else {
            o.open(path).map_err(|e| fail(&strerror(&e)))?
        };
        let handle = self.next_handle;
        self.next_handle += 1;
        self.files.insert(handle, OpenFile { file });
        Ok(json!(handle))
    }

    fn handle_of(&mut self, args: &Args) -> Result<(i64, &mut OpenFile), QgaError> {
        let h = args.int("handle")?;
        self.files
            .get_mut(&h)
            .map(|f| (h, f))
            .ok_or_else(|| generic(format!("handle '{h}' has not been found")))
    }

    fn file_close(&mut self, args: &Args) -> Result<Value, QgaError> {
        args.only(&["handle"])?;
        let (h, _) = self.handle_of(args)?;
        self.files.remove(&h);
        Ok(json!({}))
    }

    fn file_read(&mut self, args: &Args, mode: &Mode) -> Result<Value, QgaError> {
        args.only(&["handle", "count"])?;
        let count = args.opt_int("count")?.unwrap_or(4096);
        let (_, f) = self.handle_of(args)?;
        if !(0..=READ_COUNT_MAX).contains(&count) {
            return Err(generic(format!(
                "value '{count}' is invalid for argument count"
            )));
        }
        if *mode == Mode::EndlessRead {
            return Ok(json!({"count": 1, "buf-b64": b64::encode(b"A"), "eof": false}));
        }
        let mut buf = vec![0u8; count as usize];
        let mut got = 0;
        let mut eof = false;
        while got < buf.len() {
            match f.file.read(&mut buf[got..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(generic(format!("failed to read file: {}", strerror(&e)))),
            }
        }
        buf.truncate(got);
        let count = match mode {
            Mode::CountLies(Lie::More) => got + 4096,
            Mode::CountLies(Lie::Less) => got / 2,
            _ => got,
        };
        Ok(json!({"count": count, "buf-b64": b64::encode(&buf), "eof": eof}))
    }

    fn file_write(&mut self, args: &Args, mode: &Mode) -> Result<Value, QgaError> {
        args.only(&["handle", "buf-b64", "count"])?;
        let data = b64::decode(args.str("buf-b64")?)
            .map_err(|e| generic(format!("Invalid parameter 'buf-b64': {e}")))?;
        let count = args.opt_int("count")?;
        let (_, f) = self.handle_of(args)?;
        let n = match count {
            None => data.len(),
            Some(c) if c >= 0 && c as usize <= data.len() => c as usize,
            Some(c) => {
                return Err(generic(format!(
                    "value '{c}' is invalid for argument count"
                )))
            }
        };
        f.file
            .write_all(&data[..n])
            .map_err(|e| generic(format!("failed to write to file: {}", strerror(&e))))?;
        let count = match mode {
            Mode::CountLies(Lie::More) => n + 4096,
            Mode::CountLies(Lie::Less) => n / 2,
            _ => n,
        };
        Ok(json!({"count": count, "eof": false}))
    }

    fn file_seek(&mut self, args: &Args) -> Result<Value, QgaError> {
        args.only(&["handle", "offset", "whence"])?;
        let offset = args.int("offset")?;
        let whence = match args.0.get("whence") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(-1),
            Some(Value::String(s)) => match s.as_str() {
                "set" => 0,
                "cur" => 1,
                "end" => 2,
                other => {
                    return Err(generic(format!(
                        "Parameter 'whence' does not accept value '{other}'"
                    )))
                }
            },
            Some(_) => {
                return Err(generic(
                    "Invalid parameter type for 'whence', expected: integer",
                ))
            }
            None => return Err(generic("Parameter 'whence' is missing")),
        };
        let (_, f) = self.handle_of(args)?;
        let pos = match whence {
            0 if offset >= 0 => SeekFrom::Start(offset as u64),
            1 => SeekFrom::Current(offset),
            2 => SeekFrom::End(offset),
            0 => return Err(generic("failed to seek file: Invalid argument")),
            w => return Err(generic(format!("invalid whence code {w}"))),
        };
        let position = f
            .file
            .seek(pos)
            .map_err(|e| generic(format!("failed to seek file: {}", strerror(&e))))?;
        Ok(json!({"position": position, "eof": false}))
    }

    fn file_flush(&mut self, args: &Args) -> Result<Value, QgaError> {
        args.only(&["handle"])?;
        let (_, f) = self.handle_of(args)?;
        f.file
            .flush()
            .and_then(|()| f.file.sync_data().or(Ok(())))
            .map_err(|e| generic(format!("failed to flush file: {}", strerror(&e))))?;
        Ok(json!({}))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Stdout,
    Stderr,
    Separated,
    Merged,
}

/// The value of one os-release line (quotes and backslash escapes removed).
fn os_release_value(v: &str) -> String {
    let v = v.trim();
    let inner = if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        &v[1..v.len() - 1]
    } else {
        v
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// guest-get-osinfo as qemu-ga builds it on Linux: uname, then os-release.
pub fn linux_osinfo(os_release: &str) -> Value {
    let mut r = Map::new();
    if let Some(v) = read_trimmed("/proc/sys/kernel/osrelease") {
        r.insert("kernel-release".into(), json!(v));
    }
    if let Some(v) = read_trimmed("/proc/sys/kernel/version") {
        r.insert("kernel-version".into(), json!(v));
    }
    r.insert("machine".into(), json!(std::env::consts::ARCH));
    for line in os_release.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let key = match k.trim() {
            "ID" => "id",
            "NAME" => "name",
            "PRETTY_NAME" => "pretty-name",
            "VERSION" => "version",
            "VERSION_ID" => "version-id",
            "VARIANT" => "variant",
            "VARIANT_ID" => "variant-id",
            _ => continue,
        };
        r.insert(key.into(), json!(os_release_value(v)));
    }
    Value::Object(r)
}

fn osinfo(mode: &Mode) -> Value {
    match mode {
        Mode::Windows { .. } => json!({
            "id": "mswindows",
            "name": "Microsoft Windows",
            "pretty-name": "Windows 10 Pro",
            "version": "Microsoft Windows 10",
            "version-id": "10",
            "variant": "client",
            "variant-id": "client",
            "kernel-release": WINDOWS_BUILD,
            "kernel-version": "10.0",
            "machine": "x86_64",
        }),
        Mode::Escapes => {
            let mut r = Map::new();
            for k in [
                "id",
                "name",
                "pretty-name",
                "version",
                "version-id",
                "variant",
                "variant-id",
                "kernel-release",
                "kernel-version",
                "machine",
            ] {
                r.insert(k.into(), json!(hostile(k)));
            }
            Value::Object(r)
        }
        _ => {
            let text = std::fs::read_to_string("/etc/os-release")
                .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
                .unwrap_or_default();
            linux_osinfo(&text)
        }
    }
}

fn host_name(mode: &Mode) -> Value {
    match mode {
        Mode::Escapes => json!({"host-name": hostile("host-name")}),
        Mode::Windows { .. } => json!({"host-name": "DIQ-HOSTILE-WIN"}),
        _ => json!({"host-name": read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default()}),
    }
}

/// What qemu-ga on Windows says: volume GUID names, drive-letter mount points, C: on
/// virtio-scsi and the CD-ROM (the harness disc in sda) as D:.
fn windows_fsinfo() -> Value {
    json!([
        {
            "name": "\\\\?\\Volume{5a3f2c1e-7b4d-4e8a-9c61-0d2b8f3e4a17}\\",
            "mountpoint": "C:\\",
            "type": "NTFS",
            "used-bytes": 21_474_836_480u64,
            "total-bytes": 64_422_408_192u64,
            "disk": [{
                "pci-controller": {"domain": 0, "bus": 3, "slot": 0, "function": 0},
                "bus-type": "scsi", "bus": 0, "target": 0, "unit": 0,
                "serial": "QM00002", "dev": "\\\\.\\PhysicalDrive0"
            }]
        },
        {
            "name": "\\\\?\\Volume{e3b0c442-98fc-1c14-9afb-f4c8996fb924}\\",
            "mountpoint": "D:\\",
            "type": "CDFS",
            "used-bytes": 380_928,
            "total-bytes": 380_928,
            "disk": [{
                "pci-controller": {"domain": 0, "bus": 0, "slot": 31, "function": 2},
                "bus-type": "sata", "bus": 0, "target": 0, "unit": 0,
                "dev": "\\\\.\\CdRom0"
            }]
        }
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> (Agent, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "diq-hostile-agent-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Agent::new(dir.clone()), dir)
    }

    fn call(a: &mut Agent, mode: &Mode, req: Value) -> Result<Value, QgaError> {
        match a.handle(&req, mode, 1) {
            Outcome::Return(v) => Ok(v),
            Outcome::ReturnRaw(b) => Ok(serde_json::from_slice(&b).unwrap()),
            Outcome::Error(e) => Err(e),
            Outcome::Sync { id, .. } => Ok(json!({"sync": id})),
        }
    }

    fn exec_wait(a: &mut Agent, mode: &Mode, pid: &Value) -> Value {
        let t = Instant::now();
        loop {
            let st = call(
                a,
                mode,
                json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
            )
            .unwrap();
            if st["exited"] == true || t.elapsed() > Duration::from_secs(10) {
                return st;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn honest_files_and_exec() {
        let (mut a, dir) = agent();
        let h = &Mode::Honest;
        let p = dir.join("f.txt").to_string_lossy().into_owned();
        let fd = call(
            &mut a,
            h,
            json!({"execute":"guest-file-open","arguments":{"path":p,"mode":"w+"}}),
        )
        .unwrap();
        let w = call(&mut a, h, json!({"execute":"guest-file-write","arguments":{"handle":fd,"buf-b64":b64::encode(b"hello\n")}})).unwrap();
        assert_eq!(w["count"], 6);
        let s = call(&mut a, h, json!({"execute":"guest-file-seek","arguments":{"handle":fd,"offset":0,"whence":"end"}})).unwrap();
        assert_eq!(s["position"], 6);
        call(
            &mut a,
            h,
            json!({"execute":"guest-file-seek","arguments":{"handle":fd,"offset":0,"whence":0}}),
        )
        .unwrap();
        let r = call(
            &mut a,
            h,
            json!({"execute":"guest-file-read","arguments":{"handle":fd,"count":100}}),
        )
        .unwrap();
        assert_eq!(
            (r["count"].as_u64(), r["eof"].as_bool()),
            (Some(6), Some(true))
        );
        assert_eq!(
            b64::decode(r["buf-b64"].as_str().unwrap()).unwrap(),
            b"hello\n"
        );
        call(
            &mut a,
            h,
            json!({"execute":"guest-file-close","arguments":{"handle":fd}}),
        )
        .unwrap();
        let e = call(
            &mut a,
            h,
            json!({"execute":"guest-file-close","arguments":{"handle":fd}}),
        )
        .unwrap_err();
        assert_eq!(e.desc, format!("handle '{fd}' has not been found"));
        let e = call(
            &mut a,
            h,
            json!({"execute":"guest-file-open","arguments":{"path":"/nonexistent/x"}}),
        )
        .unwrap_err();
        assert_eq!(
            e.desc,
            "failed to open file '/nonexistent/x' (mode: 'r'): No such file or directory"
        );

        let pid = call(&mut a, h, json!({"execute":"guest-exec","arguments":{"path":"sh","arg":["-c","printf out; printf err >&2; exit 3"],"capture-output":true}})).unwrap()["pid"].clone();
        let st = exec_wait(&mut a, h, &pid);
        assert_eq!(st["exitcode"], 3);
        assert_eq!(st["out-data"], b64::encode(b"out"));
        assert_eq!(st["err-data"], b64::encode(b"err"));
        let gone = call(
            &mut a,
            h,
            json!({"execute":"guest-exec-status","arguments":{"pid":pid}}),
        )
        .unwrap_err();
        assert_eq!(gone.desc, "Invalid parameter 'pid'");
        let e = call(
            &mut a,
            h,
            json!({"execute":"guest-exec","arguments":{"path":"nosuch-program"}}),
        )
        .unwrap_err();
        assert!(
            e.desc.contains(
                "Failed to execute child process “nosuch-program” (No such file or directory)"
            ),
            "{}",
            e.desc
        );
        let e = call(&mut a, h, json!({"execute":"guest-nope"})).unwrap_err();
        assert_eq!(
            (e.class, e.desc.as_str()),
            (
                "CommandNotFound",
                "The command guest-nope has not been found"
            )
        );
        let e = call(
            &mut a,
            h,
            json!({"execute":"guest-ping","arguments":{"x":1}}),
        )
        .unwrap_err();
        assert_eq!(e.desc, "Parameter 'x' is unexpected");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lies() {
        let (mut a, dir) = agent();
        let p = dir.join("g").to_string_lossy().into_owned();
        std::fs::write(&p, b"0123456789").unwrap();
        let fd = call(
            &mut a,
            &Mode::Honest,
            json!({"execute":"guest-file-open","arguments":{"path":p}}),
        )
        .unwrap();
        let read = json!({"execute":"guest-file-read","arguments":{"handle":fd,"count":4}});
        let r = call(&mut a, &Mode::CountLies(Lie::More), read.clone()).unwrap();
        assert_eq!(
            (r["count"].as_u64(), r["buf-b64"].as_str()),
            (Some(4100), Some("MDEyMw=="))
        );
        for _ in 0..3 {
            let r = call(&mut a, &Mode::EndlessRead, read.clone()).unwrap();
            assert_eq!(
                (r["count"].as_u64(), r["eof"].as_bool()),
                (Some(1), Some(false))
            );
        }
        let never = Mode::ExecNeverExits;
        let pid = call(
            &mut a,
            &never,
            json!({"execute":"guest-exec","arguments":{"path":"true"}}),
        )
        .unwrap()["pid"]
            .clone();
        for _ in 0..3 {
            assert_eq!(
                call(
                    &mut a,
                    &never,
                    json!({"execute":"guest-exec-status","arguments":{"pid":pid}})
                )
                .unwrap(),
                json!({"exited": false})
            );
        }
        let many = Mode::ManyMounts(3);
        let fs = call(&mut a, &many, json!({"execute":"guest-get-fsinfo"})).unwrap();
        let fake: Vec<&Value> = fs
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["mountpoint"]
                    .as_str()
                    .unwrap()
                    .starts_with("/media/cdrom")
            })
            .collect();
        assert_eq!(fake.len(), 3);
        assert_eq!(fake[0]["disk"][0]["dev"], "/dev/sr0");
        let pid = call(&mut a, &many, json!({"execute":"guest-exec","arguments":{"path":"umount","arg":["/media/cdrom00001"]}})).unwrap()["pid"].clone();
        assert_eq!(exec_wait(&mut a, &many, &pid)["exitcode"], 0);
        let fs = call(&mut a, &many, json!({"execute":"guest-get-fsinfo"})).unwrap();
        assert!(!fs.to_string().contains("/media/cdrom00001"));
        assert!(fs.to_string().contains("/media/cdrom00002"));

        let esc = Mode::Escapes;
        let os = call(&mut a, &esc, json!({"execute":"guest-get-osinfo"})).unwrap();
        assert!(os["pretty-name"].as_str().unwrap().len() >= crate::mode::HOSTILE_LEN);
        let e = call(&mut a, &esc, json!({"execute":"guest-nope"})).unwrap_err();
        assert!(e.desc.starts_with("<desc>\u{1b}"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn windows_persona() {
        let (mut a, dir) = agent();
        let w = &Mode::Windows { osinfo: true };
        let os = call(&mut a, w, json!({"execute":"guest-get-osinfo"})).unwrap();
        assert_eq!(
            (os["id"].as_str(), os["kernel-release"].as_str()),
            (Some("mswindows"), Some("22631"))
        );
        let pid = call(&mut a, w, json!({"execute":"guest-exec","arguments":{"path":"cmd.exe","arg":["/c","ver"],"capture-output":true}})).unwrap()["pid"].clone();
        let st = exec_wait(&mut a, w, &pid);
        let out = b64::decode(st["out-data"].as_str().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("\r\n{WINDOWS_VER}\r\n")
        );
        assert!(call(
            &mut a,
            w,
            json!({"execute":"guest-exec","arguments":{"path":"cat","arg":["/etc/os-release"]}})
        )
        .is_err());
        let fd = call(
            &mut a,
            w,
            json!({"execute":"guest-file-open","arguments":{"path":"C:\\Users\\x\\new.txt","mode":"w"}}),
        );
        assert!(fd.is_err(), "no such directory");
        let fd = call(&mut a, w, json!({"execute":"guest-file-open","arguments":{"path":"c:/Windows/new.txt","mode":"w"}})).unwrap();
        call(&mut a, w, json!({"execute":"guest-file-write","arguments":{"handle":fd,"buf-b64":b64::encode(b"x")}})).unwrap();
        call(
            &mut a,
            w,
            json!({"execute":"guest-file-close","arguments":{"handle":fd}}),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(dir.join("windows/C/Windows/new.txt")).unwrap(),
            b"x"
        );
        let fd = call(
            &mut a,
            w,
            json!({"execute":"guest-file-open","arguments":{"path":"D:\\HELLO.TXT"}}),
        )
        .unwrap();
        let r = call(
            &mut a,
            w,
            json!({"execute":"guest-file-read","arguments":{"handle":fd}}),
        )
        .unwrap();
        assert_eq!(
            b64::decode(r["buf-b64"].as_str().unwrap()).unwrap(),
            HARNESS_DISC_TEXT.as_bytes()
        );
        assert!(call(
            &mut a,
            w,
            json!({"execute":"guest-file-open","arguments":{"path":"D:\\HELLO.TXT","mode":"w"}})
        )
        .is_err());
        assert!(call(
            &mut a,
            w,
            json!({"execute":"guest-file-open","arguments":{"path":"/etc/os-release"}})
        )
        .is_err());
        assert!(a.windows_path("C:\\..\\..\\etc\\passwd").is_none());
        let fs = call(&mut a, w, json!({"execute":"guest-get-fsinfo"})).unwrap();
        assert_eq!(fs[1]["mountpoint"], "D:\\");
        let blocked = &Mode::Windows { osinfo: false };
        let e = call(&mut a, blocked, json!({"execute":"guest-get-osinfo"})).unwrap_err();
        assert_eq!(e.class, "CommandDisabled");
        let info = call(&mut a, blocked, json!({"execute":"guest-info"})).unwrap();
        let listed = |name: &str| {
            info["supported_commands"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()["enabled"]
                .clone()
        };
        assert_eq!(
            (listed("guest-get-osinfo"), listed("guest-exec")),
            (json!(false), json!(true))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn osinfo_from_os_release() {
        let v = linux_osinfo("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n");
        assert_eq!(v["pretty-name"], "Alpine Linux v3.20");
        assert_eq!(v["id"], "alpine");
        assert_eq!(v["version-id"], "3.20.3");
    }
}
