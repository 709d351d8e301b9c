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
//! edit); every other ending prints where it is.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use similar::{ChangeTag, TextDiff};

use crate::agent::Agent;
use crate::cli::prompt::Prompter;
use crate::hypervisor::Hypervisor;
use crate::render::text::sanitize;
use crate::transfer::{self, Before, FileError, Summary};
use crate::{exit, Failure};

/// Default mode of a file `edit` or `push` creates.
pub const DEFAULT_NEW_MODE: u32 = 0o644;

/// Lines of diff shown before the rest is summarised.
const PREVIEW_LINES: usize = 400;

/// Name of the private copy of the guest's original bytes (the rollback source).
const BACKUP_NAME: &str = "guest-original";

/// Everything one edit needs to know.
#[derive(Debug, Clone)]
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
    pub max_size: u64,
    /// Whether the prompter reaches a person (a terminal, or the menu's input).
    pub interactive: bool,
    /// Timeout of the first agent call, so a frozen agent fails fast.
    pub first_call_timeout: Duration,
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

/// Opens a file in an editor and waits until the user is done.
pub trait Editor {
    /// `Err` is one line: why the editor could not run or how it failed.
    fn edit(&mut self, file: &Path) -> Result<(), String>;
}

/// The editor command: `VISUAL`, then `EDITOR` (split like a shell would, so
/// `code --wait` works), else nano, else vi. Never run through a shell.
pub fn editor_argv(
    visual: Option<&str>,
    editor: Option<&str>,
    on_path: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    for (var, value) in [("VISUAL", visual), ("EDITOR", editor)] {
        let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let argv = shlex::split(v).ok_or_else(|| {
            format!(
                "cannot split ${var} ({:?}) into words: check its quotes; nothing uploaded",
                sanitize(v)
            )
        })?;
        if !argv.is_empty() {
            return Ok(argv);
        }
    }
    Ok(vec![if on_path("nano") { "nano" } else { "vi" }.to_string()])
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(program);
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
    })
}

/// The user's editor as a child process that inherits the terminal.
pub struct ExternalEditor {
    argv: Vec<String>,
}

impl ExternalEditor {
    pub fn from_env() -> Result<ExternalEditor, String> {
        let visual = std::env::var("VISUAL").ok();
        let editor = std::env::var("EDITOR").ok();
        Ok(ExternalEditor {
            argv: editor_argv(visual.as_deref(), editor.as_deref(), &on_path)?,
        })
    }
}

impl Editor for ExternalEditor {
    fn edit(&mut self, file: &Path) -> Result<(), String> {
        let name = sanitize(&self.argv[0]);
        let status = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .arg(file)
            .status()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    format!("editor {name:?} not found: install it or set VISUAL or EDITOR")
                }
                _ => format!(
                    "editor {name:?} could not start: {}",
                    transfer::io_message(&e)
                ),
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(match status.code() {
                Some(c) => format!("editor {name:?} exited with status {c}"),
                None => format!("editor {name:?} was killed by a signal"),
            })
        }
    }
}

/// The local side of one edit: a private directory (0700) holding the backup of the
/// guest's original bytes and, unless `--local` was given, the working copy (0600).
struct Workspace {
    dir: PathBuf,
    backup: PathBuf,
    file: PathBuf,
    /// The working copy is the user's own `--local` path: never deleted by us.
    user_file: bool,
}

/// A safe local file name for a guest path: its last component, ASCII-clean.
pub fn local_name(remote: &str) -> String {
    let base = remote
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .unwrap_or("file");
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => "file".to_string(),
        BACKUP_NAME => format!("edit-{clean}"),
        _ => clean,
    }
}

