//! One connection seen as several kernel flow entries: the entries of the
//! audited hooks on either side of a NAT (before and after translation:
//! different addresses, so different keys). Their packets are counted once
//! (at the first audited hook each packet meets), so a connection's counts
//! are the sum of its entries'; each entry saw every packet, so each has
//! the whole history. Pure code over kernel values.

use cas_audit_common::{history, initiator, sizes::FLOW_IFACES, FlowStats};

/// The state of one connection from the kernel entries it has, `parts`:
/// counts added, times widened, flags and histories joined, interfaces
/// listed in order of first sight, the ICMP error and RST TTL of the entry
/// that saw them first hand (most errors, highest TTL: the hook nearest
/// the sender). `None` for no entry.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a FlowStats>) -> Option<FlowStats> {
    let mut parts: Vec<&FlowStats> = parts.into_iter().collect();
    parts.sort_by_key(|s| s.first_seen_ns);
    let (first, rest) = parts.split_first()?;
    let mut m = **first;
    for s in rest {
        m.last_seen_ns = m.last_seen_ns.max(s.last_seen_ns);
        m.packets_out = m.packets_out.saturating_add(s.packets_out);
        m.bytes_out = m.bytes_out.saturating_add(s.bytes_out);
        m.packets_in = m.packets_in.saturating_add(s.packets_in);
        m.bytes_in = m.bytes_in.saturating_add(s.bytes_in);
        m.tcp_flags_out |= s.tcp_flags_out;
        m.tcp_flags_in |= s.tcp_flags_in;
        if m.initiator == initiator::UNKNOWN {
            m.initiator = s.initiator;
        }
        m.flagged = m.flagged.max(s.flagged);
        m.rst_ttl = m.rst_ttl.max(s.rst_ttl);
        if s.icmp_errors > m.icmp_errors {
            m.icmp_errors = s.icmp_errors;
            m.icmp_type = s.icmp_type;
            m.icmp_code = s.icmp_code;
            m.reporter_family = s.reporter_family;
            m.reporter = s.reporter;
        }
        // A part whose first packet went the other way has the sides of
        // its history swapped.
        let (o, r) = history::sides(s.history_mask);
        let mask = if s.first_dir == m.first_dir {
            o | r << history::KINDS
        } else {
            r | o << history::KINDS
        };
        join_history(&mut m, mask);
        for &i in s.ifindexes.iter().filter(|&&i| i != 0) {
            add_iface(&mut m.ifindexes, i);
        }
    }
    Some(m)
}

/// Adds the letters of `mask`'s bits that `st` lacks, in kind order.
fn join_history(st: &mut FlowStats, mask: u64) {
    for bit in 0..2 * history::KINDS {
        let b = 1u64 << bit;
        if mask & b == 0 || st.history_mask & b != 0 {
            continue;
        }
        let slot = st.history_mask.count_ones() as usize;
        if slot < st.history.len() {
            let originator = bit < history::KINDS;
            st.history[slot] = history::letter(bit % history::KINDS, originator);
        }
        st.history_mask |= b;
    }
}

fn add_iface(list: &mut [u32; FLOW_IFACES], ifindex: u32) {
    if list.contains(&ifindex) {
        return;
    }
    if let Some(slot) = list.iter_mut().find(|i| **i == 0) {
        *slot = ifindex;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::evidence::history_string;
    use cas_audit_common::{tcp_flags as f, Direction};

    fn part(
        first: u64,
        last: u64,
        out: u64,
        inn: u64,
        hist: &[u8],
        mask: u64,
        ifx: u32,
    ) -> FlowStats {
        let mut s = FlowStats {
            first_seen_ns: first,
            last_seen_ns: last,
            packets_out: out,
            bytes_out: out * 100,
            packets_in: inn,
            bytes_in: inn * 100,
            history_mask: mask,
            first_dir: Direction::Out as u8,
            initiator: initiator::LOCAL,
            tcp_flags_out: f::SYN | f::ACK,
            ..FlowStats::default()
        };
        s.history[..hist.len()].copy_from_slice(hist);
        s.ifindexes[0] = ifx;
        s
    }

    #[test]
    fn both_sides_of_a_nat_make_one_connection() {
        let k = history::KINDS;
        let full =
            history::SYN | history::ACK | history::DATA | (history::SYN_ACK | history::DATA) << k;
        // LAN side counted the packets out, the uplink those in.
        let lan = part(10, 50, 4, 0, b"ShADd", full, 3);
        let mut up = part(12, 60, 0, 3, b"ShADd", full, 5);
        up.rst_ttl = 61;
        let m = merge([&up, &lan]).unwrap();
        assert_eq!((m.first_seen_ns, m.last_seen_ns), (10, 60));
        assert_eq!((m.packets_out, m.packets_in, m.bytes_out), (4, 3, 400));
        assert_eq!(history_string(&m), "ShADd");
        assert_eq!(&m.ifindexes[..2], &[3, 5]);
        assert_eq!(m.rst_ttl, 61);
        assert_eq!(merge([]), None);
        assert_eq!(merge([&lan]), Some(lan));
    }

    #[test]
    fn histories_join_letters_a_part_missed() {
        let k = history::KINDS;
        let a = part(1, 2, 1, 0, b"S", history::SYN, 1);
        let b = part(3, 4, 0, 1, b"Sh", history::SYN | history::SYN_ACK << k, 2);
        assert_eq!(history_string(&merge([&a, &b]).unwrap()), "Sh");
        // A part that saw the answer first has its sides the other way.
        let mut c = part(5, 6, 0, 1, b"H", history::SYN_ACK, 2);
        c.first_dir = Direction::In as u8;
        assert_eq!(history_string(&merge([&a, &c]).unwrap()), "Sh");
    }
}
