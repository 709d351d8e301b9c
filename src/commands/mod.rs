//! The command floor: one module per subcommand group and the menu. Each command takes
//! the [`App`], its arguments and the writer it reports to (`run(app, args, out)`), so
//! every command is testable on a `Vec<u8>`. This is where typed errors of the floors
//! below become the one line and exit code a command ends with ([`Failure`]), and where
//! untrusted text is escaped on its way out.

pub mod completions;
pub mod edit;
pub mod files;
pub mod fleet;
pub mod manpage;
pub mod media;
pub mod menu;
pub mod recovery;
pub mod scan;
pub mod serve;
#[cfg(test)]
mod tests;
pub mod top;

use crate::edit::EditError;
use crate::exit::Failure;
use crate::media::MediaError;
use crate::transfer::FileError;

impl From<MediaError> for Failure {
    fn from(e: MediaError) -> Failure {
        match e {
            MediaError::Hv(hv) => Failure::from(hv),
            other if other.is_bad_input() => Failure::usage(other.to_string()),
            other => Failure::partial(other.to_string()),
        }
    }
}

impl From<FileError> for Failure {
    fn from(e: FileError) -> Failure {
        match e {
            FileError::Output(io) => Failure::from(io),
            FileError::Agent(hv) => Failure::from(hv),
            other => Failure::partial(other.to_string()),
        }
    }
}

impl From<EditError> for Failure {
    fn from(e: EditError) -> Failure {
        match e {
            EditError::File(f) => Failure::from(f),
            EditError::Terminal(io) => Failure::from(io),
            other => Failure {
                code: other.exit_code(),
                message: other.to_string(),
            },
        }
    }
}
