//! The module graph of each crate is acyclic: a top-level module of
//! `src/` (a file `x.rs` or a directory `x/`) that names another one
//! (`crate::other`, also in a doc comment or a `use crate::{...}` group)
//! depends on it, and no chain of such dependencies comes back to where it
//! started. Shared types live in leaf modules (`hostile`, `time`, the
//! format crate) instead of one module reaching up into another that
//! reaches back.
//!
//! Tests modules at the end of a file (`#[cfg(test)] mod tests { ... }`)
//! are left out: a test may use any module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Whether `c` can be part of an identifier.
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifiers following `crate::` in `src`, and the first segment of
/// each path of a `use crate::{a::x, b, c::{...}}` group.
fn crate_refs(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(ident_char) {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level segments of the group: after `{` or a `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && ident_char(c) => word.push(c),
                    _ => {
                        if !word.is_empty() {
                            out.insert(std::mem::take(&mut word));
                        }
                        if !c.is_whitespace() {
                            start = false;
                        }
                    }
                }
            }
            if !word.is_empty() {
                out.insert(word);
            }
        } else {
            let word: String = rest.chars().take_while(|&c| ident_char(c)).collect();
            if !word.is_empty() {
                out.insert(word);
            }
        }
    }
    out
}

/// Top-level module -> the top-level modules it names.
fn module_graph(src_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for p in rust_files(src_dir) {
        let rel = p.strip_prefix(src_dir).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["main", "lib", "mod"].contains(&top.as_str()) {
            continue;
        }
        files.entry(top).or_default().push(p);
    }
    let tops: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (m, paths) in &files {
        let mut to = BTreeSet::new();
        for p in paths {
            let text = std::fs::read_to_string(p).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests {") {
                Some(at) => &text[..at],
                None => &text,
            };
            to.extend(
                crate_refs(text)
                    .into_iter()
                    .filter(|t| t != m && tops.contains(t)),
            );
        }
        graph.insert(m.clone(), to);
    }
    graph
}

/// The strongly connected groups of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in &graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Each cycle of `krate`'s module graph, with the edges inside it.
fn describe(krate: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(krate);
    let graph = module_graph(&dir);
    assert!(
        graph.len() > 3,
        "{krate}: no modules found in {}",
        dir.display()
    );
    cycles(&graph)
        .into_iter()
        .map(|group| {
            let edges: Vec<String> = group
                .iter()
                .map(|a| {
                    let to: Vec<&str> = graph[a]
                        .iter()
                        .filter(|b| group.contains(b))
                        .map(String::as_str)
                        .collect();
                    format!("{a} -> {}", to.join(" "))
                })
                .collect();
            format!("{krate}: cycle {}: {}", group.join(" "), edges.join("; "))
        })
        .collect()
}

#[test]
fn the_reference_parser_finds_paths_and_groups() {
    let refs = crate_refs(
        "use crate::a::b;\nuse crate::{c::d, e, f::{g, h}};\n/// [`crate::i`]\nfoo_crate::j; crate::k",
    );
    let want: BTreeSet<String> = ["a", "c", "e", "f", "i", "k"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refs, want);
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), ["b".to_string()].into());
    g.insert("b".to_string(), ["c".to_string()].into());
    g.insert("c".to_string(), ["a".to_string()].into());
    g.insert("d".to_string(), ["a".to_string()].into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    g.get_mut("c").unwrap().clear();
    assert!(cycles(&g).is_empty());
}

#[test]
fn no_module_cycles_in_any_crate() {
    let found: Vec<String> = ["src", "snapshot-tool/src", "format/src"]
        .iter()
        .flat_map(|k| describe(k))
        .collect();
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}
