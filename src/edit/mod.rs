//! `edit` and menu option 3: download a guest file through the agent, open it in the
//! user's editor, show what changed, and upload only real changes — without ever losing
//! the user's work or overwriting the guest's by surprise.
//!
//! The order matters and is the point of this module: VM and agent capabilities are
//! checked before anything is downloaded or an editor opens; the file is opened "r+" so
//! a read-only file is refused before the user spends time editing; right before the
//! upload the guest file is hashed again (conflict check); the upload is read back and
//! compared, and rolled back on failure ([`crate::transfer::replace_verified`]). The
//! local edited copy is deleted only once the upload is verified (or when it holds no
//! edit); every other ending says where it is.

mod editor;
mod preview;
mod workspace;

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use editor::{editor_argv, Editor, ExternalEditor};
pub use preview::preview;
pub use workspace::local_name;

use crate::agent::Agent;
use crate::exit;
use crate::hypervisor::Hypervisor;
use crate::term::prompt::Prompter;
use crate::transfer::{self, Before, FileError, Summary, Transfer};
use crate::units;
use workspace::{overwrite_file, private_file, Workspace};

/// Default mode of a file `edit` or `push` creates.
pub const DEFAULT_NEW_MODE: u32 = 0o644;

/// Everything one edit needs to know.
#[derive(Clone)]
pub struct EditOptions {
    pub vm: String,
    pub remote_path: String,
    /// Where to keep the local copy; `None`: a private temporary directory.
    pub local: Option<PathBuf>,
    /// Upload (and create a missing file) without asking.
    pub yes: bool,
    /// Upload even when the guest file changed since download.
    pub force: bool,
    /// Mode of a newly created file.
    pub mode: u32,
    /// Size limit, pace, progress and interrupts of every transfer of the edit.
    pub transfer: Transfer,
    /// Whether the prompter reaches a person (a terminal, or the menu's input).
    pub interactive: bool,
    /// Timeout of the first agent call, so a frozen agent fails fast.
    pub agent_timeout: Duration,
}

/// Parse `--mode`: octal, with or without a leading 0 ("644", "0600").
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => Err(format!("--mode {s:?} is not an octal file mode like 0644")),
    }
}

/// Why an edit ended without an upload. Plain text; whoever prints it escapes it.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the path inside the VM is empty")]
    EmptyPath,
    /// Before the user edited anything: nothing to keep.
    #[error(transparent)]
    File(#[from] FileError),
    /// After the editor may have run: the message says what was kept where.
    #[error("{0}")]
    Stopped(String),
    /// The upload failed; the guest file is as it was (never touched, or rolled back).
    #[error("{0}")]
    RolledBack(String),
    /// The upload failed after the guest file was changed, and the rollback did not put
    /// it back: the guest file may be damaged (the caller records it for recovery).
    #[error("{message}")]
    Damaged {
        message: String,
        /// One line: what happened to the guest file.
        what: String,
        original: Option<PathBuf>,
        edited: PathBuf,
    },
    #[error("cannot write to the terminal: {0}")]
    Terminal(#[from] io::Error),
}

impl EditError {
    /// Bad input and no connection are 2, everything else that ended an edit 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            EditError::EmptyPath => exit::USAGE,
            EditError::File(FileError::Agent(hv)) => hv.exit_code(),
            _ => exit::PARTIAL,
        }
    }
}

/// How an edit that did not fail ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EditDone {
    /// A verified upload changed the guest file.
    pub uploaded: bool,
    /// A warning the caller must show loudly (also where nobody reads stdout): a new
    /// file that stayed world-writable.
    pub warning: Option<String>,
}

