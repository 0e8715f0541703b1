//! DNS responses (RFC 1035): the name a client asked for, and the
//! addresses its answer gives with their TTLs, following CNAME chains.
//! Parsed with NLnet Labs' `domain` crate, record by record, so that a
//! response cut at the hand-off's copy bound still yields the answers
//! before the cut.

use std::{collections::HashMap, net::IpAddr};

use domain::{
    base::{iana::Rcode, Message, Rtype},
    rdata::{Aaaa, Cname, A},
};

use crate::addrset::names::normalize;

/// Links of a CNAME chain followed at most (a resolver gives up well before).
const MAX_CHAIN: usize = 16;

/// What one DNS response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name asked for (normalised: lower case, no trailing dot).
    pub query: String,
    /// The names from the query to the addresses: the query, then each
    /// CNAME target in chain order.
    pub chain: Vec<String>,
    /// Each address of the chain's last name with its TTL in seconds: the
    /// smallest TTL along the chain (a client may keep no link longer).
    pub addrs: Vec<(IpAddr, u32)>,
    /// Whether the records ended early (a response cut at the copy bound):
    /// the addresses are those before the cut.
    pub partial: bool,
}

/// Why a response gave nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Not a DNS response this reads: too short, not a response, no question.
    #[error("not a DNS response: {0}")]
    Malformed(&'static str),
    /// An error response (NXDOMAIN, SERVFAIL, ...): nothing to learn.
    #[error("DNS error response {0}")]
    Rcode(String),
}

