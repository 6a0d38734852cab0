//! The library's layers, enforced rather than documented: this test parses every source file
//! (with syn, the parser Rust's own macros use), collects every path that names another module
//! (`use crate::...`, `crate::a::b` in code, `super::`, and the same inside macro calls), and
//! fails on
//! - a top-level module that uses a module of its own layer or above (the order is [`LAYERS`]);
//! - a cycle among the modules one level down inside any top-level module (`analysis::rule` and
//!   `analysis::vm_rules`, say);
//! - a rule table that depends on the registry, which must be the top of `analysis`.
//!
//! `#[cfg(test)]` modules are left out: a unit test may build its fixture with a reader of a
//! higher layer (a config parsed to test a host change) without the library depending on it.
//!
//! Why a test and not separate crates: the layers share `pub(crate)` items and one set of
//! `#[cfg(test)]` fixtures, and the orphan rule would force trait impls to move with the
//! types; a test gives the same refusal (CI fails on a back-edge) with the module tree as it is,
//! and it also checks the order inside a module, which crates could not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::visit::Visit;

/// Lowest first: a module may use the modules of the layers below its own, never above.
const LAYERS: &[&str] = &[
    "values",
    "knowledge",
    "sys",
    "host",
    "config",
    "exits",
    "guest",
    "hostchange",
    "analysis",
    "live",
    "experiment",
    "output",
];

/// The rule tables of `analysis`, which the registry (`analysis::rule`) reads and which must
/// not read it back.
const RULE_TABLES: &[&str] =
    &["host_rules", "vm_rules", "exit_rules", "exit_patterns", "exit_side_tables", "verify_rules"];

type ModulePath = Vec<String>;
/// Edges between top-level modules, by name.
type TopEdges = BTreeSet<(String, String)>;
/// Edges between modules one level down (`analysis::rule` -> `analysis::vm_rules`).
type InnerEdges = BTreeSet<(ModulePath, ModulePath)>;

/// Every module of the crate that is a file (`src/a/b.rs` or `src/a/b/mod.rs` is `a::b`), with
/// its file.
fn file_modules(src: &Path) -> BTreeMap<ModulePath, PathBuf> {
    let mut modules = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: ModulePath =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            modules.insert(module, path);
        }
    }
    modules
}

/// Collects the module paths one file names, each with the module it is named from.
struct Collector {
    /// The module the visitor is in: the file's, plus inline `mod x { ... }` around it.
    here: ModulePath,
    found: Vec<(ModulePath, Vec<String>)>,
}

impl Collector {
    fn record(&mut self, segments: Vec<String>) {
        if matches!(segments.first().map(String::as_str), Some("crate" | "super" | "self")) {
            self.found.push((self.here.clone(), segments));
        }
    }

    /// `crate :: a :: b` and `super :: a` sequences inside a macro call's tokens.
    fn scan(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut index = 0;
        while index < tokens.len() {
            match &tokens[index] {
                TokenTree::Group(group) => self.scan(group.stream()),
                TokenTree::Ident(ident) if matches!(ident.to_string().as_str(), "crate" | "super") => {
                    let mut segments = vec![ident.to_string()];
                    let mut at = index + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (tokens.get(at), tokens.get(at + 1), tokens.get(at + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        at += 3;
                    }
                    if segments.len() > 1 {
                        self.record(segments);
                    }
                    index = at.max(index + 1);
                    continue;
                }
                _ => {}
            }
            index += 1;
        }
    }
}

fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_paths(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => out.push([prefix.clone(), vec![name.ident.to_string()]].concat()),
        syn::UseTree::Rename(rename) => out.push([prefix.clone(), vec![rename.ident.to_string()]].concat()),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(group) => group.items.iter().for_each(|item| use_paths(item, prefix, out)),
    }
}

/// `#[cfg(test)]`: test code may build its fixtures with any layer.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.meta.to_token_stream().to_string().replace(' ', "") == "cfg(test)"
    })
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if is_test_only(&item.attrs) {
            return;
        }
        if item.content.is_some() {
            self.here.push(item.ident.to_string());
            syn::visit::visit_item_mod(self, item);
            self.here.pop();
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&item.tree, &mut Vec::new(), &mut paths);
        paths.into_iter().for_each(|p| self.record(p));
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.record(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.scan(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

/// `path` as named from module `here`, made absolute (without `crate`).
fn absolute(here: &[String], path: &[String]) -> ModulePath {
    let mut base: ModulePath = here.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        _ => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
    }
    base.extend(rest.iter().cloned());
    base
}

/// The longest prefix of `path` that is a file module, cut to `depth` components.
fn module_of(path: &[String], modules: &BTreeMap<ModulePath, PathBuf>, depth: usize) -> Option<ModulePath> {
    (1..=path.len().min(depth)).rev().map(|n| path[..n].to_vec()).find(|prefix| modules.contains_key(prefix))
}

/// Every edge between modules: (from, to) at the top level and one level down.
fn edges(src: &Path) -> (TopEdges, InnerEdges) {
    let modules = file_modules(src);
    let mut top = BTreeSet::new();
    let mut inner = BTreeSet::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut collector = Collector { here: module.clone(), found: Vec::new() };
        collector.visit_file(&syntax);
        for (here, path) in collector.found {
            let target = absolute(&here, &path);
            let (Some(from), Some(to)) = (here.first(), target.first()) else { continue };
            if !modules.contains_key(&vec![to.clone()]) {
                continue;
            }
            if from != to {
                top.insert((from.clone(), to.clone()));
                continue;
            }
            if let (Some(a), Some(b)) = (module_of(&here, &modules, 2), module_of(&target, &modules, 2))
                && a != b
                && a.len() == 2
                && b.len() == 2
            {
                inner.insert((a, b));
            }
        }
    }
    (top, inner)
}