impl Workspace {
    fn create(remote: &str, local: Option<&Path>) -> Result<Workspace, Failure> {
        let dir = tempfile::Builder::new()
            .prefix("dismount_iso_qemu-edit-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| {
                Failure::partial(format!(
                    "cannot create a private temporary directory: {}",
                    transfer::io_message(&e)
                ))
            })?
            .keep();
        let (file, user_file) = match local {
            Some(p) => (p.to_path_buf(), true),
            None => (dir.join(local_name(remote)), false),
        };
        Ok(Workspace {
            backup: dir.join(BACKUP_NAME),
            dir,
            file,
            user_file,
        })
    }

    fn file_shown(&self) -> String {
        sanitize(&self.file.display().to_string())
    }

    /// Nothing worth keeping (verified upload, or no edit): remove what we made.
    fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The edited copy is kept; the backup goes unless it is the last copy of the
    /// guest's original (`keep_backup`).
    fn keep(&self, keep_backup: bool) {
        if keep_backup {
            return;
        }
        let _ = fs::remove_file(&self.backup);
        if self.user_file {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Run one edit. Messages go to the prompter's output; the returned failure is the one
/// line that ends the command.
pub fn edit(
    hv: &dyn Hypervisor,
    opts: &EditOptions,
    editor: &mut dyn Editor,
    p: &mut Prompter,
) -> Result<u8, Failure> {
    let (vm, path) = (opts.vm.as_str(), opts.remote_path.as_str());
    if path.is_empty() {
        return Err(Failure::usage("the path inside the VM is empty"));
    }
    transfer::check_vm(hv, vm)?;
    let needed: Vec<&str> = transfer::READ_COMMANDS
        .iter()
        .chain(transfer::WRITE_COMMANDS)
        .copied()
        .collect();
    let can_exec = transfer::check_capabilities(hv, vm, opts.first_call_timeout, &needed)?;
    let agent = Agent::new(hv, vm, transfer::IO_TIMEOUT);

    let ws = Workspace::create(path, opts.local.as_deref())?;
    let result = edit_in(&agent, opts, editor, p, &ws, can_exec);
    let _ = p.out().flush();
    result
}

/// What a failure must say once the user may have edited something.
fn with_copy(ws: &Workspace, original: &Summary, message: String) -> Failure {
    match Summary::of_file(&ws.file) {
        Ok(s) if s == *original && !ws.user_file => {
            ws.remove();
            Failure::partial(format!("{message}; nothing uploaded"))
        }
        _ => {
            ws.keep(false);
            Failure::partial(format!(
                "{message}; nothing uploaded; your edited copy is kept at {}",
                ws.file_shown()
            ))
        }
    }
}

fn edit_in(
    agent: &Agent,
    opts: &EditOptions,
    editor: &mut dyn Editor,
    p: &mut Prompter,
    ws: &Workspace,
    can_exec: bool,
) -> Result<u8, Failure> {
    let (vm, path) = (opts.vm.as_str(), opts.remote_path.as_str());
    let shown = sanitize(path);

    // Download into the private backup first: no file of the user is touched yet.
    let original = {
        let mut f = private_file(&ws.backup).map_err(|e| {
            ws.remove();
            Failure::from(FileError::local(&ws.backup, &e))
        })?;
        match transfer::download(agent, path, "r+", &mut f, opts.max_size, "downloading") {
            Ok(sum) => Some(sum),
            Err(FileError::NotFound { .. }) => None,
            Err(e) => {
                ws.remove();
                return Err(e.into());
            }
        }
    };
    if original.is_none() {
        let create = if opts.yes {
            true
        } else if !opts.interactive {
            ws.remove();
            return Err(Failure::partial(format!(
                "{shown} does not exist in {vm:?}; pass --yes to create it"
            )));
        } else {
            p.confirm(
                &format!("{shown} does not exist in {vm:?}. Create it?"),
                false,
            )?
            .unwrap_or(false)
        };
        if !create {
            ws.remove();
            writeln!(p.out(), "Nothing created.")?;
            return Ok(exit::OK);
        }
    }
    let original_sum = original.unwrap_or_else(Summary::empty);

    // The working copy.
    if ws.user_file && ws.file.exists() {
        let question = format!(
            "{} already exists. Overwrite it with the guest's file?",
            ws.file_shown()
        );
        // --yes answers edit's own questions, not whether to clobber the user's file.
        let ok = opts.interactive && p.confirm(&question, false)?.unwrap_or(false);
        if !ok {
            ws.remove();
            return Err(Failure::partial(format!(
                "{} already exists: not overwriting it (choose another --local path or remove it); nothing was changed",
                ws.file_shown()
            )));
        }
    }
    let copy =
        private_file(&ws.file).and_then(|mut f| io::copy(&mut File::open(&ws.backup)?, &mut f));
    if let Err(e) = copy {
        ws.remove();
        return Err(FileError::local(&ws.file, &e).into());
    }

    loop {
        p.out().flush()?;
        if let Err(e) = editor.edit(&ws.file) {
            return Err(with_copy(ws, &original_sum, e));
        }
        let edited = Summary::of_file(&ws.file).map_err(|e| {
            with_copy(
                ws,
                &original_sum,
                FileError::local(&ws.file, &e).to_string(),
            )
        })?;
        if edited == original_sum {
            writeln!(p.out(), "No changes: nothing uploaded.")?;
            if ws.user_file {
                ws.keep(false);
            } else {
                ws.remove();
            }
            return Ok(exit::OK);
        }
        if edited.size > opts.max_size {
            return Err(with_copy(
                ws,
                &original_sum,
                format!(
                    "the edited copy is {}, above the limit of {} (raise it with --max-size)",
                    transfer::human_bytes(edited.size),
                    transfer::human_bytes(opts.max_size)
                ),
            ));
        }
        let old = fs::read(&ws.backup).unwrap_or_default();
        let new = fs::read(&ws.file).unwrap_or_default();
        write_preview(p.out(), vm, path, &old, &new)?;
        if opts.yes {
            break;
        }
        if !opts.interactive {
            return Err(with_copy(
                ws,
                &original_sum,
                "stdin is not a terminal and --yes was not given, so there is nobody to confirm the upload".to_string(),
            ));
        }
        let answer = loop {
            let Some(a) = p.ask(&format!(
                "Upload to {vm}:{shown}? [y]es / [n]o, discard / [e]dit again: "
            ))?
            else {
                break 'n';
            };
            match a.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => break 'y',
                "n" | "no" => break 'n',
                "e" | "edit" => break 'e',
                _ => writeln!(p.out(), "Please answer y, n or e.")?,
            }
        };
        match answer {
            'y' => break,
            'e' => continue,
            _ => {
                ws.keep(false);
                writeln!(
                    p.out(),
                    "Not uploaded; {shown} in {vm:?} is unchanged. Your edited copy is kept at {}",
                    ws.file_shown()
                )?;
                return Ok(exit::OK);
            }
        }
    }

    // Conflict check: the guest file must still be what was downloaded.
    if !opts.force {
        let now = transfer::remote_summary(agent, path, opts.max_size.max(original_sum.size))
            .map_err(|e| with_copy(ws, &original_sum, e.to_string()))?;
        if now != original {
            let what = match (&original, &now) {
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
            return Err(Failure::partial(format!(
                "{shown} in {vm:?} {what} while you were editing: not overwritten; your edited copy is kept at {} (--force overwrites)",
                ws.file_shown()
            )));
        }
    }

    let mut mode_problem = None;
    let before = match original {
        Some(summary) => Before::Existing {
            backup: &ws.backup,
            summary,
        },
        None => {
            mode_problem = transfer::create_with_mode(agent, path, opts.mode, can_exec)
                .map_err(|e| with_copy(ws, &original_sum, e.to_string()))?;
            Before::Missing
        }
    };
    match transfer::replace_verified(agent, path, &ws.file, before, opts.max_size, can_exec) {
        Ok(sum) => {
            writeln!(
                p.out(),
                "Uploaded {} to {vm}:{shown} (sha256 {}, verified by reading it back).",
                transfer::human_bytes(sum.size),
                &sum.hex()[..12]
            )?;
            if let Some(reason) = mode_problem {
                writeln!(
                    p.out(),
                    "{}",
                    transfer::world_writable_warning(vm, path, opts.mode, &reason)
                )?;
                eprintln!(
                    "{}",
                    transfer::world_writable_warning(vm, path, opts.mode, &reason)
                );
            }
            if ws.user_file {
                ws.keep(false);
            } else {
                ws.remove();
            }
            Ok(exit::OK)
        }
        Err(f) => {
            let keep_backup = !f.rollback.worked() && original.is_some();
            ws.keep(keep_backup);
            let backup_note = if keep_backup {
                format!(
                    "; the original is saved at {}",
                    sanitize(&ws.backup.display().to_string())
                )
            } else {
                String::new()
            };
            Err(Failure::partial(format!(
                "upload to {vm}:{shown} failed: {}; {}{backup_note}; your edited copy is kept at {}",
                f.cause,
                f.rollback.describe(path),
                ws.file_shown()
            )))
        }
    }
}

/// Binary content (NUL bytes or not UTF-8) gets sizes and hashes instead of a diff.
fn as_text(b: &[u8]) -> Option<&str> {
    if b.contains(&0) {
        return None;
    }
    std::str::from_utf8(b).ok()
}

/// The preview: a unified diff of the text, or sizes and hashes of binary content.
/// Every line is made terminal-safe; a carriage return shows only when the line
/// endings are not consistent (so CRLF files read normally but a CRLF→LF change shows).
pub fn write_preview(
    out: &mut dyn Write,
    vm: &str,
    path: &str,
    old: &[u8],
    new: &[u8],
) -> io::Result<()> {
    let shown = sanitize(path);
    let (Some(a), Some(b)) = (as_text(old), as_text(new)) else {
        writeln!(
            out,
            "Binary content, no diff: {} (sha256 {}) in the guest -> {} (sha256 {}) edited.",
            transfer::human_bytes(old.len() as u64),
            &Summary::of_bytes(old).hex()[..12],
            transfer::human_bytes(new.len() as u64),
            &Summary::of_bytes(new).hex()[..12],
        )?;
        return Ok(());
    };
    let crlf = |t: &str| {
        let lf = t.matches('\n').count();
        let crlf = t.matches("\r\n").count();
        (lf, crlf)
    };
    let ((lf_a, cr_a), (lf_b, cr_b)) = (crlf(a), crlf(b));
    let all_crlf = cr_a == lf_a && cr_b == lf_b && lf_a + lf_b > 0;
    let show_cr = !all_crlf && cr_a + cr_b > 0;

    let diff = TextDiff::configure()
        .timeout(Duration::from_secs(2))
        .diff_lines(a, b);
    writeln!(out, "--- {vm}:{shown} (in the guest)")?;
    writeln!(out, "+++ {vm}:{shown} (edited)")?;
    let mut lines = 0usize;
    let mut hidden = 0usize;
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let mut block = vec![hunk.header().to_string()];
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            let mut text = change.value().strip_suffix('\n').unwrap_or(change.value());
            if !show_cr {
                text = text.strip_suffix('\r').unwrap_or(text);
            }
            block.push(format!("{sign}{}", sanitize(text)));
            if change.missing_newline() {
                block.push("\\ No newline at end of file".to_string());
            }
        }
        for l in block {
            if lines < PREVIEW_LINES {
                writeln!(out, "{l}")?;
                lines += 1;
            } else {
                hidden += 1;
            }
        }
    }
    if hidden > 0 {
        writeln!(out, "... {hidden} more diff lines not shown")?;
    }
    if all_crlf {
        writeln!(out, "(CRLF line endings, kept as they are)")?;
    }
    Ok(())
}

/// `edit VM PATH`: questions on the terminal, messages on stdout, the editor on the
/// terminal. Without a terminal on stdin only `--yes` uploads.
pub fn run_cli(app: &crate::App, args: &crate::cli::EditArgs) -> Result<u8, Failure> {
    use std::io::IsTerminal;
    let opts = EditOptions {
        vm: args.vm.clone(),
        remote_path: args.remote_path.clone(),
        local: args.local.clone(),
        yes: args.yes,
        force: args.force,
        mode: match &args.mode {
            Some(m) => parse_mode(m).map_err(Failure::usage)?,
            None => DEFAULT_NEW_MODE,
        },
        max_size: transfer::commands::max_size(app, args.max_size.as_deref())?,
        interactive: io::stdin().is_terminal(),
        first_call_timeout: app.settings.probe_timeout,
    };
    let mut editor = ExternalEditor::from_env().map_err(Failure::usage)?;
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut output = io::stdout().lock();
    edit(
        app.hv.as_ref(),
        &opts,
        &mut editor,
        &mut Prompter::new(&mut input, &mut output),
    )
}

#[cfg(test)]
mod tests;
