//! One exit profile: which exits, how many, how long they took to handle.

use serde::{Deserialize, Serialize};

pub use crate::exits::reasons::RowKind;

/// Which exit-reason vocabulary the names come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    /// Intel VMX (`EPT_MISCONFIG`, `IO_INSTRUCTION`, ...).
    Vmx,
    /// AMD SVM (`npf`, `io`, `msr`, or kvm_stat's `NPF`, `IOIO`, `MSR`).
    Svm,
    Arm64,
    RiscV,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRow {
    /// The reason as printed (`IO_INSTRUCTION`, `npf`, `UNKNOWN(131072)`).
    pub name: String,
    pub count: u64,
    /// Per second, as the source printed it: kvm_stat's `CurAvg/s`, the second number of
    /// `kvm_stat -1` and of the old `kvm statistics` screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Total handling time in microseconds, where the source reports times.
    pub time_us: Option<f64>,
    pub min_us: Option<f64>,
    pub max_us: Option<f64>,
    pub mean_us: Option<f64>,
    /// perf's `( +- N% )` after the mean: the standard error of the mean in percent of the
    /// mean (`rel_stddev_stats(stddev_stats(..), avg_stats(..))` in perf's `builtin-kvm.c` and
    /// `util/stat.c`). A large one says a few long exits carry the row's handling time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_error_percent: Option<f64>,
    /// The row's share of all handling time in percent, as perf prints it (`Time%`): what is
    /// left of the times when a poster cut the time columns off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_percent: Option<f64>,
    /// The row's share of all samples in percent, as perf prints it (`Samples%`): of the whole
    /// table even when the poster kept only a few rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_percent: Option<f64>,
    /// 1-based line in the input.
    pub line: u32,
    /// The count per vCPU (index = vCPU), where the source reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_vcpu: Vec<u64>,
    /// What the row counts: exits of a reason, all exits, or something else.
    #[serde(default)]
    pub kind: RowKind,
    /// The row this one is a part of (kvm_stat prints child events indented under their
    /// parent): its count is inside the parent's, never added to the total again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl ExitProfile {
    /// The table is of every exit reason the VM had (perf's `VM-EXIT` tables, kvm_stat, the
    /// recorder's `kvm_exit` profile). Partial counters (KVM stats, tracepoint counts, ioport
    /// or MSR tables) say nothing of the rest. Whether all of its rows are here is
    /// [`Self::shows_every_reason`].
    pub fn lists_every_reason(&self) -> bool {
        self.event.starts_with("VM-EXIT") || self.format == "kvm_stat"
    }

    /// A table of every reason with all of its rows here, so a reason's absence means it did
    /// not happen. A poster who kept only the top rows ([`Self::rows_cut`]) left the small
    /// reasons out, and any of them may be the one whose absence would count.
    pub fn shows_every_reason(&self) -> bool {
        self.lists_every_reason() && !self.rows_cut()
    }

    /// The share of the table's samples that its rows leave out, where perf printed each
    /// row's `Samples%`: that is of the whole table, also of rows a poster did not keep. `None`
    /// where a row has none (kvm_stat, the recorder, a table whose columns were cut before it).
    pub fn missing_share(&self) -> Option<f64> {
        self.own_rows().next()?;
        let printed: f64 = self.own_rows().map(|r| r.sample_percent).sum::<Option<f64>>()?;
        Some((1.0 - printed / 100.0).max(0.0))
    }

    /// Rows were left out: marked `[..]`, or the `Samples%` of the rows add up to less than
    /// their rounding explains (perf prints two decimals, so each row is off by at most 0.005
    /// points; 0.01 more for the sum's own floating point).
    pub fn rows_cut(&self) -> bool {
        let rounding = (0.005 * self.own_rows().count() as f64 + 0.01) / 100.0;
        self.truncated || self.missing_share().is_some_and(|missing| missing > rounding)
    }

    /// The rows that each count a share of the table: not its total, not a child row.
    fn own_rows(&self) -> impl Iterator<Item = &ExitRow> {
        self.rows.iter().filter(|r| r.kind != RowKind::Total && r.parent.is_none())
    }

    /// Each exit is counted once, in one row: a table of every reason, or KVM's own
    /// statistics, whose `exits` counts them all and whose `*_exits` counters each count
    /// one kind (they leave some exits out, never count one twice). Tracepoint counts do not
    /// qualify: `kvm_pio` and `KVM_EXIT_IO` count the same exit.
    pub fn counts_each_exit_once(&self) -> bool {
        self.lists_every_reason()
            || (self.rows.iter().any(|r| r.kind == RowKind::Total)
                && self
                    .rows
                    .iter()
                    .filter(|r| r.is_exit())
                    .all(|r| crate::exits::reasons::is_exit_counter(&r.name)))
    }
}

