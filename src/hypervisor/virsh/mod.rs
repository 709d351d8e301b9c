//! The `virsh` subprocess adapter: for hosts or builds without the native libvirt
//! library. It is `run()` (one child, see [`process`]) plus pure functions: `parse_*`
//! for virsh's text ([`parse`]), batch framing ([`framing`]) and error text
//! ([`errors`]); everything it knows about virsh's text is pinned by fixtures.
//!
//! Processes are the cost here, so bulk questions go to one virsh that runs many
//! commands: virsh accepts `cmd1 ; cmd2 ; ...` as one argument and keeps going after a
//! failed command. Each command is framed by `echo MARK` (stdout) and `echo --err MARK`
//! (stderr, printed as `error: MARK`), which tells us whose output and whose error is
//! whose. The argument form is preferred over feeding the same commands on stdin because
//! in stdin mode readline echoes prompts and input into stdout; stdin is used only where
//! an argument cannot go: agent commands above [`ARGV_AGENT_LIMIT`] (Linux refuses a
//! single argument over 128 KiB).

pub mod errors;
pub mod framing;
pub mod parse;
pub mod process;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::errors::{classify_connect_error, classify_domain_error, one_line_error};
use self::framing::{
    fits_one_stdin_line, quote_for_virsh_shell, split_by_markers, stdin_command_output,
    without_markers,
};
use self::parse::{
    parse_dominfo, parse_domstats, parse_lines, parse_list_uuid_name, parse_vol_list,
    parse_volume_xml,
};
use self::process::{Finished, Invocation, RunError};

/// A file of `tests/fixtures/virsh/`: text virsh printed, pinned for the parsers' tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/virsh/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
use super::{
    classify_agent_message, command_name, Access, ChangeScope, DomainInfo, DomainStats, HvError,
    HvResult, Hypervisor, StatsGroups, StorageVolume, XmlScope,
};

/// Wall-clock limit of a virsh child unless the operation needs more.
pub const DEFAULT_CHILD_LIMIT: Duration = Duration::from_secs(30);
/// Added to an agent call's own timeout: connecting, plus libvirt's resync of an agent
/// that timed out before (about 5 s). Never more than the general child limit.
const AGENT_SLACK: Duration = Duration::from_secs(10);
/// Agent commands whose JSON is longer than this go to virsh on stdin, not as an
/// argument (Linux's limit is 128 KiB per argument; stay well clear of it).
pub const ARGV_AGENT_LIMIT: usize = 64 * 1024;
/// Upper bound for one `cmd ; cmd ; ...` argument of a batch; larger batches are split.
const BATCH_ARG_LIMIT: usize = 96 * 1024;

const INSTALL_HINT: &str = "the `virsh` command was not found; install libvirt-clients (Debian/Ubuntu) or libvirt-client (Fedora/RHEL), or use the native backend";

/// Output of one command of a batch.
#[derive(Debug, Clone, Default)]
struct BatchItem {
    stdout: String,
    /// Error text of this command; empty when it succeeded.
    stderr: String,
}

/// The adapter. Cheap to share between threads: every call starts its own child.
pub struct VirshHypervisor {
    program: PathBuf,
    /// The URI we were given, passed as `-c` to every child; `None`: virsh's default.
    given_uri: Option<String>,
    /// What `virsh uri` printed when we opened.
    uri: String,
    child_limit: Duration,
    spawned: AtomicU64,
    nonce: AtomicU64,
    /// Name → UUID of the domains last listed. Every command about one domain addresses
    /// it by UUID: virsh reads `--domain 5` as the domain with *id* 5 before it tries the
    /// *name* "5", so a VM named like another's id would get the other's commands.
    uuids: Mutex<HashMap<String, String>>,
    /// `virsh -r`: libvirt's read-only connection.
    read_only: bool,
}

impl VirshHypervisor {
    /// Connect through the `virsh` on PATH and check the connection once.
    pub fn open(uri: Option<&str>) -> HvResult<VirshHypervisor> {
        VirshHypervisor::with_program(PathBuf::from("virsh"), uri)
    }

    /// Like [`open`](Self::open) with another program (tests use a fake virsh script).
    pub fn with_program(program: PathBuf, uri: Option<&str>) -> HvResult<VirshHypervisor> {
        VirshHypervisor::with_program_and_limit(program, uri, DEFAULT_CHILD_LIMIT)
    }

