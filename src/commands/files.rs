//! `cat`, `pull` and `push`: the transfer code of `edit`, for scripts. Same checks (VM,
//! agent capabilities), same chunking, size limit and pace, same verify-and-roll-back
//! upload. Local files are never written through a symbolic link: a link as the local
//! path is refused, and new files are created exclusively, 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::edit::interrupts;
use crate::agent::Agent;
use crate::app::App;
use crate::audit::{self, Change, Recovery};
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

/// A local path that is a symbolic link is refused: root must not write (or read)
/// through a link somebody may have planted.
pub fn refuse_symlink(p: &Path) -> Result<(), Failure> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => Err(Failure::usage(format!(
            "{} is a symbolic link: refusing to go through it; give the real path",
            shown(p)
        ))),
        _ => Ok(()),
    }
}

/// `cat VM PATH`: the guest file's bytes to `out` (stdout), unchanged.
pub fn cat(
    app: &App,
    args: &CatArgs,
    out: &mut impl Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    let guard = interrupts()?;
    let t = app.transfer(progress, guard.cancel());
    let hv = app.hv.as_ref();
    check_vm(hv, &args.vm)?;
    check_capabilities(hv, &args.vm, app.settings.agent_timeout, READ_COMMANDS)?;
    let agent = Agent::new(hv, &args.vm, IO_TIMEOUT);
    download(&agent, &args.remote_path, "r", out, "reading", &t)?;
    out.flush()?;
    Ok(exit::OK)
}

/// `pull VM PATH LOCAL`: into a private temporary file beside LOCAL, moved into place
/// when complete, so LOCAL is never half written. An existing LOCAL needs `--force`, and
/// one that appears meanwhile is not replaced without it either.
pub fn pull(
    app: &App,
    args: &PullArgs,
    out: &mut impl Write,
    progress: &ProgressSink,
) -> Result<u8, Failure> {
    refuse_symlink(&args.local_path)?;
    let target: PathBuf = if args.local_path.is_dir() {
        args.local_path.join(local_name(&args.remote_path))
    } else {
        args.local_path.clone()
    };
    refuse_symlink(&target)?;
    if target.symlink_metadata().is_ok() && !args.force {
        return Err(Failure::partial(format!(
            "{} already exists: not overwriting it (--force replaces it); nothing was copied",
            shown(&target)
        )));
    }
    let guard = interrupts()?;
    let t = app.transfer(progress, guard.cancel());
    let hv = app.hv.as_ref();
    check_vm(hv, &args.vm)?;
    check_capabilities(hv, &args.vm, app.settings.agent_timeout, READ_COMMANDS)?;
    let agent = Agent::new(hv, &args.vm, IO_TIMEOUT);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // tempfile creates it exclusively, 0600, with a random name.
    let mut tmp = tempfile::Builder::new()
        .prefix(".dismount_iso_qemu-pull-")
        .tempfile_in(&dir)
        .map_err(|e| FileError::local(&dir, &e))?;
    let sum = download(
        &agent,
        &args.remote_path,
        "r",
        tmp.as_file_mut(),
        "pulling",
        &t,
    )
    .map_err(|e| match e {
        FileError::Output(io) => FileError::local(&target, &io),
        other => other,
    })?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FileError::local(&target, &e))?;
    let placed = if args.force {
        tmp.persist(&target).map(|_| ())
    } else {
        tmp.persist_noclobber(&target).map(|_| ())
    };
    placed.map_err(|e| {
        if e.error.kind() == ErrorKind::AlreadyExists {
            Failure::partial(format!(
                "{} appeared while the file was copied: not overwriting it (--force replaces it); nothing was copied",
                shown(&target)
            ))
        } else {
            FileError::local(&target, &e.error).into()
        }
    })?;
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

/// The local file to push: a regular file, not reached through a link.
fn open_local(path: &Path) -> Result<(File, u64), Failure> {
    refuse_symlink(path)?;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FileError::local(path, &e))?;
    let meta = f.metadata().map_err(|e| FileError::local(path, &e))?;
    if !meta.is_file() {
        return Err(Failure::usage(format!(
            "{} is not a regular file",
            shown(path)
        )));
    }
    Ok((f, meta.len()))
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
    let mode = match &args.mode {
        Some(m) => parse_mode(m).map_err(Failure::usage)?,
        None => DEFAULT_NEW_MODE,
    };
    let (vm, path) = (args.vm.as_str(), args.remote_path.as_str());
    let limit = app.settings.max_size;
    let (local, len) = open_local(&args.local_path)?;
    drop(local);
    if len > limit {
        return Err(Failure::partial(format!(
            "{} is {}, above the limit of {} (raise it with --max-size); nothing was copied",
            shown(&args.local_path),
            units::bytes(len),
            units::bytes(limit)
        )));
    }
    let guard = interrupts()?;
    let t = app.transfer(progress, guard.cancel());
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
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&backup)
            .map_err(|e| FileError::local(&backup, &e))?;
        match download(&agent, path, "r+", &mut f, "saving the original", &t) {
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
    let uri = app.uri();
    match replace_verified(&agent, path, &args.local_path, before, can_exec, &t) {
        Ok(sum) => {
            audit::log_change(&Change {
                action: "push",
                uri: &uri,
                vm,
                what: path,
                result: "ok",
            });
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
            let damaged = !f.rollback.worked();
            let mut kept = None;
            if damaged && original.is_some() {
                let dir = private.keep();
                let at = dir.join("guest-original");
                note = format!("; the original is saved at {}", shown(&at));
                kept = Some(at);
            }
            let message = format!(
                "upload to {vm}:{path} failed: {}; {}{note}",
                f.cause,
                f.rollback.describe(path)
            );
            audit::log_change(&Change {
                action: "push",
                uri: &uri,
                vm,
                what: path,
                result: &message,
            });
            if damaged {
                let record = Recovery {
                    id: audit::new_id(vm),
                    created: crate::probe::cache::now_unix(),
                    uri: uri.clone(),
                    vm: vm.to_string(),
                    path: path.to_string(),
                    what: f.rollback.describe(path),
                    original: kept,
                    edited: std::path::absolute(&args.local_path).ok(),
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
            }
            Err(Failure::partial(message))
        }
    }
}
