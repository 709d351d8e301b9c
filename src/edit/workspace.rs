//! The local side of one edit: a private directory (0700) holding the backup of the
//! guest's original bytes and, unless the user named a local path, the working copy
//! (0600). What it keeps and what it removes decides whether anybody's work is lost.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::transfer::io_message;

/// Name of the private copy of the guest's original bytes (the rollback source).
pub const BACKUP_NAME: &str = "guest-original";

pub struct Workspace {
    pub dir: PathBuf,
    pub backup: PathBuf,
    pub file: PathBuf,
    /// The working copy is the user's own path: never deleted by us.
    pub user_file: bool,
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
    /// A new private directory; the working copy goes to `local`, else into it.
    pub fn create(remote: &str, local: Option<&Path>) -> Result<Workspace, String> {
        let dir = tempfile::Builder::new()
            .prefix("dismount_iso_qemu-edit-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| {
                format!(
                    "cannot create a private temporary directory: {}",
                    io_message(&e)
                )
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

    pub fn file_shown(&self) -> String {
        self.file.display().to_string()
    }

    /// Nothing worth keeping (verified upload, or no edit): remove what we made.
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The edit is over and its copy is not needed: remove our directory, but never a
    /// file of the user's.
    pub fn done(&self) {
        if self.user_file {
            self.keep(false);
        } else {
            self.remove();
        }
    }

    /// The edited copy is kept; the backup goes unless it is the last copy of the
    /// guest's original (`keep_backup`).
    pub fn keep(&self, keep_backup: bool) {
        if keep_backup {
            return;
        }
        let _ = fs::remove_file(&self.backup);
        if self.user_file {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// A new file only its owner may read or write (0600), created exclusively and never
/// through a symbolic link.
pub fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// The user's own file, which they agreed to overwrite: truncated in place, never
/// through a symbolic link (one planted after the question fails here).
pub fn overwrite_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}
