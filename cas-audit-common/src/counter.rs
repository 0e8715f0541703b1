//! The kernel's global counters: one per-CPU `u64` each in
//! [`crate::names::COUNTERS`], with the one name each has everywhere the agent
//! shows it (the `summary` JSON record, `status`, the metric
//! `cas_audit_datapath_<name>_total`).

/// Global datapath counters (per-CPU `u64`, index into [`crate::names::COUNTERS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    /// Packets the programs looked at (wire packets: GSO segments counted).
    Packets = 0,
    /// Packets whose remote address is in a CAS range.
    Matched = 1,
    /// Truncated or malformed packets (passed untouched, not counted elsewhere).
    Malformed = 2,
    /// Packets that are not IPv4/IPv6 (ARP, LLDP, more than two VLAN tags, ...).
    NotIp = 3,
    /// CAS packets counted per range but not per flow: non-first IP fragments.
    Fragments = 4,
    /// CAS packets counted per range but not per flow: IPv6 extension-header
    /// chain longer than [`crate::sizes::MAX_IPV6_EXT_HEADERS`].
    ExtHeaderLimit = 5,
    /// Flow events that did not fit in the ring buffer.
    EventsLost = 6,
    /// Flows created in the kernel flow table.
    FlowsCreated = 7,
    /// Flow-table inserts that failed (the packet is still counted per range).
    FlowInsertFailed = 8,
    /// Flow events emitted.
    Events = 9,
    /// ICMP/ICMPv6 destination-unreachable errors that quoted a packet of a
    /// flow in the table (attached to that flow).
    IcmpErrors = 10,
    /// Such errors quoting a CAS address whose flow was not in the table
    /// (never seen, or already reported and removed).
    IcmpUnmatched = 11,
    /// TCP flows that ended (FIN both ways or RST) and were started again by
    /// a new opening SYN on the same 5-tuple: the ended flow was handed to
    /// the agent on the ring buffer and the entry reset for the new one.
    FlowsReopened = 12,
    /// Of those, ended flows whose figures did not fit in the ring buffer:
    /// not reported (their packets stay in the range counters).
    FlowsLost = 13,
    /// DNS responses (UDP or TCP from port 53) handed to the agent on the
    /// payload ring ([`crate::names::PAYLOADS`]) to learn names from.
    DnsResponses = 14,
    /// TLS ClientHellos (the first bytes of a TCP payload to port 443 that
    /// open a handshake) handed to the agent for their server name.
    ClientHellos = 15,
    /// Of the payloads handed over, those longer than
    /// [`crate::sizes::PAYLOAD_BYTES`]: only their first bytes were copied.
    PayloadsCut = 16,
    /// DNS responses and ClientHellos that did not fit in the payload ring
    /// (not handed over: their names are not learned).
    PayloadsLost = 17,
}

