//! `/healthz` as a pure function of a few instants, so every case (fresh, stale, never,
//! libvirt down, stuck) is tested without a clock or a hypervisor.

use std::time::{Duration, Instant};

/// What the scan loop tells the health check.
#[derive(Debug, Clone, Default)]
pub struct HealthInputs {
    /// When the last successful scan finished.
    pub last_success: Option<Instant>,
    /// Why the most recent scan attempt failed; cleared by a successful one.
    pub last_failure: Option<String>,
    /// When the scan now running started; `None` between scans.
    pub scan_started: Option<Instant>,
}

/// How old the last good scan may be before the exporter calls itself unhealthy: three
/// intervals, but never less than one interval plus a scan that waits out the probe
/// deadline twice (a frozen agent can hold a scan that long).
pub fn stale_after(interval: Duration, probe_timeout: Duration) -> Duration {
    (interval * 3).max(interval + probe_timeout * 2)
}

/// `Ok` when healthy, else the one-line reason `/healthz` answers with its 503: the
/// name of the check that failed. libvirt's own error text (socket paths, host names)
/// goes to the exporter's log, not to whoever can reach `/healthz`.
pub fn check(h: &HealthInputs, now: Instant, stale_after: Duration) -> Result<(), String> {
    if h.last_failure.is_some() {
        return Err(
            "libvirt down: the last scan could not reach libvirt (the exporter's log says why)"
                .to_string(),
        );
    }
    if let Some(started) = h.scan_started {
        let running = now.saturating_duration_since(started);
        if running > stale_after {
            return Err(format!(
                "scan stuck: running for {}s",
                running.as_secs_f64().round()
            ));
        }
    }
    match h.last_success {
        None => Err("no scan yet".to_string()),
        Some(t) => {
            let age = now.saturating_duration_since(t);
            if age > stale_after {
                Err(format!(
                    "scan stale: last successful scan {}s ago",
                    age.as_secs_f64().round()
                ))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(90);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn never_scanned_is_unhealthy() {
        let t0 = Instant::now();
        let h = HealthInputs::default();
        assert_eq!(check(&h, t0, STALE).unwrap_err(), "no scan yet");
        let h = HealthInputs {
            scan_started: Some(t0),
            ..HealthInputs::default()
        };
        assert_eq!(check(&h, at(t0, 5), STALE).unwrap_err(), "no scan yet");
    }

    #[test]
    fn fresh_scan_is_healthy_until_stale() {
        let t0 = Instant::now();
        let h = HealthInputs {
            last_success: Some(t0),
            ..HealthInputs::default()
        };
        assert!(check(&h, at(t0, 1), STALE).is_ok());
        assert!(check(&h, at(t0, 90), STALE).is_ok());
        let e = check(&h, at(t0, 91), STALE).unwrap_err();
        assert_eq!(e, "scan stale: last successful scan 91s ago");
    }

    #[test]
    fn libvirt_down_wins_and_is_one_line() {
        let t0 = Instant::now();
        let h = HealthInputs {
            last_success: Some(t0),
            last_failure: Some("cannot reach libvirt\nat qemu:///system\x1b[2J".into()),
            scan_started: None,
        };
        let e = check(&h, at(t0, 1), STALE).unwrap_err();
        assert_eq!(
            e,
            "libvirt down: the last scan could not reach libvirt (the exporter's log says why)"
        );
        assert!(!e.contains("qemu:///system"), "no detail of libvirt's: {e}");
    }

    #[test]
    fn a_scan_running_too_long_is_stuck() {
        let t0 = Instant::now();
        let h = HealthInputs {
            last_success: Some(t0),
            last_failure: None,
            scan_started: Some(at(t0, 10)),
        };
        assert!(check(&h, at(t0, 60), STALE).is_ok());
        assert_eq!(
            check(&h, at(t0, 101), STALE).unwrap_err(),
            "scan stuck: running for 91s"
        );
    }

    #[test]
    fn staleness_allows_for_a_slow_probe() {
        let s = Duration::from_secs;
        assert_eq!(stale_after(s(30), s(5)), s(90));
        assert_eq!(stale_after(s(2), s(5)), s(12));
    }
}
