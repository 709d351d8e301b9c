//! The screen's state and what each key does to it. Keys never call libvirt: what needs
//! it comes back as an [`Action`] for the command to run (off the UI thread, or with the
//! screen suspended for the editor).

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::{self, Column, History, Line, Sample};

/// What a key asks the command to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Dismount every disc of this VM (confirmed).
    Eject {
        vm: String,
    },
    /// List the storage pools' ISO volumes for a mount into this VM.
    ListIsos {
        vm: String,
    },
    /// Mount this ISO into this VM.
    Mount {
        vm: String,
        iso: String,
    },
    /// Edit this file inside this VM (the screen is suspended meanwhile).
    Edit {
        vm: String,
        path: String,
    },
}

impl Action {
    /// The VM the action is about (as the screen names it), if any.
    pub fn vm(&self) -> Option<&str> {
        match self {
            Action::None | Action::Quit => None,
            Action::Eject { vm }
            | Action::ListIsos { vm }
            | Action::Mount { vm, .. }
            | Action::Edit { vm, .. } => Some(vm),
        }
    }
}

/// What a typed line is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    Filter,
    MountPath { vm: String },
    EditPath { vm: String },
}

/// What the screen shows over (or instead of) the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Table,
    Details,
    Help,
    /// A yes/no question before a dismount.
    ConfirmEject {
        vm: String,
        discs: String,
    },
    /// A line being typed.
    Input {
        purpose: Purpose,
        text: String,
    },
    /// Pick an ISO volume (the last item types a path).
    PickIso {
        vm: String,
        items: Vec<String>,
        selected: usize,
    },
}

/// The last item of the ISO picker.
pub const TYPE_A_PATH: &str = "Type a path…";

/// One host's samples: each host has a collector of its own, so a slow host delays only
/// its own lines.
pub struct Feed {
    /// The host's name (the HOST column), with several hosts.
    pub name: Option<Arc<str>>,
    /// The newest sample.
    pub last: Option<Sample>,
    /// Its lines.
    lines: Vec<Line>,
    /// Why the host's newest scan failed, when it did (its lines stay the last good ones).
    pub error: Option<String>,
}

pub struct Ui {
    /// What the header names: the URI, or how many hosts.
    pub title: String,
    pub interval_secs: f64,
    pub feeds: Vec<Feed>,
    pub color: bool,
    pub sort: Column,
    pub reverse: bool,
    pub filter: String,
    pub mode: Mode,
    /// Lines of the newest sample, sorted and filtered as shown.
    pub shown: Vec<Line>,
    /// Every line of the newest sample.
    all: Vec<Line>,
    pub selected: Option<String>,
    pub offset: usize,
    /// Rows the table showed last time it was drawn (for PgUp/PgDn).
    pub page: usize,
    pub history: History,
    /// The result line of the last action.
    pub message: Option<String>,
    /// An action running in the background.
    pub busy: Option<String>,
}

impl Ui {
    /// The screen of one host.
    pub fn new(uri: String, interval_secs: f64, color: bool) -> Ui {
        Ui::of_hosts(uri, &[], interval_secs, color)
    }

    /// The screen of several hosts (`names`, in the collectors' order; none: one host
    /// without a HOST column) that `title` names in the header.
    pub fn of_hosts(title: String, names: &[String], interval_secs: f64, color: bool) -> Ui {
        let feed = |name: Option<Arc<str>>| Feed {
            name,
            last: None,
            lines: Vec::new(),
            error: None,
        };
        let feeds = if names.is_empty() {
            vec![feed(None)]
        } else {
            names
                .iter()
                .map(|n| feed(Some(Arc::from(n.as_str()))))
                .collect()
        };
        Ui {
            title,
            interval_secs,
            feeds,
            color,
            sort: Column::Cpu,
            reverse: false,
            filter: String::new(),
            mode: Mode::Table,
            shown: Vec::new(),
            all: Vec::new(),
            selected: None,
            offset: 0,
            page: 10,
            history: History::default(),
            message: None,
            busy: None,
        }
    }

    /// Whether the screen covers several hosts (a HOST column, VMs named `HOST:VM`).
    pub fn several(&self) -> bool {
        self.feeds.iter().any(|f| f.name.is_some())
    }

