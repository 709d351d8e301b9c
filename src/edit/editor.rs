//! The user's editor: `VISUAL`, then `EDITOR` (split like a shell would, so `code --wait`
//! works), else nano, else vi — run as a child that inherits the terminal, never through
//! a shell.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::transfer::io_message;

/// Opens a file in an editor and waits until the user is done.
pub trait Editor {
    /// `Err` is one line: why the editor could not run or how it failed.
    fn edit(&mut self, file: &Path) -> Result<(), String>;
}

/// The editor command from `VISUAL` and `EDITOR`, else nano when it is on `PATH`, else vi.
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
            format!("cannot split ${var} ({v:?}) into words: check its quotes; nothing uploaded")
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
    pub(crate) argv: Vec<String>,
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
        let name = &self.argv[0];
        let status = Command::new(name)
            .args(&self.argv[1..])
            .arg(file)
            .status()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    format!("editor {name:?} not found: install it or set VISUAL or EDITOR")
                }
                _ => format!("editor {name:?} could not start: {}", io_message(&e)),
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
