//! What happened to a flow: its [`State`], read from the Zeek-style history
//! the kernel keeps, the ICMP errors that quoted it, and its age.
//!
//! The history has one letter per kind of event and side, in order of first
//! occurrence: `S` SYN, `H` SYN-ACK, `A` pure ACK, `D` payload, `F` FIN,
//! `R` RST; upper case for the originator (the side that sent the flow's
//! first packet), lower case for the responder. `ShAD` is a handshake, a
//! pure ACK and data from the originator... `Sr` a refused connection.

use std::{fmt, str::FromStr, time::Duration};

use cas_audit_common::{
    history, proto,
    rules::{self, Ending},
    FlowStats,
};
use serde::{Deserialize, Serialize};

/// Default time a flow's first packet waits for an answer before the flow
/// is `unanswered` (`--answer-timeout`).
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// What happened to a flow. `verdict` says whether its port is allowed;
/// the state says whether it worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not answered yet, and the answer timeout has not passed.
    Pending,
    /// Answered: a completed TCP handshake, or packets both ways.
    Established,
    /// FIN seen in both directions after the handshake.
    Closed,
    /// RST after the handshake.
    Reset,
    /// No answer within the answer timeout (SYN retries are one attempt).
    Unanswered,
    /// RST in answer to a SYN.
    Refused,
    /// An ICMP/ICMPv6 destination-unreachable error quoted the flow's packet
    /// and the other side never answered.
    Unreachable,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Established,
        State::Closed,
        State::Reset,
        State::Unanswered,
        State::Refused,
        State::Unreachable,
    ];

    /// The contract string.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Established => "established",
            State::Closed => "closed",
            State::Reset => "reset",
            State::Unanswered => "unanswered",
            State::Refused => "refused",
            State::Unreachable => "unreachable",
        }
    }

    /// Whether the flow was blocked somewhere: unanswered, refused or
    /// unreachable.
    pub fn is_blocked(self) -> bool {
        matches!(
            self,
            State::Unanswered | State::Refused | State::Unreachable
        )
    }

    /// Whether the flow reached the other side.
    pub fn is_reachable(self) -> bool {
        matches!(self, State::Established | State::Closed | State::Reset)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?} (one of {})",
                    State::ALL.map(State::as_str).join(", ")
                )
            })
    }
}

