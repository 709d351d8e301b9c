//! `recovery`: the guest files an interrupted or failed upload may have left damaged,
//! with where the copies are; `--done ID` marks one dealt with. Every other command
//! reminds of the records on stderr until they are.

use std::io::Write;

use crate::audit;
use crate::cli::RecoveryArgs;
use crate::exit::{self, Failure};
use crate::render::text::write_line;

pub fn run(args: &RecoveryArgs, out: &mut impl Write) -> Result<u8, Failure> {
    if let Some(id) = &args.done {
        let r = audit::done(id).map_err(Failure::usage)?;
        write_line(
            out,
            &format!(
                "recovery record {id} ({}:{}) marked dealt with",
                r.vm, r.path
            ),
        )?;
        return Ok(exit::OK);
    }
    let pending = audit::pending();
    if pending.is_empty() {
        write_line(
            out,
            "no recovery records: no guest file is known to be damaged",
        )?;
    }
    for r in &pending {
        write_line(out, &r.reminder())?;
    }
    Ok(exit::OK)
}

/// The reminders every other command prints first, on `warnings`.
pub fn remind(warnings: &mut dyn Write) {
    for r in audit::pending() {
        let _ = write_line(warnings, &format!("dismount_iso_qemu: {}", r.reminder()));
    }
}
