//! Words and cells of a page: Markdown markup, addresses, names, ports
//! and data-center labels in text.

use std::collections::BTreeSet;

use super::*;

/// The line without leading whitespace and `>` quote markers.
pub(super) fn unquote(line: &str) -> &str {
    let mut s = line.trim();
    while let Some(rest) = s.strip_prefix('>') {
        s = rest.trim_start();
    }
    s
}

/// `## Title ##` → `(2, "Title")` (at most three spaces of indentation).
pub(super) fn heading(line: &str) -> Option<(usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let s = line.trim();
    let level = s.len() - s.trim_start_matches('#').len();
    let rest = &s[level..];
    if !(1..=6).contains(&level) || !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let title = strip_links(rest.trim().trim_end_matches('#'));
    let title: String = unescape(&title)
        .chars()
        .filter(|c| !matches!(c, '*' | '`'))
        .collect();
    Some((level, title.trim().to_owned()))
}

/// A list item's text without its marker (`- `, `* `, `+ `, `1. `, `1) `).
pub(super) fn strip_list_marker(line: &str) -> &str {
    for m in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(m) {
            return rest.trim_start();
        }
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 && digits <= 9 {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return rest.trim_start();
        }
    }
    line
}

/// The cells of a table row, trimmed.
pub(super) fn split_row(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = if row.ends_with('|') && !row.ends_with("\\|") {
        &row[..row.len() - 1]
    } else {
        row
    };
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut escaped = false;
    for c in row.chars() {
        if c == '|' && !escaped {
            cells.push(cell.trim().to_owned());
            cell.clear();
        } else {
            cell.push(c);
        }
        escaped = c == '\\' && !escaped;
    }
    cells.push(cell.trim().to_owned());
    cells
}

/// `---`, `:--`, `:-:`, ...
pub(super) fn is_separator(cell: &str) -> bool {
    let c = cell.trim().trim_start_matches(':').trim_end_matches(':');
    !c.is_empty() && c.bytes().all(|b| b == b'-')
}

/// A cell split at `<br>`, `<br />`, `<br/>`, `</br>` (so `<br></br>` too).
pub(super) fn split_br(cell: &str) -> Vec<String> {
    let lower = cell.to_ascii_lowercase();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(off) = lower[i..].find('<') {
        let at = i + off;
        let tag = lower[at + 1..].trim_start_matches('/');
        let is_br = tag.starts_with("br")
            && tag[2..]
                .trim_start()
                .trim_start_matches('/')
                .trim_start()
                .starts_with('>');
        if is_br {
            let end = at + lower[at..].find('>').map_or(lower.len() - at, |e| e + 1);
            pieces.push(cell[start..at].to_owned());
            start = end;
            i = end;
        } else {
            i = at + 1;
        }
    }
    pieces.push(cell[start..].to_owned());
    pieces
}

/// The text with `[text](target)` replaced by `text` and images removed.
///
/// What it reads as a link is what repeating this step reads: take the
/// first `](` of the text, the last `[` before it and the first `)` after
/// it, replace `[text](target)` by `text` (`![alt](target)` by nothing),
/// and start again; stop at a `](` with no `[` before it or no `)` after.
/// Done that way the work grows with the square of the length (a line of a
/// page may be hundreds of kilobytes), so it is done in one pass over the
/// characters in a linked list instead: a replacement unlinks characters,
/// and the only places a new `](` can appear are where they were (the
/// start and the end of the text kept), so no character is read twice.
/// Linear in the length of the text.
pub(super) fn strip_links(text: &str) -> String {
    if !text.contains("](") {
        return text.to_owned();
    }
    // Nodes: 0 the head, 1..=n the characters, n + 1 the tail.
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let (head, tail) = (0, n + 1);
    let ch = |i: usize| {
        if i == head || i == tail {
            '\0'
        } else {
            chars[i - 1]
        }
    };
    let mut next: Vec<usize> = (1..=n + 2).collect();
    let mut prev: Vec<usize> = (0..n + 2).map(|i| i.saturating_sub(1)).collect();
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, q) = (prev[i], next[i]);
        next[p] = q;
        prev[q] = p;
    };
    // The `[` read and still in the text, in order.
    let mut opens: Vec<usize> = Vec::new();
    // Every node before `front` has been read. Those still in the text
    // behind it are what is left of links' texts (no `[`, no `](` inside
    // one): only the places where one ends (`pending`, nearest last) may
    // now hold a `](`.
    let mut front = next[head];
    let mut pending: Vec<usize> = Vec::new();
    let mut cur = front;
    while cur != tail {
        if ch(cur) == '(' && ch(prev[cur]) == ']' {
            let mid = prev[cur];
            let Some(&open) = opens.last() else { break };
            let mut close = next[cur];
            while close != tail && ch(close) != ')' {
                close = next[close];
            }
            if close == tail {
                break;
            }
            let after = next[close];
            opens.pop();
            while pending.last().is_some_and(|&p| p <= after) {
                // Removed with the target, or `after` itself.
                pending.pop();
            }
            // `(target)` and the `]`.
            let mut i = mid;
            while i != after {
                let following = next[i];
                unlink(&mut next, &mut prev, i);
                i = following;
            }
            let before = prev[open];
            let label = if ch(before) == '!' {
                // An image: `!`, `[` and the alt text go.
                let mut i = before;
                while i != after {
                    let following = next[i];
                    unlink(&mut next, &mut prev, i);
                    i = following;
                }
                None
            } else {
                let first = next[open];
                unlink(&mut next, &mut prev, open);
                (first != after).then_some(first)
            };
            front = front.max(after);
            // The next `](` may be where the text kept starts (a `]`
            // before it, a `(` first in it), then where it ends.
            cur = match label {
                Some(first) if ch(first) == '(' && ch(prev[first]) == ']' => {
                    pending.push(after);
                    first
                }
                _ => after,
            };
            continue;
        }
        if cur < front {
            cur = pending.pop().unwrap_or(front);
            continue;
        }
        if ch(cur) == '[' {
            opens.push(cur);
        }
        cur = next[cur];
        front = cur;
    }
    let mut out = String::with_capacity(text.len());
    let mut i = next[head];
    while i != tail {
        out.push(ch(i));
        i = next[i];
    }
    out
}

