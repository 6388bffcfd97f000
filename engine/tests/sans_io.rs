//! The Raft core stays sans-IO: nothing under `src/raft/` may name a
//! runtime, a clock, the file system, sockets or threads. Determinism of the
//! simulator depends on it.

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 7] = [
    "glommio",
    "io_uring",
    "libc",
    "std::fs",
    "std::net",
    "std::thread",
    "std::time",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Forbidden names used in code (comments are skipped) of one file.
fn violations(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for name in FORBIDDEN {
            // `use std::{fs, ..}` and `std :: fs` spellings too.
            let squashed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            let (root, leaf) = name.split_once("::").unwrap_or((name, ""));
            let grouped = !leaf.is_empty()
                && squashed.contains(&format!("{root}::{{"))
                && squashed
                    .split(&format!("{root}::{{"))
                    .nth(1)
                    .is_some_and(|g| {
                        g.split('}')
                            .next()
                            .unwrap_or("")
                            .split(',')
                            .any(|p| p == leaf || p.starts_with(&format!("{leaf}::")))
                    });
            if squashed.contains(name) || grouped {
                found.push(format!("line {}: `{name}` in {line}", line_no + 1));
            }
        }
    }
    found
}

#[test]
fn the_scan_catches_each_spelling() {
    assert_eq!(violations("use std::time::Instant;").len(), 1);
    assert_eq!(violations("use std::{collections::VecDeque, fs};").len(), 1);
    assert_eq!(violations("let x = libc::write(1);").len(), 1);
    assert!(violations("// std::thread is not used here").is_empty());
    assert!(violations("use std::collections::VecDeque;").is_empty());
}

#[test]
fn the_raft_core_imports_no_runtime_clock_file_system_socket_or_thread() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(
        files.len() >= 10,
        "found only {} files in {}",
        files.len(),
        dir.display()
    );
    let mut all = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        all.extend(
            violations(&text)
                .into_iter()
                .map(|v| format!("{}: {v}", path.display())),
        );
    }
    assert!(
        all.is_empty(),
        "the sans-IO core must not use these:\n{}",
        all.join("\n")
    );
}
