//! Printing sessions, jobs and configurations as tables or JSON.
//!
//! Piped tables are exactly what they always were (no colour, no wrapping, trailing spaces
//! trimmed): scripts and the contract tests parse them. Only on a terminal do tables fit its
//! width and colour their State column, and the colour goes when `NO_COLOR` is set to anything
//! but the empty string (<https://no-color.org>).

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::NOTHING};
use std::io::IsTerminal;
use tether_client::{SessionInfo, State};

/// Narrower than this, a terminal's reported width is taken as unknown (a pty nobody sized
/// reports 0) and the table is printed as when piped rather than squeezed to nothing.
const MIN_WIDTH: u16 = 20;

/// True when `stream` is a terminal and `NO_COLOR` does not ask for plain text.
pub fn colour_on(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The colour of a session's State: green when usable, yellow while detached or changing, red
/// when broken; a closed session stays plain (it is only a leftover handle).
pub fn session_state_colour(state: &str) -> Option<Color> {
    match State::parse(state)? {
        State::Opened => Some(Color::Green),
        State::Disconnected => Some(Color::Yellow),
        State::Broken => Some(Color::Red),
        State::Opening | State::Disconnecting | State::Connecting | State::Closing => {
            Some(Color::Cyan)
        }
        State::Closed => None,
    }
}

/// The colour of a job's State, by the same rule as sessions'.
pub fn job_state_colour(state: &str) -> Option<Color> {
    match state {
        "Completed" => Some(Color::Green),
        "Running" => Some(Color::Cyan),
        "Disconnected" | "Blocked" | "NotStarted" => Some(Color::Yellow),
        "Failed" | "Stopped" => Some(Color::Red),
        _ => None,
    }
}

/// Picks the colour of a State cell from its text.
type Paint = fn(&str) -> Option<Color>;

/// One table for stdout, with an optional State column to colour.
pub struct Rows {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    state_col: Option<(usize, Paint)>,
}

impl Rows {
    pub fn new(header: Vec<&'static str>) -> Rows {
        Rows {
            header,
            rows: Vec::new(),
            state_col: None,
        }
    }

    /// Colours column `col` (on a terminal) with `colour` of the cell's text.
    pub fn colour_column(mut self, col: usize, colour: Paint) -> Rows {
        self.state_col = Some((col, colour));
        self
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Renders for a terminal (`tty`: fitted to `width`, coloured if `colour`) or for a pipe.
    fn render(self, tty: Option<u16>, colour: bool) -> String {
        let mut table = Table::new();
        table.load_style(NOTHING);
        match tty {
            Some(width) if width >= MIN_WIDTH => {
                table.set_width(width);
                table.set_content_arrangement(ContentArrangement::Dynamic);
            }
            _ => {
                table.force_no_tty();
            }
        }
        if colour {
            // Colour the word only, not the cell's padding.
            table.enforce_styling().style_text_only();
        }
        table.set_header(self.header);
        for row in self.rows {
            table.add_row(row.into_iter().enumerate().map(|(i, text)| {
                let paint = match self.state_col {
                    Some((col, f)) if colour && col == i => f(&text),
                    _ => None,
                };
                match paint {
                    Some(c) => Cell::new(text).fg(c),
                    None => Cell::new(text),
                }
            }));
        }
        let mut out = String::new();
        for line in table.to_string().lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints to stdout, fitted and coloured only if stdout is a terminal.
    pub fn print(self) {
        let stdout = std::io::stdout();
        let tty = stdout.is_terminal().then(terminal_width).flatten();
        out!("{}", self.render(tty, colour_on(&stdout)));
    }
}

/// The width of the terminal on stdout, if it says.
fn terminal_width() -> Option<u16> {
    Table::new().width()
}

pub fn print_sessions(sessions: &[SessionInfo], json: bool) {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(sessions).unwrap_or_else(|_| "[]".into())
        );
        return;
    }
    if sessions.is_empty() {
        return;
    }
    let with_reason = sessions.iter().any(|s| s.reason.is_some());
    let mut header = vec![
        "Id",
        "Name",
        "ComputerName",
        "ComputerType",
        "State",
        "ConfigurationName",
        "Availability",
    ];
    if with_reason {
        header.push("Reason");
    }
    let mut rows = Rows::new(header).colour_column(4, session_state_colour);
    for s in sessions {
        let mut row = vec![
            s.id.to_string(),
            s.name.clone(),
            s.computer_name.clone(),
            s.computer_type.clone(),
            s.state.as_str().to_string(),
            s.configuration_name.clone(),
            s.availability.as_str().to_string(),
        ];
        if with_reason {
            row.push(s.reason.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    rows.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rows {
        let mut rows =
            Rows::new(vec!["Id", "Name", "State", "Reason"]).colour_column(2, session_state_colour);
        rows.push(vec!["1".into(), "web".into(), "Opened".into(), "".into()]);
        rows.push(vec![
            "2".into(),
            "db".into(),
            "Broken".into(),
            "the shell exited with status 3 while running a rather long command".into(),
        ]);
        rows
    }

    #[test]
    fn piped_tables_are_plain_trimmed_and_unwrapped() {
        let out = sample().render(None, false);
        assert!(!out.contains('\x1b'), "{out:?}");
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(out.lines().all(|l| l == l.trim_end()));
        assert!(out.lines().nth(1).is_some_and(|l| l.contains(" web ")));
    }

    #[test]
    fn a_terminal_gets_coloured_states_within_its_width() {
        let out = sample().render(Some(40), true);
        assert!(out.contains("\x1b["), "no colour: {out:?}");
        assert!(out.lines().count() > 3, "nothing wrapped: {out}");
        // Width counts what is visible: strip the escapes before measuring.
        for line in out.lines() {
            let mut visible = String::new();
            let mut in_esc = false;
            for ch in line.chars() {
                match (in_esc, ch) {
                    (false, '\x1b') => in_esc = true,
                    (true, 'm') => in_esc = false,
                    (false, c) => visible.push(c),
                    _ => {}
                }
            }
            assert!(visible.chars().count() <= 40, "{visible:?} is too wide");
        }
    }

    #[test]
    fn an_unsized_terminal_prints_as_a_pipe_does() {
        assert_eq!(
            sample().render(Some(0), false),
            sample().render(None, false)
        );
    }

    #[test]
    fn states_have_the_documented_colours() {
        assert_eq!(session_state_colour("Opened"), Some(Color::Green));
        assert_eq!(session_state_colour("Disconnected"), Some(Color::Yellow));
        assert_eq!(session_state_colour("Broken"), Some(Color::Red));
        assert_eq!(session_state_colour("Closed"), None);
        assert_eq!(job_state_colour("Completed"), Some(Color::Green));
        assert_eq!(job_state_colour("Failed"), Some(Color::Red));
        assert_eq!(job_state_colour("Stopped"), Some(Color::Red));
    }
}
