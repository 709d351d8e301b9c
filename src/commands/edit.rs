//! `edit VM PATH`: questions and messages on the terminal, the editor on the terminal,
//! a loud warning also on stderr. Without a terminal on stdin only `--yes` uploads.

use std::io::{BufRead, Write};

use crate::app::App;
use crate::cli::EditArgs;
use crate::edit::{self, parse_mode, EditOptions, Editor, DEFAULT_NEW_MODE};
use crate::exit::{self, Failure};
use crate::render::text::write_line;
use crate::term::progress::ProgressSink;
use crate::term::prompt::Prompter;

/// The options of one edit from the command line.
pub fn options(app: &App, args: &EditArgs, interactive: bool) -> Result<EditOptions, Failure> {
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
        max_size: app.settings.max_size,
        interactive,
        agent_timeout: app.settings.agent_timeout,
    })
}

/// Run one edit over the given terminal streams.
pub fn run(
    app: &App,
    opts: &EditOptions,
    editor: &mut dyn Editor,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    warnings: &mut dyn Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    let done = edit::edit(
        app.hv.as_ref(),
        opts,
        editor,
        &mut Prompter::new(input, output),
        progress,
    )?;
    if let Some(w) = done.warning {
        write_line(warnings, &w)?;
    }
    Ok(exit::OK)
}
