//! /proc/<pid>/stat, read past the command name, which may hold spaces and parentheses.

/// Field `n` of a stat line, numbered as proc(5) numbers them; fields from 3 (the state)
/// on, since the first two (pid and command) are not split by white space.
pub fn field(stat: &str, n: usize) -> Option<&str> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n.checked_sub(3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_a_command_with_spaces_and_parentheses() {
        let stat = "4242 (we ird) cmd) S 1 4242 4242 0 -1 4194560 100";
        assert_eq!(field(stat, 3), Some("S"));
        assert_eq!(field(stat, 4), Some("1"));
        assert_eq!(field(stat, 9), Some("4194560"));
        assert_eq!(field(stat, 2), None, "the command is not a field here");
        assert_eq!(field("garbage", 3), None);
    }
}
