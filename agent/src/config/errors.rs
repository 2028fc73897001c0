//! Config errors that say where: file, line, column, and what is wrong.
use std::{fmt, ops::Range, path::Path};

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

    /// An error about a field's value; points at the field where the text has it.
    pub(super) fn push_field(&mut self, dotted: &str, message: String) {
        self.push_field_value(dotted, "", message);
    }

    /// Like `push_field`, for a field that may appear more than once (in `[[tables]]` or a
    /// list): points at the line setting it that contains `value`.
    pub(super) fn push_field_value(&mut self, dotted: &str, value: &str, message: String) {
        let (line, column) = find_key(&self.text, dotted, value);
        self.errors.push(ConfigError {
            line,
            column,
            message: format!("`{dotted}` {message}"),
        });
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where `section.key` is written: the line that sets `key` inside `[section]`.
fn find_key(text: &str, dotted: &str, value: &str) -> (usize, usize) {
    let (section, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            // `[section]` and `[[section]]` alike.
            current = trimmed.trim_matches(['[', ']']).trim().to_string();
        } else if current == section {
            let (name, rest) = trimmed.split_once('=').unwrap_or((trimmed, ""));
            if name.trim() == key && rest.contains(value) {
                return (i + 1, line.len() - line.trim_start().len() + 1);
            }
        }
    }
    (0, 0)
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
