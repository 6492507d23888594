//! A one-line progress display on stderr: redrawn in place with `\r` when stderr is a
//! terminal, otherwise one line per second (logs stay readable).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a non-terminal stderr gets a progress line.
const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(1);
/// How often callers redraw (the load runner's tick).
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(250);

pub struct Ticker {
    terminal: bool,
    last_plain: Option<Instant>,
    drawn: bool,
}

impl Default for Ticker {
    fn default() -> Self {
        Ticker {
            terminal: std::io::stderr().is_terminal(),
            last_plain: None,
            drawn: false,
        }
    }
}

impl Ticker {
    /// Shows `text` (redraws on a terminal; at most once per second otherwise).
    pub fn show(&mut self, text: &str) {
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            // \x1b[K clears what a longer previous line left behind.
            let _ = write!(stderr, "\r{text}\x1b[K");
            let _ = stderr.flush();
            self.drawn = true;
        } else if self
            .last_plain
            .is_none_or(|last| last.elapsed() >= PLAIN_LINE_INTERVAL)
        {
            let _ = writeln!(stderr, "{text}");
            self.last_plain = Some(Instant::now());
        }
    }

    /// Ends the line (on a terminal) so what follows starts on a fresh one.
    pub fn finish(&mut self) {
        if self.terminal && self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
