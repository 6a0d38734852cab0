//! `kvmtune exits compare --report`: the HTML report is opened in a real browser (headless
//! Chromium): the page must parse into the chart and table we meant, and render to a
//! screenshot of the window's size.

use std::path::Path;
use std::process::Command;

use kvmtune_testkit::corpus;

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

fn chromium(profile: &Path, args: &[String]) -> std::process::Output {
    Command::new("chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium (scripts/test.sh installs it)")
}

#[test]
fn report_renders_in_chromium() {
    let samples = corpus().join("exitstats");
    let before = samples.join("intel_huataihuang_win10-guest_perf-kvm-host-stat-live_before-hpet-fix.txt");
    let after = samples.join("intel_huataihuang_win10-guest_perf-kvm-host-stat-live_after-hpet-fix.txt");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let output = Command::new(env!("CARGO_BIN_EXE_kvmtune"))
        .args(["exits", "compare"])
        .args([&before, &after])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let html = std::fs::read_to_string(&report).unwrap();
    // The only URL is the SVG namespace, which is a name, not a fetch.
    assert_eq!(html.matches("http").count(), html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());
    assert!(!html.contains("<script") && !html.contains("<link"), "self-contained, nothing fetched");

    // What the browser made of it: the DOM after parsing.
    let url = format!("file://{}", report.display());
    let dom = chromium(&dir.path().join("profile-dom"), &["--dump-dom".to_string(), url.clone()]);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    // Ten reasons with exits in either profile: a before and an after bar each.
    assert_eq!(dom.matches("class=\"bar before\"").count(), 10, "{dom}");
    assert_eq!(dom.matches("class=\"bar after\"").count(), 10);
    assert!(dom.contains("<title>IO_INSTRUCTION before: 55.7k</title>"));
    assert!(dom.contains("class=\"verdict better\""));
    assert!(dom.contains("<code>EXIT015</code>"), "the RTC fallback is gone after");

    // And that it draws: a PNG of the window's size.
    let png = dir.path().join("report.png");
    let shot = chromium(
        &dir.path().join("profile-shot"),
        &["--window-size=1100,1400".to_string(), format!("--screenshot={}", png.display()), url],
    );
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1100, 1400));
    // A blank page compresses to a few kilobytes; text, bars and the table do not.
    assert!(bytes.len() > 40_000, "screenshot is {} bytes: blank?", bytes.len());
}
