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
}

impl Counter {
    /// Number of counters (size of the counter array).
    pub const COUNT: u32 = 12;
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
        }
    }
}

const _: () = assert!(Counter::ALL.len() == Counter::COUNT as usize);