    /// Like [`with_program`](Self::with_program) with another wall-clock limit per child
    /// (agent calls get their own timeout plus slack on top).
    pub fn with_program_and_limit(
        program: PathBuf,
        uri: Option<&str>,
        child_limit: Duration,
    ) -> HvResult<VirshHypervisor> {
        VirshHypervisor::build(program, uri, child_limit, Access::ReadWrite)
    }

    /// [`open`](Self::open) with the given access: read-only runs every virsh with `-r`,
    /// the check of the connection included.
    pub fn open_with(uri: Option<&str>, access: Access) -> HvResult<VirshHypervisor> {
        VirshHypervisor::open_within(uri, access, DEFAULT_CHILD_LIMIT)
    }

    /// [`open_with`](Self::open_with) whose check of the connection gives up after
    /// `connect_timeout` ([`HvError::ConnectTimeout`]; never longer than the child limit).
    pub fn open_within(
        uri: Option<&str>,
        access: Access,
        connect_timeout: Duration,
    ) -> HvResult<VirshHypervisor> {
        VirshHypervisor::build_within(
            PathBuf::from("virsh"),
            uri,
            DEFAULT_CHILD_LIMIT,
            access,
            connect_timeout,
        )
    }

    fn build(
        program: PathBuf,
        uri: Option<&str>,
        child_limit: Duration,
        access: Access,
    ) -> HvResult<VirshHypervisor> {
        VirshHypervisor::build_within(program, uri, child_limit, access, child_limit)
    }

    fn build_within(
        program: PathBuf,
        uri: Option<&str>,
        child_limit: Duration,
        access: Access,
        connect_timeout: Duration,
    ) -> HvResult<VirshHypervisor> {
        let mut hv = VirshHypervisor {
            program,
            given_uri: uri.map(str::to_string),
            uri: uri.unwrap_or_default().to_string(),
            child_limit,
            spawned: AtomicU64::new(0),
            nonce: AtomicU64::new(0),
            uuids: Mutex::new(HashMap::new()),
            read_only: access == Access::ReadOnly,
        };
        let shown_uri = hv.uri.clone();
        let connect_limit = connect_timeout.min(child_limit);
        let finished = hv
            .run(vec!["uri".into()], None, connect_limit)
            .map_err(|e| match e {
                RunError::TimedOut(limit) if limit < child_limit => {
                    super::remote::timed_out(&shown_uri, limit)
                }
                RunError::TimedOut(limit) => HvError::Unreachable {
                    uri: shown_uri.clone(),
                    detail: format!("virsh did not answer within {}s", limit.as_secs()),
                },
                other => hv.run_error("connect", other),
            })?;
        if !finished.status.success() {
            return Err(
                classify_connect_error(&shown_uri, &finished.stderr).unwrap_or_else(|| {
                    HvError::Unreachable {
                        uri: shown_uri.clone(),
                        detail: one_line_error(&finished.stderr),
                    }
                }),
            );
        }
        let printed = finished.stdout.trim();
        if !printed.is_empty() {
            hv.uri = super::remote::shown(printed).into_owned();
        }
        Ok(hv)
    }

    /// How many virsh children this adapter has started (for measurements and tests).
    pub fn processes_spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    fn fresh_nonce(&self) -> String {
        let n = self.nonce.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{:x}{:x}{:x}", std::process::id(), t, n)
    }

