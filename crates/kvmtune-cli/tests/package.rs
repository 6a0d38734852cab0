//! The Debian package of `scripts/package-deb.sh`, built around this test's kvmtune: what it
//! holds (a man page per subcommand, the completions, the exporter's unit, the monitoring
//! files), that lintian finds nothing beyond the tags `docs/packaging.md` explains, that
//! `man` renders a page and bash completes a subcommand from the packaged files, that the
//! exporter's unit is one systemd accepts, and that `dpkg -i` then `dpkg -r` into a scratch
//! root leaves only dpkg's own records. Installing it on a host whose PID 1 is systemd is the
//! systemd lab's part.

use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The subcommands `kvmtune --help` lists (a man page each), with their own subcommands.
fn visible_commands() -> Vec<String> {
    fn listed(help: &str) -> Vec<String> {
        help.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect()
    }
    let kvmtune = env!("CARGO_BIN_EXE_kvmtune");
    let mut pages = vec!["kvmtune".to_string()];
    for command in listed(&run(Command::new(kvmtune).arg("--help"))) {
        for sub in listed(&run(Command::new(kvmtune).args([&command, "--help"]))) {
            pages.push(format!("kvmtune-{command}-{sub}"));
        }
        pages.push(format!("kvmtune-{command}"));
    }
    pages
}

#[test]
fn the_package_holds_every_page_and_installs_and_removes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let built = run(Command::new(repository().join("scripts/package-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_kvmtune"), "--out"])
        .arg(&out));
    let deb = Path::new(built.trim());
    assert!(deb.is_file(), "{built}");

    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let files: Vec<&str> =
        listing.lines().filter_map(|l| l.split_whitespace().last()).filter(|f| !f.ends_with('/')).collect();
    let pages = visible_commands();
    assert!(pages.len() > 20 && pages.contains(&"kvmtune-host-prepare".to_string()), "{pages:?}");
    for page in &pages {
        let path = format!("./usr/share/man/man1/{page}.1.gz");
        assert!(files.contains(&path.as_str()), "no {path}:\n{listing}");
    }
    for expected in [
        "./usr/bin/kvmtune",
        "./usr/share/bash-completion/completions/kvmtune",
        "./usr/share/zsh/vendor-completions/_kvmtune",
        "./usr/share/fish/vendor_completions.d/kvmtune.fish",
        "./usr/share/kvmtune/monitoring/kvmtune-alerts.yml",
        "./usr/share/kvmtune/monitoring/kvmtune-dashboard.json",
        "./lib/systemd/system/kvmtune-exporter.service",
        "./usr/share/doc/kvmtune/copyright",
        "./usr/share/doc/kvmtune/crate-licenses.txt",
    ] {
        assert!(files.contains(&expected), "no {expected}:\n{listing}");
    }
    let man_pages = files.iter().filter(|f| f.starts_with("./usr/share/man/")).count();
    assert_eq!(man_pages, pages.len(), "a page for no command:\n{listing}");

    // lintian: nothing but the informational tags docs/packaging.md explains.
    // TMPDIR: lintian leaves its ELF cache file (mldbm-elf-*) in the temporary directory.
    let lintian = Command::new("lintian")
        .args(["--no-cfg", "-I", "--pedantic"])
        .arg(deb)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let tags = String::from_utf8_lossy(&lintian.stdout);
    let explained = [
        "hardening-no-fortify-functions",
        "package-supports-alternative-init-but-no-init.d-script",
        "spelling-error-in-binary",
    ];
    for tag in tags.lines() {
        assert!(explained.iter().any(|t| tag.contains(t)), "lintian: {tag}\n{tags}");
    }
    assert!(lintian.status.success(), "{tags}{}", String::from_utf8_lossy(&lintian.stderr));

    // The staged tree is what the package holds.
    let staged = out.join(deb.file_stem().unwrap());
    let page = run(Command::new("man")
        .arg("-l")
        .arg(staged.join("usr/share/man/man1/kvmtune-host.1.gz"))
        .env("MANWIDTH", "80"));
    assert!(page.contains("NAME") && page.contains("prepare") && page.contains("release"), "{page}");
    let completion = staged.join("usr/share/bash-completion/completions/kvmtune");
    let script = format!(
        r#"source {}; COMP_WORDS=(kvmtune ho); COMP_CWORD=1; _kvmtune kvmtune ho kvmtune; echo "${{COMPREPLY[@]}}""#,
        completion.display()
    );
    let completed = run(Command::new("bash").args(["-c", &script]));
    assert_eq!(completed.split_whitespace().collect::<Vec<_>>(), ["host", "hook"], "{completed}");
    let unit = staged.join("lib/systemd/system/kvmtune-exporter.service");
    let security = run(Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit));
    assert!(security.contains("Overall exposure level"), "{security}");

    // Into a scratch root and out again. The maintainer scripts run outside it (they only
    // reload systemd, where systemd runs: not on a host without it, as this one is).
    let scratch = dir.path().join("root");
    for sub in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        std::fs::create_dir_all(scratch.join(sub)).unwrap();
    }
    std::fs::write(scratch.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        run(Command::new("dpkg")
            .arg(format!("--root={}", scratch.display()))
            .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
            .args(args))
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(scratch.join("usr/bin/kvmtune").is_file());
    let installed = run(Command::new(scratch.join("usr/bin/kvmtune")).arg("--version"));
    assert!(installed.starts_with("kvmtune "), "{installed}");
    dpkg(&["-r", "kvmtune"]);
    let left: Vec<String> = walk(&scratch)
        .into_iter()
        .filter(|p| !p.starts_with(scratch.join("var/lib/dpkg")))
        .map(|p| p.display().to_string())
        .collect();
    assert!(left.is_empty(), "dpkg -r left: {left:?}");
}

/// Every file (not directory) under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
