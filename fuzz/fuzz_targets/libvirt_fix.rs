//! The libvirt editor: on any XML that reads, applying fixes must give XML that still reads
//! (or a clean refusal), never broken XML.
#![no_main]
use kvmtune::config::edit::ConfigEdit;
use kvmtune::knowledge::hyperv::Hv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if kvmtune::config::libvirt::parse("fuzz.xml", text).is_err() {
        return;
    }
    let actions = [
        ConfigEdit::EnableHyperv { features: vec![Hv::Vpindex, Hv::Time, Hv::StimerDirect] },
        ConfigEdit::SetTimer { name: "rtc".into(), attributes: vec![("tickpolicy".into(), "catchup".into())] },
        ConfigEdit::SetClockOffset { offset: "localtime".into() },
        ConfigEdit::SetMemballoonModel { model: "none".into() },
        ConfigEdit::SetCpuCacheMode { mode: "passthrough".into() },
    ];
    for action in actions {
        if let Ok(fixed) = kvmtune::config::libvirt_edit::apply_actions(text, std::slice::from_ref(&action)) {
            assert!(
                kvmtune::config::libvirt::parse("fixed.xml", &fixed).is_ok()
                    || roxmltree::Document::parse(&fixed).is_ok(),
                "{action:?} broke the XML:\n{fixed}"
            );
        }
    }
});
