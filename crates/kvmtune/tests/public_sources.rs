//! What users read cites sources they can follow: every string literal of the modules whose
//! text reaches users (the rules' explanations, fixes and sources, the planner's reasons, the
//! emitters' comments, the knowledge tables) is free of the project's own notes and data,
//! which users do not have. Read with syn, so that comments and doc comments, for developers,
//! may still point at those notes; `#[cfg(test)]` modules are left out.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The modules whose strings users see.
const USER_FACING: &[&str] = &["analysis", "knowledge", "output"];

/// What only this project's developers have.
const PRIVATE: &[&str] = &[
    "../shared",
    "shared/",
    "knowledge.md ",
    "(knowledge.md",
    "host-changes.md",
    "landscape.md",
    "exitstats",
    "corpus/",
];

struct Strings {
    found: Vec<String>,
}

impl<'ast> Visit<'ast> for Strings {
    fn visit_lit_str(&mut self, literal: &'ast syn::LitStr) {
        self.found.push(literal.value());
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        let test_only = module.attrs.iter().any(|a| {
            a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test"))
        });
        if !test_only {
            syn::visit::visit_item_mod(self, module);
        }
    }

    // Doc comments are attributes: for developers, like comments.
    fn visit_attribute(&mut self, _attribute: &'ast syn::Attribute) {}

    // Strings inside macros (`format!`, `concat!`) are tokens: read them too.
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        for token in mac.tokens.clone() {
            if let proc_macro2::TokenTree::Literal(literal) = token
                && let Ok(text) = syn::parse_str::<syn::LitStr>(&literal.to_string())
            {
                self.found.push(text.value());
            }
        }
    }
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

#[test]
fn user_facing_text_cites_public_sources_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for module in USER_FACING {
        rust_files(&src.join(module), &mut files);
    }
    files.sort();
    assert!(files.len() > 20, "the source tree moved: {files:?}");
    let mut offending = Vec::new();
    for file in &files {
        let syntax = syn::parse_file(&std::fs::read_to_string(file).unwrap()).unwrap();
        let mut strings = Strings { found: Vec::new() };
        strings.visit_file(&syntax);
        for text in strings.found {
            if let Some(marker) = PRIVATE.iter().find(|m| text.contains(*m)) {
                let shown: String = text.chars().take(100).collect();
                offending.push(format!("{}: `{marker}` in \"{shown}\"", file.display()));
            }
        }
    }
    assert!(offending.is_empty(), "user-facing text cites private notes:\n{}", offending.join("\n"));
}
