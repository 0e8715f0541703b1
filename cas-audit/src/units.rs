//! Sizes and durations as written on the command line, one grammar each
//! for every flag: `64M`, `1G`, `500K`, `4096`; `24h`, `1.5h`, `30m`, `90s`, `90`, `7d`.
//!
//! Hand-written rather than a crate: the grammar is one number and one
//! optional unit, and the error messages are part of the interface.

use std::time::Duration;

/// Size units: powers of 1024 (the name, case-insensitive, and its factor).
const SIZE_UNITS: [(&str, u64); 10] = [
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("t", 1 << 40),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// Parses a positive byte count: an integer with an optional unit `K`, `M`,
/// `G` or `T` (powers of 1024, case-insensitive; `KiB`, `MiB`, `GiB` and a
/// trailing `B` for bytes are accepted too).
///
/// ```
/// use cas_audit::units::parse_size;
/// assert_eq!(parse_size("64M"), Ok(64 << 20));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = split_number(s).ok_or_else(|| {
        format!(
            "{s:?} is not a size: expected bytes, or a number with K, M, G or T (powers of 1024)"
        )
    })?;
    let factor = SIZE_UNITS
        .iter()
        .find(|(u, _)| u.eq_ignore_ascii_case(unit))
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            format!("{s:?}: unknown size unit {unit:?} (use K, M, G or T: powers of 1024)")
        })?;
    let bytes = n
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("{s:?}: the size must be positive"));
    }
    Ok(bytes)
}

/// Parses a positive duration: a number (decimals allowed) with an
/// optional unit `s`, `m`, `h` or `d` (seconds when there is none): `90`,
/// `90s`, `2.5`, `1.5h`, `2d`; no sign, no exponent. The one duration
/// grammar of every flag.
///
/// ```
/// use cas_audit::units::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
/// assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5_400)));
/// assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2_500)));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() && !t[..i].is_empty() => {
            (t[..i].trim_end(), &t[i..])
        }
        _ => (t, ""),
    };
    let not_a_duration =
        || format!("{s:?} is not a duration: expected a number with s, m, h or d (e.g. 24h)");
    // Digits with at most one decimal point: no sign, exponent, `inf`.
    let plain = num.chars().filter(|c| *c == '.').count() <= 1
        && num.chars().any(|c| c.is_ascii_digit())
        && num.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !plain {
        return Err(not_a_duration());
    }
    let n: f64 = num.parse().map_err(|_| not_a_duration())?;
    let factor: f64 = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown duration unit {unit:?} (use s, m, h or d)"
            ))
        }
    };
    let secs = n * factor;
    if !secs.is_finite() || secs > MAX_SECS as f64 {
        return Err(format!("{s:?} is too long"));
    }
    if secs <= 0.0 || Duration::from_secs_f64(secs).is_zero() {
        return Err(format!("{s:?}: the duration must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Longest duration accepted: 100 years.
const MAX_SECS: u64 = 100 * 365 * 86_400;

/// `"64M"` → `(64, "M")`; `None` without leading digits or when they
/// overflow.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    let n = s[..digits].parse().ok()?;
    Some((n, s[digits..].trim_start()))
}

/// `bytes` readable, in the largest power-of-1024 unit that divides it
/// exactly (`67108864` → `64M`), as [`parse_size`] reads it.
pub fn size_text(bytes: u64) -> String {
    for (unit, f) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= f && bytes.is_multiple_of(f) {
            return format!("{}{unit}", bytes / f);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("4096", 4096),
            ("1", 1),
            ("500K", 500 << 10),
            ("500k", 500 << 10),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("1G", 1 << 30),
            ("1gib", 1 << 30),
            ("2T", 2 << 40),
            ("2TiB", 2 << 40),
            ("100B", 100),
            (" 8K ", 8 << 10),
            ("8 K", 8 << 10),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn size_errors_are_exact() {
        let cases = [
            ("", "\"\" is not a size: expected bytes, or a number with K, M, G or T (powers of 1024)"),
            ("M", "\"M\" is not a size: expected bytes, or a number with K, M, G or T (powers of 1024)"),
            ("-1", "\"-1\" is not a size: expected bytes, or a number with K, M, G or T (powers of 1024)"),
            ("1.5G", "\"1.5G\": unknown size unit \".5G\" (use K, M, G or T: powers of 1024)"),
            ("64MB", "\"64MB\": unknown size unit \"MB\" (use K, M, G or T: powers of 1024)"),
            ("10X", "\"10X\": unknown size unit \"X\" (use K, M, G or T: powers of 1024)"),
            ("0", "\"0\": the size must be positive"),
            ("0K", "\"0K\": the size must be positive"),
            ("16777216T", "\"16777216T\" is too large"),
            ("99999999999999999999", "\"99999999999999999999\" is not a size: expected bytes, or a number with K, M, G or T (powers of 1024)"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Err(want.to_string()), "{text:?}");
        }
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            ("24h", 86_400),
            ("7d", 604_800),
            ("2h", 7200),
            ("1.5h", 5400),
            ("90 s", 90),
            (".5m", 30),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text:?}"
            );
        }
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
    }

    #[test]
    fn duration_errors_are_exact() {
        let cases = [
            (
                "",
                "\"\" is not a duration: expected a number with s, m, h or d (e.g. 24h)",
            ),
            (
                "h",
                "\"h\" is not a duration: expected a number with s, m, h or d (e.g. 24h)",
            ),
            (
                "-1",
                "\"-1\" is not a duration: expected a number with s, m, h or d (e.g. 24h)",
            ),
            (
                "1.5.h",
                "\"1.5.h\" is not a duration: expected a number with s, m, h or d (e.g. 24h)",
            ),
            (
                "1e3",
                "\"1e3\" is not a duration: expected a number with s, m, h or d (e.g. 24h)",
            ),
            (
                "1e3s",
                "\"1e3s\" is not a duration: expected a number with s, m, h or d (e.g. 24h)",
            ),
            (
                ".",
                "\".\" is not a duration: expected a number with s, m, h or d (e.g. 24h)",
            ),
            (
                "1w",
                "\"1w\": unknown duration unit \"w\" (use s, m, h or d)",
            ),
            (
                "1H",
                "\"1H\": unknown duration unit \"H\" (use s, m, h or d)",
            ),
            ("0s", "\"0s\": the duration must be positive"),
            ("36501d", "\"36501d\" is too long"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Err(want.to_string()), "{text:?}");
        }
    }

    #[test]
    fn size_text_round_trips() {
        for b in [1, 1000, 1024, 4096, 500 << 10, 64 << 20, 1 << 30, 3 << 40] {
            assert_eq!(parse_size(&size_text(b)), Ok(b));
        }
        assert_eq!(size_text(64 << 20), "64M");
        assert_eq!(size_text(1 << 30), "1G");
        assert_eq!(size_text(1500), "1500");
    }
}