/// Markdown backslash escapes removed (`\*` → `*`, `https:\//` → `https://`).
pub(super) fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(char::is_ascii_punctuation) {
            continue;
        }
        out.push(c);
    }
    out
}

/// A word with markup and punctuation removed; and whether it was a URL.
pub(super) fn clean(word: &str) -> (String, bool) {
    /// Strips surrounding markup and punctuation, keeping a `*.` wildcard.
    fn trim(s: &str) -> &str {
        let mut s = s;
        loop {
            let before = s;
            s = s.trim_matches(|c: char| {
                c.is_whitespace() || "<>\"'`()[]{},;|_!?\u{201c}\u{201d}\u{2018}\u{2019}\u{ab}\u{bb}\u{200b}\u{feff}，、；".contains(c)
            });
            s = s.trim_end_matches(['.', '*', '/']);
            if s.ends_with(':') && !s.ends_with("::") {
                s = &s[..s.len() - 1];
            }
            while s.starts_with('*') && !s[1..].starts_with('.') {
                s = &s[1..];
            }
            if s == before {
                return s;
            }
        }
    }
    let text = unescape(word);
    let mut s = trim(&text);
    let lower = s.to_ascii_lowercase();
    let mut url = false;
    for scheme in ["https://", "http://", "ftp://"] {
        if lower.starts_with(scheme) {
            s = &s[scheme.len()..];
            s = s.split('/').next().unwrap_or("");
            url = true;
            break;
        }
    }
    (trim(s).to_owned(), url)
}

/// What a word is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Class {
    Token(Token),
    /// Looks like an address but does not parse (the cleaned text).
    Bad(String),
    Other,
}

/// Top-level domains that make a prose word a host name.
pub(super) const PROSE_TLDS: &[&str] = &[
    "com",
    "net",
    "org",
    "ms",
    "us",
    "io",
    "gov",
    "mil",
    "edu",
    "info",
    "biz",
    "co",
    "uk",
    "eu",
    "de",
    "fr",
    "jp",
    "cn",
    "in",
    "au",
    "ca",
    "cloud",
    "azure",
    "microsoft",
    "office",
    "windows",
];

/// Classifies a word: in `prose`, address-looking needs four dotted parts
/// (or three and a `/`) and names need a URL scheme or a common top-level
/// domain; elsewhere any dotted number and any host name counts.
pub(super) fn classify(word: &str, prose: bool) -> Class {
    let (s, url) = clean(word);
    if s.is_empty() {
        return Class::Other;
    }
    if looks_like_address(&s, prose) {
        return match parse_prefix(&s) {
            Some(net) => Class::Token(Token::Addr(net)),
            None => Class::Bad(s),
        };
    }
    // Pages write host names in lower case; `AzureFrontDoor.MicrosoftSecurity`
    // is a Service Tag, not a name.
    let tld = s.rsplit('.').next().unwrap_or("");
    if valid_dns_name(&s)
        && tld.bytes().all(|b| b.is_ascii_lowercase())
        && (!prose || url || PROSE_TLDS.contains(&tld))
    {
        return Class::Token(Token::Name(s));
    }
    Class::Other
}

