//! A proxy in front of the harness's libvirtd that makes libvirt "go away" at a chosen
//! byte of the conversation.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::harness_socket;

/// A proxy in front of the harness daemon that cuts every connection, and refuses new
/// ones, once the daemon has sent `budget` bytes through it: libvirt "goes away" at a
/// chosen point of the conversation, the same point on every run.
pub struct CutProxy {
    pub path: PathBuf,
    pub served: Arc<AtomicU64>,
}

impl CutProxy {
    pub fn start(dir: &Path, budget: u64) -> CutProxy {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!("proxy-{}.sock", N.fetch_add(1, Ordering::SeqCst)));
        let listener = UnixListener::bind(&path).unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let total = served.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if total.load(Ordering::SeqCst) >= budget {
                    continue; // dropped: the daemon is gone
                }
                let Ok(server) = UnixStream::connect(harness_socket()) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut &c2, &mut &s2);
                    let _ = s2.shutdown(Shutdown::Write);
                });
                let total = total.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match (&server).read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let before = total.fetch_add(n as u64, Ordering::SeqCst);
                        let keep = budget.saturating_sub(before).min(n as u64) as usize;
                        if (&client).write_all(&buf[..keep]).is_err() || keep < n {
                            break;
                        }
                    }
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                });
            }
        });
        CutProxy { path, served }
    }

    /// Bytes the daemon has sent through it so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    pub fn uri(&self) -> String {
        format!("qemu+unix:///session?socket={}", self.path.display())
    }
}
