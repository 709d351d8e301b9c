//! Shell completion: `completions SHELL` prints the script, and the binary itself answers
//! it (clap_complete's `CompleteEnv`): on Tab the script runs
//! `DISMOUNT_ISO_QEMU_COMPLETE=bash dismount_iso_qemu -- WORDS…` and prints what comes
//! back. So commands and flags complete from the same clap definitions as `--help`, and
//! a VM name — the argument of mount, eject, edit, cat, pull and push — completes from
//! the connection the command line would use (`-c`, `--backend`, `--config`, their
//! variables, the config file).
//!
//! A Tab never hangs: the names are listed on a thread of their own and whatever has not
//! arrived after [`VM_NAMES_DEADLINE`] is given up (no names; the process exits and takes
//! the stuck call with it). Nothing is printed to stderr while completing, and names
//! holding control characters are left out, never sent to the terminal.
//!
//! The scripts call the command by name (`dismount_iso_qemu`, found through `PATH`), so
//! the files the Debian package installs work for any install location.

use std::ffi::OsString;
use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_complete::CompleteEnv;

use crate::app;
use crate::cli::{Cli, CompletionShell, CompletionsArgs, GlobalArgs};
use crate::exit::{Failure, OK};
use crate::hypervisor::{self, virsh::VirshHypervisor, Backend, Hypervisor};

/// The command the scripts complete and call.
pub const NAME: &str = "dismount_iso_qemu";
/// The variable the scripts set when they ask the binary for candidates.
pub const VAR: &str = "DISMOUNT_ISO_QEMU_COMPLETE";
/// How long one Tab may wait for the connection's VM names.
pub const VM_NAMES_DEADLINE: Duration = Duration::from_secs(2);
/// Each virsh process's limit under the virsh backend: two fit in the deadline.
const VIRSH_LIMIT: Duration = Duration::from_millis(900);

/// Call first in `main`: when a completion script asked (`VAR` is set), print the
/// candidates and exit; otherwise return at once.
pub fn complete_if_asked() {
    CompleteEnv::with_factory(command)
        .var(VAR)
        .bin(NAME)
        .completer(NAME)
        .complete();
}

/// `completions SHELL`: the script for that shell.
pub fn print(args: &CompletionsArgs, out: &mut dyn Write) -> Result<u8, Failure> {
    out.write_all(&script(args.shell)?)?;
    Ok(OK)
}

/// The completion script of one shell.
pub fn script(shell: CompletionShell) -> std::io::Result<Vec<u8>> {
    let completer: &dyn EnvCompleter = match shell {
        CompletionShell::Bash => &Bash,
        CompletionShell::Zsh => &Zsh,
        CompletionShell::Fish => &Fish,
    };
    let mut buf = Vec::new();
    completer.write_registration(VAR, NAME, NAME, NAME, &mut buf)?;
    match shell {
        CompletionShell::Bash => buf = bash_whole_words(buf),
        CompletionShell::Zsh => buf = zsh_autoloadable(buf),
        CompletionShell::Fish => {}
    }
    Ok(buf)
}

/// bash splits the words it hands a completion function at `:` and `=`, so
/// `-c qemu+unix:///session?socket=/run/x` reaches it as five words and the VM names
/// would come from connection "qemu". With bash-completion loaded (always, for the
/// installed file) the script asks it for the words as typed, and takes off the
/// candidates what bash will not replace (the part of the word before its last `:` or
/// `=`); without it, clap_complete's own way stays.
fn bash_whole_words(script: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&script).into_owned();
    let words = r#"    local words=("${COMP_WORDS[@]}")
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        words[COMP_CWORD]="$2"
    fi
"#;
    let reply_done = "    if [[ $? != 0 ]]; then
        unset COMPREPLY
";
    if !text.contains(words) || !text.contains(reply_done) {
        return script;
    }
    let whole = r#"    local words cword _clap_prefix=""
    if declare -F _get_comp_words_by_ref >/dev/null; then
        _get_comp_words_by_ref -n =: -w words -i cword
        _clap_prefix=${words[cword]%"$2"}
        _CLAP_COMPLETE_INDEX=$cword
    else
        words=("${COMP_WORDS[@]}")
        if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
            words[COMP_CWORD]="$2"
        fi
    fi
"#;
    let trimmed = r#"    local _clap_status=$?
    if [[ $_clap_status == 0 && -n $_clap_prefix ]]; then
        COMPREPLY=("${COMPREPLY[@]#"$_clap_prefix"}")
    fi
    if [[ $_clap_status != 0 ]]; then
        unset COMPREPLY
"#;
    text.replace(words, whole)
        .replace(reply_done, trimmed)
        .into_bytes()
}

/// clap_complete's zsh script registers its function with `compdef` when run — right for
/// `source <(…)`, but an autoloaded `_dismount_iso_qemu` (the file the package puts in
/// zsh's `vendor-completions`) would then only register on the first Tab, not complete.
/// Autoloaded, the script completes at once; sourced, it registers, as before.
fn zsh_autoloadable(script: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&script).into_owned();
    let function = format!("_clap_dynamic_completer_{NAME}");
    let register = format!("compdef {function} {NAME}");
    let Some(at) = text.rfind(&register) else {
        return script;
    };
    let both = format!(
        "if [ \"$funcstack[1]\" = \"_{NAME}\" ]; then\n    {function} \"$@\"\nelse\n    {register}\nfi"
    );
    format!("{}{}{}", &text[..at], both, &text[at + register.len()..]).into_bytes()
}