/// The Service Tags a text names (`MicrosoftCloudAppSecurity`,
/// `AzureFrontDoor.MicrosoftSecurity`, ...): the page points to them for
/// addresses it does not list.
pub(super) fn tag_mentions(text: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for word in text.split(|c: char| c.is_whitespace() || ",;()[]|<>`*\"".contains(c)) {
        let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let tag = [
            "MicrosoftCloudAppSecurity",
            "AzureFrontDoor.MicrosoftSecurity",
        ]
        .iter()
        .any(|t| w.starts_with(t));
        if tag && seen.insert(w) {
            tags.push(w.to_owned());
        }
    }
    tags
}

/// The words of a table cell or data line: split at white space, commas
/// and semicolons (ASCII or not).
pub(super) fn data_words(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || ",;，、；".contains(c))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `40.83,.194.193` → `40.83.194.193`: a comma typed inside a dotted
/// address (the 2021 page has one). Returns the text and the repaired
/// addresses.
pub(super) fn repair_dotted(text: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = text.chars().collect();
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut out = String::with_capacity(text.len());
    let mut fixed_at = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        let stray = c == ','
            && i > 0
            && ((chars.get(i + 1) == Some(&'.') && digit(i - 1) && digit(i + 2))
                || (chars[i - 1] == '.' && i > 1 && digit(i - 2) && digit(i + 1)));
        if stray {
            fixed_at.push(out.len());
            continue;
        }
        out.push(c);
    }
    // The address around each repair, once per address: the runs of
    // address characters are disjoint, so each is scanned once.
    let part = |c: char| c.is_ascii_digit() || c == '.' || c == '/';
    let mut repaired = Vec::new();
    let mut done_until = 0;
    for at in fixed_at {
        if at < done_until {
            continue;
        }
        let start = out[..at].rfind(|c| !part(c)).map_or(0, |p| p + 1);
        let end = out[at..].find(|c| !part(c)).map_or(out.len(), |p| at + p);
        repaired.push(out[start..end].to_owned());
        done_until = end.max(at + 1);
    }
    (out, repaired)
}

/// `("West Europe", "1.2.3.4, 5.6.7.8")` from `West Europe: 1.2.3.4,
/// 5.6.7.8`: a short label (a region or data center, at most five words,
/// starting with a letter) before a colon and white space.
pub(super) fn split_label(text: &str) -> Option<(&str, &str)> {
    let at = text.find(": ")?;
    let label = text[..at].trim();
    let plain = plain_label(label);
    let ok = plain
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && plain.split_whitespace().count() <= 5
        && plain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-'));
    ok.then(|| (label, text[at + 1..].trim()))
}

/// A label without Markdown emphasis, escapes and code marks.
pub(super) fn plain_label(label: &str) -> String {
    let text: String = unescape(label)
        .chars()
        .filter(|c| !matches!(c, '*' | '`' | '_'))
        .collect();
    text.trim()
        .trim_matches(|c: char| c == ':' || c == '-')
        .trim()
        .to_owned()
}

/// The place a label names: a known Azure region ("West Europe", "US Gov
/// Virginia") or a data center ("US1", "US1 data center", "GCC High").
pub(super) fn label_place(label: &str) -> Option<Place> {
    let plain = plain_label(label);
    if let Ok(region) = plain.parse::<Region>() {
        if region.is_known() {
            return Some(Place {
                datacenter: None,
                region: Some(region),
            });
        }
    }
    datacenter_label(&plain).map(|dc| Place {
        datacenter: Some(dc),
        region: None,
    })
}

/// Whether `s` is meant as an IPv4 or IPv6 address or prefix.
pub(super) fn looks_like_address(s: &str, prose: bool) -> bool {
    let slash = s.contains('/');
    let first = s.chars().next().unwrap_or(' ');
    let dots = s.matches('.').count();
    if first.is_ascii_digit()
        && s.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
    {
        let (need, need_with_slash) = if prose { (3, 2) } else { (2, 1) };
        return dots >= need || (slash && dots >= need_with_slash);
    }
    let colons = s.matches(':').count();
    let v6_chars = s
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '/'));
    v6_chars
        && (first.is_ascii_hexdigit() || first == ':')
        && (s.contains("::") || if prose { colons == 7 } else { colons >= 2 })
}

/// The words of a prose text with their byte offsets.
pub(super) fn prose_words(text: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let sep = c.is_whitespace() || "()[]{},;\"|<>".contains(c);
        match (sep, start) {
            (true, Some(s)) => {
                words.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, &text[s..]));
    }
    words
}

/// Where a lower-cased prose text says "example" or "e.g." (as words, not
/// inside a host name such as `www.example.com`), and where its sentences
/// end (`. `): found once per text, so that asking about every word of a
/// long line stays linear.
pub(super) struct Examples {
    /// Ends of the mentions not followed by a name character.
    ends: Vec<usize>,
    /// Ends of every mention not preceded by a name character (one right
    /// at a word's start counts whatever follows).
    ends_any: Vec<usize>,
    /// Starts of `. `.
    breaks: Vec<usize>,
}

