//! `serve`: logging, signals, the connection opener — then the exporter of
//! [`crate::serve`] until SIGTERM or SIGINT.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::{probe_settings, resolve};
use crate::cli::{GlobalArgs, LogFormat, ServeArgs};
use crate::config::Settings;
use crate::exit::{self, Failure};
use crate::fleet::{widest, Target};
use crate::hypervisor::{self, Access, Hypervisor};
use crate::probe::{ProbeManager, ProbeSettings};
use crate::render::text::sanitize;
use crate::serve::http::{Endpoint, Limits, LIMITS};
use crate::serve::{self, parse_listen, web_config, Opener, ServeOptions, SharedCache};

/// The longest interval and staleness threshold, a day: beyond that a scrape target is
/// not being monitored.
const MAX_SECS: u64 = 86_400;

pub fn run(global: &GlobalArgs, args: &ServeArgs) -> Result<u8, Failure> {
    init_logging(args.log_format);
    if !(1..=MAX_SECS).contains(&args.interval) {
        return Err(Failure::usage(format!(
            "--interval must be between 1 and {MAX_SECS} seconds, got {}",
            args.interval
        )));
    }
    if let Some(s) = args.stale_after {
        if !(1..=MAX_SECS).contains(&s) {
            return Err(Failure::usage(format!(
                "--stale-after must be between 1 and {MAX_SECS} seconds, got {s}"
            )));
        }
    }
    let settings = resolve(global)?;
    let listen = parse_listen(&args.listen).map_err(Failure::usage)?;
    let web = match args
        .web_config_file
        .as_ref()
        .or(settings.web_config_file.as_ref())
    {
        Some(path) => web_config::load(path).map_err(Failure::usage)?,
        None => web_config::WebConfig::default(),
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
            .map_err(|e| Failure::usage(format!("cannot install signal handlers: {e}")))?;
    }

    let backend = settings.backend;
    let uri = settings.uri.clone();
    let access = if args.read_only {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let open = move |backend, uri: Option<String>, connect_timeout| -> Opener {
        Arc::new(move || {
            hypervisor::open_within(backend, uri.as_deref(), access, connect_timeout)
                .map(Arc::<dyn Hypervisor>::from)
        })
    };
    let opener = open(backend, uri, settings.connect_timeout);
    let interval = Duration::from_secs(args.interval);
    // Serve's options over a host's settings: its probe timeout and TTLs.
    let options_for = |s: &Settings, cache: Option<SharedCache>| -> Result<ServeOptions, Failure> {
        Ok(ServeOptions {
            interval,
            stale_after: args
                .stale_after
                .map(Duration::from_secs)
                .unwrap_or_else(|| ServeOptions::default_stale_after(interval, s.scan_deadline)),
            probes: ProbeSettings {
                ask_agents: !args.read_only,
                ..crate::app::collecting(probe_settings(s, false), s, args)?
            },
            cache,
        })
    };
    // Every host of the config file is a `/probe?target=NAME` target, scanned with its
    // own backend, connect timeout, probe timeout and TTLs; every scan loop then shares
    // one OS cache, saved with the widest TTLs.
    let configured: Vec<Target> = settings
        .hosts
        .iter()
        .map(|(name, h)| Target::configured(name, h, &settings))
        .collect();
    let cache = (!configured.is_empty()).then(|| {
        let saving = probe_settings(&widest(&settings, &configured), false);
        SharedCache {
            cache: Arc::new(Mutex::new(ProbeManager::load_cache(&saving))),
            saving,
        }
    });
    let mut targets = Vec::with_capacity(configured.len());
    for t in configured {
        let own = t.settings(&settings);
        targets.push(serve::Target {
            name: t.name.clone(),
            opener: open(t.backend, Some(t.uri), own.connect_timeout),
            options: options_for(&own, cache.clone())?,
        });
    }
    let target_names: Vec<String> = targets.iter().map(|t| sanitize(&t.name)).collect();
    let options = options_for(&settings, cache)?;
    let auth = web.auth.is_some();
    let web_file = web
        .path
        .as_ref()
        .map(|p| sanitize(&p.display().to_string()));
    let endpoint = Endpoint {
        listen,
        web,
        limits: Limits {
            max_connections: args.max_connections.map(|n| n as usize),
            ..LIMITS
        },
    };
    let running =
        serve::start_with(options, opener, targets, endpoint, stop).map_err(Failure::usage)?;
    if !target_names.is_empty() {
        tracing::info!(
            targets = %target_names.join(","),
            "/probe?target=NAME serves {} host(s) of the config file: {}",
            target_names.len(),
            target_names.join(", ")
        );
    }
    let uri = sanitize(settings.uri.as_deref().unwrap_or("libvirt's default URI"));
    let scheme = if running.tls { "https" } else { "http" };
    let security = match (running.tls, auth) {
        (true, true) => "TLS and basic auth",
        (true, false) => "TLS, no auth",
        (false, true) => "basic auth without TLS",
        (false, false) => "no TLS, no auth",
    };
    let web_file = web_file.unwrap_or_else(|| "none".into());
    if running.addr.ip().is_loopback() {
        tracing::info!(
            addr = %running.addr,
            interval_s = args.interval,
            max_connections = running.max_connections,
            web_config = %web_file,
            "listening on {scheme}://{}/metrics ({security}; scanning {uri})",
            running.addr
        );
    } else if !auth {
        tracing::warn!(
            addr = %running.addr,
            interval_s = args.interval,
            max_connections = running.max_connections,
            web_config = %web_file,
            "listening on {scheme}://{}/metrics beyond loopback without basic auth: anyone who reaches this address sees VM names and guest OSes (scanning {uri})",
            running.addr
        );
    } else if !running.tls {
        tracing::warn!(
            addr = %running.addr,
            interval_s = args.interval,
            max_connections = running.max_connections,
            web_config = %web_file,
            "listening on {scheme}://{}/metrics beyond loopback with basic auth but without TLS: passwords cross the network in clear text (scanning {uri})",
            running.addr
        );
    } else {
        tracing::info!(
            addr = %running.addr,
            interval_s = args.interval,
            max_connections = running.max_connections,
            web_config = %web_file,
            "listening on {scheme}://{}/metrics ({security}; scanning {uri})",
            running.addr
        );
    }
    running.wait();
    tracing::info!("stopped");
    Ok(exit::OK)
}

fn init_logging(format: LogFormat) {
    let level = std::env::var("DISMOUNT_ISO_QEMU_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