/// What is wrong with the edges, one line each; empty when the layers hold.
fn violations(top: &TopEdges, inner: &InnerEdges) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (from, to) in top {
        match (rank(from), rank(to)) {
            (Some(a), Some(b)) if a > b => {}
            (Some(_), Some(_)) => {
                wrong.push(format!("`{from}` uses `{to}`, which is not below it in the layers"))
            }
            (None, _) => wrong.push(format!("`{from}` is in no layer: add it to LAYERS")),
            (_, None) => wrong.push(format!("`{to}` is in no layer: add it to LAYERS")),
        }
    }
    // Cycles one level down: a path back to where it started.
    let graph: BTreeMap<&ModulePath, Vec<&ModulePath>> =
        inner.iter().fold(BTreeMap::new(), |mut g, (a, b)| {
            g.entry(a).or_default().push(b);
            g
        });
    let mut reported = BTreeSet::new();
    for start in graph.keys() {
        let mut stack: Vec<(&ModulePath, Vec<&ModulePath>)> = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(node).into_iter().flatten() {
                if next == start {
                    let cycle: BTreeSet<&ModulePath> = path.iter().copied().collect();
                    if reported.insert(cycle) {
                        let names: Vec<String> = path.iter().chain([start]).map(|m| m.join("::")).collect();
                        wrong.push(format!("cycle: {}", names.join(" -> ")));
                    }
                } else if seen.insert(*next) {
                    stack.push((next, [path.clone(), vec![*next]].concat()));
                }
            }
        }
    }
    for (from, to) in inner {
        if from[0] == "analysis" && RULE_TABLES.contains(&from[1].as_str()) && to[..] == ["analysis", "rule"]
        {
            wrong.push(format!(
                "`{}` uses the registry `analysis::rule`; the registry reads the tables, not the reverse",
                from.join("::")
            ));
        }
    }
    wrong
}

#[test]
fn the_library_layers_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (top, inner) = edges(&src);
    assert!(top.len() > 20, "only {} edges found: the collector is broken", top.len());
    let wrong = violations(&top, &inner);
    assert!(wrong.is_empty(), "the layers do not hold:\n{}", wrong.join("\n"));
}

/// The check itself can fail: a back-edge, a cycle one level down and a table reading the
/// registry are each reported.
#[test]
fn a_back_edge_a_cycle_and_a_registry_dependency_are_refused() {
    let module = |path: &str| path.split("::").map(str::to_string).collect::<ModulePath>();
    let top: BTreeSet<(String, String)> = [("host", "values"), ("values", "analysis")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let inner: InnerEdges = [
        ("analysis::fix", "analysis::planner"),
        ("analysis::planner", "analysis::fix"),
        ("analysis::exit_rules", "analysis::rule"),
    ]
    .iter()
    .map(|(a, b)| (module(a), module(b)))
    .collect();
    let wrong = violations(&top, &inner);
    assert!(wrong.iter().any(|w| w.contains("`values` uses `analysis`")), "{wrong:?}");
    assert!(!wrong.iter().any(|w| w.contains("`host` uses")), "{wrong:?}");
    assert!(wrong.iter().any(|w| w.starts_with("cycle:") && w.contains("analysis::fix")), "{wrong:?}");
    assert!(wrong.iter().any(|w| w.contains("`analysis::exit_rules` uses the registry")), "{wrong:?}");
}

#[test]
fn paths_resolve_from_where_they_are_named() {
    let here = ["analysis", "vm_rules", "hyperv"].map(String::from);
    let path = |p: &str| p.split("::").map(str::to_string).collect::<Vec<_>>();
    assert_eq!(absolute(&here, &path("super::prelude")), path("analysis::vm_rules::prelude"));
    assert_eq!(absolute(&here, &path("super::super::rule::RuleMeta")), path("analysis::rule::RuleMeta"));
    assert_eq!(absolute(&here, &path("crate::values::CpuSet")), path("values::CpuSet"));
}

/// systemd is reached one way, `systemctl` behind the `host::access::Systemd` capability, never
/// also over D-Bus: `systemctl` waits for each start or stop job to finish and prints systemd's
/// own reason when one fails, and it needs no bus library in a binary that runs as root inside
/// libvirt's hook. A second way (zbus, busctl, a `systemctl` spawned elsewhere) would bypass the
/// capability the tests replace and the journal's one place that knows how a unit is changed.
#[test]
fn systemd_is_reached_only_through_its_capability() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let allowed = root.join("crates/kvmtune/src/host/access.rs").canonicalize().unwrap();
    let mut stack = vec![root.join("crates/kvmtune/src"), root.join("crates/kvmtune-cli/src")];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path.canonicalize().unwrap() != allowed {
                let text = std::fs::read_to_string(&path).unwrap();
                for spawned in ["\"systemctl\"", "\"busctl\"", "\"dbus-send\"", "zbus::", "dbus::"] {
                    if text.contains(spawned) {
                        offenders.push(format!("{}: {spawned}", path.display()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "systemd reached outside host::access::Systemd: {offenders:?}");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    for bus in ["zbus", "dbus", "sd-bus"] {
        assert!(!lock.contains(&format!("name = \"{bus}\"")), "Cargo.lock has the D-Bus crate {bus}");
    }
}
