//! The process's descriptor limit (`RLIMIT_NOFILE`, getrlimit(2)).
//!
//! The soft limit is what `open`, `socket` and `accept` are held to; any
//! process may raise it up to the hard limit (setrlimit(2)). systemd starts
//! services with a soft limit of 1,024 whatever `LimitNOFILE=` grants as
//! the hard one, expecting them to raise it (systemd.exec(5), "LimitNOFILE=").

use std::io;

/// Ceiling for an unlimited hard limit: the kernel's default
/// `fs.nr_open`, above which setrlimit(2) fails.
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The soft and hard descriptor limits (`rlim_t` is 64 bits on the 64-bit
/// targets the agent is built for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// What the process is held to now.
    pub soft: u64,
    /// What it may raise the soft limit to.
    pub hard: u64,
}

/// The current limits.
///
/// # Errors
/// getrlimit(2) failed (it cannot for this resource).
pub fn nofile() -> io::Result<NofileLimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// Raises the soft limit to the hard limit (an unlimited hard limit:
/// to 2^20, the kernel's default `fs.nr_open`). Returns the limits before
/// and after; a refused raise leaves them as they were.
///
/// # Errors
/// getrlimit(2) or setrlimit(2) failed.
pub fn raise_nofile() -> io::Result<(NofileLimit, NofileLimit)> {
    let before = nofile()?;
    let target = if before.hard == libc::RLIM_INFINITY {
        NR_OPEN_DEFAULT
    } else {
        before.hard
    };
    if before.soft >= target {
        return Ok((before, before));
    }
    let r = libc::rlimit {
        rlim_cur: target,
        rlim_max: before.hard,
    };
    // SAFETY: a valid rlimit; the soft value does not exceed the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, nofile()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_one() {
        let (before, after) = raise_nofile().expect("raising");
        assert_eq!(after.hard, before.hard);
        assert!(after.soft >= before.soft);
        assert!(after.soft <= after.hard);
        assert_eq!(nofile().unwrap(), after);
        // A second call changes nothing.
        let (again, same) = raise_nofile().unwrap();
        assert_eq!(again, same);
    }
}
