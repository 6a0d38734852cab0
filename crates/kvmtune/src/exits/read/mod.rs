//! Readers for exit statistics as users have them: one module per format, each with a sniff
//! (does this text hold tables of mine?) and a read, listed in [`FORMATS`]. A new format is a
//! new module here and one line in that table, as `config/` has one reader per file format.
//!
//! What every reader does the same way, on text pasted from mail, forums, bug trackers and
//! slides ([`text::Pasted`]): mail quoting (`> `, `> > `) is taken off, non-breaking spaces
//! read as spaces, code fences and shell prompts are not rows, and a table ends at its total
//! line, its closing fence or the first line that is not a row, so that the prose around it
//! is ignored. A row that starts like one but cannot be read costs that row only: it is left
//! out with a warning naming its line, never the whole table.
//!
//! A paste may hold several tables (before and after, a `VM-EXIT` table and its `--event=ioport`
//! side table, two kvm_stat snapshots): each is a profile of its own, in the order of the text.
//! Text that holds no table of any format is an error at line 1.

pub mod bcc_kvmexit;
pub mod domstats;
pub mod kvm_stat;
pub mod kvm_stat_log;
pub mod perf_classic;
pub mod perf_new;
pub mod qmp;
pub mod saved;
pub mod text;

use thiserror::Error;

use crate::exits::model::{ExitProfile, Isa};
use text::Pasted;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExitParseError {
    /// Not a format kvmtune reads.
    #[error("{path}:{line}:1: {message}")]
    Unrecognized { path: String, line: u32, message: String },
    /// Text that names its format but cannot be read as it (JSON that does not parse).
    #[error("{path}:{line}:{column}: {message}")]
    BadRow { path: String, line: u32, column: u32, message: String },
}

/// One format of exit statistics.
pub struct Format {
    /// As `--help` and messages name it.
    pub name: &'static str,
    /// Whether the text holds tables of this format; cheap, and never an error.
    pub sniff: fn(&Pasted) -> bool,
    /// Every table of this format in the text.
    pub read: fn(&Pasted) -> Result<Vec<ExitProfile>, ExitParseError>,
}

/// Every format, in the order they are tried. JSON is one format or the other; text formats
/// may share a paste, and a line claimed by an earlier format's table is not read again.
pub const FORMATS: &[Format] = &[
    saved::FORMAT,
    qmp::FORMAT,
    perf_classic::FORMAT,
    perf_new::FORMAT,
    kvm_stat::FORMAT,
    kvm_stat_log::FORMAT,
    domstats::FORMAT,
    bcc_kvmexit::FORMAT,
];

/// Every table in `text`, in the order it stands there; `path` names the input in messages.
pub fn parse(path: &str, text: &str) -> Result<Vec<ExitProfile>, ExitParseError> {
    let pasted = Pasted::new(path, text);
    let mut found: Vec<ExitProfile> = Vec::new();
    let mut claimed: Vec<(u32, u32)> = Vec::new();
    for format in FORMATS {
        if !(format.sniff)(&pasted) {
            continue;
        }
        // Lines an earlier format read are not read again; one format's profiles may share
        // lines (one table of several VMs, a profile for each).
        let mut claimed_now = Vec::new();
        for profile in (format.read)(&pasted)? {
            let span = lines_of(&profile);
            if span.is_some_and(|(first, last)| claimed.iter().any(|&(a, b)| first <= b && a <= last)) {
                continue;
            }
            claimed_now.extend(span);
            found.push(profile);
        }
        claimed.extend(claimed_now);
    }
    if found.is_empty() {
        return Err(ExitParseError::Unrecognized {
            path: path.to_string(),
            line: 1,
            message: format!(
                "not exit statistics kvmtune reads ({})",
                FORMATS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    found.sort_by_key(|p| p.line);
    Ok(found)
}

/// The input lines a table read from text covers, from its start to its last row.
fn lines_of(profile: &ExitProfile) -> Option<(u32, u32)> {
    let last = profile.rows.iter().map(|r| r.line).max().unwrap_or(profile.line);
    (profile.line > 0).then_some((profile.line, last.max(profile.line)))
}

/// perf prints VMX names in capitals, SVM names in lower case; kvm_stat's own SVM table has
/// capitals too, but names that exist only on SVM give it away.
pub fn guess_isa(names: &[&str]) -> Isa {
    const VMX_ONLY: &[&str] = &[
        "EXTERNAL_INTERRUPT",
        "IO_INSTRUCTION",
        "EPT_VIOLATION",
        "EPT_MISCONFIG",
        "MSR_WRITE",
        "MSR_READ",
        "APIC_ACCESS",
        "APIC_WRITE",
        "EOI_INDUCED",
        "TPR_BELOW_THRESHOLD",
        "PREEMPTION_TIMER",
        "PAUSE_INSTRUCTION",
        "PENDING_INTERRUPT",
        "INTERRUPT_WINDOW",
        "EXCEPTION_NMI",
        "VMCALL",
        "CR_ACCESS",
    ];
    const SVM_ONLY: &[&str] = &[
        "npf",
        "io",
        "msr",
        "interrupt",
        "vintr",
        "hypercall",
        "avic_incomplete_ipi",
        "avic_unaccelerated_access",
        "NPF",
        "IOIO",
        "VMMCALL",
        "INTR",
        "VINTR",
        "CLGI",
        "STGI",
        "VMRUN",
        "INVLPGA",
        "CR0_SEL_WRITE",
        "EXCP_BASE",
        "FERR_FREEZE",
    ];
    const ARM64: &[&str] = &["DABT_LOW", "IABT_LOW", "WFx", "HVC64", "SYS64", "IRQ"];
    const RISCV: &[&str] =
        &["STORE_GUEST_PAGE_FAULT", "LOAD_GUEST_PAGE_FAULT", "VIRTUAL_INST_FAULT", "SUPERVISOR_SYSCALL"];
    let any = |set: &[&str]| names.iter().any(|n| set.contains(n));
    if any(VMX_ONLY) {
        Isa::Vmx
    } else if any(SVM_ONLY) {
        Isa::Svm
    } else if any(ARM64) {
        Isa::Arm64
    } else if any(RISCV) {
        Isa::RiscV
    } else {
        Isa::Unknown
    }
}

/// Sets a profile's vocabulary from its row names, where the reader could not tell.
pub(crate) fn settle_isa(profile: &mut ExitProfile) {
    if profile.isa == Isa::Unknown {
        let names: Vec<&str> = profile.rows.iter().map(|r| r.name.as_str()).collect();
        profile.isa = guess_isa(&names);
    }
}

/// A number as tables print it, with its unit or percent sign (`12.5%`, `3.09us`).
pub(crate) fn number<T: std::str::FromStr>(token: &str) -> Option<T> {
    token.trim_end_matches('%').trim_end_matches("us").parse().ok()
}
