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
pub(super) fn strip_links(text: &str) -> String {
    let mut out = text.to_owned();
    while let Some(mid) = out.find("](") {
        let Some(open) = out[..mid].rfind('[') else {
            break;
        };
        let Some(close) = out[mid + 2..].find(')').map(|c| mid + 2 + c) else {
            break;
        };
        let image = open > 0 && out.as_bytes()[open - 1] == b'!';
        let (start, replacement) = if image {
            (open - 1, String::new())
        } else {
            (open, out[open + 1..mid].to_owned())
        };
        out.replace_range(start..=close, &replacement);
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
    for word in text.split(|c: char| c.is_whitespace() || ",;()[]|<>`*\"".contains(c)) {
        let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let tag = [
            "MicrosoftCloudAppSecurity",
            "AzureFrontDoor.MicrosoftSecurity",
        ]
        .iter()
        .any(|t| w.starts_with(t));
        if tag && !tags.iter().any(|t| t == w) {
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
    let repaired = fixed_at
        .iter()
        .map(|&at| {
            let start = out[..at]
                .rfind(|c: char| !(c.is_ascii_digit() || c == '.' || c == '/'))
                .map_or(0, |p| p + 1);
            let end = out[at..]
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '/'))
                .map_or(out.len(), |p| at + p);
            out[start..end].to_owned()
        })
        .collect();
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

/// Whether the word at `pos` follows "example" or "e.g." (as words, not
/// inside a host name such as `www.example.com`) in its sentence.
pub(super) fn in_example(lower: &str, pos: usize) -> bool {
    let before = &lower[..pos];
    let part_of_name = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
    ["example", "e.g."]
        .iter()
        .flat_map(|w| before.match_indices(w).map(move |(i, _)| (i, i + w.len())))
        .filter(|&(start, end)| {
            !part_of_name(before[..start].chars().next_back())
                && (before[..end].ends_with('.') || !part_of_name(before[end..].chars().next()))
        })
        .map(|(_, end)| end)
        .max()
        .is_some_and(|k| !before[k..].contains(". "))
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
