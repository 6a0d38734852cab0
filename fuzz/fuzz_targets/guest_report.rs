//! What `kvmtune verify --report` or a guest agent may hand over as a guest report: any text.
//! Reading never panics, and a report that reads is held against a config, and this machine's
//! topology for the config's pins, without panicking.
#![no_main]
use kvmtune::guest::GuestReport;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = "<domain type='kvm'><name>f</name><memory>1048576</memory><vcpu>4</vcpu>\
<features><hyperv mode='custom'><relaxed state='on'/><vendor_id state='on' value='fuzz'/></hyperv></features>\
<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/><vcpupin vcpu='2' cpuset='0'/><vcpupin vcpu='3' cpuset='0-1'/></cputune>\
<cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='2' threads='2'/><feature policy='require' name='invtsc'/></cpu>\
<os><type arch='x86_64'>hvm</type></os></domain>";

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(report) = GuestReport::from_json(text, "fuzz") {
        let config = kvmtune::config::read("fuzz.xml", CONFIG).expect("the config reads");
        static HOST: std::sync::OnceLock<kvmtune::host::HostFacts> = std::sync::OnceLock::new();
        let host = HOST.get_or_init(|| kvmtune::host::probe(&kvmtune::host::Host::live()));
        let findings = kvmtune::analysis::verify_rules::verify(&config, &report, Some(host));
        let _ = kvmtune::output::verify::render_text("fuzz", Some("fuzz.xml"), Some(&config), &report, &findings);
    }
});
