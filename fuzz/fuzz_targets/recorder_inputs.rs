//! What the exit recorder, `top` and the exporter parse from outside: tracefs text
//! (kvm_exit/kvm_entry pairs), a QEMU process's command line (where its QMP monitor is, and
//! the VM's name) and `virsh domstats` output.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut pairs = kvmtune::exits::record::tracing::ExitPairs::default();
    pairs.feed(text);
    let _ = pairs.rows();
    let _ = kvmtune::exits::read::domstats::parse_domstats(text);
    let argv: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = kvmtune::exits::record::monitor::monitor_from_argv(&argv);
    if let Some(vm) = kvmtune::live::discover::identify(1, &argv, None) {
        assert!(!vm.name.is_empty());
    }
});