impl ExitRow {
    /// A counter read per vCPU (KVM's statistics), counted in all.
    pub fn per_vcpu(name: String, per_vcpu: Vec<u64>) -> Self {
        let count = saturating_sum(per_vcpu.iter().copied());
        Self { per_vcpu, ..Self::count_only(name, count, 0) }
    }

    /// A counter without timing (kvm_stat, KVM stats), its kind from the vocabulary.
    pub fn count_only(name: String, count: u64, line: u32) -> Self {
        Self {
            kind: crate::exits::reasons::kind_of(&name),
            name,
            count,
            rate_per_s: None,
            time_us: None,
            min_us: None,
            max_us: None,
            mean_us: None,
            mean_error_percent: None,
            time_percent: None,
            sample_percent: None,
            line,
            per_vcpu: Vec::new(),
            parent: None,
        }
    }

    /// The part of this row's handling time its own spread vouches for: the mean less two of
    /// perf's standard errors (about 95% confidence), over the mean; 1 where no error is
    /// printed. A `( +- 48% )` row's time may be mostly one or two long exits, and leaves
    /// almost nothing.
    pub fn surely_spent_fraction(&self) -> f64 {
        self.mean_error_percent.map_or(1.0, |error| (1.0 - 2.0 * error / 100.0).clamp(0.0, 1.0))
    }

    /// Counted among the exits (not an event, not the total, not a part of another row).
    pub fn is_exit(&self) -> bool {
        self.kind == RowKind::Exit && self.parent.is_none()
    }

    /// What a table shows in place of a share of all exits for a row that is not an exit of
    /// its own: `event`, `total`, or `part` (of another row); `None` for an exit.
    pub fn not_a_share(&self) -> Option<&'static str> {
        match (self.kind, &self.parent) {
            (RowKind::Event, _) => Some("event"),
            (RowKind::Total, _) => Some("total"),
            (RowKind::Exit, Some(_)) => Some("part"),
            (RowKind::Exit, None) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitProfile {
    /// `perf kvm stat`, `perf kvm stat (new layout)`, `kvm_stat`, ...
    pub format: String,
    /// What the table counts: `VM-EXIT`, `MSR Access`, `IO Port Access`, `kvm_stat events`.
    pub event: String,
    pub isa: Isa,
    pub rows: Vec<ExitRow>,
    /// `Total Samples` and `Total events handled time` where the source prints them; for
    /// kvm_stat, its `Total` line, which adds up every event it shows, exits or not.
    pub declared_samples: Option<u64>,
    pub declared_time_us: Option<f64>,
    /// Rows were left out of the input (`[..]`), so the rows do not add up to the totals.
    pub truncated: bool,
    /// Seconds the counts cover, where known (rates are per second of this).
    pub duration_s: Option<f64>,
    /// The handling times count only exits whose exit and entry both fell in the span the
    /// table covers, so each vCPU's times add up to no more than that span: `perf kvm stat
    /// report` (tools/perf/builtin-kvm.c, `handle_end_event` drops an entry whose exit it did
    /// not see). Not `perf kvm stat live`, whose screens also count in full the exit a vCPU
    /// was in when the screen began (a halt of seconds), nor sources without times.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub times_within_span: bool,
    /// What the source could not give (a tracepoint that never fired, a VM that stopped), and
    /// warnings about rows that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The 1-based line the table starts on in its input (0 for a profile that was not read
    /// from text).
    #[serde(default)]
    pub line: u32,
}

impl ExitProfile {
    /// An empty profile of `format` counting `event`, to which a reader adds rows.
    pub fn new(format: &str, event: &str) -> Self {
        Self {
            format: format.to_string(),
            event: event.to_string(),
            isa: Isa::Unknown,
            rows: Vec::new(),
            declared_samples: None,
            declared_time_us: None,
            truncated: false,
            duration_s: None,
            times_within_span: false,
            notes: Vec::new(),
            line: 0,
        }
    }

    pub fn total_time_us(&self) -> Option<f64> {
        self.declared_time_us.or_else(|| {
            let times: Option<Vec<f64>> = self.rows.iter().map(|r| r.time_us).collect();
            times.map(|t| t.iter().sum())
        })
    }

    pub fn row(&self, name: &str) -> Option<&ExitRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// Every row carries the rate its source printed (kvm_stat): per-second figures without a
    /// duration.
    pub fn has_printed_rates(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.rate_per_s.is_some())
    }
}

/// Counts from hand-edited or hostile input can be anything; totals saturate instead of
/// overflowing.
pub fn saturating_sum(counts: impl Iterator<Item = u64>) -> u64 {
    counts.fold(0u64, u64::saturating_add)
}

/// KVM's vCPU counters at one moment: `counter -> per-vCPU totals`.
pub type Sample = std::collections::BTreeMap<String, Vec<u64>>;
