//! Ctrl-C, SIGTERM and a dropped terminal (SIGHUP) while the tool changes a guest file.
//!
//! While an [`Interrupts`] guard lives, those signals no longer end the process: they are
//! counted, and the work in progress looks at the count between steps. The first one asks
//! the work to stop and put back what it changed; a second one abandons even that (the
//! work then says, and records, where the copies are). When the guard is dropped the
//! signals act as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::SigId;

/// Interrupts received so far, and which one came last.
#[derive(Clone, Default)]
pub struct Cancel {
    count: Arc<AtomicUsize>,
    last: Arc<AtomicUsize>,
    /// Interrupts this token does not see (see [`Cancel::after`]).
    skip: usize,
}

impl Cancel {
    /// A token nothing ever cancels.
    pub fn none() -> Cancel {
        Cancel::default()
    }

    /// How many interrupts arrived (that this token sees).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst).saturating_sub(self.skip)
    }

    /// A token that fires only from the `n+1`-th interrupt this one sees: work that runs
    /// because of an interrupt (a rollback) stops only at the next one.
    pub fn after(&self, n: usize) -> Cancel {
        Cancel {
            skip: self.skip + n,
            ..self.clone()
        }
    }

    /// The name of the last signal (`SIGINT`, `SIGTERM`, `SIGHUP`), when one arrived.
    pub fn signal(&self) -> Option<&'static str> {
        if self.count() == 0 {
            return None;
        }
        match self.last.load(Ordering::SeqCst) {
            0 => None,
            s if s == SIGINT as usize => Some("SIGINT (Ctrl-C)"),
            s if s == SIGTERM as usize => Some("SIGTERM"),
            s if s == SIGHUP as usize => Some("SIGHUP (the terminal went away)"),
            _ => Some("a signal"),
        }
    }

    /// Count an interrupt as if `signal` had arrived (tests).
    pub fn raise(&self, signal: i32) {
        self.last.store(signal as usize, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

/// While alive, SIGINT, SIGTERM and SIGHUP are counted into [`Interrupts::cancel`]
/// instead of ending the process.
pub struct Interrupts {
    cancel: Cancel,
    ids: Vec<SigId>,
}

impl Interrupts {
    /// Take over the three signals; `Err` when the handlers cannot be installed.
    pub fn install() -> std::io::Result<Interrupts> {
        let cancel = Cancel::default();
        let mut ids = Vec::new();
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            let c = cancel.clone();
            // SAFETY: the handler only stores into atomics, which is async-signal-safe.
            let id = unsafe {
                signal_hook::low_level::register(sig, move || {
                    c.last.store(sig as usize, Ordering::SeqCst);
                    c.count.fetch_add(1, Ordering::SeqCst);
                })
            }?;
            ids.push(id);
        }
        Ok(Interrupts { cancel, ids })
    }

    pub fn cancel(&self) -> Cancel {
        self.cancel.clone()
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_counted_while_the_guard_lives() {
        let guard = Interrupts::install().unwrap();
        let c = guard.cancel();
        assert_eq!(c.count(), 0);
        assert_eq!(c.signal(), None);
        signal_hook::low_level::raise(SIGHUP).unwrap();
        assert_eq!(c.count(), 1);
        assert_eq!(c.signal(), Some("SIGHUP (the terminal went away)"));
        let rollback = c.after(1);
        assert_eq!(
            rollback.signal(),
            None,
            "the first interrupt is why the rollback runs"
        );
        c.raise(SIGINT);
        assert_eq!((c.count(), c.signal()), (2, Some("SIGINT (Ctrl-C)")));
        assert_eq!(rollback.signal(), Some("SIGINT (Ctrl-C)"));
        drop(guard);
        assert_eq!(Cancel::none().count(), 0);
    }
}