/// The state of a flow of protocol `proto` with kernel state `st`, `age`
/// after its first packet.
pub fn classify(proto_nr: u8, st: &FlowStats, age: Duration, answer_timeout: Duration) -> State {
    use history::{RST, SYN, SYN_ACK};
    let (o, r) = history::sides(st.history_mask);
    let waiting = || {
        if age >= answer_timeout {
            State::Unanswered
        } else {
            State::Pending
        }
    };
    if proto_nr != proto::TCP {
        return if r != 0 {
            State::Established
        } else if st.icmp_errors > 0 {
            State::Unreachable
        } else {
            waiting()
        };
    }
    let after_handshake = || match rules::ending(proto_nr, st.history_mask) {
        Ending::Reset => State::Reset,
        Ending::Closed => State::Closed,
        Ending::Open => State::Established,
    };
    if o & SYN != 0 && r & SYN_ACK == 0 {
        // An opening that the responder did not accept (yet).
        return if r & RST != 0 {
            State::Refused
        } else if r != 0 {
            after_handshake()
        } else if st.icmp_errors > 0 {
            State::Unreachable
        } else {
            waiting()
        };
    }
    if r != 0 {
        return after_handshake();
    }
    // Only the originator spoke: the flow was seen mid-stream or is not
    // answered.
    if st.icmp_errors > 0 {
        State::Unreachable
    } else {
        waiting()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::evidence::history_string;
    use cas_audit_common::tcp_flags as f;

    /// A flow whose packets (originator?, TCP flags, payload) happened in order.
    fn flow(packets: &[(bool, u32, bool)], icmp: bool) -> FlowStats {
        let mut st = FlowStats::default();
        for &(orig, flags, payload) in packets {
            let kinds = history::kinds(proto::TCP, flags, payload);
            let shift = if orig { 0 } else { history::KINDS };
            for kind in 0..history::KINDS {
                let bit = 1u64 << (kind + shift);
                if kinds & (1 << kind) != 0 && st.history_mask & bit == 0 {
                    let slot = st.history_mask.count_ones() as usize;
                    st.history[slot] = history::letter(kind, orig);
                    st.history_mask |= bit;
                }
            }
        }
        if icmp {
            st.icmp_errors = 1;
        }
        st
    }

    const S: u32 = f::SYN;
    const SA: u32 = f::SYN | f::ACK;
    const A: u32 = f::ACK;
    const FA: u32 = f::FIN | f::ACK;
    const R: u32 = f::RST;
    const RA: u32 = f::RST | f::ACK;
    const T: Duration = DEFAULT_ANSWER_TIMEOUT;

    fn tcp(packets: &[(bool, u32, bool)], icmp: bool, age_s: u64) -> (State, String) {
        let st = flow(packets, icmp);
        (
            classify(proto::TCP, &st, Duration::from_secs(age_s), T),
            history_string(&st),
        )
    }

    #[test]
    fn tcp_states_and_histories() {
        let hs = [(true, S, false), (false, SA, false), (true, A, false)];
        assert_eq!(tcp(&hs, false, 10), (State::Established, "ShA".into()));
        let mut data = hs.to_vec();
        data.extend([(true, A, true), (false, A, true)]);
        assert_eq!(tcp(&data, false, 10), (State::Established, "ShADd".into()));
        let mut closed = data.clone();
        closed.extend([(true, FA, false), (false, FA, false)]);
        assert_eq!(tcp(&closed, false, 10), (State::Closed, "ShADdFf".into()));
        let mut half = data.clone();
        half.push((true, FA, false));
        assert_eq!(tcp(&half, false, 10).0, State::Established);
        let mut reset = data.clone();
        reset.push((false, RA, false));
        assert_eq!(tcp(&reset, false, 10), (State::Reset, "ShADdr".into()));
        assert_eq!(
            tcp(&[(true, S, false), (false, RA, false)], false, 0),
            (State::Refused, "Sr".into())
        );
        // Retries are one attempt; the timeout decides.
        let syns = [(true, S, false), (true, S, false), (true, S, false)];
        assert_eq!(tcp(&syns, false, 2), (State::Pending, "S".into()));
        assert_eq!(tcp(&syns, false, 3), (State::Unanswered, "S".into()));
        assert_eq!(tcp(&syns, true, 0), (State::Unreachable, "S".into()));
        // An ICMP error after the handshake does not undo it.
        assert_eq!(tcp(&hs, true, 10).0, State::Established);
        // Mid-stream: data both ways.
        assert_eq!(
            tcp(&[(true, A, true), (false, A, true)], false, 10),
            (State::Established, "Dd".into())
        );
        assert_eq!(tcp(&[(true, A, true)], false, 10).0, State::Unanswered);
        // An RST to something other than a SYN is a reset, not a refusal.
        assert_eq!(
            tcp(&[(true, A, true), (false, R, false)], false, 10).0,
            State::Reset
        );
    }

    #[test]
    fn datagram_states() {
        let one_way = FlowStats {
            history_mask: history::DATA,
            ..FlowStats::default()
        };
        assert_eq!(
            classify(proto::UDP, &one_way, Duration::from_millis(2999), T),
            State::Pending
        );
        assert_eq!(
            classify(proto::UDP, &one_way, Duration::from_millis(3000), T),
            State::Unanswered
        );
        let refused = FlowStats {
            icmp_errors: 2,
            ..one_way
        };
        assert_eq!(
            classify(proto::UDP, &refused, Duration::ZERO, T),
            State::Unreachable
        );
        let both = FlowStats {
            history_mask: history::DATA | history::DATA << history::KINDS,
            ..FlowStats::default()
        };
        assert_eq!(
            classify(proto::UDP, &both, Duration::ZERO, T),
            State::Established
        );
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>(), Ok(s));
        }
        assert_eq!(
            "open".parse::<State>().unwrap_err(),
            "unknown state \"open\" (one of pending, established, closed, reset, unanswered, refused, unreachable)"
        );
    }
}
