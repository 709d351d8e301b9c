//! An ISO image, checked before any VM is touched: for a connection to this machine the
//! file itself, for a remote one a storage pool volume with that path.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::MediaError;
use crate::domxml::MediaSource;
use crate::hypervisor::Hypervisor;

/// An ISO image the hypervisor can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoImage {
    /// Absolute path as libvirt will see it.
    pub path: String,
    /// A block device rather than a file.
    pub block: bool,
}

impl IsoImage {
    pub fn source(&self) -> MediaSource<'_> {
        if self.block {
            MediaSource::Block(&self.path)
        } else {
            MediaSource::File(&self.path)
        }
    }
}

/// Whether a libvirt URI names this machine (`qemu:///system`, `qemu+unix:///session`):
/// then the ISO is a local file we can check ourselves.
pub fn uri_is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => rest.starts_with('/') || rest.is_empty(),
        None => true,
    }
}

/// Check that `iso` exists and is readable by the hypervisor.
pub fn resolve_iso(hv: &dyn Hypervisor, iso: &Path) -> Result<IsoImage, MediaError> {
    resolve_iso_on(hv, &hv.uri(), iso)
}

/// [`resolve_iso`] for a connection named `uri` (tests pretend to be remote).
pub fn resolve_iso_on(hv: &dyn Hypervisor, uri: &str, iso: &Path) -> Result<IsoImage, MediaError> {
    if !uri_is_local(uri) {
        let wanted = iso.to_string_lossy();
        let volumes = hv.list_volumes()?;
        return match volumes.iter().find(|v| v.path == wanted) {
            Some(v) => Ok(IsoImage {
                path: v.path.clone(),
                block: false,
            }),
            None => Err(MediaError::NotAPoolVolume {
                uri: uri.to_string(),
                path: wanted.into_owned(),
            }),
        };
    }
    let absolute: PathBuf = std::path::absolute(iso).unwrap_or_else(|_| iso.to_path_buf());
    let shown = absolute.to_string_lossy().into_owned();
    let meta = std::fs::metadata(&absolute).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            MediaError::IsoMissing(shown.clone())
        } else {
            MediaError::IsoUnreadable {
                path: shown.clone(),
                reason: e.to_string(),
            }
        }
    })?;
    if meta.is_dir() {
        return Err(MediaError::IsoIsDirectory(shown));
    }
    std::fs::File::open(&absolute).map_err(|e| MediaError::IsoUnreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let path = absolute
        .to_str()
        .ok_or_else(|| MediaError::IsoNotUtf8(shown.clone()))?;
    Ok(IsoImage {
        path: path.to_string(),
        block: meta.file_type().is_block_device(),
    })
}
