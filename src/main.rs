//! Thin entry point: parse arguments, run, turn the outcome into an exit code. Errors are
//! printed once, here, as one terminal-safe line; a closed pipe (`| head`) is not an
//! error.

use std::process::ExitCode;

use clap::Parser;
use dismount_iso_qemu::cli::Cli;
use dismount_iso_qemu::commands::completions;
use dismount_iso_qemu::render::text::terminal_line;
use dismount_iso_qemu::run;

fn main() -> ExitCode {
    // A completion script asking for candidates: answered, and the process exits here.
    completions::complete_if_asked();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) if f.message.is_empty() => ExitCode::from(f.code),
        Err(f) => {
            eprintln!("dismount_iso_qemu: error: {}", terminal_line(&f.message));
            ExitCode::from(f.code)
        }
    }
}
