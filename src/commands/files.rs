//! `cat`, `pull` and `push`: the transfer code of `edit`, for scripts. Same checks (VM,
//! agent capabilities), same chunking and size limit, same verify-and-roll-back upload.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::agent::Agent;
use crate::app::App;
use crate::cli::{CatArgs, PullArgs, PushArgs};
use crate::edit::{local_name, parse_mode, DEFAULT_NEW_MODE};
use crate::exit::{self, Failure};
use crate::render::text::write_line;
use crate::term::progress::ProgressSink;
use crate::transfer::{
    check_capabilities, check_vm, create_with_mode, download, replace_verified,
    world_writable_warning, Before, FileError, IO_TIMEOUT, READ_COMMANDS, WRITE_COMMANDS,
};
use crate::units;

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// `cat VM PATH`: the guest file's bytes to `out` (stdout), unchanged.
pub fn cat(
    app: &App,
    args: &CatArgs,
    out: &mut impl Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    let limit = app.settings.max_size;
    let hv = app.hv.as_ref();
    check_vm(hv, &args.vm)?;
    check_capabilities(hv, &args.vm, app.settings.agent_timeout, READ_COMMANDS)?;
    let agent = Agent::new(hv, &args.vm, IO_TIMEOUT);
    download(
        &agent,
        &args.remote_path,
        "r",
        out,
        limit,
        "reading",
        progress,
    )?;
    out.flush()?;
    Ok(exit::OK)
}

/// `pull VM PATH LOCAL`: into a temporary file beside LOCAL, renamed into place when
/// complete, so LOCAL is never half written. An existing LOCAL needs `--force`.
pub fn pull(
    app: &App,
    args: &PullArgs,
    out: &mut impl Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    let limit = app.settings.max_size;
    let target: PathBuf = if args.local_path.is_dir() {
        args.local_path.join(local_name(&args.remote_path))
    } else {
        args.local_path.clone()
    };
    if target.exists() && !args.force {
        return Err(Failure::partial(format!(
            "{} already exists: not overwriting it (--force replaces it); nothing was copied",
            shown(&target)
        )));
    }
    let hv = app.hv.as_ref();
    check_vm(hv, &args.vm)?;
    check_capabilities(hv, &args.vm, app.settings.agent_timeout, READ_COMMANDS)?;
    let agent = Agent::new(hv, &args.vm, IO_TIMEOUT);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".dismount_iso_qemu-pull-")
        .tempfile_in(&dir)
        .map_err(|e| FileError::local(&dir, &e))?;
    let sum = download(
        &agent,
        &args.remote_path,
        "r",
        tmp.as_file_mut(),
        limit,
        "pulling",
        progress,
    )
    .map_err(|e| match e {
        FileError::Output(io) => FileError::local(&target, &io),
        other => other,
    })?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FileError::local(&target, &e))?;
    tmp.persist(&target)
        .map_err(|e| FileError::local(&target, &e.error))?;
    write_line(
        out,
        &format!(
            "Copied {} from {}:{} to {} (sha256 {}).",
            units::bytes(sum.size),
            args.vm,
            args.remote_path,
            shown(&target),
            &sum.hex()[..12]
        ),
    )?;
    out.flush()?;
    Ok(exit::OK)
}

/// `push VM LOCAL PATH`: replace (or create) the guest file, verified by reading it
/// back; on failure the guest's original is restored from a private backup.
pub fn push(
    app: &App,
    args: &PushArgs,
    out: &mut impl Write,
    warnings: &mut impl Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    let limit = app.settings.max_size;
    let mode = match &args.mode {
        Some(m) => parse_mode(m).map_err(Failure::usage)?,
        None => DEFAULT_NEW_MODE,
    };
    let (vm, path) = (args.vm.as_str(), args.remote_path.as_str());
    let meta =
        fs::metadata(&args.local_path).map_err(|e| FileError::local(&args.local_path, &e))?;
    if !meta.is_file() {
        return Err(Failure::usage(format!(
            "{} is not a regular file",
            shown(&args.local_path)
        )));
    }
    if meta.len() > limit {
        return Err(Failure::partial(format!(
            "{} is {}, above the limit of {} (raise it with --max-size); nothing was copied",
            shown(&args.local_path),
            units::bytes(meta.len()),
            units::bytes(limit)
        )));
    }
    let hv = app.hv.as_ref();
    check_vm(hv, vm)?;
    let needed: Vec<&str> = READ_COMMANDS
        .iter()
        .chain(WRITE_COMMANDS)
        .copied()
        .collect();
    let can_exec = check_capabilities(hv, vm, app.settings.agent_timeout, &needed)?;
    let agent = Agent::new(hv, vm, IO_TIMEOUT);

    let private = tempfile::Builder::new()
        .prefix("dismount_iso_qemu-push-")
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| FileError::local(Path::new("temporary directory"), &e))?;
    let backup = private.path().join("guest-original");
    let original = {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&backup)
            .map_err(|e| FileError::local(&backup, &e))?;
        match download(
            &agent,
            path,
            "r+",
            &mut f,
            limit,
            "saving the original",
            progress,
        ) {
            Ok(s) => Some(s),
            Err(FileError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    };
    let mut mode_problem = None;
    let before = match original {
        Some(summary) => Before::Existing {
            backup: &backup,
            summary,
        },
        None => {
            mode_problem = create_with_mode(&agent, path, mode, can_exec)?;
            Before::Missing
        }
    };
    match replace_verified(
        &agent,
        path,
        &args.local_path,
        before,
        limit,
        can_exec,
        progress,
    ) {
        Ok(sum) => {
            write_line(
                out,
                &format!(
                    "Uploaded {} to {vm}:{path} (sha256 {}, verified by reading it back).",
                    units::bytes(sum.size),
                    &sum.hex()[..12]
                ),
            )?;
            out.flush()?;
            if let Some(reason) = mode_problem {
                write_line(warnings, &world_writable_warning(vm, path, mode, &reason))?;
            }
            Ok(exit::OK)
        }
        Err(f) => {
            let mut note = String::new();
            if !f.rollback.worked() && original.is_some() {
                let kept = private.keep();
                note = format!(
                    "; the original is saved at {}",
                    shown(&kept.join("guest-original"))
                );
            }
            Err(Failure::partial(format!(
                "upload to {vm}:{path} failed: {}; {}{note}",
                f.cause,
                f.rollback.describe(path)
            )))
        }
    }
}
