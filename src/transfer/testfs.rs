//! An in-memory guest file system behind the fake hypervisor's agent, for unit tests of
//! the transfer and edit logic: guest-file-* with Linux's quirks (a directory opens for
//! reading and fails on read), guest-exec for chmod/rm, a disable list, and failure
//! injection. It asserts the chunk limit on every read and write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
use crate::hypervisor::{DomainState, HvError, HvResult};
use crate::transfer::{CHUNK, WRITE_CHUNK};

pub const VM: &str = "vm";

const COMMANDS: &[&str] = &[
    "guest-ping",
    "guest-info",
    "guest-file-open",
    "guest-file-read",
    "guest-file-write",
    "guest-file-seek",
    "guest-file-flush",
    "guest-file-close",
    "guest-exec",
    "guest-exec-status",
    "guest-get-osinfo",
];

struct OpenHandle {
    path: String,
    pos: usize,
    dir: bool,
}

#[derive(Default)]
pub struct GuestFs {
    pub files: BTreeMap<String, Vec<u8>>,
    pub dirs: BTreeSet<String>,
    pub modes: BTreeMap<String, u32>,
    /// Paths whose opening for writing is refused with "Permission denied".
    pub readonly: BTreeSet<String>,
    /// Commands the agent's block list disables.
    pub disabled: BTreeSet<String>,
    /// The n-th guest-file-write from now (1-based) fails after nothing was written.
    pub fail_write_call: Option<usize>,
    /// What that failure says (default: "No space left on device").
    pub fail_write_message: Option<String>,
    /// Called with the number of every guest-file-write (1-based), before it runs.
    pub on_write: Option<Box<dyn Fn(usize) + Send>>,
    /// Every guest-file-read answers with one byte and eof false: a file that never ends.
    pub endless_reads: bool,
    /// Every guest-file-read reports a count one larger than the data it carries.
    pub lying_count: bool,
    /// The n-th guest-file-write from now stores only half its bytes but reports all.
    pub lie_write_call: Option<usize>,
    /// Every guest-file-open with a mode that writes ("w", "r+"...), by path and mode.
    pub write_opens: Vec<(String, String)>,
    pub write_calls: usize,
    pub exec_log: Vec<Vec<String>>,
    handles: BTreeMap<i64, OpenHandle>,
    next_handle: i64,
    exec_results: BTreeMap<i64, Value>,
    next_pid: i64,
}

fn failed(command: &str, message: String) -> HvError {
    HvError::AgentCommandFailed {
        domain: VM.to_string(),
        command: command.to_string(),
        message,
    }
}

impl GuestFs {
    pub fn new() -> GuestFs {
        let mut fs = GuestFs {
            next_handle: 1000,
            next_pid: 100,
            ..GuestFs::default()
        };
        fs.dirs.insert("/".into());
        fs.dirs.insert("/etc".into());
        fs.dirs.insert("/tmp".into());
        fs
    }

    pub fn with_file(mut self, path: &str, data: &[u8]) -> GuestFs {
        self.files.insert(path.to_string(), data.to_vec());
        self.modes.insert(path.to_string(), 0o644);
        self
    }

    /// How many writing opens and write calls reached the guest.
    pub fn writes(&self) -> usize {
        self.write_opens.len() + self.write_calls
    }

