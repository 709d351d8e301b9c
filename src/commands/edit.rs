//! `edit VM PATH`: questions and messages on the terminal, the editor on the terminal,
//! a loud warning also on stderr. Without a terminal on stdin only `--yes` uploads.
//! While it runs, Ctrl-C, SIGTERM and SIGHUP stop the work between two steps and roll
//! back an upload; a guest file left damaged gets a recovery record and a log line.

use std::io::{BufRead, Write};

use crate::app::App;
use crate::audit::{self, Change, Recovery};
use crate::cli::EditArgs;
use crate::edit::{self, parse_mode, EditError, EditOptions, Editor, DEFAULT_NEW_MODE};
use crate::exit::{self, Failure};
use crate::render::text::write_line;
use crate::term::interrupt::{Cancel, Interrupts};
use crate::term::progress::ProgressSink;
use crate::term::prompt::Prompter;

/// The options of one edit from the command line.
pub fn options(
    app: &App,
    args: &EditArgs,
    interactive: bool,
    progress: &ProgressSink,
    cancel: Cancel,
) -> Result<EditOptions, Failure> {
    Ok(EditOptions {
        vm: args.vm.clone(),
        remote_path: args.remote_path.clone(),
        local: args.local.clone(),
        yes: args.yes,
        force: args.force,
        mode: match &args.mode {
            Some(m) => parse_mode(m).map_err(Failure::usage)?,
            None => DEFAULT_NEW_MODE,
        },
        transfer: app.transfer(progress, cancel),
        interactive,
        agent_timeout: app.settings.agent_timeout,
    })
}

/// Take over Ctrl-C, SIGTERM and SIGHUP for the work of one command.
pub fn interrupts() -> Result<Interrupts, Failure> {
    Interrupts::install()
        .map_err(|e| Failure::usage(format!("cannot install signal handlers: {e}")))
}

/// Run one edit over the given terminal streams.
pub fn run(
    app: &App,
    opts: &EditOptions,
    editor: &mut dyn Editor,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    warnings: &mut dyn Write,
) -> Result<u8, Failure> {
    let result = edit::edit(
        app.hv.as_ref(),
        opts,
        editor,
        &mut Prompter::new(input, output),
    );
    let path = &opts.remote_path;
    match result {
        Ok(done) => {
            if done.uploaded {
                audit_edit(app, &opts.vm, path, "ok");
            }
            if let Some(w) = done.warning {
                write_line(warnings, &w)?;
            }
            Ok(exit::OK)
        }
        Err(e) => {
            match &e {
                EditError::RolledBack(m) => audit_edit(app, &opts.vm, path, m),
                EditError::Damaged { message, .. } => audit_edit(app, &opts.vm, path, message),
                _ => {}
            }
            note_damage(app, &opts.vm, path, &e, warnings)?;
            Err(e.into())
        }
    }
}

pub fn audit_edit(app: &App, vm: &str, path: &str, result: &str) {
    audit::log_change(&Change {
        action: "edit",
        uri: &app.uri(),
        vm,
        what: path,
        result,
    });
}

/// A guest file the edit left damaged: a recovery record, a log line, and where the
/// record is on the warning stream.
pub fn note_damage(
    app: &App,
    vm: &str,
    path: &str,
    e: &EditError,
    warnings: &mut dyn Write,
) -> Result<(), Failure> {
    let EditError::Damaged {
        what,
        original,
        edited,
        ..
    } = e
    else {
        return Ok(());
    };
    let uri = app.uri();
    audit::log_change(&Change {
        action: "rollback",
        uri: &uri,
        vm,
        what: path,
        result: what,
    });
    let record = Recovery {
        id: audit::new_id(vm),
        created: crate::probe::cache::now_unix(),
        uri,
        vm: vm.to_string(),
        path: path.to_string(),
        what: what.clone(),
        original: original.clone(),
        edited: Some(edited.clone()),
    };
    match audit::record_recovery(&record) {
        Ok(at) => write_line(
            warnings,
            &format!("recovery record written: {}", at.display()),
        )?,
        Err(why) => write_line(
            warnings,
            &format!(
                "could not write a recovery record ({why}): {}",
                record.reminder()
            ),
        )?,
    }
    Ok(())
}