    /// A new sample from the (one) host's collector.
    pub fn take(&mut self, sample: Sample) {
        self.take_from(0, sample);
    }

    /// A new sample from host `h`'s collector.
    pub fn take_from(&mut self, h: usize, sample: Sample) {
        let Some(feed) = self.feeds.get_mut(h) else {
            return;
        };
        feed.lines = model::lines(feed.last.as_ref(), &sample, feed.name.as_ref());
        feed.last = Some(sample);
        feed.error = None;
        self.history.push(&feed.lines);
        self.all = self.feeds.iter().flat_map(|f| f.lines.clone()).collect();
        self.history.keep_only(&self.all);
        self.refresh();
    }

    /// Host `h`'s newest scan failed.
    pub fn failed(&mut self, h: usize, error: String) {
        if let Some(feed) = self.feeds.get_mut(h) {
            feed.error = Some(error);
        }
    }

    /// Re-sort and re-filter, keeping the selection on the same VM.
    pub fn refresh(&mut self) {
        let mut shown: Vec<Line> = self
            .all
            .iter()
            .filter(|l| model::matches(l, &self.filter))
            .cloned()
            .collect();
        model::sort(&mut shown, self.sort, self.reverse);
        self.shown = shown;
        let keep = self
            .selected
            .as_ref()
            .and_then(|k| self.shown.iter().position(|l| &l.key() == k));
        self.select(keep.unwrap_or(0));
    }

    pub fn selected_index(&self) -> Option<usize> {
        let k = self.selected.as_ref()?;
        self.shown.iter().position(|l| &l.key() == k)
    }

    pub fn selected_line(&self) -> Option<&Line> {
        self.selected_index().map(|i| &self.shown[i])
    }

    fn select(&mut self, i: usize) {
        if self.shown.is_empty() {
            self.selected = None;
            self.offset = 0;
            return;
        }
        let i = i.min(self.shown.len() - 1);
        self.selected = Some(self.shown[i].key());
        let page = self.page.max(1);
        if i < self.offset {
            self.offset = i;
        } else if i >= self.offset + page {
            self.offset = i + 1 - page;
        }
        self.offset = self.offset.min(self.shown.len().saturating_sub(1));
    }

    fn move_by(&mut self, delta: isize) {
        let i = self.selected_index().unwrap_or(0) as isize + delta;
        self.select(i.max(0) as usize);
    }

    /// Set the sort column (the same one again reverses).
    pub fn sort_by(&mut self, col: Column) {
        if self.sort == col {
            self.reverse = !self.reverse;
        } else {
            self.sort = col;
            self.reverse = false;
        }
        self.refresh();
    }

    fn shift_sort(&mut self, step: isize) {
        let all = Column::ALL;
        let i = all.iter().position(|c| *c == self.sort).unwrap_or(0) as isize;
        let n = all.len() as isize;
        self.sort = all[((i + step).rem_euclid(n)) as usize];
        self.reverse = false;
        self.refresh();
    }

