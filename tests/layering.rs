//! The top-level modules of `src/` must not depend on each other in a
//! cycle: a cycle means neither side can be understood, tested or moved
//! without the other. Each module (`src/auth/`, `src/model.rs`, ...) is a
//! node; every `crate::<module>` path in its files, `use` or inline, is an
//! edge. Comments are left out, so a doc link is not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_cycles_between_top_level_modules_of_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.contains_key("service") && graph.contains_key("resolve"),
        "the scan found no modules in {}: {graph:?}",
        src.display()
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "src/ has a dependency cycle: {}\n(edges: {graph:#?})",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_scan_sees_grouped_and_inline_paths_but_not_comments() {
    let text = "use crate::{auth::Caller, domain::{Role, TenantId}};\n\
                // crate::grpc in a comment\n\
                /// [`x`](crate::proto::X)\n\
                fn f() { crate::model::now_micros(); }\n";
    let found = referenced_modules(text);
    assert_eq!(found, ["auth", "domain", "model"].map(String::from).into());
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph: Graph = [
        ("grpc", &["service"][..]),
        ("service", &["resolve", "model"]),
        ("resolve", &["model", "service"]),
        ("model", &[]),
    ]
    .into_iter()
    .map(|(from, to)| (from.into(), to.iter().map(|t| t.to_string()).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(["service", "resolve", "service"].map(String::from).to_vec())
    );

    let acyclic: Graph = [("grpc", "service"), ("service", "model")]
        .into_iter()
        .map(|(from, to)| (from.into(), [to.to_string()].into()))
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
}

/// Module name -> the other modules its files refer to. `lib.rs` and
/// `main.rs` are the crate roots, not modules.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("src/ entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let crate_root = ["lib.rs", "main.rs"]
            .iter()
            .any(|root| path.ends_with(root));
        if crate_root {
            continue;
        }
        let mut texts = Vec::new();
        read_rust_files(&path, &mut texts);
        let mut deps: BTreeSet<String> = texts.iter().flat_map(|t| referenced_modules(t)).collect();
        deps.remove(&name);
        graph.insert(name, deps);
    }
    graph
}

fn read_rust_files(path: &Path, texts: &mut Vec<String>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("readable directory") {
            read_rust_files(&entry.expect("directory entry").path(), texts);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        texts.push(fs::read_to_string(path).expect("readable source file"));
    }
}

/// The first segment of every `crate::` path in `text`, including each
/// member of a `crate::{a::.., b}` group.
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for member in top_level_members(group) {
                found.insert(leading_ident(member).to_string());
            }
        } else {
            found.insert(leading_ident(rest).to_string());
        }
    }
    found.remove("");
    found
}

/// The comma-separated members of a `{...}` group whose opening brace has
/// been consumed, up to its closing brace; nested groups stay whole.
fn top_level_members(group: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                members.push(&group[start..i]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                members.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members
}

fn leading_ident(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// A path `a -> b -> ... -> a` if the graph has a cycle. Depth-first, in
/// name order, so the answer is the same on every run.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }

    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
