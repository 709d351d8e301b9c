//! `status`: every harness domain (the promised ones, and any other `diq-*` a test left),
//! its state, whether that is what `up` promises, and what guest-ping says — pinged all
//! at once, since a frozen agent costs libvirt's 5 s sync timeout.

use std::time::{Duration, Instant};

use dismount_iso_qemu::hypervisor::DomainState;

use crate::guests::{Expect, Guest, GUESTS, PREFIX};
use crate::hostile;
use crate::up::{ping, Ping};
use crate::{msg, Harness};

/// Exit code: 0 all as promised, 1 some domain is not.
pub fn run(h: &Harness) -> Result<u8, String> {
    let domains = h.hv.list_domains().map_err(|e| e.to_string())?;
    let mut names: Vec<String> = GUESTS.iter().map(|g| g.name.to_string()).collect();
    for d in &domains {
        if d.name.starts_with(PREFIX) && !names.contains(&d.name) {
            names.push(d.name.clone());
        }
    }
    let state_of = |n: &str| domains.iter().find(|d| d.name == n).map(|d| d.state);
    let pings: Vec<Option<(Ping, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let running = state_of(n) == Some(DomainState::Running);
                s.spawn(move || {
                    running.then(|| {
                        let t = Instant::now();
                        (ping(h, n, Duration::from_secs(3)), t.elapsed())
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    println!(
        "{:<15} {:<9} {:<8} {:<4} GUEST-PING",
        "DOMAIN", "STATE", "EXPECTED", "OK"
    );
    let mut bad = false;
    for (n, p) in names.iter().zip(pings) {
        let st = state_of(n);
        let mut ping_text = match &p {
            None => "-".to_string(),
            Some((Ping::Ok, t)) => format!("answers ({} ms)", t.as_millis()),
            Some((other, _)) => format!("no: {other:?}"),
        };
        let guest = Guest::find(n);
        if guest.is_some_and(|g| g.is_hostile()) && p.is_some() {
            // What diq-hostile-agent is lying about (`up` leaves it honest).
            ping_text += &match hostile::control(&h.dir, n, "status", Duration::from_secs(3)) {
                Ok(mode) => format!("; mode {mode}"),
                Err(e) => format!("; mode unknown ({e})"),
            };
        }
        let verdict = guest.map(|g| match g.expect {
            Expect::Running if g.agent == "none" => {
                st == Some(DomainState::Running) && matches!(p, Some((Ping::NotConnected, _)))
            }
            Expect::Running => st == Some(DomainState::Running) && matches!(p, Some((Ping::Ok, _))),
            Expect::Frozen => {
                st == Some(DomainState::Running) && matches!(p, Some((Ping::Timeout, _)))
            }
            Expect::Paused => st == Some(DomainState::Paused),
            Expect::Off => st == Some(DomainState::ShutOff),
        });
        bad |= verdict == Some(false);
        println!(
            "{:<15} {:<9} {:<8} {:<4} {ping_text}",
            n,
            st.map(|s| s.as_str().replace(' ', "-"))
                .unwrap_or_else(|| "missing".into()),
            guest.map(|g| g.expect.as_str()).unwrap_or("extra"),
            match verdict {
                None => "-",
                Some(true) => "yes",
                Some(false) => "no",
            },
        );
    }
    if bad {
        msg("status: some domains are not as 'up' leaves them (run: scripts/harness.sh up)");
        return Ok(1);
    }
    Ok(0)
}
