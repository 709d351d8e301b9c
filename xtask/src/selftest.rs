//! `selftest`: check, against the live guests, every promise `up` makes — what each agent
//! answers, what is disabled, the states, the discs readable inside the guests — through
//! the tool's own agent client. Ends with "N passed, N failed".

use std::time::{Duration, Instant};

use dismount_iso_qemu::agent::Agent;
use dismount_iso_qemu::domxml::{self, MediaSource};
use dismount_iso_qemu::hypervisor::{ChangeScope, DomainState, HvError, XmlScope};

use crate::guests::{HARNESS_ISO, HELLO_TEXT, HOSTILE, SECOND_ISO, SECOND_TEXT};
use crate::hostile;
use crate::lifecycle::state;
use crate::up::{ping, Ping};
use crate::Harness;

type Check<'h> = Box<dyn Fn() -> Result<(), String> + 'h>;

fn agent<'h>(h: &'h Harness, vm: &'h str, secs: u64) -> Agent<'h> {
    Agent::new(h.hv.as_ref(), vm, Duration::from_secs(secs))
}

fn osinfo_says<'h>(h: &'h Harness, vm: &'h str, pretty: &'h str) -> Check<'h> {
    Box::new(move || {
        let info = agent(h, vm, 5).osinfo().map_err(|e| e.to_string())?;
        match info.pretty_name.as_deref() {
            Some(p) if p == pretty => Ok(()),
            other => Err(format!("pretty-name {other:?}")),
        }
    })
}

