//! CI's share of the fuzzing, on stable Rust: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through its target (`tests/fuzz_targets/mod.rs`),
//! so each crash ever found stays a regression test; then a short proptest pass feeds
//! every target random bytes, random text and mutated corpus files, so CI explores a
//! little too. The long runs are `scripts/fuzz.sh` (cargo-fuzz on nightly, not in CI).
//!
//! A failure names the target and the input. To keep a new one: save the input as a file
//! under `fuzz/regressions/<target>/`, fix the bug, and this test replays it forever.

mod fuzz_targets;

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files that document a directory rather than feed a target.
fn is_input(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    path.is_file() && name != "README.md" && name != ".gitkeep"
}

/// The input files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| is_input(p))
        .collect();
    files.sort();
    files
}

fn subdirs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// An input for a failure message: text when it is text, else escaped bytes.
fn show(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("b\"{}\"", data.escape_ascii()),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

#[test]
fn every_target_has_a_binary_a_corpus_and_a_regression_directory() {
    let names: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names.len(), TARGETS.len(), "target names repeat");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &names {
        let bin = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&bin)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a fuzz binary)", bin.display()));
        assert!(
            source.contains(&format!("targets::{}(", fn_name(name))),
            "{} does not call its target",
            bin.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        assert!(
            !inputs("corpus", name).is_empty(),
            "fuzz/corpus/{name}/ has no seed"
        );
        assert!(fuzz_dir().join("regressions").join(name).is_dir());
    }
    for kind in ["corpus", "regressions"] {
        let dirs = subdirs(&fuzz_dir().join(kind));
        assert_eq!(
            dirs, names,
            "fuzz/{kind}/ holds exactly one directory per target"
        );
    }
}

/// The Rust function behind a target name (`agent_reply` is `agent_reply_text`, the
/// name `agent_reply` being the port's own function).
fn fn_name(target: &str) -> &str {
    match target {
        "agent_reply" => "agent_reply_text",
        other => other,
    }
}

#[test]
fn corpus_and_regressions_replay_cleanly() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in inputs(kind, name) {
                let data = std::fs::read(&file).unwrap();
                count += 1;
                if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| target(&data))) {
                    failures.push(format!("{}: {}", file.display(), panic_message(&*p)));
                }
            }
        }
    }
    assert!(count > TARGETS.len(), "no corpus found");
    assert!(
        failures.is_empty(),
        "{} of {count} inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Text fragments that parsers look for or trip over, for the mutations.
const TOKENS: &[&str] = &[
    "\n",
    "\r",
    "\r\n",
    "\t",
    " ",
    ":",
    "=",
    "'",
    "\"",
    "\\",
    "<",
    ">",
    "&",
    "&#",
    ";",
    "/",
    "---",
    "error: ",
    "Domain: ",
    "virsh # ",
    "@@DIQ",
    "\"return\"",
    "\"error\"",
    "tray",
    "\u{a0}",
    "\u{85}",
    "\u{3000}",
    "\u{200b}",
    "\u{202e}",
    "\u{fe0f}",
    "\u{fffe}",
    "\u{1b}",
    "\u{0}",
    "é",
    "東",
    "\u{2764}",
    "\u{1f4bf}",
    "\\040",
    "0",
    "18446744073709551615",
];

#[derive(Debug, Clone)]
enum Edit {
    /// Replace one byte.
    Set(Index, u8),
    /// Insert one byte.
    Insert(Index, u8),
    /// Remove up to n bytes.
    Remove(Index, usize),
    /// Repeat up to n bytes in place.
    Repeat(Index, usize),
    /// Insert a token.
    Token(Index, Index),
    /// Insert up to n bytes of another corpus file.
    Splice(Index, Index, Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| Edit::Remove(i, n)),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| Edit::Repeat(i, n)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Edit::Token(i, t)),
        (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..64)
            .prop_map(|(i, f, at, n)| Edit::Splice(i, f, at, n)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seed.to_vec();
    // A position in 0..=len.
    let pos = |i: &Index, len: usize| i.index(len + 1);
    for e in edits {
        match e {
            Edit::Set(i, b) if !d.is_empty() => {
                let at = i.index(d.len());
                d[at] = *b;
            }
            Edit::Set(..) => {}
            Edit::Insert(i, b) => d.insert(pos(i, d.len()), *b),
            Edit::Remove(i, n) => {
                let at = pos(i, d.len());
                let end = (at + n).min(d.len());
                d.drain(at..end);
            }
            Edit::Repeat(i, n) => {
                let at = pos(i, d.len());
                let end = (at + n).min(d.len());
                let part = d[at..end].to_vec();
                d.splice(at..at, part);
            }
            Edit::Token(i, t) => {
                let at = pos(i, d.len());
                let token = TOKENS[t.index(TOKENS.len())].as_bytes();
                d.splice(at..at, token.iter().copied());
            }
            Edit::Splice(i, f, from, n) => {
                let other = &corpus[f.index(corpus.len())];
                let start = pos(from, other.len());
                let part = &other[start..(start + n).min(other.len())];
                let at = pos(i, d.len());
                d.splice(at..at, part.iter().copied());
            }
        }
    }
    d
}

/// Random bytes, random text, and corpus files with a few mutations.
fn input(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        any::<Index>(),
        proptest::collection::vec(edit(), 1..8),
        Just(corpus.clone()),
    )
        .prop_map(|(seed, edits, corpus)| {
            let s = &corpus[seed.index(corpus.len())];
            apply(s, &edits, &corpus)
        });
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => any::<String>().prop_map(String::into_bytes),
        4 => mutated,
    ]
}

/// Cases per target: a few hundred, so the whole pass stays within seconds; set
/// `FUZZ_REPLAY_CASES` for a longer local run.
fn cases() -> u32 {
    std::env::var("FUZZ_REPLAY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

#[test]
fn proptest_explores_every_target() {
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let mut corpus: Vec<Vec<u8>> = ["corpus", "regressions"]
            .iter()
            .flat_map(|kind| inputs(kind, name))
            .map(|f| std::fs::read(f).unwrap())
            .collect();
        if corpus.is_empty() {
            corpus.push(Vec::new());
        }
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            // Shrinking re-runs the target many times; a bounded effort is enough to
            // show a small input.
            max_shrink_iters: 2048,
            ..Config::default()
        });
        let result = runner.run(&input(corpus), |data| {
            panic::catch_unwind(AssertUnwindSafe(|| target(&data)))
                .map_err(|p| TestCaseError::fail(panic_message(&*p)))
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, data)) => failures.push(format!(
                "{name}: {why}\n  input: {}\n  keep it: save these bytes as fuzz/regressions/{name}/<short-name>",
                show(&data)
            )),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