    fn base_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = match &self.given_uri {
            Some(u) => vec!["-c".into(), u.into()],
            None => Vec::new(),
        };
        if self.read_only {
            args.push("-r".into());
        }
        args
    }

    /// Start one child with our connection arguments in front of `args`.
    fn run(
        &self,
        args: Vec<OsString>,
        stdin: Option<String>,
        limit: Duration,
    ) -> Result<Finished, RunError> {
        let mut all = self.base_args();
        all.extend(args);
        self.spawned.fetch_add(1, Ordering::Relaxed);
        process::run(Invocation {
            program: &self.program,
            args: all,
            stdin,
            limit,
        })
    }

    fn run_error(&self, operation: &'static str, e: RunError) -> HvError {
        match e {
            RunError::NotFound(_) => HvError::BackendUnavailable("virsh", INSTALL_HINT.into()),
            RunError::Spawn(e) => HvError::Failed {
                operation,
                detail: format!("cannot start virsh: {e}"),
            },
            RunError::TimedOut(limit) => HvError::Failed {
                operation,
                detail: format!(
                    "virsh did not finish within {}s and was stopped",
                    limit.as_secs()
                ),
            },
        }
    }

    /// One plain command; its stdout when virsh succeeded.
    fn run_simple(&self, operation: &'static str, args: Vec<OsString>) -> HvResult<String> {
        let f = self
            .run(args, None, self.child_limit)
            .map_err(|e| self.run_error(operation, e))?;
        if f.status.success() {
            Ok(f.stdout)
        } else {
            Err(
                classify_connect_error(&self.uri, &f.stderr).unwrap_or_else(|| HvError::Failed {
                    operation,
                    detail: one_line_error(&f.stderr),
                }),
            )
        }
    }

    /// Run many virsh commands (already quoted command lines) in as few children as the
    /// argument limit allows, and give each its own stdout and error text.
    fn run_batch(&self, operation: &'static str, commands: &[String]) -> HvResult<Vec<BatchItem>> {
        let mut out = Vec::with_capacity(commands.len());
        let mut start = 0;
        while start < commands.len() {
            let mut end = start;
            let mut size = 0;
            while end < commands.len()
                && (end == start || size + commands[end].len() + 120 < BATCH_ARG_LIMIT)
            {
                size += commands[end].len() + 120;
                end += 1;
            }
            out.extend(self.run_one_batch(operation, &commands[start..end])?);
            start = end;
        }
        Ok(out)
    }

    fn run_one_batch(
        &self,
        operation: &'static str,
        commands: &[String],
    ) -> HvResult<Vec<BatchItem>> {
        let nonce = self.fresh_nonce();
        let markers: Vec<String> = (0..=commands.len())
            .map(|i| format!("@@DIQ:{nonce}:{i}@@"))
            .collect();
        let mut script = String::new();
        for (i, cmd) in commands.iter().enumerate() {
            let m = quote_for_virsh_shell(&markers[i]);
            script.push_str(&format!("echo {m} ; echo --err {m} ; {cmd} ; "));
        }
        let last = quote_for_virsh_shell(&markers[commands.len()]);
        script.push_str(&format!("echo {last} ; echo --err {last}"));

        let f = self
            .run(vec![script.into()], None, self.child_limit)
            .map_err(|e| self.run_error(operation, e))?;
        let err_markers: Vec<String> = markers.iter().map(|m| format!("error: {m}")).collect();
        match (
            split_by_markers(&f.stdout, &markers),
            split_by_markers(&f.stderr, &err_markers),
        ) {
            (Some(outs), Some(errs)) => Ok(outs
                .into_iter()
                .zip(errs)
                .map(|(o, e)| BatchItem {
                    stdout: o.to_string(),
                    stderr: e.to_string(),
                })
                .collect()),
            _ => {
                // virsh stopped part-way (the connection went away): its own errors are
                // what the user needs, not our framing lines.
                let stderr = without_markers(&f.stderr, &nonce);
                if let Some(e) = classify_connect_error(&self.uri, &stderr) {
                    return Err(e);
                }
                // Not the framing we asked for (a virsh without `echo --err`?): one child
                // per command still gives right answers, just slower.
                commands
                    .iter()
                    .map(|cmd| {
                        let f = self
                            .run(vec![cmd.into()], None, self.child_limit)
                            .map_err(|e| self.run_error(operation, e))?;
                        Ok(BatchItem {
                            stdout: f.stdout.trim_matches('\n').to_string(),
                            stderr: if f.status.success() {
                                String::new()
                            } else {
                                f.stderr
                            },
                        })
                    })
                    .collect()
            }
        }
    }

    fn remember(&self, domains: &[(String, String)]) {
        let mut map = self.uuids.lock().unwrap_or_else(|e| e.into_inner());
        map.clear();
        map.extend(
            domains
                .iter()
                .map(|(uuid, name)| (name.clone(), uuid.clone())),
        );
    }

    /// List every domain's UUID and name anew (one process) and remember them.
    fn refresh_uuids(&self) -> HvResult<Vec<(String, String)>> {
        let f = self
            .run(
                vec![
                    "list".into(),
                    "--all".into(),
                    "--uuid".into(),
                    "--name".into(),
                ],
                None,
                self.child_limit,
            )
            .map_err(|e| self.run_error("list domains", e))?;
        if !f.status.success() {
            return Err(
                classify_connect_error(&self.uri, &f.stderr).unwrap_or_else(|| HvError::Failed {
                    operation: "list domains",
                    detail: one_line_error(&f.stderr),
                }),
            );
        }
        let domains = parse_list_uuid_name(&f.stdout).map_err(|detail| HvError::Failed {
            operation: "list domains",
            detail,
        })?;
        self.remember(&domains);
        Ok(domains)
    }

    /// The UUID of the domain *named* `name`: from the last listing, else from a fresh
    /// one. `fresh` forces the new listing.
    fn uuid_of(&self, name: &str, fresh: bool) -> HvResult<String> {
        if !fresh {
            let known = self
                .uuids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned();
            if let Some(u) = known {
                return Ok(u);
            }
        }
        self.refresh_uuids()?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(u, _)| u)
            .ok_or_else(|| HvError::NoSuchDomain(name.to_string()))
    }

    /// Run `op` on the UUID of the domain named `name`; when the remembered UUID is
    /// gone (the domain was redefined under the same name), look it up once more.
    fn by_uuid<T>(&self, name: &str, op: impl Fn(&str) -> HvResult<T>) -> HvResult<T> {
        let cached = self
            .uuids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name);
        match op(&self.uuid_of(name, false)?) {
            Err(HvError::NoSuchDomain(_)) if cached => op(&self.uuid_of(name, true)?),
            other => other,
        }
    }

    fn dumpxml_command(uuid: &str, scope: XmlScope) -> String {
        let mut cmd = format!("dumpxml --domain {}", quote_for_virsh_shell(uuid));
        if scope == XmlScope::Persistent {
            cmd.push_str(" --inactive");
        }
        cmd
    }

    fn xml_from_item(&self, domain: &str, item: BatchItem) -> HvResult<String> {
        if item.stdout.trim_start().starts_with('<') {
            Ok(format!("{}\n", item.stdout.trim_end()))
        } else if !item.stderr.trim().is_empty() {
            Err(classify_domain_error(
                "dumpxml",
                &self.uri,
                domain,
                &item.stderr,
            ))
        } else {
            Err(HvError::Failed {
                operation: "dumpxml",
                detail: format!("virsh printed no XML for {domain:?}"),
            })
        }
    }

    /// Write device XML to a file only we can read, for `--file`.
    fn device_file(&self, xml: &str) -> HvResult<TempFile> {
        let path = std::env::temp_dir().join(format!(
            "dismount_iso_qemu-device-{}.xml",
            self.fresh_nonce()
        ));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| HvError::Failed {
                operation: "write device XML",
                detail: format!("{}: {e}", path.display()),
            })?;
        let guard = TempFile(path);
        file.write_all(xml.as_bytes())
            .map_err(|e| HvError::Failed {
                operation: "write device XML",
                detail: format!("{}: {e}", guard.0.display()),
            })?;
        Ok(guard)
    }

    fn device_change(
        &self,
        operation: &'static str,
        domain: &str,
        device_xml: &str,
        scope: ChangeScope,
        force: bool,
    ) -> HvResult<()> {
        self.by_uuid(domain, |uuid| {
            self.device_change_on(operation, domain, uuid, device_xml, scope, force)
        })
    }

    fn device_change_on(
        &self,
        operation: &'static str,
        domain: &str,
        uuid: &str,
        device_xml: &str,
        scope: ChangeScope,
        force: bool,
    ) -> HvResult<()> {
        if !scope.live && !scope.config {
            return Err(HvError::Failed {
                operation,
                detail: "neither live nor config was asked for".to_string(),
            });
        }
        let file = self.device_file(device_xml)?;
        let mut args: Vec<OsString> = vec![
            operation.into(),
            "--domain".into(),
            uuid.into(),
            "--file".into(),
            file.0.clone().into(),
        ];
        if scope.live {
            args.push("--live".into());
        }
        if scope.config {
            args.push("--config".into());
        }
        if force {
            args.push("--force".into());
        }
        let f = self
            .run(args, None, self.child_limit)
            .map_err(|e| self.run_error(operation, e))?;
        drop(file);
        if f.status.success() {
            return Ok(());
        }
        if let Some(locked) = super::tray_locked(domain, device_xml, &f.stderr) {
            return Err(locked);
        }
        Err(classify_domain_error(
            operation, &self.uri, domain, &f.stderr,
        ))
    }

    fn agent_command_on(
        &self,
        domain: &str,
        uuid: &str,
        command: &serde_json::Value,
        timeout: Duration,
    ) -> HvResult<serde_json::Value> {
        let name = command_name(command);
        let json = command.to_string();
        let secs = u64::from(super::agent_timeout_secs(timeout));
        let limit = Duration::from_secs(secs) + AGENT_SLACK.min(self.child_limit);
        let finished = if json.len() > ARGV_AGENT_LIMIT {
            // A UUID never holds a line break, whatever the VM is called.
            debug_assert!(fits_one_stdin_line(uuid));
            self.agent_via_stdin(uuid, &json, secs, limit)
        } else {
            self.run(
                vec![
                    "qemu-agent-command".into(),
                    "--domain".into(),
                    uuid.into(),
                    "--timeout".into(),
                    secs.to_string().into(),
                    json.into(),
                ],
                None,
                limit,
            )
        };
        let f = finished.map_err(|e| match e {
            RunError::TimedOut(_) => HvError::AgentTimeout(domain.to_string()),
            other => self.run_error("qemu-agent-command", other),
        })?;
        if !f.status.success() || !f.stderr.trim().is_empty() {
            if let Some(e) = classify_connect_error(&self.uri, &f.stderr) {
                return Err(e);
            }
            let message = one_line_error(&f.stderr);
            // Exit status alone (no text) still is a failure.
            let message = if message.is_empty() {
                format!("virsh exited with {}", f.status)
            } else {
                message
            };
            return Err(classify_agent_message(domain, &name, &message));
        }
        super::agent_reply(domain, &name, &f.stdout)
    }

    /// An agent command too large for an argument: virsh reads it on stdin.
    fn agent_via_stdin(
        &self,
        domain: &str,
        json: &str,
        secs: u64,
        limit: Duration,
    ) -> Result<Finished, RunError> {
        let nonce = self.fresh_nonce();
        let begin = format!("@@DIQ-B-{nonce}@@");
        let end = format!("@@DIQ-E-{nonce}@@");
        // The marker is split by quotes so the echoed input line never contains it.
        let split = |m: &str| format!("'{}''{}'", &m[..5], &m[5..]);
        let script = format!(
            "echo {b}\necho --err {b}\nqemu-agent-command --domain {d} --timeout {secs} {j}\necho {e}\necho --err {e}\n",
            b = split(&begin),
            e = split(&end),
            d = quote_for_virsh_shell(domain),
            j = quote_for_virsh_shell(json),
        );
        let mut f = self.run(vec!["-q".into()], Some(script), limit)?;
        let reply = stdin_command_output(&f.stdout, &begin, &end).map(str::to_string);
        let error = split_by_markers(
            &f.stderr,
            &[format!("error: {begin}"), format!("error: {end}")],
        )
        .and_then(|parts| parts.first().map(|s| s.to_string()));
        match (reply, error) {
            (Some(reply), Some(error)) => {
                f.stdout = reply;
                f.stderr = error;
            }
            // Framing missing: keep virsh's whole stderr, and make sure it counts as
            // a failure even though an interactive virsh exits 0.
            _ => {
                f.stdout.clear();
                if f.stderr.trim().is_empty() {
                    f.stderr = "virsh did not run the agent command".to_string();
                }
            }
        }
        Ok(f)
    }
}