/// Reads a DNS response. `tcp`: the message follows its two-byte length
/// (RFC 1035 section 4.2.2; only the segment that starts a response is
/// handed over).
///
/// # Errors
/// [`DnsError`] when the payload is not a response or an error one.
pub fn parse_response(payload: &[u8], tcp: bool) -> Result<Answer, DnsError> {
    let data = if tcp {
        payload
            .get(2..)
            .ok_or(DnsError::Malformed("no TCP length"))?
    } else {
        payload
    };
    let msg =
        Message::from_octets(data).map_err(|_| DnsError::Malformed("shorter than a header"))?;
    let h = msg.header();
    if !h.qr() {
        return Err(DnsError::Malformed("a query, not a response"));
    }
    if h.rcode() != Rcode::NOERROR {
        return Err(DnsError::Rcode(h.rcode().to_string()));
    }
    let q = msg
        .first_question()
        .ok_or(DnsError::Malformed("no question"))?;
    let query = normalize(&q.qname().to_string());
    let answer = msg
        .answer()
        .map_err(|_| DnsError::Malformed("the question section is cut"))?;
    // owner -> (target, ttl) and owner -> [(address, ttl)].
    let mut cnames: HashMap<String, (String, u32)> = HashMap::new();
    let mut addrs: HashMap<String, Vec<(IpAddr, u32)>> = HashMap::new();
    let mut partial = false;
    for rec in answer {
        let Ok(rec) = rec else {
            partial = true;
            break;
        };
        let owner = normalize(&rec.owner().to_string());
        let ttl = rec.ttl().as_secs();
        let parsed = match rec.rtype() {
            Rtype::A => rec.to_record::<A>().map(|r| {
                r.map(|r| {
                    addrs
                        .entry(owner)
                        .or_default()
                        .push((r.data().addr().into(), ttl))
                })
            }),
            Rtype::AAAA => rec.to_record::<Aaaa>().map(|r| {
                r.map(|r| {
                    addrs
                        .entry(owner)
                        .or_default()
                        .push((r.data().addr().into(), ttl))
                })
            }),
            Rtype::CNAME => rec.to_record::<Cname<_>>().map(|r| {
                r.map(|r| {
                    cnames.insert(owner, (normalize(&r.data().cname().to_string()), ttl));
                })
            }),
            _ => Ok(None),
        };
        if parsed.is_err() {
            partial = true;
            break;
        }
    }
    // Follow the chain from the query: only records on it count (a
    // response's other records are not what the client will connect to).
    let mut chain = vec![query.clone()];
    let mut ttl = u32::MAX;
    while chain.len() <= MAX_CHAIN {
        let last = chain.last().expect("never empty");
        match cnames.get(last) {
            Some((target, t)) if !chain.contains(target) => {
                ttl = ttl.min(*t);
                chain.push(target.clone());
            }
            _ => break,
        }
    }
    let addrs = addrs
        .remove(chain.last().expect("never empty"))
        .unwrap_or_default()
        .into_iter()
        .map(|(a, t)| (a, t.min(ttl)))
        .collect();
    Ok(Answer {
        query,
        chain,
        addrs,
        partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::base::{iana::Class, MessageBuilder, Name, Ttl};
    use std::str::FromStr;

    /// A response to `q` (A) with `cname` links and `a` addresses.
    fn response(q: &str, cnames: &[(&str, &str, u32)], a: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut b = MessageBuilder::new_vec().question();
        b.header_mut().set_qr(true);
        b.push((Name::<Vec<u8>>::from_str(q).unwrap(), Rtype::A))
            .unwrap();
        let mut b = b.answer();
        for (owner, target, ttl) in cnames {
            let rec = (
                Name::<Vec<u8>>::from_str(owner).unwrap(),
                Class::IN,
                Ttl::from_secs(*ttl),
                Cname::new(Name::<Vec<u8>>::from_str(target).unwrap()),
            );
            b.push(rec).unwrap();
        }
        for (owner, addr, ttl) in a {
            let ip: IpAddr = addr.parse().unwrap();
            let owner = Name::<Vec<u8>>::from_str(owner).unwrap();
            match ip {
                IpAddr::V4(v4) => b
                    .push((owner, Class::IN, Ttl::from_secs(*ttl), A::new(v4)))
                    .unwrap(),
                IpAddr::V6(v6) => b
                    .push((owner, Class::IN, Ttl::from_secs(*ttl), Aaaa::new(v6)))
                    .unwrap(),
            }
        }
        b.finish()
    }

    #[test]
    fn a_chain_of_cnames_to_addresses() {
        let r = response(
            "Portal.CloudAppSecurity.com.",
            &[
                (
                    "portal.cloudappsecurity.com.",
                    "portal.trafficmanager.net.",
                    300,
                ),
                ("portal.trafficmanager.net.", "edge.example.net.", 60),
            ],
            &[
                ("edge.example.net.", "203.0.113.7", 20),
                ("edge.example.net.", "2001:db8::7", 3600),
                ("unrelated.example.", "198.51.100.9", 5),
            ],
        );
        let a = parse_response(&r, false).unwrap();
        assert_eq!(a.query, "portal.cloudappsecurity.com");
        assert_eq!(a.chain.len(), 3);
        assert_eq!(
            a.addrs,
            vec![
                ("203.0.113.7".parse().unwrap(), 20),
                ("2001:db8::7".parse().unwrap(), 60)
            ]
        );
        assert!(!a.partial);
        // Over TCP, behind the two-byte length.
        let mut tcp = (r.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&r);
        assert_eq!(parse_response(&tcp, true).unwrap(), a);
    }

    #[test]
    fn cut_responses_keep_what_came_before_the_cut() {
        let r = response(
            "ocsp.msocsp.com.",
            &[],
            &[
                ("ocsp.msocsp.com.", "203.0.113.1", 30),
                ("ocsp.msocsp.com.", "203.0.113.2", 30),
            ],
        );
        // The second record loses its last bytes.
        let a = parse_response(&r[..r.len() - 2], false).unwrap();
        assert_eq!(a.addrs, vec![("203.0.113.1".parse().unwrap(), 30)]);
        assert!(a.partial);
        assert!(matches!(
            parse_response(&r[..8], false),
            Err(DnsError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(b"", true),
            Err(DnsError::Malformed(_))
        ));
    }

    #[test]
    fn queries_and_errors_teach_nothing() {
        let mut q = response("ocsp.msocsp.com.", &[], &[]);
        q[2] &= 0x7f; // QR off: a query.
        assert!(matches!(
            parse_response(&q, false),
            Err(DnsError::Malformed(_))
        ));
        let mut nx = response("nope.cas.ms.", &[], &[]);
        nx[3] |= 3; // NXDOMAIN.
        assert!(matches!(
            parse_response(&nx, false),
            Err(DnsError::Rcode(_))
        ));
    }
}
