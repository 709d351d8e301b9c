//! Command-line definitions (clap): what the user can type. The commands in
//! [`crate::commands`] act on them; [`crate::run`] dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{FileConfig, Overrides};
use crate::hypervisor::Backend;

const AFTER_HELP: &str = "\
Without a command, the interactive menu starts.

Configuration: flags beat environment (LIBVIRT_URI, then LIBVIRT_DEFAULT_URI) beat the
config file ($XDG_CONFIG_HOME/dismount_iso_qemu/config.toml: uri, backend, probe_timeout,
agent_timeout, connect_timeout, cache_ttl, definition_ttl, stats_ttl, jobs, max_size,
transfer_timeout, min_rate, web_config_file, collect, hosts) beat defaults; a
[hosts.NAME] table's own backend, timeouts and TTLs beat all of them for that host.
OS answers, shut-off VMs' XML facts and (with --stats-ttl) each host's VM list are cached
in $XDG_CACHE_HOME/dismount_iso_qemu/os-cache.json (scan --no-cache ignores the
OS answers, --definition-ttl 0 the XML facts). The editor is
$VISUAL, else $EDITOR, else nano (vi when nano is missing).

Changes (mount, eject, uploads) are logged to the system log. An upload that could not be
undone leaves a recovery record in $XDG_STATE_HOME/dismount_iso_qemu/recovery, reported
by every run until `dismount_iso_qemu recovery --done ID`.

Exit codes: 0 ok; 1 the command ran but some targets failed; 2 usage or connection error.";

