//! The adapter contract: what every hypervisor backend must answer, and how it must fail.
//!
//! Each check is a plain function over `&dyn Hypervisor`, so the same expectations hold
//! for every backend; the macros at the bottom run each check once per entry of
//! [`backends`]. Checks on `test:///default` (libvirt's built-in test driver) always run;
//! checks on the real harness skip when it is down (and fail in CI, see `common`).

mod common;

use std::time::{Duration, Instant};

use dismount_iso_qemu::hypervisor::{
    self, Backend, ChangeScope, DomainState, HvError, Hypervisor, XmlScope,
};
use serde_json::json;

/// libvirt's built-in test driver: one running domain named "test".
const TEST_URI: &str = "test:///default";

/// Every backend the contract is checked against.
fn backends() -> Vec<Backend> {
    vec![Backend::Native, Backend::Virsh]
}

fn open(backend: Backend, uri: &str) -> Box<dyn Hypervisor> {
    hypervisor::open(backend, Some(uri))
        .unwrap_or_else(|e| panic!("{backend:?} backend cannot open {uri}: {e}"))
}

fn agent(
    h: &dyn Hypervisor,
    domain: &str,
    execute: &str,
    timeout: Duration,
) -> Result<serde_json::Value, HvError> {
    h.agent_command(domain, &json!({ "execute": execute }), timeout)
}

// ---------------------------------------------------------------------------------------
// Checks on the test driver.

fn lists_the_test_domain_with_its_numbers(h: &dyn Hypervisor) {
    let domains = h.list_domains().expect("list_domains");
    let test = domains
        .iter()
        .find(|d| d.name == "test")
        .expect("the test driver's domain \"test\" is listed");
    assert_eq!(test.state, DomainState::Running);
    assert!(test.persistent);
    assert_eq!(test.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
    assert_eq!(test.vcpus, 2);
    assert_eq!(test.memory_max_kib, 8_388_608);
    assert_eq!(test.memory_used_kib, 2_097_152);
    assert!(test.cpu_time_ns > 0, "a running domain has used CPU time");
}

fn names_its_uri(h: &dyn Hypervisor) {
    assert_eq!(h.uri(), TEST_URI);
}

fn reads_domain_xml_in_both_scopes(h: &dyn Hypervisor) {
    for scope in [XmlScope::Current, XmlScope::Persistent] {
        let xml = h.domain_xml("test", scope).expect("domain_xml");
        assert!(xml.contains("<name>test</name>"), "{scope:?}: {xml}");
    }
    let many = h.domain_xmls(
        &["test".to_string(), "nosuch".to_string()],
        XmlScope::Current,
    );
    assert_eq!(many.len(), 2);
    assert!(many[0]
        .as_ref()
        .is_ok_and(|x| x.contains("<name>test</name>")));
    assert_eq!(many[1], Err(HvError::NoSuchDomain("nosuch".into())));
}

fn unknown_domain_is_no_such_domain(h: &dyn Hypervisor) {
    let missing = "no-such-domain-xyz";
    assert_eq!(
        h.domain_xml(missing, XmlScope::Current),
        Err(HvError::NoSuchDomain(missing.into()))
    );
    assert_eq!(
        agent(h, missing, "guest-ping", Duration::from_secs(1)),
        Err(HvError::NoSuchDomain(missing.into()))
    );
    assert_eq!(
        h.update_device(missing, "<disk/>", ChangeScope::LIVE, false),
        Err(HvError::NoSuchDomain(missing.into()))
    );
}

fn agent_on_test_driver_fails_cleanly(h: &dyn Hypervisor) {
    let started = Instant::now();
    let err = agent(h, "test", "guest-ping", Duration::from_secs(1))
        .expect_err("the test driver has no guest agent");
    assert!(!err.is_connection(), "{err:?}");
    let text = err.to_string();
    assert!(
        !text.contains('\n') && !text.to_lowercase().contains("error: error"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "no agent wait");
}

fn lists_volumes_of_active_pools(h: &dyn Hypervisor) {
    let volumes = h.list_volumes().expect("list_volumes");
    assert!(
        volumes.iter().all(|v| v.pool == "default-pool"),
        "{volumes:?}"
    );
}

fn device_changes_fail_cleanly_where_unsupported(h: &dyn Hypervisor) {
    // The test driver implements neither update nor attach: a clean error, not a panic.
    let cdrom = "<disk type='file' device='cdrom'><target dev='sdb' bus='scsi'/><readonly/></disk>";
    for scope in [ChangeScope::LIVE, ChangeScope::CONFIG, ChangeScope::BOTH] {
        let err = h
            .update_device("test", cdrom, scope, true)
            .expect_err("unsupported");
        assert!(
            !err.is_connection() && !err.to_string().contains('\n'),
            "{err:?}"
        );
        let err = h
            .attach_device("test", cdrom, scope)
            .expect_err("unsupported");
        assert!(
            !err.is_connection() && !err.to_string().contains('\n'),
            "{err:?}"
        );
    }
    let nothing = ChangeScope {
        live: false,
        config: false,
    };
    assert!(h.update_device("test", cdrom, nothing, false).is_err());
}

fn serves_many_threads_on_one_connection(h: &dyn Hypervisor) {
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert!(h.list_domains().unwrap().iter().any(|d| d.name == "test"));
                    assert!(h.domain_xml("test", XmlScope::Current).is_ok());
                }
            });
        }
    });
}

