//! Config errors that say where: file, line, column, and what is wrong.
use std::{fmt, ops::Range, path::Path};

use super::spans::Spans;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every error found in one config text.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    origin: String,
    text: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(super) fn new(origin: &str, text: &str) -> Self {
        Self {
            origin: origin.to_string(),
            text: text.to_string(),
            errors: Vec::new(),
        }
    }

    pub(super) fn io(path: &Path, e: &std::io::Error) -> Self {
        let mut errors = Self::new(&path.display().to_string(), "");
        errors.errors.push(ConfigError {
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        });
        errors
    }

    /// In the order they appear in the file (sections are checked in no particular order).
    pub(super) fn sort(&mut self) {
        self.errors.sort_by_key(|e| (e.line, e.column));
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(super) fn push_at(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_column(&self.text, span.start);
        self.errors.push(ConfigError {
            line,
            column,
            message,
        });
    }

    pub(super) fn push_toml(&mut self, e: &toml::de::Error) {
        let message = e.message().trim_end().to_string();
        match e.span() {
            Some(span) => self.push_at(span, message),
            None => self.errors.push(ConfigError {
                line: 0,
                column: 0,
                message,
            }),
        }
    }

    /// An error about the value at `path` (`targets[1].name`, see `Spans`), reported
    /// where the text writes it, or at its section when it comes from the defaults.
    pub(super) fn push_path(&mut self, spans: &Spans, path: &str, message: String) {
        let (line, column) = spans
            .find(path)
            .map_or((0, 0), |span| line_column(&self.text, span.start));
        self.errors.push(ConfigError {
            line,
            column,
            message: format!("`{}` {message}", dotted(path)),
        });
    }
}

/// `targets[1].latency_syscalls[0]` -> `targets.latency_syscalls`: the name people look up.
fn dotted(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.line == 0 {
                write!(f, "{}: {}", self.origin, e.message)?;
            } else {
                write!(f, "{}:{}:{}: {}", self.origin, e.line, e.column, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
