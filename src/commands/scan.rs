//! `scan`: the table (or JSON) once; per-VM problems go to the warning writer after it.

use std::io::Write;
use std::sync::Arc;

use crate::app::App;
use crate::cli::ScanArgs;
use crate::exit::{self, Failure};
use crate::render::{self, text::write_line};
use crate::snapshot::Snapshot;
use crate::term::progress::{Progress, ProgressSink, Spinner};

/// One scan with a spinner in `progress` while guest agents are asked.
pub fn snapshot(app: &App, progress: ProgressSink) -> Result<Snapshot, Failure> {
    let counts = Arc::new(Progress::default());
    let _spinner = Spinner::start("scanning VMs…", Arc::clone(&counts), progress);
    Ok(app.probes.scan_with_progress(&counts)?)
}

/// `scan [--json]`: the snapshot to `out`, its warnings to `warnings`.
pub fn run(
    app: &App,
    args: &ScanArgs,
    out: &mut impl Write,
    warnings: &mut impl Write,
    progress: ProgressSink,
) -> Result<u8, Failure> {
    let snap = snapshot(app, progress)?;
    if args.json {
        render::json::write_json(out, &snap)?;
    } else {
        render::table::write_table(out, &snap)?;
    }
    out.flush()?;
    for e in &snap.errors {
        write_line(warnings, &format!("warning: {e}"))?;
    }
    Ok(exit::OK)
}
