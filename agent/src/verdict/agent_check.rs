//! HAProxy's agent-check (also Loadbalancer.org's feedback agent): HAProxy connects,
//! sends its `agent-send` string (say `"web\n"`), reads one line and closes. The line is
//! HAProxy's grammar: `ready 75%`, `ready 100%`, `drain #reason`, `down #reason`. The listener is in
//! metrics/agent_check.rs; here is what is said, as pure functions.
use super::{State, Verdict, Verdicts};

/// The longest request read: a target name and its line end. Longer is refused.
pub const MAX_REQUEST: usize = 256;

/// What HAProxy asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A target by name; empty for the node (no agent-send, or an empty line).
    Name(&'a str),
    /// Too long, not UTF-8, or with control characters.
    Invalid,
}

/// The request in the bytes read so far: the text up to the first `\r` or `\n` (or all of
/// it at end of input), trimmed of spaces.
pub fn parse(bytes: &[u8]) -> Request<'_> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(bytes.len());
    if end > MAX_REQUEST {
        return Request::Invalid;
    }
    let Ok(text) = std::str::from_utf8(&bytes[..end]) else {
        return Request::Invalid;
    };
    let text = text.trim_matches([' ', '\t']);
    if text.chars().any(char::is_control) {
        return Request::Invalid;
    }
    Request::Name(text)
}

/// Whether the bytes read so far hold a whole request line.
pub fn complete(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'\n' || b == b'\r') || bytes.len() > MAX_REQUEST
}

/// The reply line (with its `\n`) for a verdict, in the words HAProxy's parser takes
/// (src/tcpcheck.c, `tcpcheck_agent_expect_reply`): words separated by spaces, and a
/// description only after a `#` that starts a word. Every reply names an admin state and a
/// weight, since HAProxy leaves unsent fields as they were: `ready` undoes a `drain` the
/// agent said before. `up` is never said: HAProxy takes it as "all regular checks passed"
/// (it sets their health to the top), which would hide a dead port behind a live process;
/// a server the agent took `down` comes back by its regular `check` (rise).
pub fn reply(v: &Verdict) -> String {
    match v.state {
        State::Up => "ready 100%\n".into(),
        State::Degraded => format!("ready {}%\n", v.weight),
        State::Drain => format!("drain #{}\n", description(&v.reason)),
        State::Down => format!("down #{}\n", description(&v.reason)),
    }
}

/// The answer to a request.
pub fn answer(request: Request, verdicts: &Verdicts) -> String {
    match request {
        Request::Invalid => {
            "#gimbal: invalid request (a target name, up to 256 bytes, one line)\n".into()
        }
        Request::Name(name) => match verdicts.lookup(name) {
            Some(v) => reply(&v),
            // Fail open, as agent-check does: no word HAProxy acts on, so a mistyped
            // agent-send changes nothing, and HAProxy shows the line in its check status.
            None => "#gimbal: unknown target (agent-send must name one of [[targets]])\n".into(),
        },
    }
}

/// A reason safe on HAProxy's line (the rest of the line after `#`): printable ASCII.
fn description(reason: &str) -> String {
    reason
        .chars()
        .take(120)
        .map(|c| match c {
            ' ' => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_line_bounded_and_printable() {
        assert_eq!(parse(b"web\n"), Request::Name("web"));
        assert_eq!(parse(b"web\r\n"), Request::Name("web"));
        assert_eq!(parse(b" web \n"), Request::Name("web"));
        assert_eq!(
            parse(b"web"),
            Request::Name("web"),
            "no line end: what came before EOF"
        );
        assert_eq!(parse(b"\n"), Request::Name(""), "the node");
        assert_eq!(parse(b""), Request::Name(""), "no agent-send: the node");
        assert_eq!(parse(b"web\nmore\n"), Request::Name("web"), "one line only");
        assert_eq!(parse(&[b'a'; 300]), Request::Invalid);
        assert_eq!(parse(b"\xff\xfe\n"), Request::Invalid);
        assert_eq!(parse(b"a\x1bb\n"), Request::Invalid);
        assert!(complete(b"web\n"));
        assert!(!complete(b"we"));
        assert!(complete(&[b'a'; 257]));
    }

    #[test]
    fn replies_in_haproxys_grammar() {
        assert_eq!(reply(&Verdict::up()), "ready 100%\n");
        assert_eq!(
            reply(&Verdict::new(State::Degraded, 40, "slow")),
            "ready 40%\n"
        );
        assert_eq!(
            reply(&Verdict::new(
                State::Drain,
                0,
                "GPU 0000:3b:00 XID 79 (reboot-node)"
            )),
            "drain #GPU 0000:3b:00 XID 79 (reboot-node)\n"
        );
        assert_eq!(
            reply(&Verdict::new(State::Down, 0, "no live process\n, up 100%")),
            "down #no live process?, up 100%\n"
        );
    }

    #[test]
    fn unknown_and_invalid_requests_change_nothing_and_echo_nothing() {
        let mut v = Verdicts::default();
        v.targets
            .insert("web".into(), Verdict::new(State::Degraded, 30, "x"));
        assert_eq!(answer(Request::Name("web"), &v), "ready 30%\n");
        assert_eq!(answer(Request::Name(""), &v), "ready 100%\n");
        let unknown = answer(Request::Name("down 0%"), &v);
        assert!(
            unknown.starts_with('#') && !unknown.contains("down 0%"),
            "{unknown}"
        );
        assert!(answer(Request::Invalid, &v).starts_with('#'));
    }
}