// Opening fails: these take the backend, not a connection.

fn bad_uri_is_bad_uri(backend: Backend) {
    // Only a daemon can say a driver does not exist (without one the client reports the
    // missing socket), so ask the harness's.
    if !common::harness_available() {
        return;
    }
    let uri = format!("nosuchdriver+unix:///x?socket={}", common::harness_socket());
    let err = hypervisor::open(backend, Some(&uri))
        .err()
        .expect("must fail");
    assert!(matches!(err, HvError::BadUri { .. }), "{err:?}");
    assert!(err.is_connection());
}

fn missing_socket_is_unreachable(backend: Backend) {
    let uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
    let err = hypervisor::open(backend, Some(uri))
        .err()
        .expect("must fail");
    assert!(matches!(err, HvError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains('\n') && !text.contains("error: "), "{text}");
}

// ---------------------------------------------------------------------------------------
// Checks on the real harness (its own libvirtd with the diq-* guests).

fn harness_domains_have_their_states(h: &dyn Hypervisor) {
    let domains = h.list_domains().expect("list_domains");
    let state = |name: &str| {
        domains
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} is listed"))
            .state
    };
    for running in [
        common::UBUNTU,
        common::CENTOS,
        common::DEBIAN_EXEC,
        common::NO_AGENT,
        common::FROZEN,
    ] {
        assert_eq!(state(running), DomainState::Running, "{running}");
    }
    assert_eq!(state(common::PAUSED), DomainState::Paused);
    assert_eq!(state(common::WIN_OFF), DomainState::ShutOff);
    for d in domains.iter().filter(|d| d.name.starts_with("diq-")) {
        assert_eq!(d.uuid.len(), 36, "{d:?}");
        assert!(d.vcpus >= 1 && d.memory_max_kib > 0, "{d:?}");
        if d.state == DomainState::Running {
            assert!(d.cpu_time_ns > 0 && d.memory_used_kib > 0, "{d:?}");
        }
    }
}

fn shut_off_windows_is_persistent(h: &dyn Hypervisor) {
    let domains = h.list_domains().expect("list_domains");
    let win = domains
        .iter()
        .find(|d| d.name == common::WIN_OFF)
        .expect("listed");
    assert!(!win.state.is_active());
    assert!(win.persistent);
    let xml = h
        .domain_xml(common::WIN_OFF, XmlScope::Persistent)
        .expect("domain_xml");
    assert!(xml.contains("libosinfo:os"), "{xml}");
    assert!(xml.contains("win/2k22"), "{xml}");
}

fn live_xml_shows_the_cdrom(h: &dyn Hypervisor) {
    let xml = h
        .domain_xml(common::UBUNTU, XmlScope::Current)
        .expect("domain_xml");
    let doc = roxmltree::Document::parse(&xml).expect("domain XML parses");
    let cdrom = doc
        .descendants()
        .find(|n| n.has_tag_name("disk") && n.attribute("device") == Some("cdrom"))
        .expect("a CD-ROM drive");
    let target = cdrom
        .children()
        .find(|n| n.has_tag_name("target"))
        .expect("target");
    assert_eq!(target.attribute("dev"), Some("sda"));
    let source = cdrom
        .children()
        .find(|n| n.has_tag_name("source"))
        .expect("an ISO inserted");
    assert!(
        source
            .attribute("file")
            .is_some_and(|f| f.ends_with(".iso")),
        "{xml}"
    );
}

