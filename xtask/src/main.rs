//! The test harness's logic, in Rust: `scripts/harness.sh` keeps what shell does well
//! (packages, the kernel, the initramfs, the guest's init, the daemon's start) and calls
//! this for what is program logic — the guests' definitions, bringing them to their
//! promised states and repairing what tests left behind, status and selftest. It talks to
//! the harness's libvirtd through the tool's own port and guest agent client, and to
//! `virsh` (for lifecycle operations the port does not have) with argument vectors.
//!
//! Usage: `xtask harness up|down|status|selftest --dir DIR --uri URI [...]` (the shell
//! script passes the facts it owns).

mod guests;
mod hostile;
mod lifecycle;
mod selftest;
mod status;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dismount_iso_qemu::hypervisor::{self, Backend, Hypervisor};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Project tasks: the test harness's guest logic"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The guests of scripts/harness.sh.
    Harness {
        #[command(subcommand)]
        command: HarnessCommand,
    },
}

#[derive(Subcommand)]
enum HarnessCommand {
    /// Define, start and repair every guest until each is in its promised state.
    Up(UpArgs),
    /// Destroy and undefine every harness guest (names starting with "diq-").
    Down(Common),
    /// Every harness domain, its state and whether its agent answers.
    Status(Common),
    /// Check against the live guests every promise `up` makes.
    Selftest(Common),
}

#[derive(Args, Clone)]
struct Common {
    /// The harness directory (images, ISOs, console logs, state).
    #[arg(long)]
    dir: PathBuf,
    /// The URI of the harness's own libvirtd.
    #[arg(long)]
    uri: String,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    common: Common,
    /// The QEMU binary the guests run on.
    #[arg(long)]
    emulator: PathBuf,
    /// The hash of the image's inputs: a changed image redefines the guests.
    #[arg(long)]
    image_hash: String,
    /// Seconds to wait for the guest agents.
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
}

/// What every task knows about the harness.
pub struct Harness {
    pub dir: PathBuf,
    pub uri: String,
    pub hv: Arc<dyn Hypervisor>,
}

impl Harness {
    fn open(c: &Common) -> Result<Harness, String> {
        let hv = hypervisor::open(Backend::Native, Some(&c.uri))
            .map_err(|e| format!("the harness's libvirtd does not answer: {e}"))?;
        Ok(Harness {
            dir: c.dir.clone(),
            uri: c.uri.clone(),
            hv: Arc::from(hv),
        })
    }

    pub fn iso(&self, name: &str) -> PathBuf {
        self.dir.join("iso").join(name)
    }
}

/// Log a step of the harness on stderr, as the shell part does.
pub fn msg(text: &str) {
    eprintln!("harness: {text}");
}

fn main() -> ExitCode {
    let Task::Harness { command } = Cli::parse().task;
    let common = match &command {
        HarnessCommand::Up(a) => &a.common,
        HarnessCommand::Down(c) | HarnessCommand::Status(c) | HarnessCommand::Selftest(c) => c,
    };
    let h = match Harness::open(common) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &command {
        HarnessCommand::Up(a) => up::run(
            &h,
            &up::Image {
                emulator: a.emulator.clone(),
                hash: a.image_hash.clone(),
            },
            Duration::from_secs(a.boot_timeout),
        )
        .map(|()| 0),
        HarnessCommand::Down(_) => up::down(&h).map(|()| 0),
        HarnessCommand::Status(_) => status::run(&h),
        HarnessCommand::Selftest(_) => selftest::run(&h),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("harness: error: {e}");
            ExitCode::from(1)
        }
    }
}
