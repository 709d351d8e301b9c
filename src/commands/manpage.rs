//! `manpage`: the manual pages, generated from the clap definitions (clap_mangen), so
//! they say what `--help` says. Without `--dir` the main page goes to stdout
//! (`dismount_iso_qemu manpage | man -l -`); with it, `dismount_iso_qemu.1` and one page
//! per command (`dismount_iso_qemu-scan.1`, …) are written into that folder — what the
//! Debian package installs (scripts/deb.sh).

use std::fs;
use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, ManpageArgs};
use crate::exit::{Failure, OK};

const NAME: &str = "dismount_iso_qemu";

pub fn run(args: &ManpageArgs, out: &mut dyn Write) -> Result<u8, Failure> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = &args.dir else {
        write_page(&cmd, &[("virsh", "1"), ("libvirtd", "8")], out)?;
        return Ok(OK);
    };
    fs::create_dir_all(dir).map_err(|e| failure(dir, e))?;
    let mut written = vec![page(dir, &cmd, &[("virsh", "1"), ("libvirtd", "8")])?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(page(dir, sub, &[(NAME, "1")])?);
    }
    for name in written {
        writeln!(out, "{}", dir.join(name).display())?;
    }
    Ok(OK)
}

/// Writes one command's page into `dir`; returns its file name.
fn page(dir: &Path, cmd: &clap::Command, see_also: &[(&str, &str)]) -> Result<String, Failure> {
    let name = format!("{}.1", cmd.get_display_name().unwrap_or(cmd.get_name()));
    let path = dir.join(&name);
    let mut text = Vec::new();
    write_page(cmd, see_also, &mut text)?;
    fs::write(&path, text).map_err(|e| failure(&path, e))?;
    Ok(name)
}

/// One page: clap_mangen's sections, the package version as its source (not the long
/// `--version` text), and a SEE ALSO section.
fn write_page(
    cmd: &clap::Command,
    see_also: &[(&str, &str)],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    Man::new(cmd.clone())
        .source(format!("{NAME} {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands")
        .render(out)?;
    let mut roff = Roff::default();
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, (page, section)) in see_also.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(*page));
        line.push(roman(format!("({section})")));
    }
    roff.text(line);
    // to_roff: without the preamble, which the page above already has.
    out.write_all(roff.to_roff().as_bytes())
}

fn failure(path: &Path, e: std::io::Error) -> Failure {
    Failure::partial(format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_page_is_roff_with_every_command() {
        let mut out = Vec::new();
        run(&ManpageArgs { dir: None }, &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page:.200}");
        assert!(page.contains(".TH dismount_iso_qemu 1"), "{page:.400}");
        for sub in ["scan", "eject", "serve", "completions", "manpage"] {
            assert!(
                page.contains(&format!("dismount_iso_qemu\\-{sub}(1)")),
                "{sub}"
            );
        }
        assert!(page.contains(".SH \"SEE ALSO\""));
    }

    #[test]
    fn a_folder_gets_one_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        run(
            &ManpageArgs {
                dir: Some(dir.path().to_path_buf()),
            },
            &mut out,
        )
        .unwrap();
        let listed = String::from_utf8(out).unwrap();
        for name in [
            "dismount_iso_qemu.1",
            "dismount_iso_qemu-scan.1",
            "dismount_iso_qemu-serve.1",
        ] {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.contains(".TH"), "{name}");
            assert!(listed.contains(name), "{listed}");
        }
        let scan = fs::read_to_string(dir.path().join("dismount_iso_qemu-scan.1")).unwrap();
        assert!(scan.contains("\\-\\-json"), "{scan}");
        assert!(scan.contains("\\fBdismount_iso_qemu\\fR(1)"), "{scan}");
    }
}
