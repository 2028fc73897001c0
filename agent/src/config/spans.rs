//! Where each key and value of a config text is written, so that checks made after
//! deserializing (and on defaults merged in) point at the real line and column, never at
//! the first text that happens to contain the same value.
use std::{collections::HashMap, ops::Range};

use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

/// Byte ranges by path: `agent.interval` (the key), `alerting.alertmanagers[1]` and
/// `targets[2]` (the value), plus which file entries of each `[[section]]` deserialized.
#[derive(Debug, Default)]
pub(super) struct Spans {
    at: HashMap<String, Range<usize>>,
    /// For each array of tables: the file index of each entry kept in the config, in order
    /// (an entry that failed to deserialize is left out, so indices shift).
    kept: HashMap<String, Vec<usize>>,
}

impl Spans {
    pub(super) fn index(root: &DeTable<'_>) -> Self {
        let mut spans = Self::default();
        for (key, value) in root {
            spans.walk(key.get_ref().as_ref(), key.span(), value);
        }
        spans
    }

    fn walk(&mut self, path: &str, key: Range<usize>, value: &Spanned<DeValue<'_>>) {
        self.at.insert(path.to_string(), key);
        match value.get_ref() {
            DeValue::Table(table) => {
                for (k, v) in table {
                    self.walk(&format!("{path}.{}", k.get_ref()), k.span(), v);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(&format!("{path}[{i}]"), item.span(), item);
                }
            }
            _ => {}
        }
    }

    /// Records that file entry `index` of `[[section]]` became the next config entry.
    pub(super) fn keep(&mut self, section: &str, index: usize) {
        self.kept
            .entry(section.to_string())
            .or_default()
            .push(index);
    }

    /// The path of the `n`th deserialized entry of `[[section]]`: `targets[2]`.
    pub(super) fn item(&self, section: &str, n: usize) -> String {
        let index = self
            .kept
            .get(section)
            .and_then(|k| k.get(n))
            .copied()
            .unwrap_or(n);
        format!("{section}[{index}]")
    }

    /// Where `path` is written, or else the nearest enclosing thing that is (a default
    /// value is reported at its section; `None` when not even that is in the text).
    pub(super) fn find(&self, path: &str) -> Option<Range<usize>> {
        let mut path = path;
        loop {
            if let Some(span) = self.at.get(path) {
                return Some(span.clone());
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_keys_and_list_items_and_fall_back_to_the_section() {
        let text = "[agent]\ninterval = \"1s\"\n[[targets]]\nname = \"a\"\n[[targets]]\nname = \"ab\"\nlatency_syscalls = [\"read\", \"raed\"]\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        let spans = Spans::index(root.get_ref());
        let at = |p: &str| spans.find(p).map(|r| &text[r]);
        assert_eq!(at("agent.interval"), Some("interval"));
        assert_eq!(at("agent.listen"), Some("agent"), "a default: its section");
        assert_eq!(spans.find("targets[1].name").map(|r| r.start), Some(59));
        assert_eq!(at("targets[1].latency_syscalls[1]"), Some("\"raed\""));
        assert_eq!(spans.find("nowhere.key"), None);
    }
}
