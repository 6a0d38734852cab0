//! `kvmtune top`'s full-screen view (ratatui): every VM of this host refreshed every interval,
//! Enter for one VM's vCPUs, exit kinds and diagnosis. The readings run in a thread of their
//! own, so a slow monitor never freezes the keys; the terminal is restored on quit, on Ctrl-C
//! (a key in raw mode), on errors (a guard) and on panics (ratatui's hook).

use kvmtune::values::escape::terminal;
use kvmtune::values::text::plural;
use std::sync::mpsc;
use std::time::Duration;

use kvmtune::live::VmView;
use kvmtune::output::top_text;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState, Wrap};

/// One refresh: the VMs and the host line.
pub(crate) struct Snapshot {
    pub(crate) views: Vec<VmView>,
    pub(crate) host_line: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sort {
    Exits,
    Name,
}

struct Screen {
    snapshot: Option<Snapshot>,
    table: TableState,
    /// The VM shown in detail, by name.
    detail: Option<String>,
    sort: Sort,
    findings_only: bool,
    interval_s: f64,
}

/// Restores the terminal however the view ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

impl Screen {
    fn shown(&self) -> Vec<&VmView> {
        let Some(snapshot) = &self.snapshot else { return Vec::new() };
        let mut views: Vec<&VmView> = snapshot
            .views
            .iter()
            .filter(|v| !self.findings_only || !v.findings.is_empty() || v.error.is_some())
            .collect();
        match self.sort {
            Sort::Exits => {
                views.sort_by(|a, b| b.exits_per_s.total_cmp(&a.exits_per_s).then(a.name.cmp(&b.name)))
            }
            Sort::Name => views.sort_by(|a, b| a.name.cmp(&b.name).then(a.pid.cmp(&b.pid))),
        }
        views
    }

    fn render(&mut self, frame: &mut ratatui::Frame) {
        let [header, body, footer] =
            Layout::vertical([Constraint::Length(2), Constraint::Min(3), Constraint::Length(1)])
                .areas(frame.area());
        let host_line = self.snapshot.as_ref().map_or("reading the VMs...", |s| s.host_line.as_str());
        let sort = match self.sort {
            Sort::Exits => "exits/s",
            Sort::Name => "name",
        };
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(format!(
                    "kvmtune top: rates over {:.1} s, sorted by {sort}{}",
                    self.interval_s,
                    if self.findings_only { ", VMs with findings only" } else { "" }
                )),
                Line::from(host_line.to_string()),
            ]),
            header,
        );
        let keys = match self.detail {
            Some(_) => "Esc back   q quit",
            None => "↑↓ select   Enter details   s sort   f findings only   q quit",
        };
        frame
            .render_widget(Paragraph::new(keys).style(Style::new().add_modifier(Modifier::REVERSED)), footer);
        if let Some(name) = self.detail.clone() {
            self.render_detail(frame, body, &name);
            return;
        }
        let views = self.shown();
        let rows: Vec<Row> = views
            .iter()
            .map(|v| {
                Row::new(vec![
                    terminal(&v.name).into_owned(),
                    v.pid.to_string(),
                    v.vcpus.to_string(),
                    format!("{:.0}", v.exits_per_s),
                    top_text::busiest(v),
                    top_text::halt_poll(v),
                    top_text::diagnosis(v),
                ])
            })
            .collect();
        let count = rows.len();
        let table = Table::new(
            rows,
            [
                Constraint::Length(28),
                Constraint::Length(8),
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Length(16),
                Constraint::Length(9),
                Constraint::Min(20),
            ],
        )
        .header(
            Row::new(["VM", "PID", "vCPUs", "exits/s", "busiest", "halt-poll", "diagnosis"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(plural(count, "VM")));
        if self.table.selected().is_none_or(|s| s >= count) {
            self.table.select((count > 0).then_some(0));
        }
        frame.render_stateful_widget(table, body, &mut self.table);
    }

    fn render_detail(&self, frame: &mut ratatui::Frame, area: ratatui::layout::Rect, name: &str) {
        let view = self.snapshot.as_ref().and_then(|s| s.views.iter().find(|v| v.name == name));
        let mut lines: Vec<Line> = Vec::new();
        match view {
            None => lines.push(Line::from("this VM is gone")),
            Some(view) => {
                lines.push(Line::from(format!(
                    "pid {}, {} vCPU(s), {:.0} exits/s, halt-poll {}",
                    view.pid,
                    view.vcpus,
                    view.exits_per_s,
                    top_text::halt_poll(view)
                )));
                if let Some(error) = &view.error {
                    lines.push(Line::from(format!("cannot read: {}", terminal(error))));
                }
                for (vcpu, kinds) in view.per_vcpu.iter().enumerate() {
                    let kinds: Vec<String> =
                        kinds.iter().map(|(kind, rate)| format!("{kind} {rate:.0}/s")).collect();
                    lines.push(Line::from(format!(
                        "vCPU {vcpu}: {}",
                        if kinds.is_empty() { "no exits".to_string() } else { kinds.join(", ") }
                    )));
                }
                lines.push(Line::from(""));
                if view.findings.is_empty() {
                    lines.push(Line::from("no EXIT rule fires"));
                }
                for finding in &view.findings {
                    lines.push(
                        Line::from(format!(
                            "{} {}: {}",
                            finding.rule,
                            finding.severity.label(),
                            finding.title
                        ))
                        .style(Style::new().add_modifier(Modifier::BOLD)),
                    );
                    lines.push(Line::from(format!("  why: {}", finding.explanation)));
                    lines.push(Line::from(format!("  fix: {}", finding.fix)));
                }
            }
        }
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(terminal(name).into_owned())),
            area,
        );
    }

    /// Handles one key; false to quit.
    fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> bool {
        match code {
            KeyCode::Char('q') => return false,
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Esc | KeyCode::Backspace => self.detail = None,
            KeyCode::Enter => {
                let selected =
                    self.table.selected().and_then(|index| self.shown().get(index).map(|v| v.name.clone()));
                self.detail = selected;
            }
            KeyCode::Down => self.table.select_next(),
            KeyCode::Up => self.table.select_previous(),
            KeyCode::Char('s') => {
                self.sort = match self.sort {
                    Sort::Exits => Sort::Name,
                    Sort::Name => Sort::Exits,
                }
            }
            KeyCode::Char('f') => self.findings_only = !self.findings_only,
            _ => {}
        }
        true
    }
}

/// Runs the view until `q`; `snapshots` brings each refresh.
pub(crate) fn run(snapshots: mpsc::Receiver<Snapshot>, interval_s: f64) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut screen = Screen {
        snapshot: None,
        table: TableState::default(),
        detail: None,
        sort: Sort::Exits,
        findings_only: false,
        interval_s,
    };
    loop {
        while let Ok(snapshot) = snapshots.try_recv() {
            screen.snapshot = Some(snapshot);
        }
        terminal.draw(|frame| screen.render(frame))?;
        if event::poll(Duration::from_millis(100))?
            && let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
            && !screen.key(key.code, key.modifiers)
        {
            return Ok(());
        }
    }
}