/// Scan libvirt/QEMU VMs (guest OS, memory, CPU time, mounted ISOs), mount and dismount
/// ISO images, and edit files inside running guests.
#[derive(Debug, Parser)]
#[command(name = "dismount_iso_qemu", version = env!("DIQ_VERSION"), after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// libvirt connection URI, e.g. qemu:///system or qemu+ssh://root@host/system; give
    /// it again for more hosts (scan, isos, eject --iso/--all, the menu and top then cover
    /// them all, with a HOST column)
    /// [default: LIBVIRT_DEFAULT_URI, then the config file, then libvirt's default]
    #[arg(
        short = 'c',
        long = "connect",
        value_name = "URI",
        env = "LIBVIRT_URI",
        global = true,
        action = clap::ArgAction::Append
    )]
    pub connect: Vec<String>,

    /// Hosts named in the config file ([hosts.NAME] with a uri), comma-separated
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', global = true)]
    pub hosts: Vec<String>,

    /// Every host named in the config file
    #[arg(long, global = true)]
    pub all_hosts: bool,

    /// The host (a name of the config file's) of a command about one VM, instead of
    /// writing HOST:VM; for other commands the same as --hosts NAME
    #[arg(long, value_name = "NAME", global = true)]
    pub host: Option<String>,

    /// How to talk to libvirt: the native C API (no process per VM) or the virsh command
    /// [default: native; virsh in builds without the `native` feature]
    #[arg(long, value_enum, env = "DISMOUNT_ISO_QEMU_BACKEND", global = true)]
    pub backend: Option<Backend>,

    /// Seconds a scan waits for guest agents before printing without them [default: 5]
    #[arg(
        long,
        value_name = "SECS",
        env = "DISMOUNT_ISO_QEMU_PROBE_TIMEOUT",
        global = true
    )]
    pub probe_timeout: Option<f64>,

    /// Seconds libvirt may wait for one guest agent call of mount, eject, edit, cat, pull
    /// or push before anything is changed, so a frozen agent fails fast [default: 5]
    #[arg(
        long,
        value_name = "SECS",
        env = "DISMOUNT_ISO_QEMU_AGENT_TIMEOUT",
        global = true
    )]
    pub agent_timeout: Option<f64>,

    /// Seconds opening the connection may take; a host that does not answer in time is
    /// one error line, not a hang [default: 10]
    #[arg(
        long,
        value_name = "SECS",
        env = "DISMOUNT_ISO_QEMU_CONNECT_TIMEOUT",
        global = true
    )]
    pub connect_timeout: Option<f64>,

    /// Seconds a guest's OS answer (or its agent's silence) is remembered [default: 60]
    #[arg(
        long,
        value_name = "SECS",
        env = "DISMOUNT_ISO_QEMU_CACHE_TTL",
        global = true
    )]
    pub cache_ttl: Option<u64>,

    /// Seconds the drives, ISOs and metadata read from a shut-off VM's XML are reused
    /// while libvirt's bulk statistics show its drives, memory and vCPUs unchanged (any
    /// change there means a fresh read); 0 reads every XML on every scan [default: 600]
    #[arg(
        long,
        value_name = "SECS",
        env = "DISMOUNT_ISO_QEMU_DEFINITION_TTL",
        global = true
    )]
    pub definition_ttl: Option<u64>,

    /// Seconds `scan` reuses a host's VM list with each VM's state, memory and CPU time
    /// instead of asking libvirt again (a fleet over slow links rescans cheaply; JSON's
    /// `ages` says how old each part is); serve and top are always fresh [default: 0]
    #[arg(
        long,
        value_name = "SECS",
        env = "DISMOUNT_ISO_QEMU_STATS_TTL",
        global = true
    )]
    pub stats_ttl: Option<u64>,

    /// Largest file edit, cat, pull, push and the menu's option 3 move through the guest
    /// agent, e.g. 64M or 1G [default: 64M]
    #[arg(
        long,
        value_name = "SIZE",
        env = "DISMOUNT_ISO_QEMU_MAX_SIZE",
        global = true
    )]
    pub max_size: Option<String>,

    /// Seconds one download or upload through the guest agent may take in all
    /// [default: 600]
    #[arg(
        long,
        value_name = "SECS",
        env = "DISMOUNT_ISO_QEMU_TRANSFER_TIMEOUT",
        global = true
    )]
    pub transfer_timeout: Option<u64>,

    /// Bytes per second a transfer must keep up, over every 30 s (e.g. 32K; 0: no
    /// floor); a guest that stalls or trickles is stopped [default: 32K]
    #[arg(
        long,
        value_name = "RATE",
        env = "DISMOUNT_ISO_QEMU_MIN_RATE",
        global = true
    )]
    pub min_rate: Option<String>,

    /// Guest agents asked in parallel [default: 32]
    #[arg(long, value_name = "N", env = "DISMOUNT_ISO_QEMU_JOBS", global = true)]
    pub jobs: Option<usize>,

    /// Config file to read instead of the default one
    #[arg(
        long,
        value_name = "FILE",
        env = "DISMOUNT_ISO_QEMU_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            values: FileConfig {
                uri: match self.connect.as_slice() {
                    [one] if !one.trim().is_empty() => Some(one.clone()),
                    _ => None,
                },
                backend: self.backend,
                probe_timeout: self.probe_timeout,
                agent_timeout: self.agent_timeout,
                connect_timeout: self.connect_timeout,
                cache_ttl: self.cache_ttl,
                definition_ttl: self.definition_ttl,
                stats_ttl: self.stats_ttl,
                jobs: self.jobs,
                max_size: self.max_size.clone(),
                transfer_timeout: self.transfer_timeout,
                min_rate: self.min_rate.clone(),
                ..FileConfig::default()
            },
            config_file: self.config.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every VM once: name, guest OS, memory used/max, CPU time, state, ISO
    Scan(ScanArgs),
    /// The interactive menu (also what no command does); over every host chosen
    Menu,
    /// Show every VM's CD-ROM drives and the ISO in each
    Isos(IsosArgs),
    /// Insert an ISO image into a VM's CD-ROM drive
    Mount(MountArgs),
    /// Dismount ISOs: unmount inside the guest, then eject at the hypervisor
    Eject(EjectArgs),
    /// Edit a file inside a running VM with $VISUAL/$EDITOR, uploading only real changes
    Edit(EditArgs),
    /// Print a file from inside a running VM to stdout
    Cat(CatArgs),
    /// Copy a file out of a running VM
    Pull(PullArgs),
    /// Copy a local file into a running VM
    Push(PushArgs),
    /// Serve Prometheus metrics and a health check from a background scan
    Serve(ServeArgs),
    /// A live table of every VM: CPU, memory, disk and network rates, agent, ISO; keys to
    /// sort, filter, see details, dismount, mount and edit (`--batch`: CSV or JSON lines)
    Top(TopArgs),
    /// Guest files an interrupted or failed upload may have left damaged (recorded until
    /// dealt with); `--done ID` marks one dealt with
    Recovery(RecoveryArgs),
    /// Print the shell completion script (VM names complete from the connection)
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write every page into a folder
    Manpage(ManpageArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Write dismount_iso_qemu.1 and one page per command (dismount_iso_qemu-scan.1, …)
    /// into this folder instead of printing the main page
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RecoveryArgs {
    /// The record that is dealt with (its file is removed)
    #[arg(long, value_name = "ID")]
    pub done: Option<String>,
}

#[derive(Debug, Args, Default)]
pub struct ScanArgs {
    /// One JSON document instead of the table
    #[arg(long)]
    pub json: bool,
    /// Ignore cached OS answers and ask every guest agent again (--definition-ttl 0 also
    /// reads every VM's XML again)
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct IsosArgs {
    /// One JSON document instead of the table
    #[arg(long)]
    pub json: bool,
    /// Only VMs holding this ISO image
    #[arg(long, value_name = "PATH")]
    pub iso: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// VM name
    pub vm: String,
    /// ISO image: a file path (or a storage pool volume's path)
    pub iso: PathBuf,
    /// CD-ROM drive target (e.g. sda); needed when the VM has several
    #[arg(long, value_name = "TARGET")]
    pub drive: Option<String>,
    /// Change only the running VM, not its saved config
    #[arg(long, conflicts_with = "config_only")]
    pub live_only: bool,
    /// Change only the saved config (takes effect at next boot)
    #[arg(long)]
    pub config_only: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EjectArgs {
    /// VM name (or use --iso / --all)
    #[arg(required_unless_present_any = ["iso", "all"], conflicts_with_all = ["iso", "all"])]
    pub vm: Option<String>,
    /// CD-ROM drive target (e.g. sda); default: every drive of the VM
    #[arg(long, value_name = "TARGET")]
    pub drive: Option<String>,
    /// Eject this ISO from every VM that holds it
    #[arg(long, value_name = "PATH", conflicts_with = "all")]
    pub iso: Option<PathBuf>,
    /// Eject every ISO from every VM on the host
    #[arg(long)]
    pub all: bool,
    /// Force the tray open even when the guest holds it locked
    #[arg(long)]
    pub force: bool,
    /// With --iso or --all: list the discs that would be ejected and change nothing
    #[arg(long, conflicts_with = "vm")]
    pub dry_run: bool,
    /// With --iso or --all over several hosts: do not ask for confirmation (needed
    /// without a terminal)
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// VM name
    pub vm: String,
    /// Path of the file inside the guest (e.g. /etc/hosts or C:\nps.xml)
    pub remote_path: String,
    /// Where to keep the local copy [default: a private temporary directory]
    #[arg(long, value_name = "PATH")]
    pub local: Option<PathBuf>,
    /// Upload without asking (also needed when stdin is not a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Overwrite even if the guest's file changed while you were editing
    #[arg(long)]
    pub force: bool,
    /// Mode of a newly created file, octal [default: 0644]
    #[arg(long, value_name = "OCTAL")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CatArgs {
    /// VM name
    pub vm: String,
    /// Path of the file inside the guest
    pub remote_path: String,
}

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// VM name
    pub vm: String,
    /// Path of the file inside the guest
    pub remote_path: String,
    /// Local file to write
    pub local_path: PathBuf,
    /// Replace LOCAL_PATH if it already exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// VM name
    pub vm: String,
    /// Local file to read
    pub local_path: PathBuf,
    /// Path of the file inside the guest
    pub remote_path: String,
    /// Mode of the guest file if push creates it, octal [default: 0644]
    #[arg(long, value_name = "OCTAL")]
    pub mode: Option<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between samples (0.2 to 3600)
    #[arg(
        short = 'd',
        long = "delay",
        value_name = "SECS",
        default_value_t = 2.0
    )]
    pub delay: f64,
    /// Sort by this column: vm, os, state, cpu, host (HOST%), mem, read, write, rx, tx,
    /// agent, iso, hostname (the HOST column of several hosts) [default: cpu; vm with
    /// --batch]
    #[arg(long, value_name = "FIELD")]
    pub sort: Option<String>,
    /// Show only VMs whose name, OS, state, ISO or host contains this text (any case)
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// No screen: print one record per VM per interval to stdout
    #[arg(long)]
    pub batch: bool,
    /// With --batch: stop after N intervals (of every host) [default: run until
    /// interrupted]
    #[arg(long, value_name = "N", requires = "batch",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
    /// With --batch: the record format
    #[arg(long, value_enum, default_value_t = TopFormat::Csv)]
    pub format: TopFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; anything beyond loopback must be asked for here
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9177")]
    pub listen: String,
    /// Seconds between background scans (1 to 86400)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub interval: u64,
    /// Seconds without a finished scan after which /healthz says the data is stale or
    /// the scan stuck [default: the larger of 3 intervals and one interval plus two
    /// probe timeouts]
    #[arg(long, value_name = "SECS")]
    pub stale_after: Option<u64>,
    /// Log format on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The exporter-toolkit web configuration file (YAML: tls_server_config,
    /// basic_auth_users), as Prometheus's exporters read it [default: the config file's
    /// web_config_file; without either: plain HTTP, no auth]
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Open connections at most; at the cap the longest-idle connection is closed for a
    /// new one [default: 512, or a quarter of the open-files limit when that is less]
    #[arg(long = "web.max-connections", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
    /// Metric families to export, comma-separated: block, interface, balloon, vcpu,
    /// compat (Debian's exporter's names), or all, none [default: the config file's
    /// collect, else all]
    #[arg(long, value_name = "FAMILIES")]
    pub collect: Option<String>,
    /// Open libvirt read-only and ask no guest agent: for sites that will not give an
    /// exporter a read-write connection (root-equivalent). Running guests' OS then comes
    /// from the OS cache and the libosinfo metadata only; agent status shows not-asked
    #[arg(long)]
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn eject_needs_a_target() {
        assert!(Cli::try_parse_from(["x", "eject"]).is_err());
        assert!(Cli::try_parse_from(["x", "eject", "vm", "--all"]).is_err());
        assert!(Cli::try_parse_from(["x", "eject", "--all", "--force"]).is_ok());
        assert!(Cli::try_parse_from(["x", "-c", "test:///default", "scan", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["x", "scan", "--backend", "virsh"]).is_ok());
    }
}