/// `domstats --raw` for `groups`; `nowait`: `--nowait`, so a domain whose job is busy
/// (a long monitor command, a migration) gives what needs no job instead of holding the
/// whole listing up (virsh 4.5 and later).
fn domstats_command(groups: StatsGroups, nowait: bool) -> String {
    let mut cmd = String::from("domstats --raw");
    if nowait {
        cmd.push_str(" --nowait");
    }
    for flag in groups.virsh_flags() {
        cmd.push(' ');
        cmd.push_str(flag);
    }
    cmd
}

/// A private temporary file, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Hypervisor for VirshHypervisor {
    fn uri(&self) -> String {
        self.uri.clone()
    }

    fn list_domains(&self) -> HvResult<Vec<DomainInfo>> {
        let first = self.run_batch(
            "list domains",
            &[
                "list --all --uuid --name".to_string(),
                "list --all --transient --uuid".to_string(),
                domstats_command(
                    StatsGroups {
                        balloon: true,
                        vcpu: true,
                        ..StatsGroups::default()
                    },
                    true,
                ),
            ],
        )?;
        let [listing, transient, stats] =
            <[BatchItem; 3]>::try_from(first).map_err(|_| HvError::Failed {
                operation: "list domains",
                detail: "virsh gave an unexpected number of answers".to_string(),
            })?;
        for item in [&listing, &transient] {
            if !item.stderr.trim().is_empty() {
                return Err(
                    classify_connect_error(&self.uri, &item.stderr).unwrap_or_else(|| {
                        HvError::Failed {
                            operation: "list domains",
                            detail: one_line_error(&item.stderr),
                        }
                    }),
                );
            }
        }
        let fail = |detail: String| HvError::Failed {
            operation: "list domains",
            detail,
        };
        let domains = parse_list_uuid_name(&listing.stdout).map_err(fail)?;
        self.remember(&domains);
        let transient: BTreeSet<String> = parse_lines(&transient.stdout).into_iter().collect();
        // A driver without bulk stats (or one that refuses them) is not an error: every
        // domain then goes to the dominfo round below.
        let stats = if stats.stderr.trim().is_empty() {
            parse_domstats(&stats.stdout).map_err(fail)?
        } else {
            Vec::new()
        };
        let by_name: HashMap<&str, &parse::DomStats> =
            stats.iter().map(|s| (s.name.as_str(), s)).collect();

        let mut infos: Vec<Option<DomainInfo>> = domains
            .iter()
            .map(|(uuid, name)| {
                by_name
                    .get(name.as_str())
                    .and_then(|s| s.to_info(uuid, !transient.contains(uuid)))
            })
            .collect();
        let missing: Vec<usize> = (0..domains.len()).filter(|&i| infos[i].is_none()).collect();
        if !missing.is_empty() {
            // By UUID: unambiguous, unlike a name that could also be read as an ID.
            let commands: Vec<String> = missing
                .iter()
                .map(|&i| format!("dominfo --domain {}", quote_for_virsh_shell(&domains[i].0)))
                .collect();
            let answers = self.run_batch("list domains", &commands)?;
            for (&i, item) in missing.iter().zip(answers) {
                if !item.stderr.trim().is_empty() {
                    match classify_domain_error("dominfo", &self.uri, &domains[i].1, &item.stderr) {
                        // Undefined since we listed it: it is simply gone.
                        HvError::NoSuchDomain(_) => continue,
                        other => return Err(other),
                    }
                }
                let mut info = parse_dominfo(&item.stdout)
                    .map_err(|e| fail(format!("dominfo of {:?}: {e}", domains[i].1)))?;
                if transient.contains(&info.uuid) {
                    info.persistent = false;
                }
                infos[i] = Some(info);
            }
        }
        Ok(infos.into_iter().flatten().collect())
    }

    fn domain_xml(&self, domain: &str, scope: XmlScope) -> HvResult<String> {
        self.by_uuid(domain, |uuid| {
            let mut args: Vec<OsString> = vec!["dumpxml".into(), "--domain".into(), uuid.into()];
            if scope == XmlScope::Persistent {
                args.push("--inactive".into());
            }
            let f = self
                .run(args, None, self.child_limit)
                .map_err(|e| self.run_error("dumpxml", e))?;
            let item = BatchItem {
                stdout: f.stdout,
                stderr: if f.status.success() {
                    String::new()
                } else {
                    f.stderr
                },
            };
            self.xml_from_item(domain, item)
        })
    }

    fn domain_xmls(&self, domains: &[String], scope: XmlScope) -> Vec<HvResult<String>> {
        if domains.is_empty() {
            return Vec::new();
        }
        // By UUID in one batch. Bulk reads come right after a listing (a scan, the drives
        // of the host): a name it does not know is gone, not worth another process.
        let listed = !self
            .uuids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if !listed {
            if let Err(e) = self.refresh_uuids() {
                return domains.iter().map(|_| Err(e.clone())).collect();
            }
        }
        let uuids: Vec<HvResult<String>> = {
            let map = self.uuids.lock().unwrap_or_else(|e| e.into_inner());
            domains
                .iter()
                .map(|d| {
                    map.get(d)
                        .cloned()
                        .ok_or_else(|| HvError::NoSuchDomain(d.clone()))
                })
                .collect()
        };
        let known: Vec<(usize, &String)> = uuids
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.as_ref().ok().map(|u| (i, u)))
            .collect();
        let commands: Vec<String> = known
            .iter()
            .map(|(_, u)| VirshHypervisor::dumpxml_command(u, scope))
            .collect();
        let mut out: Vec<HvResult<String>> = uuids
            .iter()
            .map(|u| match u {
                Ok(_) => Err(HvError::Failed {
                    operation: "dumpxml",
                    detail: "no answer".into(),
                }),
                Err(e) => Err(e.clone()),
            })
            .collect();
        if commands.is_empty() {
            return out;
        }
        match self.run_batch("dumpxml", &commands) {
            Ok(items) => {
                for ((i, _), item) in known.iter().zip(items) {
                    out[*i] = self.xml_from_item(&domains[*i], item);
                }
            }
            Err(e) => {
                for (i, _) in &known {
                    out[*i] = Err(e.clone());
                }
            }
        }
        out
    }

    fn agent_command(
        &self,
        domain: &str,
        command: &serde_json::Value,
        timeout: Duration,
    ) -> HvResult<serde_json::Value> {
        self.by_uuid(domain, |uuid| {
            self.agent_command_on(domain, uuid, command, timeout)
        })
    }

    fn update_device(
        &self,
        domain: &str,
        device_xml: &str,
        scope: ChangeScope,
        force: bool,
    ) -> HvResult<()> {
        self.device_change("update-device", domain, device_xml, scope, force)
    }

    fn attach_device(&self, domain: &str, device_xml: &str, scope: ChangeScope) -> HvResult<()> {
        self.device_change("attach-device", domain, device_xml, scope, false)
    }

    fn domain_stats(&self, groups: StatsGroups) -> HvResult<Vec<DomainStats>> {
        let args = |nowait| -> Vec<OsString> {
            domstats_command(groups, nowait)
                .split(' ')
                .map(OsString::from)
                .collect()
        };
        let text = match self.run_simple("domstats", args(true)) {
            // A virsh older than 4.5 has no --nowait.
            Err(HvError::Failed { detail, .. }) if detail.contains("--nowait") => {
                self.run_simple("domstats", args(false))
            }
            other => other,
        }?;
        let records = parse_domstats(&text).map_err(|detail| HvError::Failed {
            operation: "domstats",
            detail,
        })?;
        Ok(records.iter().map(parse::DomStats::to_stats).collect())
    }

    fn host_cpus(&self) -> Option<u32> {
        let text = self
            .run_simple("nodeinfo", vec![OsString::from("nodeinfo")])
            .ok()?;
        parse::parse_nodeinfo_cpus(&text)
    }

    fn list_volumes(&self) -> HvResult<Vec<StorageVolume>> {
        let pools = parse_lines(&self.run_simple(
            "list storage pools",
            vec!["pool-list".into(), "--name".into()],
        )?);
        if pools.is_empty() {
            return Ok(Vec::new());
        }
        let fail = |detail: String| HvError::Failed {
            operation: "list storage volumes",
            detail,
        };
        let listing = self.run_batch(
            "list storage volumes",
            &pools
                .iter()
                .map(|p| format!("vol-list --pool {}", quote_for_virsh_shell(p)))
                .collect::<Vec<_>>(),
        )?;
        let mut found: Vec<(String, String, String)> = Vec::new();
        for (pool, item) in pools.iter().zip(listing) {
            if !item.stderr.trim().is_empty() {
                // A pool stopped between the two calls has no volumes to offer.
                if item.stderr.to_lowercase().contains("not active")
                    || item.stderr.to_lowercase().contains("failed to get pool")
                {
                    continue;
                }
                return Err(fail(format!("{pool}: {}", one_line_error(&item.stderr))));
            }
            for (name, path) in parse_vol_list(&item.stdout).map_err(fail)? {
                found.push((pool.clone(), name, path));
            }
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let details = self.run_batch(
            "list storage volumes",
            &found
                .iter()
                .map(|(pool, name, _)| {
                    format!(
                        "vol-dumpxml --pool {} {}",
                        quote_for_virsh_shell(pool),
                        quote_for_virsh_shell(name)
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        Ok(found
            .into_iter()
            .zip(details)
            .map(|((pool, name, listed_path), item)| {
                let parsed = if item.stderr.trim().is_empty() {
                    parse_volume_xml(&item.stdout).ok()
                } else {
                    None
                };
                let (path, capacity_bytes) = match parsed {
                    Some((_, path, cap)) => (path.unwrap_or(listed_path), cap),
                    None => (listed_path, None),
                };
                StorageVolume {
                    pool,
                    name,
                    path,
                    capacity_bytes,
                }
            })
            .collect())
    }
}