fn osinfo_disabled<'h>(h: &'h Harness, vm: &'h str) -> Check<'h> {
    Box::new(move || match agent(h, vm, 5).osinfo() {
        Err(HvError::AgentCommandDisabled { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
        Ok(_) => Err("it answered".into()),
    })
}

/// Run a program in the guest and wait for it.
fn exec(h: &Harness, vm: &str, path: &str, args: &[&str]) -> Result<(i64, String, String), String> {
    let out = agent(h, vm, 10)
        .exec(path, args, Instant::now() + Duration::from_secs(15))
        .map_err(|e| e.to_string())?;
    Ok((
        out.exit_code.unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn os_release_by_exec<'h>(h: &'h Harness, vm: &'h str, persona: &'h str) -> Check<'h> {
    Box::new(move || {
        let file = h.dir.join("image/personas").join(persona);
        let want =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let (code, out, _) = exec(h, vm, "cat", &["/etc/os-release"])?;
        if code == 0 && out == want {
            Ok(())
        } else {
            Err(format!("exit {code}: {out:?}"))
        }
    })
}

/// The hostile guest's agent is in `want` (read-only: "status" switches nothing).
fn hostile_mode_is<'h>(h: &'h Harness, want: &'h str) -> Check<'h> {
    Box::new(
        move || match hostile::control(&h.dir, HOSTILE, "status", Duration::from_secs(5))? {
            m if m == want => Ok(()),
            m => Err(format!("mode {m}")),
        },
    )
}

fn ping_is<'h>(h: &'h Harness, vm: &'h str, want: Ping) -> Check<'h> {
    Box::new(move || {
        let t = Instant::now();
        let got = ping(h, vm, Duration::from_secs(3));
        if got == want {
            println!("      {vm}: {got:?} after {} ms", t.elapsed().as_millis());
            Ok(())
        } else {
            Err(format!("got {got:?}"))
        }
    })
}

fn state_is<'h>(h: &'h Harness, vm: &'h str, want: DomainState) -> Check<'h> {
    Box::new(move || match state(h.hv.as_ref(), vm) {
        Some(s) if s == want => Ok(()),
        other => Err(format!("state {other:?}")),
    })
}

fn windows_defined<'h>(h: &'h Harness, vm: &'h str) -> Check<'h> {
    Box::new(move || {
        let xml =
            h.hv.domain_xml(vm, XmlScope::Persistent)
                .map_err(|e| e.to_string())?;
        if !xml.contains("http://microsoft.com/win/2k22") {
            return Err("no libosinfo win2k22".into());
        }
        if !xml.contains("<memory unit='KiB'>2097152</memory>") {
            return Err("max memory is not 2 GiB".into());
        }
        Ok(())
    })
}

fn sda(h: &Harness, vm: &str) -> Result<Option<String>, String> {
    let xml =
        h.hv.domain_xml(vm, XmlScope::Current)
            .map_err(|e| e.to_string())?;
    let facts = domxml::parse(&xml)?;
    facts
        .cdroms
        .into_iter()
        .find(|c| c.target == "sda")
        .map(|c| c.source)
        .ok_or_else(|| "no drive sda".to_string())
}

fn drive_holds<'h>(h: &'h Harness, vm: &'h str, want: Option<String>) -> Check<'h> {
    Box::new(move || {
        let have = sda(h, vm)?;
        if have == want {
            Ok(())
        } else {
            Err(format!("sda holds {have:?}"))
        }
    })
}

/// Mount the disc in the guest, read `file`, unmount. Right after a disc goes in the
/// guest's first mount fails (the drive reports the change as an I/O error), so the guest
/// retries for 5 s.
fn disc_readable(h: &Harness, vm: &str, file: &str, text: &str) -> Result<(), String> {
    let script = format!(
        "i=0; until mount -t iso9660 -o ro /dev/sr0 /mnt 2>/dev/null; do i=$((i+1)); \
         [ $i -lt 20 ] || exit 9; sleep 0.25; done; cat /mnt/{file}; rc=$?; umount /mnt; exit $rc"
    );
    let (code, out, err) = exec(h, vm, "/bin/sh", &["-c", &script])?;
    if code == 0 && out == format!("{text}\n") {
        Ok(())
    } else {
        Err(format!("exit {code}: {out:?} {err:?}"))
    }
}

/// Insert the second disc into an empty drive, read it in the guest, eject it again.
fn second_disc_readable<'h>(h: &'h Harness, vm: &'h str) -> Check<'h> {
    Box::new(move || {
        let iso = h.iso(SECOND_ISO).to_string_lossy().into_owned();
        let insert = domxml::cdrom_device_xml("sda", Some("sata"), Some(MediaSource::File(&iso)))?;
        h.hv.update_device(vm, &insert, ChangeScope::LIVE, false)
            .map_err(|e| format!("insert: {e}"))?;
        let read = disc_readable(h, vm, "SECOND.TXT", SECOND_TEXT);
        let empty = domxml::cdrom_device_xml("sda", Some("sata"), None)?;
        let eject = h.hv.update_device(vm, &empty, ChangeScope::LIVE, true);
        read?;
        eject.map_err(|e| format!("eject failed: {e} (run scripts/harness.sh up)"))
    })
}

pub fn run(h: &Harness) -> Result<u8, String> {
    let harness_iso = Some(h.iso(HARNESS_ISO).to_string_lossy().into_owned());
    let checks: Vec<(&str, Check)> = vec![
        (
            "diq-ubuntu: guest-get-osinfo says Ubuntu 18.04.6 LTS",
            osinfo_says(h, "diq-ubuntu", "Ubuntu 18.04.6 LTS"),
        ),
        (
            "diq-centos: guest-get-osinfo says CentOS Stream 10 (Coughlan)",
            osinfo_says(h, "diq-centos", "CentOS Stream 10 (Coughlan)"),
        ),
        (
            "diq-debian: guest-get-osinfo is disabled",
            osinfo_disabled(h, "diq-debian"),
        ),
        (
            "diq-debian: guest-exec cat /etc/os-release gives Debian's",
            os_release_by_exec(h, "diq-debian", "debian"),
        ),
        (
            "diq-noagent: guest-ping fails, agent not connected",
            ping_is(h, "diq-noagent", Ping::NotConnected),
        ),
        (
            "diq-frozen: guest-ping times out",
            ping_is(h, "diq-frozen", Ping::Timeout),
        ),
        (
            "diq-paused: paused",
            state_is(h, "diq-paused", DomainState::Paused),
        ),
        (
            "diq-paused: guest-ping fails, domain not running",
            ping_is(h, "diq-paused", Ping::NotRunning),
        ),
        (
            "diq-win2k22: shut off",
            state_is(h, "diq-win2k22", DomainState::ShutOff),
        ),
        (
            "diq-win2k22: libosinfo win2k22, 2 GiB",
            windows_defined(h, "diq-win2k22"),
        ),
        (
            "diq-ubuntu: sda holds harness.iso",
            drive_holds(h, "diq-ubuntu", harness_iso.clone()),
        ),
        (
            "diq-ubuntu: mount /dev/sr0, read HELLO.TXT, umount",
            Box::new(|| disc_readable(h, "diq-ubuntu", "HELLO.TXT", HELLO_TEXT)),
        ),
        (
            "diq-centos: sda is empty",
            drive_holds(h, "diq-centos", None),
        ),
        (
            "diq-centos: insert the second disc, read SECOND.TXT, eject",
            second_disc_readable(h, "diq-centos"),
        ),
        (
            "diq-centos: sda is empty again",
            drive_holds(h, "diq-centos", None),
        ),
        (
            "diq-hostile: its agent says it is in mode honest",
            hostile_mode_is(h, "honest"),
        ),
        (
            "diq-hostile: guest-get-osinfo says Alpine Linux v3.20",
            osinfo_says(h, HOSTILE, "Alpine Linux v3.20"),
        ),
        (
            "diq-hostile: guest-exec cat /etc/os-release gives Alpine's",
            os_release_by_exec(h, HOSTILE, "alpine"),
        ),
        (
            "diq-hostile: sda holds harness.iso",
            drive_holds(h, HOSTILE, harness_iso),
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (what, check) in checks {
        match check() {
            Ok(()) => {
                println!("ok    {what}");
                passed += 1;
            }
            Err(why) => {
                println!("FAIL  {what} ({why})");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(u8::from(failed > 0))
}
