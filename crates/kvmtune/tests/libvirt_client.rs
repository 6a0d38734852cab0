//! The one way kvmtune calls libvirt (host::libvirt), against libvirt's own test driver and a
//! socket that never answers.

use std::time::Duration;

use kvmtune::host::libvirt::{Domains, Libvirt, LibvirtError};

const TEST_DRIVER: &str = "test:///default";

#[test]
#[cfg_attr(not(feature = "libvirt"), ignore = "needs libvirt: cargo test --features libvirt")]
fn lists_and_reads_the_test_drivers_domain() {
    let libvirt = Libvirt::new(Some(TEST_DRIVER));
    assert_eq!(libvirt.domains(Domains::All).unwrap(), ["test"]);
    assert_eq!(libvirt.domains(Domains::Running).unwrap(), ["test"]);
    let xml = libvirt.domain_xml("test").unwrap();
    assert!(xml.starts_with("<domain type='test'>"), "{xml}");
}

#[test]
#[cfg_attr(not(feature = "libvirt"), ignore = "needs libvirt: cargo test --features libvirt")]
fn libvirts_refusals_come_back_with_its_words() {
    let libvirt = Libvirt::new(Some(TEST_DRIVER));
    let error = libvirt.domain_xml("nosuch").unwrap_err();
    assert!(matches!(&error, LibvirtError::Failed { verb: "dumpxml", .. }), "{error}");
    assert_eq!(error.to_string(), "virsh dumpxml failed: error: failed to get domain 'nosuch'");
    // A name that looks like an option is still a name.
    let error = libvirt.domain_xml("--all").unwrap_err();
    assert!(error.to_string().contains("failed to get domain '--all'"), "{error}");
    let error = libvirt.monitor_command("test", r#"{"execute":"query-status"}"#).unwrap_err();
    assert!(error.to_string().contains("not supported by the connection driver"), "{error}");
}

#[test]
#[cfg_attr(not(feature = "libvirt"), ignore = "needs libvirt: cargo test --features libvirt")]
fn a_libvirt_that_never_answers_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    // Connections wait in the backlog: virsh connects and then waits for a reply that never comes.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let uri = format!("qemu+unix:///system?socket={}", socket.display());
    let libvirt = Libvirt::new(Some(&uri)).within(Duration::from_millis(1500));
    let error = libvirt.domains(Domains::Running).unwrap_err();
    assert!(matches!(error, LibvirtError::TimedOut { verb: "list", .. }), "{error}");
    assert_eq!(error.to_string(), "libvirt did not answer `list` within 1.5 s");
}
