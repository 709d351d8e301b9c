//! The ground floor: exit codes scripts can rely on, and the one-line failure that ends a
//! command. Every command returns `Result<u8, Failure>`; `main` prints the message once
//! (made terminal-safe there) and exits with the code.

use std::io;

/// Everything worked.
pub const OK: u8 = 0;
/// The command ran, but some targets failed.
pub const PARTIAL: u8 = 1;
/// Usage or connection error, or an unknown VM: nothing was done.
pub const USAGE: u8 = 2;

/// A failure that ends the command: one line for the user, and its exit code. The
/// message is plain text, possibly holding guest- or host-supplied strings: whoever
/// prints it escapes it.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Bad input: nothing was done (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }

    /// The command ran but did not get everything done (exit 1).
    pub fn partial(message: impl Into<String>) -> Failure {
        Failure {
            code: PARTIAL,
            message: message.into(),
        }
    }

    /// Nothing more to say and nothing failed (a closed pipe).
    pub fn silent_ok() -> Failure {
        Failure {
            code: OK,
            message: String::new(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away (`| head`): nothing left to say, and not a failure.
            return Failure::silent_ok();
        }
        Failure::partial(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_no_failure() {
        let pipe = io::Error::new(io::ErrorKind::BrokenPipe, "gone");
        let f = Failure::from(pipe);
        assert_eq!((f.code, f.message.as_str()), (OK, ""));
    }
}