impl Examples {
    /// The mentions and sentence ends of `lower`.
    pub(super) fn new(lower: &str) -> Examples {
        let part_of_name =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
        let mut ends = Vec::new();
        let mut ends_any = Vec::new();
        for w in ["example", "e.g."] {
            for (start, _) in lower.match_indices(w) {
                let end = start + w.len();
                if part_of_name(lower[..start].chars().next_back()) {
                    continue;
                }
                ends_any.push(end);
                if lower[..end].ends_with('.') || !part_of_name(lower[end..].chars().next()) {
                    ends.push(end);
                }
            }
        }
        ends.sort_unstable();
        ends_any.sort_unstable();
        let breaks = lower.match_indices(". ").map(|(i, _)| i).collect();
        Examples {
            ends,
            ends_any,
            breaks,
        }
    }

    /// Whether the word at `pos` follows a mention in its sentence.
    pub(super) fn covers(&self, pos: usize) -> bool {
        let last = |v: &[usize], bound: usize| {
            let n = v.partition_point(|&e| e <= bound);
            n.checked_sub(1).map(|i| v[i])
        };
        let k = match last(&self.ends_any, pos) {
            Some(e) if e == pos => Some(e),
            _ => last(&self.ends, pos),
        };
        let Some(k) = k else { return false };
        let j = self.breaks.partition_point(|&b| b < k);
        self.breaks.get(j).is_none_or(|&b| b + 2 > pos)
    }
}

/// Whether the word at `pos` follows "example" or "e.g." (as words, not
/// inside a host name such as `www.example.com`) in its sentence.
#[cfg(test)]
pub(super) fn in_example(lower: &str, pos: usize) -> bool {
    Examples::new(lower).covers(pos)
}

/// The ports a prose line gives: `port 80`, `ports 80 and 443`.
pub(super) fn prose_ports(lower: &str) -> Option<Vec<u16>> {
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    let mut ports = BTreeSet::new();
    for (i, w) in words.iter().enumerate() {
        if *w != "port" && *w != "ports" {
            continue;
        }
        for next in &words[i + 1..] {
            match next.parse::<u16>() {
                Ok(p) if p != 0 => {
                    ports.insert(p);
                }
                _ if matches!(*next, "" | "and" | "or") => {}
                _ => break,
            }
        }
    }
    (!ports.is_empty()).then(|| ports.into_iter().collect())
}

/// The one data center a prose line names, if exactly one: "GCC High",
/// "GCC", "Gov US1" (or "US Government" alone), `US1` ... `EU2`.
pub(super) fn prose_datacenter(line: &str) -> Option<DataCenter> {
    let mut lower = line.to_ascii_lowercase();
    let mut found = BTreeSet::new();
    for (words, dc) in [
        ("gcc high", DataCenter::GccHigh),
        ("gcc", DataCenter::Gcc),
        ("gov us1", DataCenter::GovUs1),
    ] {
        if lower.contains(words) {
            found.insert(dc);
            lower = lower.replace(words, " ");
        }
    }
    if found.is_empty() && (lower.contains("us government") || lower.contains("government")) {
        found.insert(DataCenter::GovUs1);
    }
    for word in lower.split(|c: char| !c.is_ascii_alphanumeric()) {
        match word {
            "us1" => found.insert(DataCenter::Us1),
            "us2" => found.insert(DataCenter::Us2),
            "us3" => found.insert(DataCenter::Us3),
            "eu1" => found.insert(DataCenter::Eu1),
            "eu2" => found.insert(DataCenter::Eu2),
            _ => false,
        };
    }
    match found.len() {
        1 => found.into_iter().next(),
        _ => None,
    }
}

/// A data-center label: `US1`, `US1 data center`, `**Gov US1**`, `US Gov`,
/// `GCC`, `GCC High`, `US Government GCC High`.
pub(super) fn datacenter_label(label: &str) -> Option<DataCenter> {
    let lower = plain_label(label).to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    if has("gcc") {
        return Some(if has("high") {
            DataCenter::GccHigh
        } else {
            DataCenter::Gcc
        });
    }
    if has("gov") || has("government") || has("govus1") {
        return Some(DataCenter::GovUs1);
    }
    let mut s = lower.as_str();
    for affix in ["data center", "datacenter", "data centre"] {
        s = s.trim();
        s = s.strip_suffix(affix).unwrap_or(s).trim();
        s = s.strip_prefix(affix).unwrap_or(s).trim();
    }
    s.trim_matches(|c: char| c == ':' || c == '-')
        .trim()
        .parse()
        .ok()
}
