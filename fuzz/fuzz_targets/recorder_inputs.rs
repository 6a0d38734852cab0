//! What the exit recorder parses from outside: tracefs text (kvm_exit/kvm_entry pairs) and a
//! QEMU process's command line (where its QMP monitor is).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut pairs = kvmtune::exits::record::tracing::ExitPairs::default();
    pairs.feed(text);
    let _ = pairs.rows();
    let argv: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = kvmtune::exits::record::monitor::monitor_from_argv(&argv);
});
