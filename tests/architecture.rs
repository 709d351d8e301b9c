//! The house keeps its floors: every module of `src/` stands on a floor of
//! [`dismount_iso_qemu::FLOORS`], imports (`crate::…` paths, in `use` lines or inline)
//! only from its own floor or lower ones, and no two modules import each other. A new
//! module must be given a floor before it can be used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dismount_iso_qemu::FLOORS;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/media/eject.rs` → `media`).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a piece of code names through `crate::`, comments left out.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}` on one line.
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or(""))
                    .collect()
            } else {
                vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")]
            };
            for n in names {
                if modules.contains(n) {
                    found.insert(n.to_string());
                }
            }
        }
    }
    found
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

#[test]
fn modules_import_only_downwards_and_never_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(&src, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();

    for m in &modules {
        assert!(
            floor_of(m).is_some(),
            "module `{m}` stands on no floor: add it to FLOORS in src/lib.rs"
        );
    }

    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let m = top_module(&src, f);
        if m == "lib" || m == "main" {
            continue;
        }
        let code = std::fs::read_to_string(f).unwrap();
        let edges = graph.entry(m.clone()).or_default();
        for n in imports(&code, &modules) {
            if n != m {
                edges.insert(n);
            }
        }
    }

    let mut problems = Vec::new();
    for (m, edges) in &graph {
        let fm = floor_of(m).unwrap();
        for n in edges {
            let fnn = floor_of(n).unwrap();
            // FLOORS lists the top floor first: a lower floor has a larger index.
            if fnn < fm {
                problems.push(format!(
                    "`{m}` (floor {fm}) imports `{n}` from a floor above ({fnn})"
                ));
            }
            if graph.get(n).is_some_and(|back| back.contains(m)) && m < n {
                problems.push(format!("`{m}` and `{n}` import each other"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_every_form_of_import() {
    let modules: BTreeSet<String> = ["media", "edit", "exit"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code = "use crate::media::eject;\nuse crate::{edit, exit::Failure};\n\
                fn f() { crate::media::x(); } // crate::exit is a comment\n";
    let found = imports(code, &modules);
    assert_eq!(
        found,
        ["edit", "exit", "media"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(imports("// use crate::media;\n", &modules).is_empty());
}