    /// One key. Ctrl-C quits from anywhere; Esc and `q` step back, and quit from the table.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match self.mode.clone() {
            Mode::Table => self.table_key(k),
            Mode::Details | Mode::Help => {
                match k.code {
                    KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('?') => {
                        self.mode = Mode::Table
                    }
                    KeyCode::Up => self.move_by(-1),
                    KeyCode::Down => self.move_by(1),
                    _ => {}
                }
                Action::None
            }
            Mode::ConfirmEject { vm, .. } => {
                self.mode = Mode::Table;
                match k.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => {
                        self.busy = Some(format!("dismounting the disc of {vm}…"));
                        Action::Eject { vm }
                    }
                    _ => {
                        self.message = Some("dismount cancelled".to_string());
                        Action::None
                    }
                }
            }
            Mode::Input { purpose, mut text } => match k.code {
                KeyCode::Esc => {
                    if purpose == Purpose::Filter {
                        self.filter.clear();
                        self.refresh();
                    }
                    self.mode = Mode::Table;
                    Action::None
                }
                KeyCode::Enter => {
                    self.mode = Mode::Table;
                    let text = text.trim().to_string();
                    match purpose {
                        Purpose::Filter => Action::None,
                        _ if text.is_empty() => Action::None,
                        Purpose::MountPath { vm } => {
                            self.busy = Some(format!("mounting into {vm}…"));
                            Action::Mount { vm, iso: text }
                        }
                        Purpose::EditPath { vm } => Action::Edit { vm, path: text },
                    }
                }
                KeyCode::Backspace => {
                    text.pop();
                    self.typed(purpose, text);
                    Action::None
                }
                KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                    if text.chars().count() < 4096 {
                        text.push(c);
                    }
                    self.typed(purpose, text);
                    Action::None
                }
                _ => Action::None,
            },
            Mode::PickIso {
                vm,
                items,
                selected,
            } => {
                let last = items.len().saturating_sub(1);
                match k.code {
                    KeyCode::Esc | KeyCode::Char('q') => self.mode = Mode::Table,
                    KeyCode::Up => {
                        self.mode = Mode::PickIso {
                            vm,
                            items,
                            selected: selected.saturating_sub(1),
                        }
                    }
                    KeyCode::Down => {
                        self.mode = Mode::PickIso {
                            vm,
                            items,
                            selected: (selected + 1).min(last),
                        }
                    }
                    KeyCode::Enter if selected == last => {
                        self.mode = Mode::Input {
                            purpose: Purpose::MountPath { vm },
                            text: String::new(),
                        }
                    }
                    KeyCode::Enter => {
                        self.mode = Mode::Table;
                        self.busy = Some(format!("mounting into {vm}…"));
                        return Action::Mount {
                            vm,
                            iso: items[selected].clone(),
                        };
                    }
                    _ => {}
                }
                Action::None
            }
        }
    }

    fn typed(&mut self, purpose: Purpose, text: String) {
        if purpose == Purpose::Filter {
            self.filter = text.clone();
            self.refresh();
        }
        self.mode = Mode::Input { purpose, text };
    }

    fn table_key(&mut self, k: KeyEvent) -> Action {
        let page = self.page.max(1) as isize;
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::PageDown => self.move_by(page),
            KeyCode::Home => self.select(0),
            KeyCode::End => self.select(usize::MAX),
            KeyCode::Char('<') => self.shift_sort(-1),
            KeyCode::Char('>') => self.shift_sort(1),
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                self.refresh();
            }
            KeyCode::Char(c @ '1'..='9') => {
                let i = c as usize - '1' as usize;
                self.sort_by(Column::ALL[i]);
            }
            KeyCode::Char('0') => self.sort_by(Column::ALL[9]),
            KeyCode::Char('-') => self.sort_by(Column::ALL[10]),
            KeyCode::Char('=') => self.sort_by(Column::ALL[11]),
            KeyCode::Char('/') => {
                self.mode = Mode::Input {
                    purpose: Purpose::Filter,
                    text: self.filter.clone(),
                }
            }
            KeyCode::Char('?') | KeyCode::Char('h') => self.mode = Mode::Help,
            KeyCode::Enter if self.selected_line().is_some() => self.mode = Mode::Details,
            KeyCode::Char('e') | KeyCode::Char('m') | KeyCode::Char('E') => {
                let Some(line) = self.selected_line() else {
                    return Action::None;
                };
                let vm = line.label();
                if let Some(b) = &self.busy {
                    self.message = Some(format!("busy: {b}"));
                    return Action::None;
                }
                match k.code {
                    KeyCode::Char('e') => {
                        let discs = model::iso_text(&line.row);
                        if discs == "-" {
                            self.message = Some(format!("{vm}: no disc in any drive"));
                        } else {
                            self.mode = Mode::ConfirmEject { vm, discs };
                        }
                    }
                    KeyCode::Char('m') => {
                        self.busy = Some("listing the storage pools' ISO volumes…".into());
                        return Action::ListIsos { vm };
                    }
                    _ => {
                        self.mode = Mode::Input {
                            purpose: Purpose::EditPath { vm },
                            text: String::new(),
                        }
                    }
                }
            }
            _ => {}
        }
        Action::None
    }

    /// The ISO volumes for a mount arrived: open the picker.
    pub fn pick_iso(&mut self, vm: String, mut items: Vec<String>) {
        self.busy = None;
        items.push(TYPE_A_PATH.to_string());
        self.mode = Mode::PickIso {
            vm,
            items,
            selected: 0,
        };
    }

    /// A background action ended with this line.
    pub fn done(&mut self, line: String) {
        self.busy = None;
        self.message = Some(line);
    }
}
