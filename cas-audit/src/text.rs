//! Text from outside (a set file, a published page, an interface name, a
//! saved record, the kernel) made safe for the medium it is written to,
//! with one length limit for all of them.
//!
//! - [`shorten`]: at most [`MAX_SHOWN`] characters, then `…`. Every medium
//!   that repeats a name (log lines, live lines, `/metrics` on every
//!   scrape) shows it through this, so a 2 MB set name costs 256
//!   characters there; the JSON records keep it whole.
//! - [`shown`]: shortened, and on one line with no control character: for
//!   a name in a log line or a readable line.
//! - [`one_line`]: the same escapes without the limit, for a whole log
//!   record (one record, one line).
//! - [`terminal`]: a whole readable text (tables, live lines, reports)
//!   with every control character escaped but its line breaks and tabs.
//! - [`prometheus_label`]: a label value of the Prometheus text format and
//!   OpenMetrics: shortened, control characters written as [`terminal`]
//!   does (a scrape read on a terminal, `curl .../metrics`, stays safe),
//!   then `\`, `"` and the line feed escaped, as
//!   <https://prometheus.io/docs/instrumenting/exposition_formats/> and
//!   the OpenMetrics specification's "Escaping" require.
//!
//! - [`csv_field`]: a CSV field (RFC 4180).
//!
//! JSON needs nothing from here: serde escapes what JSON requires. CEF and
//! RFC 5424 structured data have their own escapes (`output::syslog`),
//! applied to [`one_line`] text.
//!
//! "Control character" means what [`char::is_control`] says (C0, DEL and
//! C1: ESC and CSI start terminal escape sequences, CR overwrites a line,
//! a line feed starts a forged one) and the Unicode characters that
//! reorder or hide text on a terminal (bidirectional embeddings, overrides,
//! isolates and marks, Unicode TR #9; line and paragraph separators). They
//! are written as `\n`, `\r`, `\t`, `\x1b` (below U+0080) or `\u{202e}`.

use std::{borrow::Cow, fmt};

/// Most characters of a name (or any text from outside) shown whole; a
/// longer one is cut there and ends with `…`.
pub const MAX_SHOWN: usize = 256;

/// Whether `c` must not reach a terminal or a log line as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Writes `c` escaped (`\n`, `\x1b`, `\u{202e}`).
fn escape(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

/// `text` with the characters `escape_it` says escaped; borrowed when none is.
fn escaped(text: &str, escape_it: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&escape_it) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escape_it(c) {
            // Writing to a String cannot fail.
            let _ = escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` cut to [`MAX_SHOWN`] characters followed by `…` when it is longer;
/// borrowed when it is not.
pub fn shorten(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_SHOWN) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}…", &s[..at])),
    }
}

/// `text` on one line: every control character escaped, line breaks
/// included. For a whole log record.
pub fn one_line(text: &str) -> Cow<'_, str> {
    escaped(text, is_unsafe)
}

/// A whole readable text for a terminal: every control character escaped
/// but the line feeds and tabs that lay it out.
pub fn terminal(text: &str) -> Cow<'_, str> {
    escaped(text, |c| c != '\n' && c != '\t' && is_unsafe(c))
}

/// A name from outside as shown in a line: [`shorten`]ed, then
/// [`one_line`]. Displays without allocating.
pub fn shown(s: &str) -> Shown<'_> {
    Shown(s)
}

/// See [`shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, cut) = match self.0.char_indices().nth(MAX_SHOWN) {
            None => (self.0, false),
            Some((at, _)) => (&self.0[..at], true),
        };
        for c in text.chars() {
            if is_unsafe(c) {
                escape(f, c)?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        if cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// A label value for the Prometheus text format 0.0.4 and OpenMetrics 1.0,
/// without its quotes: [`shorten`]ed, its control characters but line
/// feeds and tabs written visibly ([`terminal`]), then `\` → `\\`, `"` →
/// `\"` and a line feed → `\n`, so that no value can end its quotes or
/// its line.
pub fn prometheus_label(s: &str) -> String {
    let short = shorten(s);
    let s = terminal(&short);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A CSV field as RFC 4180 (section 2, rules 5 to 7) writes it: in double
/// quotes, its own doubled, when it holds a comma, a quote or a line
/// break; as it is otherwise.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_visibly() {
        let hostile = "a\x1b[31mred\x1b[0m\r\nfake line\t\u{7f}\u{9b}2J\u{202e}cba";
        assert_eq!(
            one_line(hostile),
            "a\\x1b[31mred\\x1b[0m\\r\\nfake line\\t\\x7f\\u{9b}2J\\u{202e}cba"
        );
        assert_eq!(
            terminal(hostile),
            "a\\x1b[31mred\\x1b[0m\\r\nfake line\t\\x7f\\u{9b}2J\\u{202e}cba"
        );
        assert_eq!(shown(hostile).to_string(), one_line(hostile));
        // Text without any is borrowed, and non-ASCII letters stay.
        assert!(matches!(one_line("Zürich 東京 ✓"), Cow::Borrowed(_)));
        assert!(matches!(terminal("a\n\tb"), Cow::Borrowed(_)));
        for s in [one_line(hostile), terminal(hostile)] {
            assert!(!s.contains(['\x1b', '\r', '\u{9b}', '\u{202e}']), "{s:?}");
        }
    }

    #[test]
    fn names_are_cut_at_one_length() {
        let name = "é".repeat(2 << 20);
        let short = shorten(&name);
        assert_eq!(short.chars().count(), MAX_SHOWN + 1);
        assert!(short.ends_with("é…"));
        assert_eq!(shown(&name).to_string(), short);
        let exact = "x".repeat(MAX_SHOWN);
        assert!(matches!(shorten(&exact), Cow::Borrowed(_)));
        assert_eq!(shown(&exact).to_string(), exact);
        // The cut comes before the escapes: 256 characters of the name.
        let nl = "\n".repeat(MAX_SHOWN + 10);
        assert_eq!(
            shown(&nl).to_string(),
            format!("{}…", "\\n".repeat(MAX_SHOWN))
        );
        assert_eq!(prometheus_label(&name), short);
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must() {
        assert_eq!(csv_field("westeurope"), "westeurope");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\nnow"), "\"say \"\"hi\"\"\nnow\"");
    }

    #[test]
    fn prometheus_label_values_cannot_end_their_quotes_or_line() {
        assert_eq!(
            prometheus_label("lab\"} 1\ncas_audit_forged 1\n# x\\"),
            "lab\\\"} 1\\ncas_audit_forged 1\\n# x\\\\"
        );
        assert_eq!(prometheus_label("cas-2019-11"), "cas-2019-11");
        assert_eq!(prometheus_label("a\x1b[2J\tb"), "a\\\\x1b[2J\tb");
    }
}