impl Counter {
    /// Number of counters (size of the counter array).
    pub const COUNT: u32 = 18;
    /// All counters in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::Matched,
        Counter::Malformed,
        Counter::NotIp,
        Counter::Fragments,
        Counter::ExtHeaderLimit,
        Counter::EventsLost,
        Counter::FlowsCreated,
        Counter::FlowInsertFailed,
        Counter::Events,
        Counter::IcmpErrors,
        Counter::IcmpUnmatched,
        Counter::FlowsReopened,
        Counter::FlowsLost,
        Counter::DnsResponses,
        Counter::ClientHellos,
        Counter::PayloadsCut,
        Counter::PayloadsLost,
    ];

    /// The counter's one name (snake_case): its key in the `summary` record
    /// and in `status --json`, and the middle of its metric name.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::Matched => "matched",
            Counter::Malformed => "malformed",
            Counter::NotIp => "not_ip",
            Counter::Fragments => "fragments",
            Counter::ExtHeaderLimit => "ext_header_limit",
            Counter::EventsLost => "events_lost",
            Counter::FlowsCreated => "flows_created",
            Counter::FlowInsertFailed => "flow_insert_failed",
            Counter::Events => "events",
            Counter::IcmpErrors => "icmp_errors",
            Counter::IcmpUnmatched => "icmp_unmatched",
            Counter::FlowsReopened => "flows_reopened",
            Counter::FlowsLost => "flows_lost",
            Counter::DnsResponses => "dns_responses",
            Counter::ClientHellos => "client_hellos",
            Counter::PayloadsCut => "payloads_cut",
            Counter::PayloadsLost => "payloads_lost",
        }
    }

    /// One line saying what the counter counts (metric HELP text, `status`).
    pub const fn help(self) -> &'static str {
        match self {
            Counter::Packets => "Packets the programs looked at (wire packets: GSO segments counted)",
            Counter::Matched => "Packets to or from a CAS range",
            Counter::Malformed => "Truncated or inconsistent packets, passed untouched and counted nowhere else",
            Counter::NotIp => "Packets that are not IPv4 or IPv6 (ARP, LLDP, more than two VLAN tags)",
            Counter::Fragments => "CAS packets counted per range but not per flow: non-first IP fragments",
            Counter::ExtHeaderLimit => "CAS packets counted per range but not per flow: too many IPv6 extension headers",
            Counter::EventsLost => "Flow events that did not fit in the ring buffer (the flows are still reported from the table)",
            Counter::FlowsCreated => "Flows created in the kernel flow table",
            Counter::FlowInsertFailed => "Flow-table inserts that failed (the packet still counts per range)",
            Counter::Events => "Flow events sent to the agent",
            Counter::IcmpErrors => "ICMP destination-unreachable errors attached to the CAS flow they quote",
            Counter::IcmpUnmatched => "ICMP destination-unreachable errors about a CAS address whose flow was not in the table",
            Counter::FlowsReopened => "Ended TCP flows started again by a new SYN on the same 5-tuple (the ended one is reported on its own)",
            Counter::FlowsLost => "Ended TCP flows overwritten by a new connection on the same 5-tuple whose figures did not fit in the ring buffer (not reported)",
            Counter::DnsResponses => "DNS responses (from port 53, UDP or TCP) handed to the agent to learn names from",
            Counter::ClientHellos => "TLS ClientHellos to port 443 handed to the agent for their server name",
            Counter::PayloadsCut => "DNS responses and ClientHellos longer than the copy bound: only their first bytes were handed over",
            Counter::PayloadsLost => "DNS responses and ClientHellos that did not fit in the payload ring (their names are not learned)",
        }
    }
}

const _: () = assert!(Counter::ALL.len() == Counter::COUNT as usize);

/// The value of every counter (the agent sums the per-CPU slots).
///
/// With the `user` feature it reads and writes as a map from each
/// counter's [`Counter::name`] to its value (flattened into the `summary`
/// record); unknown keys are ignored when reading, missing ones are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT as usize]);

impl Counters {
    /// Value of one counter.
    pub const fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// Sets one counter.
    pub fn set(&mut self, c: Counter, v: u64) {
        self.0[c as usize] = v;
    }

    /// Every counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

#[cfg(feature = "user")]
mod serde_impl {
    use super::{Counter, Counters};
    use serde::{
        de::{IgnoredAny, MapAccess, Visitor},
        ser::SerializeMap,
        Deserialize, Deserializer, Serialize, Serializer,
    };

    impl Serialize for Counters {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(Counter::ALL.len()))?;
            for (c, v) in self.iter() {
                m.serialize_entry(c.name(), &v)?;
            }
            m.end()
        }
    }

    /// A key of the map: the counter it names, if any.
    struct Key(Option<Counter>);

    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = Key;

        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("a counter name")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
            Ok(Key(Counter::ALL.into_iter().find(|c| c.name() == v)))
        }
    }

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(KeyVisitor)
        }
    }

    struct CountersVisitor;

    impl<'de> Visitor<'de> for CountersVisitor {
        type Value = Counters;

        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("a map of counter names to numbers")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counters, A::Error> {
            let mut out = Counters::default();
            while let Some(Key(c)) = map.next_key::<Key>()? {
                match c {
                    Some(c) => out.set(c, map.next_value::<u64>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }

    impl<'de> Deserialize<'de> for Counters {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(CountersVisitor)
        }
    }
}
