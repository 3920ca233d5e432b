//! The collector's modules import one way: no loops between its top-level modules (issue 13).
//!
//! Reads `collector/src`, collects every `crate::<module>` reference outside `#[cfg(test)]`
//! blocks and comments, and fails naming the loop if the graph has a cycle. A new upward
//! import (a clock taken from the ingest module, a config type from fleet mode) breaks this.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("collector/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module -> the top-level modules it names through `crate::`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a component");
        let top = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let entry = edges.entry(top.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String =
                    rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != top {
                    entry.insert(name);
                }
            }
        }
    }
    edges
}

/// A cycle, if there is one (depth-first search with colours).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|n| n == next).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn collector_modules_have_no_import_loops() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/src");
    let edges = graph(&src);
    assert!(edges.len() > 10, "read too few modules: {edges:?}");
    assert!(edges["routes"].contains("ingest"), "the scan found no edges: {edges:?}");
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import loop in the collector: {}", cycle.join(" -> "));
    }
    // The clock is a leaf, and the simulator does not call the command line.
    assert!(edges.get("clock").is_none_or(BTreeSet::is_empty), "{:?}", edges.get("clock"));
    assert!(!edges["demo"].contains("cli"), "demo imports cli");
}

#[test]
fn detector_files_stay_readable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/src/detect");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let lines = std::fs::read_to_string(&file).expect("readable").lines().count();
        assert!(lines <= 1_000, "{} has {lines} lines: split it", file.display());
    }
}

#[test]
fn the_cycle_finder_finds_a_loop() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&edges), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