/// Run one edit. Messages go through the prompter; the error is the one line that ends
/// the command.
pub fn edit(
    hv: &dyn Hypervisor,
    opts: &EditOptions,
    editor: &mut dyn Editor,
    p: &mut Prompter,
) -> Result<EditDone, EditError> {
    let (vm, path) = (opts.vm.as_str(), opts.remote_path.as_str());
    if path.is_empty() {
        return Err(EditError::EmptyPath);
    }
    transfer::check_vm(hv, vm)?;
    let needed: Vec<&str> = transfer::READ_COMMANDS
        .iter()
        .chain(transfer::WRITE_COMMANDS)
        .copied()
        .collect();
    let can_exec = transfer::check_capabilities(hv, vm, opts.agent_timeout, &needed)?;
    let agent = Agent::new(hv, vm, transfer::IO_TIMEOUT);

    let ws = Workspace::create(path, opts.local.as_deref()).map_err(EditError::Stopped)?;
    let session = Session {
        agent: &agent,
        opts,
        ws: &ws,
        can_exec,
    };
    let result = session.run(editor, p);
    let _ = p.out().flush();
    result
}

/// One edit in progress: what every step needs.
struct Session<'s> {
    agent: &'s Agent<'s>,
    opts: &'s EditOptions,
    ws: &'s Workspace,
    can_exec: bool,
}

/// The guest file before the edit.
enum Original {
    Existing(Summary),
    /// Missing, and to be created.
    Missing,
    /// Missing, and the user does not want it.
    Declined,
}

/// What the user decided after editing.
enum Decision {
    Upload,
    NoChange,
    Discard,
}