/// The command line as completion sees it: the clap definitions, with the connection's
/// VM names as the candidates of every `vm` argument.
pub fn command() -> clap::Command {
    // mut_args, not mut_arg: that one moves the argument to the end, after the other
    // positionals.
    Cli::command().mut_subcommands(|sub| {
        sub.mut_args(|a| {
            if a.get_id() == "vm" {
                a.add(ArgValueCandidates::new(vm_candidates))
            } else {
                a
            }
        })
    })
}

fn vm_candidates() -> Vec<CompletionCandidate> {
    vm_names(&completion_words(), VM_NAMES_DEADLINE)
        .into_iter()
        .map(|(name, state)| CompletionCandidate::new(name).help(Some(state.into())))
        .collect()
}

/// The words of the command line being completed — what follows `--` in our own
/// arguments — without the word under the cursor. bash and zsh say which word that is
/// (`_CLAP_COMPLETE_INDEX`); fish passes it last.
fn completion_words() -> Vec<OsString> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let start = args
        .iter()
        .position(|a| a == "--")
        .map_or(args.len(), |i| i + 1);
    let mut words = args[start..].to_vec();
    match std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|i| i.parse::<usize>().ok())
    {
        Some(i) => words.truncate(i),
        None => {
            words.pop();
        }
    }
    words
}

/// The VM names (with their state) on the connection `words` (a command line, program
/// name first) would use, sorted; nothing when that connection fails or does not answer
/// within `deadline`.
pub fn vm_names(words: &[OsString], deadline: Duration) -> Vec<(String, &'static str)> {
    let Some(global) = global_args(words) else {
        return Vec::new();
    };
    let (tx, rx) = mpsc::channel();
    // Not joined: a libvirtd that hangs keeps this thread, and the process exits
    // without it.
    thread::spawn(move || {
        let listed = (|| {
            let settings = app::resolve(&global).ok()?;
            // ssh never prompts here either (see hypervisor::remote).
            let uri = settings
                .uri
                .as_deref()
                .map(crate::hypervisor::remote::without_prompts);
            let uri = uri.as_deref();
            let hv: Box<dyn Hypervisor> = match settings.backend {
                // virsh runs in a session of its own, which our exit would not end: its
                // own limit stops it first (a hung daemon hangs the first call).
                Backend::Virsh => Box::new(
                    VirshHypervisor::with_program_and_limit("virsh".into(), uri, VIRSH_LIMIT)
                        .ok()?,
                ),
                other => hypervisor::open(other, uri).ok()?,
            };
            hv.list_domains().ok()
        })();
        let _ = tx.send(listed.unwrap_or_default());
    });
    let mut names: Vec<(String, &'static str)> = rx
        .recv_timeout(deadline)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| !d.name.chars().any(char::is_control))
        .map(|d| (d.name, d.state.as_str()))
        .collect();
    names.sort();
    names
}

/// The global options of a possibly unfinished command line (a missing VM, an unknown
/// word): clap's lenient parse, so `-c URI` and the variables count as they would.
fn global_args(words: &[OsString]) -> Option<GlobalArgs> {
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(words)
        .ok()?;
    GlobalArgs::from_arg_matches(&matches).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(shell: CompletionShell) -> String {
        String::from_utf8(script(shell).unwrap()).unwrap()
    }

    #[test]
    fn scripts_call_the_command_by_name_with_our_variable() {
        let bash = text(CompletionShell::Bash);
        assert!(
            bash.contains("DISMOUNT_ISO_QEMU_COMPLETE=\"bash\""),
            "{bash}"
        );
        assert!(bash.contains("-F _clap_complete_dismount_iso_qemu dismount_iso_qemu"));
        let fish = text(CompletionShell::Fish);
        assert!(fish.contains("--command dismount_iso_qemu"), "{fish}");
        assert!(fish.contains("DISMOUNT_ISO_QEMU_COMPLETE=fish dismount_iso_qemu --"));
    }

    #[test]
    fn the_zsh_script_completes_when_autoloaded_and_registers_when_sourced() {
        let zsh = text(CompletionShell::Zsh);
        assert!(zsh.starts_with("#compdef dismount_iso_qemu\n"), "{zsh}");
        assert!(
            zsh.contains(
                "if [ \"$funcstack[1]\" = \"_dismount_iso_qemu\" ]; then\n    \
                 _clap_dynamic_completer_dismount_iso_qemu \"$@\"\nelse\n    \
                 compdef _clap_dynamic_completer_dismount_iso_qemu dismount_iso_qemu\nfi"
            ),
            "{zsh}"
        );
    }

    #[test]
    fn every_vm_argument_gets_candidates() {
        let cmd = command();
        let mut with_vm = Vec::new();
        for sub in cmd.get_subcommands() {
            if let Some(vm) = sub.get_arguments().find(|a| a.get_id() == "vm") {
                assert!(
                    vm.get::<ArgValueCandidates>().is_some(),
                    "{}",
                    sub.get_name()
                );
                with_vm.push(sub.get_name());
            }
        }
        assert_eq!(with_vm, ["mount", "eject", "edit", "cat", "pull", "push"]);
    }

    #[test]
    fn the_connection_comes_from_the_unfinished_command_line() {
        let words = |w: &[&str]| -> Vec<OsString> { w.iter().map(OsString::from).collect() };
        let g = global_args(&words(&[NAME, "-c", "test:///default", "mount"])).unwrap();
        assert_eq!(g.connect, ["test:///default"]);
        let g = global_args(&words(&[
            NAME,
            "eject",
            "--connect=test:///x",
            "--backend",
            "virsh",
        ]));
        let g = g.unwrap();
        assert_eq!(g.connect, ["test:///x"]);
        assert_eq!(g.backend, Some(Backend::Virsh));
        assert!(global_args(&words(&[NAME, "mount", "--bogus"])).is_some());
    }
}