    fn handle(&mut self, req: &Value) -> HvResult<Value> {
        let cmd = req["execute"].as_str().unwrap_or_default();
        let a = &req["arguments"];
        if self.disabled.contains(cmd) {
            return Err(HvError::AgentCommandDisabled {
                domain: VM.into(),
                command: cmd.into(),
            });
        }
        match cmd {
            "guest-info" => Ok(json!({
                "version": "7.2.0",
                "supported_commands": COMMANDS.iter().map(|c| json!({
                    "name": c, "enabled": !self.disabled.contains(*c), "success-response": true
                })).collect::<Vec<_>>()
            })),
            "guest-file-open" => {
                self.open(a["path"].as_str().unwrap(), a["mode"].as_str().unwrap())
            }
            "guest-file-read" => {
                let count = a["count"].as_u64().unwrap() as usize;
                assert!(
                    count <= CHUNK,
                    "read of {count} bytes exceeds the chunk limit"
                );
                let h = self
                    .handles
                    .get_mut(&a["handle"].as_i64().unwrap())
                    .expect("handle");
                if h.dir {
                    return Err(failed(cmd, "failed to read file: Is a directory".into()));
                }
                if self.endless_reads {
                    return Ok(json!({"count": 1, "buf-b64": "eA==", "eof": false}));
                }
                if self.lying_count {
                    return Ok(json!({"count": 3, "buf-b64": "eHg=", "eof": true}));
                }
                let data = self.files.get(&h.path).cloned().unwrap_or_default();
                let start = h.pos.min(data.len());
                let end = (start + count).min(data.len());
                h.pos = end;
                Ok(json!({
                    "count": end - start,
                    "buf-b64": base64::engine::general_purpose::STANDARD.encode(&data[start..end]),
                    "eof": end - start < count,
                }))
            }
            "guest-file-write" => {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(a["buf-b64"].as_str().unwrap())
                    .unwrap();
                assert!(
                    data.len() <= WRITE_CHUNK,
                    "write of {} bytes exceeds the chunk limit",
                    data.len()
                );
                self.write_calls += 1;
                if let Some(hook) = &self.on_write {
                    hook(self.write_calls);
                }
                if let Some(n) = self.fail_write_call.as_mut() {
                    *n -= 1;
                    if *n == 0 {
                        self.fail_write_call = None;
                        let message = self.fail_write_message.take().unwrap_or_else(|| {
                            "failed to write to file: No space left on device".into()
                        });
                        return Err(failed(cmd, message));
                    }
                }
                let mut stored = data.len();
                if let Some(n) = self.lie_write_call.as_mut() {
                    *n -= 1;
                    if *n == 0 {
                        self.lie_write_call = None;
                        stored = data.len() / 2;
                    }
                }
                let h = self
                    .handles
                    .get_mut(&a["handle"].as_i64().unwrap())
                    .expect("handle");
                let file = self.files.entry(h.path.clone()).or_default();
                let end = h.pos + stored;
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[h.pos..end].copy_from_slice(&data[..stored]);
                h.pos = end;
                Ok(json!({"count": data.len(), "eof": false}))
            }
            "guest-file-seek" => {
                let h = self
                    .handles
                    .get_mut(&a["handle"].as_i64().unwrap())
                    .expect("handle");
                if h.dir {
                    return Err(failed(cmd, "failed to seek file: Invalid argument".into()));
                }
                let len = self.files.get(&h.path).map_or(0, Vec::len) as i64;
                let off = a["offset"].as_i64().unwrap();
                h.pos = match a["whence"].as_str().unwrap() {
                    "set" => off,
                    "cur" => h.pos as i64 + off,
                    "end" => len + off,
                    w => panic!("whence {w}"),
                } as usize;
                Ok(json!({"position": h.pos, "eof": false}))
            }
            "guest-file-flush" => Ok(json!({})),
            "guest-file-close" => {
                self.handles
                    .remove(&a["handle"].as_i64().unwrap())
                    .expect("open handle");
                Ok(json!({}))
            }
            "guest-exec" => {
                let mut argv = vec![a["path"].as_str().unwrap().to_string()];
                argv.extend(
                    a["arg"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string()),
                );
                self.exec_log.push(argv.clone());
                let (code, out) = self.exec(&argv);
                let pid = self.next_pid;
                self.next_pid += 1;
                self.exec_results.insert(
                    pid,
                    json!({
                        "exited": true, "exitcode": code,
                        "out-data": base64::engine::general_purpose::STANDARD.encode(out),
                    }),
                );
                Ok(json!({"pid": pid}))
            }
            "guest-exec-status" => self
                .exec_results
                .remove(&a["pid"].as_i64().unwrap())
                .ok_or_else(|| failed(cmd, "Invalid parameter 'pid'".into())),
            other => Err(failed(
                other,
                format!("The command {other} has not been found"),
            )),
        }
    }

    fn open(&mut self, path: &str, mode: &str) -> HvResult<Value> {
        let cmd = "guest-file-open";
        let writes = mode != "r" && mode != "rb";
        let err = |m: &str| {
            failed(
                cmd,
                format!("failed to open file '{path}' (mode: '{mode}'): {m}"),
            )
        };
        let dir = self.dirs.contains(path);
        if dir && writes {
            return Err(err("Is a directory"));
        }
        if !dir && !self.files.contains_key(path) && mode.starts_with('r') {
            return Err(err("No such file or directory"));
        }
        if writes && self.readonly.contains(path) {
            return Err(err("Permission denied"));
        }
        if writes {
            self.write_opens.push((path.to_string(), mode.to_string()));
        }
        if mode.starts_with('w') {
            if !self.files.contains_key(path) {
                self.modes.insert(path.to_string(), 0o666);
            }
            self.files.insert(path.to_string(), Vec::new());
        }
        let h = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            h,
            OpenHandle {
                path: path.to_string(),
                pos: 0,
                dir,
            },
        );
        Ok(json!(h))
    }

    fn exec(&mut self, argv: &[String]) -> (i64, Vec<u8>) {
        match argv
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["chmod", mode, path] if self.files.contains_key(*path) => {
                self.modes
                    .insert(path.to_string(), u32::from_str_radix(mode, 8).unwrap());
                (0, Vec::new())
            }
            ["rm", "-f", path] => {
                self.files.remove(*path);
                self.modes.remove(*path);
                (0, Vec::new())
            }
            _ => (1, Vec::new()),
        }
    }

    /// Open handles left behind (a leak would exhaust the real agent's handle table).
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }
}

/// A shared guest file system and a fake hypervisor whose VM "vm" is backed by it.
pub fn fake(fs: GuestFs) -> (Arc<Mutex<GuestFs>>, FakeHypervisor) {
    let fs = Arc::new(Mutex::new(fs));
    let inner = Arc::clone(&fs);
    let hv = FakeHypervisor::new().with_domain(
        FakeDomain::new(VM, DomainState::Running)
            .with_agent(move |_, req| lock(&inner).handle(req)),
    );
    (fs, hv)
}

pub fn lock(fs: &Arc<Mutex<GuestFs>>) -> MutexGuard<'_, GuestFs> {
    fs.lock().unwrap_or_else(|e| e.into_inner())
}