fn lists_volumes_without_error(h: &dyn Hypervisor) {
    let volumes = h.list_volumes().expect("list_volumes");
    assert!(
        volumes
            .iter()
            .all(|v| !v.pool.is_empty() && !v.path.is_empty()),
        "{volumes:?}"
    );
}

fn agent_reports_ubuntu(h: &dyn Hypervisor) {
    let info = agent(
        h,
        common::UBUNTU,
        "guest-get-osinfo",
        Duration::from_secs(10),
    )
    .expect("osinfo");
    assert_eq!(info["pretty-name"], "Ubuntu 18.04.6 LTS", "{info}");
    assert_eq!(
        agent(h, common::UBUNTU, "guest-ping", Duration::from_secs(5)),
        Ok(json!({}))
    );
}

fn missing_agent_is_not_connected_at_once(h: &dyn Hypervisor) {
    let started = Instant::now();
    let err = agent(h, common::NO_AGENT, "guest-ping", Duration::from_secs(5));
    assert_eq!(
        err,
        Err(HvError::AgentNotConnected(common::NO_AGENT.into()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

fn blocked_command_is_disabled(h: &dyn Hypervisor) {
    let err = agent(
        h,
        common::DEBIAN_EXEC,
        "guest-get-osinfo",
        Duration::from_secs(10),
    );
    assert!(
        matches!(&err, Err(HvError::AgentCommandDisabled { command, .. }) if command == "guest-get-osinfo"),
        "{err:?}"
    );
}

fn paused_guest_gets_no_agent_wait(h: &dyn Hypervisor) {
    let started = Instant::now();
    let err = agent(h, common::PAUSED, "guest-ping", Duration::from_secs(5)).expect_err("paused");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            HvError::DomainNotRunning(_) | HvError::AgentNotConnected(_)
        ),
        "{err:?}"
    );
}

fn frozen_agent_times_out(h: &dyn Hypervisor) {
    let started = Instant::now();
    let err = agent(h, common::FROZEN, "guest-ping", Duration::from_secs(2));
    assert_eq!(err, Err(HvError::AgentTimeout(common::FROZEN.into())));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Instantiation: one #[test] per check, each run against every backend.

macro_rules! on_test_driver {
    ($($check:ident),* $(,)?) => {
        mod test_driver {
            $(
                #[test]
                fn $check() {
                    for backend in super::backends() {
                        eprintln!("backend: {backend:?}");
                        let h = super::open(backend, super::TEST_URI);
                        super::$check(h.as_ref());
                    }
                }
            )*
        }
    };
}

macro_rules! on_open {
    ($($check:ident),* $(,)?) => {
        mod opening {
            $(
                #[test]
                fn $check() {
                    for backend in super::backends() {
                        eprintln!("backend: {backend:?}");
                        super::$check(backend);
                    }
                }
            )*
        }
    };
}

macro_rules! on_harness {
    ($($check:ident),* $(,)?) => {
        mod harness {
            $(
                #[test]
                fn $check() {
                    if !super::common::harness_available() {
                        return;
                    }
                    for backend in super::backends() {
                        eprintln!("backend: {backend:?}");
                        let h = super::open(backend, super::common::harness_uri());
                        super::$check(h.as_ref());
                    }
                }
            )*
        }
    };
}

on_test_driver!(
    lists_the_test_domain_with_its_numbers,
    names_its_uri,
    reads_domain_xml_in_both_scopes,
    unknown_domain_is_no_such_domain,
    agent_on_test_driver_fails_cleanly,
    lists_volumes_of_active_pools,
    device_changes_fail_cleanly_where_unsupported,
    serves_many_threads_on_one_connection,
);

on_open!(bad_uri_is_bad_uri, missing_socket_is_unreachable);

on_harness!(
    harness_domains_have_their_states,
    shut_off_windows_is_persistent,
    live_xml_shows_the_cdrom,
    lists_volumes_without_error,
    agent_reports_ubuntu,
    missing_agent_is_not_connected_at_once,
    blocked_command_is_disabled,
    paused_guest_gets_no_agent_wait,
    frozen_agent_times_out,
);
