//! The command reference in `docs/` and `--help` say the same: each page holds the `--help` of
//! its commands between `<!-- help: kvmtune ... -->` and `<!-- /help -->`, and this test fails
//! when they drift apart (`KVMTUNE_UPDATE_SNAPSHOTS=1` rewrites the pages from `--help`, to be
//! reviewed as a diff). Every command and subcommand has its page.

use std::path::{Path, PathBuf};
use std::process::Command;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn help(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let output = Command::new(env!("CARGO_BIN_EXE_kvmtune")).args(&words).arg("--help").output().unwrap();
    assert!(output.status.success(), "{command} --help: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The subcommands `kvmtune [WORDS] --help` lists, as full command lines.
fn subcommands(prefix: &str) -> Vec<String> {
    let text = help(prefix);
    let Some(list) = text.split("Commands:\n").nth(1) else { return Vec::new() };
    list.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(|name| format!("{prefix} {name}"))
        .collect()
}

#[test]
fn every_page_holds_the_help_of_its_commands_as_it_is() {
    let update = std::env::var_os("KVMTUNE_UPDATE_SNAPSHOTS").is_some();
    let mut documented = Vec::new();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(docs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rewritten = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("<!-- help: ") {
            let (before, block) = rest.split_at(start);
            rewritten.push_str(before);
            let open_end = block.find(" -->\n").expect("a help marker ends with -->");
            let command = block["<!-- help: ".len()..open_end].to_string();
            let close = block.find("<!-- /help -->").expect("a help block is closed");
            let shown = &block[open_end + " -->\n".len()..close];
            let expected = format!("```text\n{}```\n", help(&command));
            if shown != expected {
                stale.push(format!("{}: {command}", path.display()));
            }
            rewritten.push_str(&format!("<!-- help: {command} -->\n{expected}"));
            documented.push(command);
            rest = &block[close..];
        }
        rewritten.push_str(rest);
        if update && rewritten != text {
            std::fs::write(&path, rewritten).unwrap();
        }
    }
    if !update {
        assert!(
            stale.is_empty(),
            "--help changed; rerun with KVMTUNE_UPDATE_SNAPSHOTS=1:\n{}",
            stale.join("\n")
        );
    }
    // Every command with no subcommands of its own has its help on a page.
    let mut commands = Vec::new();
    for command in subcommands("kvmtune") {
        match subcommands(&command).as_slice() {
            [] => commands.push(command),
            nested => commands.extend(nested.iter().cloned()),
        }
    }
    for command in &commands {
        assert!(documented.contains(command), "{command} has no page in docs/ holding its --help");
    }
}
