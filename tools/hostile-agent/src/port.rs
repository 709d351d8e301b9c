//! A virtio-serial port of the guest (`/dev/vportNpM`), opened non-blocking.
//!
//! Non-blocking reads tell the three states of the host side apart: data; nothing yet
//! (`EAGAIN`: the host side is connected); end of file (`0`: nothing is connected on the
//! host side — libvirt is not attached to the agent's socket, or no test holds the
//! control socket). Between reads the caller waits in `poll(2)` (a guest under TCG pays
//! dearly for a loop that wakes often). Writes fail with `EAGAIN` while the host side is
//! away or the queue is full, so they are retried until a deadline.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::raw::{c_int, c_short, c_ulong};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `O_NONBLOCK` on Linux (x86_64 and aarch64, the harness's architectures).
const O_NONBLOCK: i32 = 0o4000;
const POLLIN: c_short = 1;
const POLLOUT: c_short = 4;
const POLLHUP: c_short = 0x10;

/// `struct pollfd`.
#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

extern "C" {
    /// libc's poll(2) (std links libc already; this crate takes no other dependency).
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
}

/// What one read found.
pub enum Got {
    Data(usize),
    /// The host side is connected; nothing to read now.
    Idle,
    /// Nothing is connected on the host side.
    HostAway,
}

pub struct Port {
    path: PathBuf,
    file: Option<File>,
}

impl Port {
    pub fn open(path: &Path) -> io::Result<Port> {
        let mut p = Port {
            path: path.to_path_buf(),
            file: None,
        };
        p.reopen()?;
        Ok(p)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close the port (the guest side disconnects: QEMU tells libvirt, which drops its
    /// agent connection and any error it had marked on it).
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Open it again (the guest side connects: libvirt attaches anew). A port can be
    /// open only once; right after a close the kernel may still say busy.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let mut last = None;
        for _ in 0..50 {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(O_NONBLOCK)
                .open(&self.path)
            {
                Ok(f) => {
                    self.file = Some(f);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot open")))
    }

    /// poll(2) on the port for `events`, at most `timeout`; the events that came (0 on
    /// a timeout, or for a closed port after sleeping).
    fn poll(&self, events: c_short, timeout: Duration) -> c_short {
        let Some(f) = self.file.as_ref() else {
            std::thread::sleep(timeout);
            return 0;
        };
        let mut p = PollFd {
            fd: f.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        // SAFETY: one valid pollfd that lives across the call; the descriptor stays open
        // while `self` is borrowed.
        if unsafe { poll(&mut p, 1, ms) } > 0 {
            p.revents
        } else {
            0
        }
    }

    /// Wait until there is something to read, the host side goes away, or `timeout`
    /// passes (whichever is first).
    pub fn wait(&self, timeout: Duration) {
        self.poll(POLLIN, timeout);
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Got> {
        let Some(f) = self.file.as_mut() else {
            return Ok(Got::HostAway);
        };
        loop {
            return match f.read(buf) {
                Ok(0) => Ok(Got::HostAway),
                Ok(n) => Ok(Got::Data(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Got::Idle),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Write all of `data` by `deadline`; `Ok(false)` when the host side went away (or
    /// never took it).
    pub fn write_all(&mut self, mut data: &[u8], deadline: Instant) -> io::Result<bool> {
        while !data.is_empty() {
            // `&File` writes too, so the port stays free for `poll` below.
            let Some(mut f) = self.file.as_ref() else {
                return Ok(false);
            };
            match f.write(data) {
                Ok(0) => {}
                Ok(n) => {
                    data = &data[n..];
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            // The queue is full, or nothing is connected on the host side any more
            // (libvirt let go mid-reply): then the rest of the reply is for nobody.
            if self.poll(POLLOUT, Duration::from_millis(100)) & POLLHUP != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