impl Session<'_> {
    fn run(&self, editor: &mut dyn Editor, p: &mut Prompter) -> Result<EditDone, EditError> {
        let original = match self.download_original(p)? {
            Original::Existing(sum) => Some(sum),
            Original::Missing => None,
            Original::Declined => return Ok(EditDone::default()),
        };
        self.prepare_copy(p)?;
        let original_sum = original.unwrap_or_else(Summary::empty);
        match self.edit_until_decided(editor, p, &original_sum)? {
            Decision::NoChange => {
                p.say("No changes: nothing uploaded.")?;
                self.ws.done();
                return Ok(EditDone::default());
            }
            Decision::Discard => {
                self.ws.keep(false);
                p.say(&format!(
                    "Not uploaded; {} in {:?} is unchanged. Your edited copy is kept at {}",
                    self.opts.remote_path,
                    self.opts.vm,
                    self.ws.file_shown()
                ))?;
                return Ok(EditDone::default());
            }
            Decision::Upload => {}
        }
        if !self.opts.force {
            self.check_conflict(&original, &original_sum)?;
        }
        self.upload(p, original, &original_sum)
    }

    /// Download into the private backup first: no file of the user's is touched yet.
    /// A missing file is created only when asked for.
    fn download_original(&self, p: &mut Prompter) -> Result<Original, EditError> {
        let (ws, opts) = (self.ws, self.opts);
        let mut f = private_file(&ws.backup).map_err(|e| {
            ws.remove();
            FileError::local(&ws.backup, &e)
        })?;
        match transfer::download(
            self.agent,
            &opts.remote_path,
            "r+",
            &mut f,
            "downloading",
            &opts.transfer,
        ) {
            Ok(sum) => return Ok(Original::Existing(sum)),
            Err(FileError::NotFound { .. }) => {}
            Err(e) => {
                ws.remove();
                return Err(e.into());
            }
        }
        let (vm, path) = (&opts.vm, &opts.remote_path);
        let create = if opts.yes {
            true
        } else if !opts.interactive {
            ws.remove();
            return Err(EditError::Stopped(format!(
                "{path} does not exist in {vm:?}; pass --yes to create it"
            )));
        } else {
            p.confirm(
                &format!("{path} does not exist in {vm:?}. Create it?"),
                false,
            )?
            .unwrap_or(false)
        };
        if !create {
            ws.remove();
            p.say("Nothing created.")?;
            return Ok(Original::Declined);
        }
        Ok(Original::Missing)
    }

    /// The working copy, from the backup; a file the user named is overwritten only
    /// when they say so on a terminal (`--yes` answers edit's questions, not this one).
    fn prepare_copy(&self, p: &mut Prompter) -> Result<(), EditError> {
        let ws = self.ws;
        let existing = match ws.file.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                ws.remove();
                return Err(EditError::Stopped(format!(
                    "{} is a symbolic link: refusing to write the guest's file through it (give the real path); nothing was changed",
                    ws.file_shown()
                )));
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if ws.user_file && existing {
            let question = format!(
                "{} already exists. Overwrite it with the guest's file?",
                ws.file_shown()
            );
            let ok = self.opts.interactive && p.confirm(&question, false)?.unwrap_or(false);
            if !ok {
                ws.remove();
                return Err(EditError::Stopped(format!(
                    "{} already exists: not overwriting it (choose another --local path or remove it); nothing was changed",
                    ws.file_shown()
                )));
            }
        }
        let target = if existing {
            overwrite_file(&ws.file)
        } else {
            private_file(&ws.file)
        };
        let copy = target.and_then(|mut f| io::copy(&mut File::open(&ws.backup)?, &mut f));
        if let Err(e) = copy {
            ws.remove();
            return Err(FileError::local(&ws.file, &e).into());
        }
        Ok(())
    }

    /// A failure once the user may have edited something: keep the copy unless it
    /// holds no edit, and say where it is.
    fn stopped(&self, original: &Summary, message: String) -> EditError {
        let ws = self.ws;
        match Summary::of_file(&ws.file) {
            Ok(s) if s == *original && !ws.user_file => {
                ws.remove();
                EditError::Stopped(format!("{message}; nothing uploaded"))
            }
            _ => {
                ws.keep(false);
                EditError::Stopped(format!(
                    "{message}; nothing uploaded; your edited copy is kept at {}",
                    ws.file_shown()
                ))
            }
        }
    }

    /// Editor, preview, question — again while the user says "edit again".
    fn edit_until_decided(
        &self,
        editor: &mut dyn Editor,
        p: &mut Prompter,
        original: &Summary,
    ) -> Result<Decision, EditError> {
        let (opts, ws) = (self.opts, self.ws);
        loop {
            p.out().flush()?;
            if let Err(e) = editor.edit(&ws.file) {
                return Err(self.stopped(original, e));
            }
            let edited = Summary::of_file(&ws.file)
                .map_err(|e| self.stopped(original, FileError::local(&ws.file, &e).to_string()))?;
            if edited == *original {
                return Ok(Decision::NoChange);
            }
            if edited.size > opts.transfer.limit {
                return Err(self.stopped(
                    original,
                    format!(
                        "the edited copy is {}, above the limit of {} (raise it with --max-size)",
                        units::bytes(edited.size),
                        units::bytes(opts.transfer.limit)
                    ),
                ));
            }
            let big = original.size.max(edited.size) > preview::DIFF_MAX_BYTES as u64;
            let lines = if big {
                preview::sums("Too large to diff", original, &edited)
            } else {
                let old = fs::read(&ws.backup).unwrap_or_default();
                let new = fs::read(&ws.file).unwrap_or_default();
                preview(&opts.vm, &opts.remote_path, &old, &new)
            };
            for line in lines {
                p.say(&line)?;
            }
            if opts.yes {
                return Ok(Decision::Upload);
            }
            if !opts.interactive {
                return Err(self.stopped(
                    original,
                    "stdin is not a terminal and --yes was not given, so there is nobody to confirm the upload".to_string(),
                ));
            }
            match ask_upload(p, &opts.vm, &opts.remote_path)? {
                'y' => return Ok(Decision::Upload),
                'e' => continue,
                _ => return Ok(Decision::Discard),
            }
        }
    }

    /// The guest file must still be what was downloaded.
    fn check_conflict(
        &self,
        original: &Option<Summary>,
        original_sum: &Summary,
    ) -> Result<(), EditError> {
        let (opts, ws) = (self.opts, self.ws);
        let check = Transfer {
            limit: opts.transfer.limit.max(original_sum.size),
            ..opts.transfer.clone()
        };
        let now = transfer::remote_summary(self.agent, &opts.remote_path, &check)
            .map_err(|e| self.stopped(original_sum, e.to_string()))?;
        if now == *original {
            return Ok(());
        }
        let what = match (original, &now) {
            (Some(_), None) => "was deleted".to_string(),
            (None, Some(_)) => "was created by someone else".to_string(),
            (_, Some(s)) => format!(
                "changed (sha256 {} when downloaded, {} now)",
                &original_sum.hex()[..12],
                &s.hex()[..12]
            ),
            (None, None) => unreachable!("equal"),
        };
        ws.keep(false);
        Err(EditError::Stopped(format!(
            "{} in {:?} {what} while you were editing: not overwritten; your edited copy is kept at {} (--force overwrites)",
            opts.remote_path,
            opts.vm,
            ws.file_shown()
        )))
    }

    /// Create a missing file with its mode first, then the verified upload; on failure
    /// say what the rollback did and where every copy is.
    fn upload(
        &self,
        p: &mut Prompter,
        original: Option<Summary>,
        original_sum: &Summary,
    ) -> Result<EditDone, EditError> {
        let (opts, ws, agent) = (self.opts, self.ws, self.agent);
        let (vm, path) = (opts.vm.as_str(), opts.remote_path.as_str());
        let mut mode_problem = None;
        let before = match original {
            Some(summary) => Before::Existing {
                backup: &ws.backup,
                summary,
            },
            None => {
                mode_problem = transfer::create_with_mode(agent, path, opts.mode, self.can_exec)
                    .map_err(|e| self.stopped(original_sum, e.to_string()))?;
                Before::Missing
            }
        };
        match transfer::replace_verified(
            agent,
            path,
            &ws.file,
            before,
            self.can_exec,
            &opts.transfer,
        ) {
            Ok(sum) => {
                p.say(&format!(
                    "Uploaded {} to {vm}:{path} (sha256 {}, verified by reading it back).",
                    units::bytes(sum.size),
                    &sum.hex()[..12]
                ))?;
                let warning = mode_problem
                    .map(|reason| transfer::world_writable_warning(vm, path, opts.mode, &reason));
                if let Some(w) = &warning {
                    p.say(w)?;
                }
                ws.done();
                Ok(EditDone {
                    uploaded: true,
                    warning,
                })
            }
            Err(f) => {
                let keep_backup = !f.rollback.worked() && original.is_some();
                ws.keep(keep_backup);
                let backup_note = if keep_backup {
                    format!("; the original is saved at {}", ws.backup.display())
                } else {
                    String::new()
                };
                let message = format!(
                    "upload to {vm}:{path} failed: {}; {}{backup_note}; your edited copy is kept at {}",
                    f.cause,
                    f.rollback.describe(path),
                    ws.file_shown()
                );
                if f.rollback.worked() {
                    return Err(EditError::RolledBack(message));
                }
                Err(EditError::Damaged {
                    message,
                    what: f.rollback.describe(path),
                    original: keep_backup.then(|| ws.backup.clone()),
                    edited: ws.file.clone(),
                })
            }
        }
    }
}

/// y(es), n(o, discard) or e(dit again); end of input is no.
fn ask_upload(p: &mut Prompter, vm: &str, path: &str) -> io::Result<char> {
    loop {
        let Some(a) = p.ask(&format!(
            "Upload to {vm}:{path}? [y]es / [n]o, discard / [e]dit again: "
        ))?
        else {
            return Ok('n');
        };
        match a.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok('y'),
            "n" | "no" => return Ok('n'),
            "e" | "edit" => return Ok('e'),
            _ => p.say("Please answer y, n or e.")?,
        }
    }
}

#[cfg(test)]
mod tests;
