//! Clocks: kernel timestamps (CLOCK_MONOTONIC, the clock of
//! `bpf_ktime_get_ns`) to wall time, and the RFC 3339 text every record uses.

use time::OffsetDateTime;

/// Converts kernel monotonic timestamps (`bpf_ktime_get_ns`) to wall time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    /// Measures the current offset between CLOCK_REALTIME and CLOCK_MONOTONIC.
    pub fn new() -> Clock {
        let real = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Clock {
            offset_ns: real - monotonic_ns() as i128,
        }
    }

    /// Wall time of a kernel timestamp.
    pub fn wall(&self, mono_ns: u64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(mono_ns as i128 + self.offset_ns)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `bpf_ktime_get_ns` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// RFC 3339 text of a time in UTC with exactly six fractional digits, so
/// that timestamps also sort correctly as text.
pub fn rfc3339(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_fixed_width() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_000_000_120_000_000).unwrap();
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.120000Z");
        let c = Clock {
            offset_ns: 1_000_000_000,
        };
        assert_eq!(rfc3339(c.wall(5_000_000)), "1970-01-01T00:00:01.005000Z");
    }
}
