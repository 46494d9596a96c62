//! Colour for people, plain text for pipes: ANSI escapes only when stdout is a terminal and
//! `--no-color` was not given.

use std::io::IsTerminal;

/// Whether to colour output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    colour: bool,
}

const RESET: &str = "\x1b[0m";

impl Style {
    /// Colour when stdout is a terminal, unless `no_color`; `NO_COLOR` in the environment is
    /// honoured too, as most command-line tools do.
    pub fn detect(no_color: bool) -> Style {
        let colour =
            !no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
        Style { colour }
    }

    /// Never colour.
    pub const PLAIN: Style = Style { colour: false };

    /// Whether escapes are written.
    pub fn is_colour(self) -> bool {
        self.colour
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// Green: healthy, successful.
    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Red: degraded, failed.
    pub fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Yellow: paused, waiting, inconclusive.
    pub fn wait(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Blue: progressing, running.
    pub fn busy(self, text: &str) -> String {
        self.paint("34", text)
    }

    /// Bold: headings.
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Dim: details.
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    /// A phase word coloured by what it means.
    pub fn phase(self, phase: &str) -> String {
        match phase {
            "Healthy" | "Successful" => self.good(phase),
            "Degraded" | "Failed" | "Error" | "Aborted" => self.bad(phase),
            "Paused" | "Inconclusive" | "Pending" => self.wait(phase),
            "Progressing" | "Running" => self.busy(phase),
            other => other.to_string(),
        }
    }
}

/// Pads `text` to `width` columns, counting characters rather than bytes and ignoring escapes, so
/// coloured and plain tables line up the same.
pub fn pad(text: &str, width: usize) -> String {
    let visible = visible_width(text);
    let mut out = text.to_string();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(visible)));
    out
}

/// Characters shown on screen: escapes are not counted.
pub fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// A table with left-aligned columns separated by three spaces, as `kubectl get` prints.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible_width(cell));
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&pad(cell, widths[i] + 3));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for row in rows {
        line(row.clone(), &mut out);
    }
    out
}

/// A duration like kubectl's AGE column: `45s`, `3m12s`, `5h`, `2d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60),
        600..=10_799 => format!("{}m", s / 60),
        10_800..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (seconds, expected) in [
            (-3, "0s"),
            (45, "45s"),
            (119, "119s"),
            (192, "3m12s"),
            (900, "15m"),
            (18_000, "5h"),
            (200_000, "2d"),
        ] {
            assert_eq!(age(seconds), expected, "{seconds}s");
        }
    }

    #[test]
    fn coloured_and_plain_tables_line_up_alike() {
        let colour = Style { colour: true };
        let rows = vec![
            vec!["web".to_string(), colour.good("Healthy"), "1".to_string()],
            vec![
                "api-server".to_string(),
                colour.bad("Degraded"),
                "2".to_string(),
            ],
        ];
        let plain_rows = vec![
            vec!["web".to_string(), "Healthy".to_string(), "1".to_string()],
            vec![
                "api-server".to_string(),
                "Degraded".to_string(),
                "2".to_string(),
            ],
        ];
        let strip = |s: &str| {
            let mut out = String::new();
            let mut esc = false;
            for c in s.chars() {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        };
        let header = ["NAME", "PHASE", "STEP"];
        assert_eq!(strip(&table(&header, &rows)), table(&header, &plain_rows));
        assert_eq!(
            table(&header, &plain_rows),
            "NAME         PHASE      STEP\nweb          Healthy    1\napi-server   Degraded   2\n"
        );
    }

    #[test]
    fn plain_style_writes_no_escapes() {
        assert_eq!(Style::PLAIN.bad("Degraded"), "Degraded");
        assert!(!Style::PLAIN.phase("Healthy").contains('\x1b'));
    }
}
