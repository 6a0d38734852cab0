//! What a security review of kvmtune tried with hand-made inputs and found to hold, kept so:
//! each hostile domain is refused with an error that says where, never a panic, a hang or an
//! expansion. (The review's failures each have a test beside the code they changed.)

use kvmtune::config;

/// A domain around `inside` (devices, metadata, ...), with the parts every reader needs.
fn domain(inside: &str) -> String {
    format!(
        "<domain type='kvm'><name>win</name><memory unit='KiB'>4194304</memory><vcpu>4</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os>{inside}</domain>"
    )
}

fn metadata(host: &str) -> String {
    domain(&format!(
        "<metadata><kvmtune:host xmlns:kvmtune='https://kvmtune.dev/xmlns/libvirt/host/1'>{host}</kvmtune:host></metadata>"
    ))
}

fn refused(text: &str) -> String {
    match config::read("hostile.xml", text) {
        Ok(_) => panic!("accepted:\n{}", text.chars().take(300).collect::<String>()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn entities_are_never_expanded() {
    // A billion laughs in miniature: an XML reader that expands entities grows it tenfold per level.
    let mut entities = String::from("<!ENTITY a0 'lol'>");
    for level in 1..10 {
        let previous = format!("&a{};", level - 1).repeat(10);
        entities.push_str(&format!("<!ENTITY a{level} '{previous}'>"));
    }
    let text = format!("<!DOCTYPE domain [{entities}]>{}", domain("<description>&a9;</description>"));
    let error = refused(&text);
    assert!(error.contains("hostile.xml"), "{error}");
}

/// Read without recursion to the bottom: an element the reader does not know is passed over
/// (libvirt would refuse it; kvmtune reads what it knows), and a stack overflow would abort
/// this test.
#[test]
fn deep_nesting_never_overflows_the_stack() {
    let depth = 100_000;
    let text = domain(&format!("{}{}", "<x>".repeat(depth), "</x>".repeat(depth)));
    let read = config::read("hostile.xml", &text);
    assert!(read.is_ok() || read.is_err_and(|e| e.to_string().contains("hostile.xml")));
}

#[test]
fn numbers_beyond_any_machine_are_refused_with_their_place() {
    let text = domain("").replace("4194304", "99999999999999999999999999");
    let error = refused(&text);
    assert!(error.contains("hostile.xml:1:"), "{error}");
}

#[test]
fn metadata_addresses_and_governors_are_checked_strictly() {
    for (host, what) in [
        ("<kvmtune:vfio><kvmtune:device address='0000:01:00.0;reboot'/></kvmtune:vfio>", "address"),
        ("<kvmtune:vfio><kvmtune:device address='../../../etc'/></kvmtune:vfio>", "address"),
        ("<kvmtune:cpufreq governor='performance; rm -rf /'/>", "governor"),
        ("<kvmtune:cpufreq governor='../../x'/>", "governor"),
    ] {
        let error = refused(&metadata(host));
        assert!(error.contains("hostile.xml:1:"), "{what}: {error}");
    }
}
