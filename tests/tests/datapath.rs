//! The kernel programs run on crafted packets through `BPF_PROG_TEST_RUN`.
//!
//! Every test loads its own [`Datapath`] (tests run in parallel and the maps
//! are per object), runs `cas_tc_egress`, `cas_tc_ingress` and
//! `cas_xdp_ingress` on hand-built frames and asserts the exact contents of
//! the counters, the per-range totals, the flow table and the event ring
//! buffer afterwards. Nothing is attached to any interface.
//!
//! `BPF_PROG_TEST_RUN` runs skb programs on an skb whose device is the
//! loopback device of the caller's network namespace, and XDP programs with
//! that device's receive queue, so every flow key carries the loopback's
//! interface index.
//!
//! What the test run itself refuses (so the programs never see it): frames
//! under 14 bytes (all program types), IPv4/IPv6-EtherType frames shorter
//! than the fixed IP header for skb programs (see [`skb_test_run_refuses`]),
//! and skb data over about a page. `gso_segs` and `gso_size` in a
//! `__sk_buff` passed as `ctx_in` are accepted and seen by the programs.
//!
//! The tests need root (CAP_BPF + CAP_NET_ADMIN) and an agent built with its
//! eBPF object (`CAS_AUDIT_EBPF=require`); otherwise each one is skipped
//! with a message.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::sys::SyscallError;
use cas_audit::addrset::Range;
use cas_audit::datapath::{Datapath, DatapathError};
use cas_audit::ports::AllowedPorts;
use cas_audit_common::{
    family, history, initiator, names, proto, sizes, tcp_flags, Counter, Direction, FlowEvent,
    FlowKey, FlowStats, RangeStats,
};

// ---------------------------------------------------------------------------
// Address plan
// ---------------------------------------------------------------------------

/// The CAS ranges loaded into every datapath; the range id is the index.
const RANGES: [&str; 4] = [
    "13.64.196.27/32",
    "65.55.234.192/26",
    "2001:db8:ca5::/48",
    "2a01:111:f100::/44",
];
/// Range ids read back (a few more than loaded, to catch stray ids).
const RANGE_IDS_READ: usize = RANGES.len() + 4;

/// In range 0 (a /32).
const CAS4_A: Ipv4Addr = Ipv4Addr::new(13, 64, 196, 27);
/// In range 1 (65.55.234.192/26).
const CAS4_B: Ipv4Addr = Ipv4Addr::new(65, 55, 234, 200);
/// In range 2.
const CAS6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0x7, 0, 0, 0, 0x1);
/// In range 3.
const CAS6_B: Ipv6Addr = Ipv6Addr::new(0x2a01, 0x111, 0xf10f, 0, 0, 0, 0, 0x42);

/// The audited host.
const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0, 0, 0, 0, 0x2);

/// Neither local nor CAS: just outside range 0 and range 1, and elsewhere.
const OTHER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const NEAR_CAS4_A: Ipv4Addr = Ipv4Addr::new(13, 64, 196, 28);
const NEAR_CAS4_B: Ipv4Addr = Ipv4Addr::new(65, 55, 234, 191);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xca4, 0xffff, 0, 0, 0, 0x9);

const RANGE_CAS4_A: u32 = 0;
const RANGE_CAS4_B: u32 = 1;
const RANGE_CAS6_A: u32 = 2;
const RANGE_CAS6_B: u32 = 3;

// TCP flags as they appear in the header byte.
const FIN: u8 = tcp_flags::FIN as u8;
const SYN: u8 = tcp_flags::SYN as u8;
const RST: u8 = tcp_flags::RST as u8;
const PSH: u8 = tcp_flags::PSH as u8;
const ACK: u8 = tcp_flags::ACK as u8;
const URG: u8 = tcp_flags::URG as u8;
const ECE: u8 = tcp_flags::ECE as u8;
const CWR: u8 = tcp_flags::CWR as u8;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_LLDP: u16 = 0x88cc;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;

const PROTO_GRE: u8 = 47;

/// What the TC programs return: `TC_ACT_UNSPEC` (-1), "no verdict".
const TC_ACT_UNSPEC: u32 = -1i32 as u32;
/// What the XDP program returns.
const XDP_PASS: u32 = 2;

// ---------------------------------------------------------------------------
// Packet builder
// ---------------------------------------------------------------------------

/// The transport layer of a crafted packet.
#[derive(Clone, Debug)]
enum Transport {
    /// TCP with `options` bytes of options (a multiple of 4).
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        options: usize,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP echo request (ICMPv6 echo request over IPv6).
    Echo,
    /// An ICMP (ICMPv6 over IPv6) error of `ty` and `code`; the payload is
    /// the quoted packet (see [`Pkt::quote`]).
    IcmpError {
        ty: u8,
        code: u8,
    },
    /// Any protocol number with no transport header written (GRE, or the
    /// middle of a fragmented datagram).
    Raw(u8),
}

/// IPv6 extension headers.
#[derive(Clone, Copy, Debug)]
enum Ext {
    /// Hop-by-hop options, 16 bytes (Hdr Ext Len 1, one PadN option).
    HopByHop,
    /// Routing header type 2, 24 bytes (Hdr Ext Len 2).
    Routing,
    /// Destination options, 8 bytes (one PadN option).
    DestOpts,
    /// Fragment header; `offset` in 8-byte units.
    Fragment { offset: u16, more: bool },
    /// Authentication header with a 96-bit ICV: 24 bytes (Payload Len 4).
    Auth,
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::Fragment { .. } => 44,
            Ext::Auth => 51,
            Ext::DestOpts => 60,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop => {
                let mut b = vec![next, 1, 1, 12];
                b.extend([0; 12]);
                b
            }
            Ext::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            Ext::Routing => {
                let mut b = vec![next, 2, 2, 1, 0, 0, 0, 0];
                b.extend(LOCAL6.octets());
                b
            }
            Ext::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(more);
                let mut b = vec![next, 0];
                b.extend(field.to_be_bytes());
                b.extend(0xcafe_0001u32.to_be_bytes());
                b
            }
            Ext::Auth => {
                let mut b = vec![next, 4, 0, 0];
                b.extend(0x100u32.to_be_bytes()); // SPI
                b.extend(1u32.to_be_bytes()); // sequence number
                b.extend([0xa5; 12]); // ICV
                b
            }
        }
    }
}

/// A packet description; [`Pkt::build`] turns it into an Ethernet frame.
#[derive(Clone, Debug)]
struct Pkt {
    /// VLAN tag protocol ids, outermost first.
    tags: Vec<u16>,
    src: IpAddr,
    dst: IpAddr,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    ip_options: Vec<u8>,
    /// IPv4 flags and fragment offset field (MF = 0x2000).
    frag: u16,
    /// IPv6 extension headers, in order.
    exts: Vec<Ext>,
    transport: Transport,
    payload: Vec<u8>,
    /// IPv4 TTL / IPv6 hop limit.
    ttl: u8,
}

/// A built frame and where its headers are.
#[derive(Clone, Debug)]
struct Frame {
    bytes: Vec<u8>,
    /// Offset of the IP header.
    l3_off: usize,
    /// Offset of the transport header.
    l4_off: usize,
    /// Offset just past the transport header: the header bytes every GSO
    /// segment repeats.
    l4_end: usize,
}

impl Frame {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn is_v6(&self) -> bool {
        self.bytes[self.l3_off] >> 4 == 6
    }

    /// Cuts the frame to `len` bytes and rewrites the IP length field to
    /// match, so that only the header the cut lands in is short.
    fn truncated(mut self, len: usize) -> Frame {
        assert!(len <= self.bytes.len());
        self.bytes.truncate(len);
        let ip_len = len - self.l3_off;
        if self.is_v6() {
            self.set_u16(self.l3_off + 4, (ip_len - 40) as u16);
        } else {
            self.set_u16(self.l3_off + 2, ip_len as u16);
            self.fix_ipv4_checksum();
        }
        self
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn fix_ipv4_checksum(&mut self) {
        let ihl = usize::from(self.bytes[self.l3_off] & 0x0f) * 4;
        let end = (self.l3_off + ihl).min(self.bytes.len());
        self.set_u16(self.l3_off + 10, 0);
        let c = checksum(&self.bytes[self.l3_off..end]);
        self.set_u16(self.l3_off + 10, c);
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pkt {
    fn new(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, transport: Transport) -> Pkt {
        let (src, dst) = (src.into(), dst.into());
        assert_eq!(src.is_ipv6(), dst.is_ipv6(), "mixed address families");
        Pkt {
            tags: Vec::new(),
            src,
            dst,
            ip_options: Vec::new(),
            frag: 0,
            exts: Vec::new(),
            transport,
            payload: Vec::new(),
            ttl: 64,
        }
    }

    fn tcp(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        sport: u16,
        dport: u16,
        flags: u8,
    ) -> Pkt {
        Pkt::new(
            src,
            dst,
            Transport::Tcp {
                sport,
                dport,
                flags,
                options: 0,
            },
        )
    }

    fn udp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, sport: u16, dport: u16) -> Pkt {
        Pkt::new(src, dst, Transport::Udp { sport, dport })
    }

    fn echo(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Pkt {
        Pkt::new(src, dst, Transport::Echo)
    }

    fn raw(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, proto: u8) -> Pkt {
        Pkt::new(src, dst, Transport::Raw(proto))
    }

    fn tag(mut self, tpid: u16) -> Pkt {
        self.tags.push(tpid);
        self
    }

    /// IPv4 options: `words` 32-bit words (NOP options ending in EOL).
    fn ip_option_words(mut self, words: usize) -> Pkt {
        let mut o = vec![1u8; words * 4];
        if let Some(last) = o.last_mut() {
            *last = 0;
        }
        self.ip_options = o;
        self
    }

    /// IPv4 fragment: `offset` in 8-byte units, `more` = MF.
    fn fragment(mut self, offset: u16, more: bool) -> Pkt {
        self.frag = offset | if more { 0x2000 } else { 0 };
        self
    }

    fn ext(mut self, e: Ext) -> Pkt {
        self.exts.push(e);
        self
    }

    /// TCP options (a multiple of 4 bytes: NOPs).
    fn tcp_options(mut self, n: usize) -> Pkt {
        match &mut self.transport {
            Transport::Tcp { options, .. } => *options = n,
            other => panic!("TCP options on {other:?}"),
        }
        self
    }

    /// An ICMP error from `src` to `dst` quoting `quoted` (from its IP header on).
    fn icmp_error(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        ty: u8,
        code: u8,
        quoted: &Frame,
    ) -> Pkt {
        let mut p = Pkt::new(src, dst, Transport::IcmpError { ty, code });
        p.payload = quoted.bytes[quoted.l3_off..].to_vec();
        p
    }

    /// IPv4 TTL / IPv6 hop limit (default 64).
    fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    fn payload(mut self, n: usize) -> Pkt {
        self.payload = (0..n).map(|i| i as u8).collect();
        self
    }

    fn proto(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => proto::TCP,
            Transport::Udp { .. } => proto::UDP,
            Transport::Echo | Transport::IcmpError { .. } if self.src.is_ipv6() => proto::ICMPV6,
            Transport::Echo | Transport::IcmpError { .. } => proto::ICMP,
            Transport::Raw(p) => p,
        }
    }

    fn transport_header(&self) -> Vec<u8> {
        match self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
                options,
            } => {
                assert_eq!(options % 4, 0, "TCP options are whole words");
                assert!(options <= 40);
                let mut h = Vec::new();
                h.extend(sport.to_be_bytes());
                h.extend(dport.to_be_bytes());
                h.extend(0x1000_0001u32.to_be_bytes()); // sequence number
                h.extend(0u32.to_be_bytes()); // acknowledgment number
                h.push((((20 + options) / 4) as u8) << 4);
                h.push(flags);
                h.extend(65535u16.to_be_bytes()); // window
                h.extend([0, 0, 0, 0]); // checksum, urgent pointer
                h.extend(std::iter::repeat_n(1u8, options)); // NOP
                h
            }
            Transport::Udp { sport, dport } => {
                let mut h = Vec::new();
                h.extend(sport.to_be_bytes());
                h.extend(dport.to_be_bytes());
                h.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend([0, 0]);
                h
            }
            Transport::Echo => {
                let ty = if self.src.is_ipv6() { 128 } else { 8 };
                let mut h = vec![ty, 0, 0, 0, 0x12, 0x34, 0, 1];
                if !self.src.is_ipv6() {
                    let mut m = h.clone();
                    m.extend(&self.payload);
                    let c = checksum(&m);
                    h[2..4].copy_from_slice(&c.to_be_bytes());
                }
                h
            }
            Transport::IcmpError { ty, code } => vec![ty, code, 0, 0, 0, 0, 0, 0],
            Transport::Raw(_) => Vec::new(),
        }
    }

    fn build(&self) -> Frame {
        let mut f = vec![0x02, 0xca, 0x5a, 0, 0, 0x02, 0x02, 0xca, 0x5a, 0, 0, 0x01];
        for (i, tpid) in self.tags.iter().enumerate() {
            f.extend(tpid.to_be_bytes());
            f.extend((100 + i as u16).to_be_bytes()); // TCI: PCP 0, VID 100 + i
        }
        let l4 = self.transport_header();
        let l4_len = l4.len() + self.payload.len();
        let l3_off;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend(ETH_P_IP.to_be_bytes());
                l3_off = f.len();
                assert_eq!(self.ip_options.len() % 4, 0, "IPv4 options are whole words");
                assert!(self.ip_options.len() <= 40);
                let ihl = 20 + self.ip_options.len();
                let mut h = vec![0x40 | (ihl / 4) as u8, 0];
                h.extend(((ihl + l4_len) as u16).to_be_bytes());
                h.extend(0x1234u16.to_be_bytes()); // identification
                h.extend(self.frag.to_be_bytes());
                h.push(self.ttl); // TTL
                h.push(self.proto());
                h.extend([0, 0]); // checksum, below
                h.extend(s.octets());
                h.extend(d.octets());
                h.extend(&self.ip_options);
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend(h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend(ETH_P_IPV6.to_be_bytes());
                l3_off = f.len();
                let mut exts = Vec::new();
                for (i, e) in self.exts.iter().enumerate() {
                    let next = match self.exts.get(i + 1) {
                        Some(n) => n.number(),
                        None => self.proto(),
                    };
                    exts.extend(e.bytes(next));
                }
                let first = self.exts.first().map_or(self.proto(), |e| e.number());
                f.extend([0x60, 0, 0, 0]);
                f.extend(((exts.len() + l4_len) as u16).to_be_bytes());
                f.push(first);
                f.push(self.ttl); // hop limit
                f.extend(s.octets());
                f.extend(d.octets());
                f.extend(exts);
            }
            _ => unreachable!("checked in Pkt::new"),
        }
        let l4_off = f.len();
        f.extend(&l4);
        let l4_end = f.len();
        f.extend(&self.payload);
        Frame {
            bytes: f,
            l3_off,
            l4_off,
            l4_end,
        }
    }
}

/// An Ethernet frame with `ethertype` and `body`, for non-IP frames.
fn ether_frame(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xca, 0x5a, 0, 0, 0x01,
    ];
    f.extend(ethertype.to_be_bytes());
    f.extend(body);
    f
}

/// An ARP request who-has 13.64.196.27 (a CAS address) tell 198.51.100.2.
fn arp_request() -> Vec<u8> {
    let mut b = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    b.extend([0x02, 0xca, 0x5a, 0, 0, 0x01]);
    b.extend(LOCAL4.octets());
    b.extend([0; 6]);
    b.extend(CAS4_A.octets());
    ether_frame(ETH_P_ARP, &b)
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    TcEgress,
    TcIngress,
    Xdp,
}

impl Hook {
    const INGRESS: [Hook; 2] = [Hook::TcIngress, Hook::Xdp];
    const ALL: [Hook; 3] = [Hook::TcEgress, Hook::TcIngress, Hook::Xdp];

    fn program(self) -> &'static str {
        match self {
            Hook::TcEgress => names::PROG_TC_EGRESS,
            Hook::TcIngress => names::PROG_TC_INGRESS,
            Hook::Xdp => names::PROG_XDP_INGRESS,
        }
    }

    /// The program's "let the packet through" return value.
    fn pass(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            _ => TC_ACT_UNSPEC,
        }
    }
}

/// Size of the kernel's `struct __sk_buff` (UAPI, x86_64 and every other
/// 64-bit target alike).
const SKB_CTX_LEN: usize = 192;
/// Offset of `__sk_buff.gso_segs`.
const SKB_GSO_SEGS: usize = 164;
/// Offset of `__sk_buff.gso_size`.
const SKB_GSO_SIZE: usize = 176;

/// A `__sk_buff` for `ctx_in` with only the GSO fields set: the kernel
/// (`convert___skb_to_skb` in net/bpf/test_run.c) accepts mark, priority,
/// ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size and
/// hwtstamp and rejects any other non-zero byte with EINVAL.
fn gso_ctx(segs: u32, size: u32) -> [u8; SKB_CTX_LEN] {
    let mut c = [0u8; SKB_CTX_LEN];
    c[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&segs.to_ne_bytes());
    c[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
    c
}

struct Harness {
    dp: Datapath,
    /// The loopback's interface index: the device test runs use.
    lo: u32,
    events: Option<RingBuf<MapData>>,
}

/// A fresh datapath, or `None` (after saying why) when the test cannot run.
fn harness(test: &str) -> Option<Harness> {
    harness_with(test, &RANGES)
}

/// A fresh datapath holding `prefixes` (range id = index).
fn harness_with(test: &str, prefixes: &[&str]) -> Option<Harness> {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        assert!(
            std::env::var_os(cas_audit_tests::REQUIRE_ROOT_ENV).is_none(),
            "{test}: loading BPF programs needs root (euid {euid})"
        );
        eprintln!("SKIPPED {test}: loading and test-running BPF programs needs root (euid {euid})");
        return None;
    }
    let ranges: Vec<Range> = prefixes
        .iter()
        .map(|p| Range {
            prefix: p.parse().expect("range prefix"),
            datacenters: BTreeSet::new(),
            purposes: BTreeSet::new(),
            ports: BTreeSet::new(),
        })
        .collect();
    let dp = match Datapath::load(&ranges, &AllowedPorts::default(), 1024) {
        Ok(dp) => dp,
        Err(DatapathError::NoObject) => {
            eprintln!(
                "SKIPPED {test}: cas-audit was built without its eBPF object \
                 (build with CAS_AUDIT_EBPF=require)"
            );
            return None;
        }
        Err(e) => panic!("{test}: loading the datapath: {e}"),
    };
    let lo = cas_audit::datapath::ifindex("lo").expect("loopback ifindex");
    Some(Harness {
        dp,
        lo,
        events: None,
    })
}

/// `let h = setup!();` — a harness named after the test, or return (skip).
macro_rules! setup {
    () => {{
        fn f() {}
        let name = std::any::type_name_of_val(&f).trim_end_matches("::f");
        match harness(name) {
            Some(h) => h,
            None => return,
        }
    }};
}

impl Harness {
    fn try_run(
        &mut self,
        hook: Hook,
        data: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<u32, ProgramError> {
        let prog = self
            .dp
            .ebpf_mut()
            .program_mut(hook.program())
            .expect("program in object");
        let opts = TestRunOptions {
            data_in: Some(data),
            ctx_in: ctx,
            ..Default::default()
        };
        let res = if hook == Hook::Xdp {
            let p: &mut Xdp = prog.try_into()?;
            p.test_run(opts)?
        } else {
            let p: &mut SchedClassifier = prog.try_into()?;
            p.test_run(opts)?
        };
        Ok(res.return_value)
    }

    /// Runs `hook` on `data` and checks the packet is passed.
    fn run(&mut self, hook: Hook, data: &[u8]) {
        let rv = self
            .try_run(hook, data, None)
            .unwrap_or_else(|e| panic!("test run of {hook:?} on {} bytes: {e:?}", data.len()));
        assert_eq!(rv, hook.pass(), "{hook:?} return value");
    }

    /// Runs a TC program on `data` as a GSO/GRO super-packet of `segs`.
    fn run_gso(&mut self, hook: Hook, data: &[u8], segs: u32) {
        assert_ne!(hook, Hook::Xdp);
        let ctx = gso_ctx(segs, 1000);
        let rv = self
            .try_run(hook, data, Some(&ctx))
            .unwrap_or_else(|e| panic!("test run of {hook:?} with gso_segs {segs}: {e:?}"));
        assert_eq!(rv, hook.pass(), "{hook:?} return value");
    }

    /// Asserts every counter: the listed ones have these values, all others zero.
    #[track_caller]
    fn expect_counters(&self, expected: &[(Counter, u64)]) {
        let got = self.dp.counters().expect("reading counters");
        let mut want = [0u64; Counter::COUNT as usize];
        for (c, n) in expected {
            want[*c as usize] = *n;
        }
        let show = |v: [u64; Counter::COUNT as usize]| -> Vec<(Counter, u64)> {
            Counter::ALL
                .iter()
                .map(|c| (*c, v[*c as usize]))
                .filter(|(_, n)| *n != 0)
                .collect()
        };
        assert_eq!(show(got.0), show(want), "counters (non-zero ones)");
    }

    /// Asserts every range total: the listed ids have these values, all others zero.
    #[track_caller]
    fn expect_ranges(&self, expected: &[(u32, RangeStats)]) {
        let got = self.dp.range_totals(RANGE_IDS_READ).expect("range totals");
        let mut want = vec![RangeStats::default(); RANGE_IDS_READ];
        for (id, s) in expected {
            want[*id as usize] = *s;
        }
        assert_eq!(got, want, "range totals by id");
    }

    fn flows(&self) -> HashMap<FlowKey, FlowStats> {
        self.dp.flows().expect("flow table").into_iter().collect()
    }

    #[track_caller]
    fn expect_no_flows(&self) {
        let f = self.flows();
        assert!(f.is_empty(), "expected no flows, got {f:#?}");
    }

    /// Asserts the flow table holds exactly these flows (timestamps aside,
    /// which must be set and ordered).
    #[track_caller]
    fn expect_flows(&self, expected: &[(FlowKey, FlowStats)]) {
        let got = self.flows();
        let want: HashMap<FlowKey, FlowStats> = expected.iter().copied().collect();
        assert_eq!(got.len(), want.len(), "number of flows; got {got:#?}");
        for (k, w) in &want {
            let Some(g) = got.get(k) else {
                panic!("flow {k:?} missing; table: {got:#?}");
            };
            assert!(g.first_seen_ns > 0, "first_seen_ns unset: {g:?}");
            assert!(g.last_seen_ns >= g.first_seen_ns, "timestamps: {g:?}");
            let mut w = *w;
            w.first_seen_ns = g.first_seen_ns;
            w.last_seen_ns = g.last_seen_ns;
            // History and RST TTL are asserted by the tests about them
            // (`expect_history`); the others leave them unset.
            if w.history_mask == 0 {
                w.history_mask = g.history_mask;
                w.history = g.history;
                w.rst_ttl = g.rst_ttl;
            }
            assert_eq!(*g, w, "flow {k:?}");
        }
    }

    /// The one flow in the table.
    #[track_caller]
    fn only_flow(&self) -> (FlowKey, FlowStats) {
        let f = self.flows();
        assert_eq!(f.len(), 1, "expected one flow, got {f:#?}");
        f.into_iter().next().expect("one flow")
    }

    /// Events waiting in the ring buffer (consumed).
    fn events(&mut self) -> Vec<FlowEvent> {
        if self.events.is_none() {
            self.events = Some(self.dp.take_events().expect("event ring buffer"));
        }
        let ring = self.events.as_mut().expect("ring");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(
                item.len(),
                std::mem::size_of::<FlowEvent>(),
                "event record size"
            );
            // SAFETY: FlowEvent is repr(C) plain data and the record has its size.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
        }
        out
    }

    /// A flow key on the loopback device (where test runs happen).
    fn key(
        &self,
        local: impl Into<IpAddr>,
        remote: impl Into<IpAddr>,
        local_port: u16,
        remote_port: u16,
        proto: u8,
    ) -> FlowKey {
        let (local, remote) = (local.into(), remote.into());
        let bytes = |a: IpAddr| match a {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                b
            }
            IpAddr::V6(a) => a.octets(),
        };
        FlowKey {
            local_addr: bytes(local),
            remote_addr: bytes(remote),
            ifindex: self.lo,
            local_port,
            remote_port,
            proto,
            family: if local.is_ipv6() {
                family::V6
            } else {
                family::V4
            },
            _pad: [0; 2],
        }
    }
}

fn range_out(packets: u64, bytes: u64) -> RangeStats {
    RangeStats {
        packets_out: packets,
        bytes_out: bytes,
        ..RangeStats::default()
    }
}

fn range_in(packets: u64, bytes: u64) -> RangeStats {
    RangeStats {
        packets_in: packets,
        bytes_in: bytes,
        ..RangeStats::default()
    }
}

/// Expected stats of a flow created by one packet in `dir`.
fn flow_stats(dir: Direction, range_id: u32, packets: u64, bytes: u64, flags: u8) -> FlowStats {
    let mut s = FlowStats {
        range_id,
        first_dir: dir as u8,
        ..FlowStats::default()
    };
    if dir == Direction::Out {
        s.packets_out = packets;
        s.bytes_out = bytes;
        s.tcp_flags_out = flags.into();
    } else {
        s.packets_in = packets;
        s.bytes_in = bytes;
        s.tcp_flags_in = flags.into();
    }
    s
}

// ---------------------------------------------------------------------------
// Hits and misses
// ---------------------------------------------------------------------------

#[test]
fn ipv4_egress_hit() {
    let mut h = setup!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN)
        .tcp_options(20)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(1, f.len()))]);

    let (key, st) = h.only_flow();
    assert_eq!(key.ifindex, h.lo, "test runs happen on the loopback device");
    assert_eq!(key, h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP));
    let mut want = flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), SYN);
    want.initiator = initiator::LOCAL;
    h.expect_flows(&[(key, want)]);
    assert_eq!(st.first_seen_ns, st.last_seen_ns, "one packet");
    assert!(h.events().is_empty());
}

#[test]
fn ipv4_egress_hit_in_a_wider_prefix() {
    let mut h = setup!();
    let f = Pkt::udp(LOCAL4, CAS4_B, 5353, 443).payload(30).build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_B, range_out(1, f.len()))]);
    let key = h.key(LOCAL4, CAS4_B, 5353, 443, proto::UDP);
    h.expect_flows(&[(key, flow_stats(Direction::Out, RANGE_CAS4_B, 1, f.len(), 0))]);
}

#[test]
fn ipv4_egress_miss() {
    let mut h = setup!();
    for dst in [OTHER4, NEAR_CAS4_A, NEAR_CAS4_B] {
        h.run(
            Hook::TcEgress,
            &Pkt::tcp(LOCAL4, dst, 40000, 443, SYN).build().bytes,
        );
    }
    // Egress matches the destination only: a CAS source does not count.
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(CAS4_A, OTHER4, 443, 40000, ACK).build().bytes,
    );
    h.expect_counters(&[(Counter::Packets, 4)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
    assert!(h.events().is_empty());
}

#[test]
fn ipv4_ingress_miss() {
    let mut h = setup!();
    for hook in Hook::INGRESS {
        for src in [OTHER4, NEAR_CAS4_A, NEAR_CAS4_B] {
            h.run(hook, &Pkt::tcp(src, LOCAL4, 443, 40000, ACK).build().bytes);
        }
        // Ingress matches the source only: a CAS destination does not count.
        h.run(
            hook,
            &Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build().bytes,
        );
    }
    h.expect_counters(&[(Counter::Packets, 8)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

fn ingress_hit(h: &mut Harness, hook: Hook) {
    let f = Pkt::tcp(CAS4_B, LOCAL4, 443, 40000, PSH | ACK)
        .payload(100)
        .build();
    h.run(hook, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_B, range_in(1, f.len()))]);
    let (key, _) = h.only_flow();
    assert_eq!(key.ifindex, h.lo, "{hook:?}: test runs use the loopback");
    // Normalised: local is the destination of an arriving packet.
    let want_key = h.key(LOCAL4, CAS4_B, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        want_key,
        flow_stats(Direction::In, RANGE_CAS4_B, 1, f.len(), PSH | ACK),
    )]);
    assert!(h.events().is_empty());
}

#[test]
fn ipv4_tc_ingress_hit() {
    let mut h = setup!();
    ingress_hit(&mut h, Hook::TcIngress);
}

#[test]
fn ipv4_xdp_ingress_hit() {
    let mut h = setup!();
    ingress_hit(&mut h, Hook::Xdp);
}

#[test]
fn both_directions_share_one_flow() {
    let mut h = setup!();
    let syn = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
    let syn_ack = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK).build();
    let ack = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    let data_out = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, PSH | ACK)
        .payload(517)
        .build();
    let data_in = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, PSH | ACK)
        .payload(1400)
        .build();
    h.run(Hook::TcEgress, &syn.bytes);
    h.run(Hook::Xdp, &syn_ack.bytes);
    h.run(Hook::TcEgress, &ack.bytes);
    h.run(Hook::TcEgress, &data_out.bytes);
    h.run(Hook::TcIngress, &data_in.bytes);

    let out_bytes = syn.len() + ack.len() + data_out.len();
    let in_bytes = syn_ack.len() + data_in.len();
    h.expect_counters(&[
        (Counter::Packets, 5),
        (Counter::Matched, 5),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS4_A,
        RangeStats {
            packets_out: 3,
            bytes_out: out_bytes,
            packets_in: 2,
            bytes_in: in_bytes,
        },
    )]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 3,
            bytes_out: out_bytes,
            packets_in: 2,
            bytes_in: in_bytes,
            range_id: RANGE_CAS4_A,
            tcp_flags_out: (SYN | ACK | PSH).into(),
            tcp_flags_in: (SYN | ACK | PSH).into(),
            initiator: initiator::LOCAL,
            first_dir: Direction::Out as u8,
            ..FlowStats::default()
        },
    )]);
}

#[test]
fn ipv6_hit_both_directions() {
    let mut h = setup!();
    let out = Pkt::tcp(LOCAL6, CAS6_A, 50000, 443, SYN).build();
    let back_xdp = Pkt::tcp(CAS6_A, LOCAL6, 443, 50000, SYN | ACK).build();
    let back_tc = Pkt::tcp(CAS6_A, LOCAL6, 443, 50000, PSH | ACK)
        .payload(64)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.run(Hook::Xdp, &back_xdp.bytes);
    h.run(Hook::TcIngress, &back_tc.bytes);
    // A second conversation, to range 3, that starts from the remote side.
    let udp_in = Pkt::udp(CAS6_B, LOCAL6, 443, 60000).payload(10).build();
    h.run(Hook::TcIngress, &udp_in.bytes);

    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 2),
    ]);
    h.expect_ranges(&[
        (
            RANGE_CAS6_A,
            RangeStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: back_xdp.len() + back_tc.len(),
            },
        ),
        (RANGE_CAS6_B, range_in(1, udp_in.len())),
    ]);
    let tcp_key = h.key(LOCAL6, CAS6_A, 50000, 443, proto::TCP);
    assert_eq!(tcp_key.family, family::V6);
    let udp_key = h.key(LOCAL6, CAS6_B, 60000, 443, proto::UDP);
    h.expect_flows(&[
        (
            tcp_key,
            FlowStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: back_xdp.len() + back_tc.len(),
                range_id: RANGE_CAS6_A,
                tcp_flags_out: SYN.into(),
                tcp_flags_in: (SYN | ACK | PSH).into(),
                initiator: initiator::LOCAL,
                first_dir: Direction::Out as u8,
                ..FlowStats::default()
            },
        ),
        (
            udp_key,
            flow_stats(Direction::In, RANGE_CAS6_B, 1, udp_in.len(), 0),
        ),
    ]);
}

#[test]
fn ipv6_miss_both_directions() {
    let mut h = setup!();
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL6, OTHER6, 50000, 443, SYN).build().bytes,
    );
    // A CAS source on egress and a CAS destination on ingress do not count.
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(CAS6_A, OTHER6, 443, 50000, ACK).build().bytes,
    );
    for hook in Hook::INGRESS {
        h.run(
            hook,
            &Pkt::tcp(OTHER6, LOCAL6, 443, 50000, ACK).build().bytes,
        );
        h.run(
            hook,
            &Pkt::tcp(LOCAL6, CAS6_A, 50000, 443, SYN).build().bytes,
        );
    }
    h.expect_counters(&[(Counter::Packets, 6)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

#[test]
fn ethernet_padding_counts_as_frame_bytes() {
    let mut h = setup!();
    // A bare ACK is 54 bytes; on the wire it is padded to 60. The IP total
    // length stays 40: the padding is legal and counted as frame bytes.
    let mut f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    assert_eq!(f.len(), 54);
    f.bytes.resize(60, 0);
    h.run(Hook::TcEgress, &f.bytes);
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, ACK).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS4_A,
        RangeStats {
            packets_out: 1,
            bytes_out: 60,
            packets_in: 1,
            bytes_in: 54,
        },
    )]);
}

// ---------------------------------------------------------------------------
// VLAN tags
// ---------------------------------------------------------------------------

fn vlan_hit(tags: &[u16]) {
    let Some(mut h) = harness(&format!("vlan_hit {tags:x?}")) else {
        return;
    };
    let mut out = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN);
    let mut back = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK);
    let mut out6 = Pkt::udp(LOCAL6, CAS6_A, 40000, 443).payload(20);
    for t in tags {
        out = out.tag(*t);
        back = back.tag(*t);
        out6 = out6.tag(*t);
    }
    let (out, back, out6) = (out.build(), back.build(), out6.build());
    assert_eq!(out.l3_off, ETH_HLEN + 4 * tags.len());
    h.run(Hook::TcEgress, &out.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::TcEgress, &out6.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 2),
    ]);
    h.expect_ranges(&[
        (
            RANGE_CAS4_A,
            RangeStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: 2 * back.len(),
            },
        ),
        (RANGE_CAS6_A, range_out(1, out6.len())),
    ]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    let key6 = h.key(LOCAL6, CAS6_A, 40000, 443, proto::UDP);
    h.expect_flows(&[
        (
            key,
            FlowStats {
                packets_out: 1,
                bytes_out: out.len(),
                packets_in: 2,
                bytes_in: 2 * back.len(),
                range_id: RANGE_CAS4_A,
                tcp_flags_out: SYN.into(),
                tcp_flags_in: (SYN | ACK).into(),
                initiator: initiator::LOCAL,
                first_dir: Direction::Out as u8,
                ..FlowStats::default()
            },
        ),
        (
            key6,
            flow_stats(Direction::Out, RANGE_CAS6_A, 1, out6.len(), 0),
        ),
    ]);
}

#[test]
fn vlan_8021q_hit() {
    vlan_hit(&[ETH_P_8021Q]);
}

#[test]
fn vlan_8021ad_hit() {
    vlan_hit(&[ETH_P_8021AD]);
}

#[test]
fn vlan_qinq_hit() {
    vlan_hit(&[ETH_P_8021AD, ETH_P_8021Q]);
}

#[test]
fn vlan_double_8021q_hit() {
    vlan_hit(&[ETH_P_8021Q, ETH_P_8021Q]);
}

#[test]
fn three_vlan_tags_are_not_ip() {
    let mut h = setup!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN)
        .tag(ETH_P_8021AD)
        .tag(ETH_P_8021Q)
        .tag(ETH_P_8021Q)
        .build();
    let back = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK)
        .tag(ETH_P_8021AD)
        .tag(ETH_P_8021Q)
        .tag(ETH_P_8021Q)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[(Counter::Packets, 1), (Counter::NotIp, 1)]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[(Counter::Packets, 3), (Counter::NotIp, 3)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

#[test]
fn arp_and_lldp_are_not_ip() {
    let mut h = setup!();
    let arp = arp_request();
    h.run(Hook::TcEgress, &arp);
    h.expect_counters(&[(Counter::Packets, 1), (Counter::NotIp, 1)]);
    h.run(Hook::TcIngress, &arp);
    h.run(Hook::Xdp, &arp);
    h.run(
        Hook::Xdp,
        &ether_frame(ETH_P_LLDP, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1]),
    );
    h.expect_counters(&[(Counter::Packets, 4), (Counter::NotIp, 4)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
    assert!(h.events().is_empty());
}

// ---------------------------------------------------------------------------
// IPv4 options and IPv6 extension headers
// ---------------------------------------------------------------------------

#[test]
fn ipv4_options_every_header_length() {
    let mut h = setup!();
    let mut flows = Vec::new();
    let (mut out_bytes, mut in_bytes) = (0, 0);
    for ihl in 6u16..=15 {
        let words = usize::from(ihl) - 5;
        let out = Pkt::tcp(LOCAL4, CAS4_A, 41000 + ihl, 443, SYN)
            .ip_option_words(words)
            .build();
        assert_eq!(out.bytes[out.l3_off] & 0x0f, ihl as u8);
        assert_eq!(out.l4_off - out.l3_off, usize::from(ihl) * 4);
        h.run(Hook::TcEgress, &out.bytes);
        let back = Pkt::udp(CAS4_B, LOCAL4, 443, 42000 + ihl)
            .ip_option_words(words)
            .payload(3)
            .build();
        h.run(Hook::Xdp, &back.bytes);
        out_bytes += out.len();
        in_bytes += back.len();
        let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 1, out.len(), SYN);
        st.initiator = initiator::LOCAL;
        flows.push((h.key(LOCAL4, CAS4_A, 41000 + ihl, 443, proto::TCP), st));
        flows.push((
            h.key(LOCAL4, CAS4_B, 42000 + ihl, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS4_B, 1, back.len(), 0),
        ));
    }
    h.expect_counters(&[
        (Counter::Packets, 20),
        (Counter::Matched, 20),
        (Counter::FlowsCreated, 20),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS4_A, range_out(10, out_bytes)),
        (RANGE_CAS4_B, range_in(10, in_bytes)),
    ]);
    h.expect_flows(&flows);
}

#[test]
fn ipv6_each_extension_header() {
    let mut h = setup!();
    let exts = [
        Ext::HopByHop,
        Ext::Routing,
        Ext::DestOpts,
        Ext::Fragment {
            offset: 0,
            more: true,
        },
        Ext::Auth,
    ];
    let mut flows = Vec::new();
    let (mut out_bytes, mut in_bytes) = (0, 0);
    for (i, e) in exts.iter().enumerate() {
        let port = 43000 + i as u16;
        let tcp = Pkt::tcp(LOCAL6, CAS6_A, port, 443, SYN).ext(*e).build();
        h.run(Hook::TcEgress, &tcp.bytes);
        let udp = Pkt::udp(CAS6_A, LOCAL6, 443, port)
            .ext(*e)
            .payload(9)
            .build();
        h.run(Hook::TcIngress, &udp.bytes);
        let udp_xdp = Pkt::udp(CAS6_B, LOCAL6, 443, port)
            .ext(*e)
            .payload(9)
            .build();
        h.run(Hook::Xdp, &udp_xdp.bytes);
        out_bytes += tcp.len();
        in_bytes += udp.len();
        let mut st = flow_stats(Direction::Out, RANGE_CAS6_A, 1, tcp.len(), SYN);
        st.initiator = initiator::LOCAL;
        flows.push((h.key(LOCAL6, CAS6_A, port, 443, proto::TCP), st));
        flows.push((
            h.key(LOCAL6, CAS6_A, port, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS6_A, 1, udp.len(), 0),
        ));
        flows.push((
            h.key(LOCAL6, CAS6_B, port, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS6_B, 1, udp_xdp.len(), 0),
        ));
    }
    h.expect_counters(&[
        (Counter::Packets, 15),
        (Counter::Matched, 15),
        (Counter::FlowsCreated, 15),
    ]);
    let xdp_bytes: u64 = flows
        .iter()
        .filter(|(_, s)| s.range_id == RANGE_CAS6_B)
        .map(|(_, s)| s.bytes_in)
        .sum();
    h.expect_ranges(&[
        (
            RANGE_CAS6_A,
            RangeStats {
                packets_out: 5,
                bytes_out: out_bytes,
                packets_in: 5,
                bytes_in: in_bytes,
            },
        ),
        (RANGE_CAS6_B, range_in(5, xdp_bytes)),
    ]);
    h.expect_flows(&flows);
}

/// A chain of `MAX_IPV6_EXT_HEADERS` extension headers, one of each kind.
fn full_ext_chain(p: Pkt) -> Pkt {
    let chain = [
        Ext::HopByHop,
        Ext::DestOpts,
        Ext::Routing,
        Ext::Fragment {
            offset: 0,
            more: true,
        },
        Ext::Auth,
        Ext::DestOpts,
    ];
    assert_eq!(chain.len(), sizes::MAX_IPV6_EXT_HEADERS as usize);
    chain.iter().fold(p, |p, e| p.ext(*e))
}

#[test]
fn ipv6_ext_chain_at_the_limit_is_parsed() {
    let mut h = setup!();
    let f = full_ext_chain(Pkt::tcp(LOCAL6, CAS6_A, 44000, 443, SYN)).build();
    h.run(Hook::TcEgress, &f.bytes);
    let back = full_ext_chain(Pkt::tcp(CAS6_A, LOCAL6, 443, 44000, SYN | ACK)).build();
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS6_A,
        RangeStats {
            packets_out: 1,
            bytes_out: f.len(),
            packets_in: 1,
            bytes_in: back.len(),
        },
    )]);
    let key = h.key(LOCAL6, CAS6_A, 44000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 1,
            bytes_out: f.len(),
            packets_in: 1,
            bytes_in: back.len(),
            range_id: RANGE_CAS6_A,
            tcp_flags_out: SYN.into(),
            tcp_flags_in: (SYN | ACK).into(),
            initiator: initiator::LOCAL,
            first_dir: Direction::Out as u8,
            ..FlowStats::default()
        },
    )]);
}

#[test]
fn ipv6_ext_chain_over_the_limit() {
    let mut h = setup!();
    let out = full_ext_chain(Pkt::tcp(LOCAL6, CAS6_A, 44000, 443, SYN))
        .ext(Ext::DestOpts)
        .build();
    let back = full_ext_chain(Pkt::udp(CAS6_B, LOCAL6, 443, 44000))
        .ext(Ext::HopByHop)
        .payload(5)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::ExtHeaderLimit, 1),
    ]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::ExtHeaderLimit, 3),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS6_A, range_out(1, out.len())),
        (RANGE_CAS6_B, range_in(2, 2 * back.len())),
    ]);
    h.expect_no_flows();
    assert!(h.events().is_empty());

    // The same chain to a non-CAS address is not looked at further.
    let miss = full_ext_chain(Pkt::tcp(LOCAL6, OTHER6, 44000, 443, SYN))
        .ext(Ext::DestOpts)
        .build();
    h.run(Hook::TcEgress, &miss.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 3),
        (Counter::ExtHeaderLimit, 3),
    ]);
}

// ---------------------------------------------------------------------------
// Fragments
// ---------------------------------------------------------------------------

#[test]
fn ipv4_first_fragment_creates_a_flow() {
    let mut h = setup!();
    let f = Pkt::udp(LOCAL4, CAS4_A, 40001, 443)
        .payload(1472)
        .fragment(0, true)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(1, f.len()))]);
    let key = h.key(LOCAL4, CAS4_A, 40001, 443, proto::UDP);
    h.expect_flows(&[(key, flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), 0))]);
}

#[test]
fn ipv4_non_first_fragment() {
    let mut h = setup!();
    // The rest of a UDP datagram: offset 1480 bytes, no UDP header.
    let out = Pkt::raw(LOCAL4, CAS4_A, proto::UDP)
        .payload(200)
        .fragment(185, false)
        .build();
    let back = Pkt::raw(CAS4_B, LOCAL4, proto::TCP)
        .payload(100)
        .fragment(1, true)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::Fragments, 1),
    ]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::Fragments, 3),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS4_A, range_out(1, out.len())),
        (RANGE_CAS4_B, range_in(2, 2 * back.len())),
    ]);
    h.expect_no_flows();
    // A fragment that is not CAS traffic is not a "CAS fragment".
    h.run(
        Hook::TcEgress,
        &Pkt::raw(LOCAL4, OTHER4, proto::UDP)
            .payload(64)
            .fragment(185, false)
            .build()
            .bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 3),
        (Counter::Fragments, 3),
    ]);
    h.expect_no_flows();
}

#[test]
fn ipv6_first_fragment_creates_a_flow() {
    let mut h = setup!();
    let f = Pkt::tcp(LOCAL6, CAS6_A, 40002, 443, PSH | ACK)
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
        })
        .payload(1200)
        .build();
    h.run(Hook::TcEgress, &f.bytes);
    let back = Pkt::udp(CAS6_A, LOCAL6, 443, 40003)
        .ext(Ext::HopByHop)
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
        })
        .payload(1200)
        .build();
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    h.expect_ranges(&[(
        RANGE_CAS6_A,
        RangeStats {
            packets_out: 1,
            bytes_out: f.len(),
            packets_in: 1,
            bytes_in: back.len(),
        },
    )]);
    h.expect_flows(&[
        (
            h.key(LOCAL6, CAS6_A, 40002, 443, proto::TCP),
            flow_stats(Direction::Out, RANGE_CAS6_A, 1, f.len(), PSH | ACK),
        ),
        (
            h.key(LOCAL6, CAS6_A, 40003, 443, proto::UDP),
            flow_stats(Direction::In, RANGE_CAS6_A, 1, back.len(), 0),
        ),
    ]);
}

#[test]
fn ipv6_non_first_fragment() {
    let mut h = setup!();
    let out = Pkt::raw(LOCAL6, CAS6_A, proto::TCP)
        .ext(Ext::Fragment {
            offset: 150,
            more: true,
        })
        .payload(1200)
        .build();
    let back = Pkt::raw(CAS6_B, LOCAL6, proto::UDP)
        .ext(Ext::DestOpts)
        .ext(Ext::Fragment {
            offset: 300,
            more: false,
        })
        .payload(77)
        .build();
    h.run(Hook::TcEgress, &out.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::Fragments, 1),
    ]);
    h.run(Hook::TcIngress, &back.bytes);
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::Fragments, 3),
    ]);
    h.expect_ranges(&[
        (RANGE_CAS6_A, range_out(1, out.len())),
        (RANGE_CAS6_B, range_in(2, 2 * back.len())),
    ]);
    h.expect_no_flows();
}

// ---------------------------------------------------------------------------
// Truncated and malformed packets
// ---------------------------------------------------------------------------

/// Whether `BPF_PROG_TEST_RUN` refuses `frame` for skb (TC) programs.
///
/// Since upstream commit 12bec2bd4b76 ("bpf: reject short IPv4/IPv6 inputs
/// in bpf_prog_test_run_skb", backported to 6.18.y), the skb test run
/// returns EINVAL for a frame whose Ethernet EtherType is IPv4 or IPv6 but
/// which is shorter than 14 + 20 (IPv4) or 14 + 40 (IPv6) bytes, before any
/// program runs. Such frames reach the TC programs in these tests only
/// behind a VLAN tag (the kernel only looks at the outer EtherType); the
/// XDP test run has no such check.
fn skb_test_run_refuses(frame: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let l3 = frame.len() - ETH_HLEN;
    (ethertype == ETH_P_IP && l3 < 20) || (ethertype == ETH_P_IPV6 && l3 < 40)
}

/// Runs `frame` through every hook, each on a fresh datapath, and checks it
/// is passed and counted as malformed, exactly once, and nothing else.
fn expect_malformed(what: &str, frame: &[u8]) {
    for hook in Hook::ALL {
        let Some(mut h) = harness(&format!("{what} ({hook:?})")) else {
            return;
        };
        if hook != Hook::Xdp && skb_test_run_refuses(frame) {
            match h.try_run(hook, frame, None) {
                Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.raw_os_error() == Some(libc::EINVAL) => {}
                other => panic!(
                    "{what} on {hook:?}: expected the skb test run to refuse \
                     the frame with EINVAL, got {other:?}"
                ),
            }
            h.expect_counters(&[]);
            h.expect_ranges(&[]);
            h.expect_no_flows();
            continue;
        }
        h.run(hook, frame);
        let c = h.dp.counters().expect("counters");
        assert_eq!(
            (c.get(Counter::Packets), c.get(Counter::Malformed)),
            (1, 1),
            "{what} on {hook:?}: {c:?}"
        );
        h.expect_counters(&[(Counter::Packets, 1), (Counter::Malformed, 1)]);
        h.expect_ranges(&[]);
        h.expect_no_flows();
        assert!(h.events().is_empty(), "{what} on {hook:?}: events");
    }
}

/// A TCP packet between two CAS addresses (range 0 → range 1), so that the
/// transport header is inspected on egress and ingress alike.
fn cas_to_cas_tcp() -> Pkt {
    Pkt::tcp(CAS4_A, CAS4_B, 40000, 443, SYN)
}

fn cas_to_cas_tcp6() -> Pkt {
    Pkt::tcp(CAS6_B, CAS6_A, 40000, 443, SYN)
}

#[test]
fn truncated_ethernet_header() {
    // BPF_PROG_TEST_RUN refuses data shorter than an Ethernet header
    // (bpf_test_init: `user_size < ETH_HLEN` → EINVAL) for skb and XDP
    // programs alike, so a frame under 14 bytes cannot reach the programs
    // this way. Check that refusal (nothing may be counted); should a kernel
    // ever accept it, the programs must call it malformed.
    let mut h = setup!();
    let short = &Pkt::tcp(LOCAL4, CAS4_A, 1, 443, SYN).build().bytes[..13];
    let mut ran = 0;
    for hook in Hook::ALL {
        match h.try_run(hook, short, None) {
            Ok(rv) => {
                assert_eq!(rv, hook.pass());
                ran += 1;
            }
            Err(e) => eprintln!("{hook:?}: 13-byte frame refused by the kernel: {e:?}"),
        }
    }
    h.expect_counters(&[(Counter::Packets, ran), (Counter::Malformed, ran)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

#[test]
fn truncated_vlan_tag() {
    let tagged = cas_to_cas_tcp().tag(ETH_P_8021Q).build();
    // The tag's TCI is there, its EtherType is not.
    expect_malformed(
        "802.1Q tag cut after the TCI",
        &tagged.bytes[..ETH_HLEN + 2],
    );
    expect_malformed("802.1Q tag cut after the TPID", &tagged.bytes[..ETH_HLEN]);
    let qinq = cas_to_cas_tcp().tag(ETH_P_8021AD).tag(ETH_P_8021Q).build();
    expect_malformed("inner tag of QinQ cut", &qinq.bytes[..ETH_HLEN + 4 + 3]);
}

#[test]
fn truncated_ipv4_header() {
    let f = cas_to_cas_tcp().build();
    expect_malformed("no IPv4 header", &f.bytes[..ETH_HLEN]);
    expect_malformed("19-byte IPv4 header", &f.bytes[..ETH_HLEN + 19]);
    // Behind a tag, so that the TC programs see it too.
    let tagged = cas_to_cas_tcp().tag(ETH_P_8021Q).build();
    expect_malformed(
        "tagged, 12-byte IPv4 header",
        &tagged.bytes[..tagged.l3_off + 12],
    );
    expect_malformed(
        "tagged, 19-byte IPv4 header",
        &tagged.bytes[..tagged.l3_off + 19],
    );
    expect_malformed("tagged, no IPv4 header", &tagged.bytes[..tagged.l3_off]);
}

#[test]
fn ipv4_ihl_past_the_end() {
    // ihl 15 (60 bytes) with total length 60, but only 40 bytes of IP header
    // in the frame.
    let mut f = cas_to_cas_tcp().payload(0).build();
    f.bytes.truncate(f.l3_off + 40);
    f.bytes[f.l3_off] = 0x4f;
    f.set_u16(f.l3_off + 2, 60);
    f.fix_ipv4_checksum();
    expect_malformed("ihl 15, 40 bytes of header", &f.bytes);
    // ihl 15 and total length 40 (smaller than the header itself).
    f.set_u16(f.l3_off + 2, 40);
    f.fix_ipv4_checksum();
    expect_malformed("ihl 15, total length 40", &f.bytes);
}

#[test]
fn ipv4_ihl_below_five() {
    let mut f = cas_to_cas_tcp().build();
    f.bytes[f.l3_off] = 0x44;
    f.fix_ipv4_checksum();
    expect_malformed("ihl 4", &f.bytes);
}

#[test]
fn ipv4_total_length_past_the_frame() {
    let mut f = cas_to_cas_tcp().payload(20).build();
    let tot = f.bytes.len() - f.l3_off;
    f.set_u16(f.l3_off + 2, tot as u16 + 1);
    f.fix_ipv4_checksum();
    expect_malformed("total length one byte past the frame", &f.bytes);
}

#[test]
fn ipv4_ethertype_with_version_6() {
    let mut f = cas_to_cas_tcp().build();
    f.bytes[f.l3_off] = 0x65;
    expect_malformed("IPv4 EtherType, version 6", &f.bytes);
}

#[test]
fn ipv6_ethertype_with_version_4() {
    let mut f = cas_to_cas_tcp6().build();
    f.bytes[f.l3_off] = 0x40;
    expect_malformed("IPv6 EtherType, version 4", &f.bytes);
}

#[test]
fn truncated_ipv6_header() {
    let f = cas_to_cas_tcp6().build();
    expect_malformed("no IPv6 header", &f.bytes[..ETH_HLEN]);
    expect_malformed("39-byte IPv6 header", &f.bytes[..ETH_HLEN + 39]);
    // Behind a tag, so that the TC programs see it too.
    let tagged = cas_to_cas_tcp6().tag(ETH_P_8021Q).build();
    expect_malformed(
        "tagged, 39-byte IPv6 header",
        &tagged.bytes[..tagged.l3_off + 39],
    );
    expect_malformed("tagged, no IPv6 header", &tagged.bytes[..tagged.l3_off]);
}

#[test]
fn ipv6_payload_length_past_the_frame() {
    let mut f = cas_to_cas_tcp6().payload(10).build();
    let plen = f.bytes.len() - f.l3_off - 40;
    f.set_u16(f.l3_off + 4, plen as u16 + 1);
    expect_malformed("payload length one byte past the frame", &f.bytes);
}

#[test]
fn truncated_ipv6_extension_header() {
    for e in [Ext::HopByHop, Ext::Routing, Ext::DestOpts, Ext::Auth] {
        // Next-header and length bytes missing: one byte of the header left.
        let f = cas_to_cas_tcp6().ext(e).build();
        let cut = f.clone().truncated(f.l3_off + 40 + 1);
        expect_malformed(&format!("{e:?} cut to 1 byte"), &cut.bytes);
        // The header's own length is there but the header is cut, so the
        // transport header that should follow it is missing.
        let cut = f.clone().truncated(f.l3_off + 40 + 4);
        expect_malformed(&format!("{e:?} cut to 4 bytes"), &cut.bytes);
    }
    let frag = Ext::Fragment {
        offset: 0,
        more: true,
    };
    let f = cas_to_cas_tcp6().ext(frag).build();
    let cut = f.clone().truncated(f.l3_off + 40 + 3);
    expect_malformed("fragment header cut to 3 bytes", &cut.bytes);
    // A second extension header, cut, behind a complete first one.
    let f = cas_to_cas_tcp6()
        .ext(Ext::HopByHop)
        .ext(Ext::DestOpts)
        .build();
    let cut = f.clone().truncated(f.l3_off + 40 + 16 + 1);
    expect_malformed("second extension header cut", &cut.bytes);
}

#[test]
fn truncated_ipv6_extension_header_before_an_unparsed_protocol() {
    // Known to fail against the datapath as written: parse_ipv6 never
    // compares the end of the extension-header chain with the frame length,
    // so this counts as a matched packet, creates a flow and (protocol 59
    // and GRE having no allowed port) emits a flow event.
    // As above, but what follows the cut header has no header the datapath
    // parses (59, No Next Header; 47, GRE), so only the extension header's
    // own length can tell that the packet is cut.
    for proto in [59, PROTO_GRE] {
        let f = Pkt::raw(CAS6_B, CAS6_A, proto).ext(Ext::HopByHop).build();
        assert_eq!(f.l4_off, f.l3_off + 40 + 16);
        let cut = f.clone().truncated(f.l3_off + 40 + 8);
        expect_malformed(
            &format!("16-byte hop-by-hop header cut to 8 bytes, then protocol {proto}"),
            &cut.bytes,
        );
    }
}

#[test]
fn truncated_tcp_header() {
    let f = cas_to_cas_tcp().build();
    let cut = f.clone().truncated(f.l4_off + 19);
    expect_malformed("IPv4, 19-byte TCP header", &cut.bytes);
    let cut = f.clone().truncated(f.l4_off);
    expect_malformed("IPv4, no TCP header", &cut.bytes);
    let f = cas_to_cas_tcp6().ext(Ext::DestOpts).build();
    let cut = f.clone().truncated(f.l4_off + 12);
    expect_malformed("IPv6, 12-byte TCP header", &cut.bytes);
}

#[test]
fn tcp_data_offset_below_five() {
    for doff in [0u8, 4] {
        let mut f = cas_to_cas_tcp().build();
        f.bytes[f.l4_off + 12] = doff << 4;
        expect_malformed(&format!("IPv4 TCP data offset {doff}"), &f.bytes);
        let mut f = cas_to_cas_tcp6().build();
        f.bytes[f.l4_off + 12] = doff << 4;
        expect_malformed(&format!("IPv6 TCP data offset {doff}"), &f.bytes);
    }
}

#[test]
fn tcp_data_offset_past_the_end() {
    // Known to fail against the datapath as written: parse_l4 checks only
    // that 20 bytes of TCP exist, so this counts as a matched packet and
    // creates a flow (and, for super-packets, inflates the per-segment
    // header bytes with hdr_end past the frame).
    // Data offset 15 (60 bytes) but only the 20-byte fixed header is in the
    // packet: the TCP header is cut short, like an IPv4 header whose ihl
    // points past the end, which the datapath does call malformed.
    let mut f = cas_to_cas_tcp().build();
    f.bytes[f.l4_off + 12] = 15 << 4;
    expect_malformed("IPv4 TCP data offset 15, 20 bytes of TCP", &f.bytes);
    // Data offset 6 (24 bytes) with 22 bytes of TCP left in the packet.
    let f = cas_to_cas_tcp6().payload(2).build();
    let mut f = f.clone().truncated(f.l4_end + 2);
    f.bytes[f.l4_off + 12] = 6 << 4;
    expect_malformed("IPv6 TCP data offset 6, 22 bytes of TCP", &f.bytes);
}

#[test]
fn truncated_udp_header() {
    let f = Pkt::udp(CAS4_A, CAS4_B, 40000, 443).payload(10).build();
    let cut = f.clone().truncated(f.l4_off + 7);
    expect_malformed("IPv4, 7-byte UDP header", &cut.bytes);
    let f = Pkt::udp(CAS6_B, CAS6_A, 40000, 443).payload(10).build();
    let cut = f.clone().truncated(f.l4_off + 4);
    expect_malformed("IPv6, 4-byte UDP header", &cut.bytes);
}

#[test]
fn truncated_icmp_header() {
    let f = Pkt::echo(CAS4_A, CAS4_B).build();
    let cut = f.clone().truncated(f.l4_off + 3);
    expect_malformed("3-byte ICMP header", &cut.bytes);
    let f = Pkt::echo(CAS6_B, CAS6_A).build();
    let cut = f.clone().truncated(f.l4_off + 2);
    expect_malformed("2-byte ICMPv6 header", &cut.bytes);
}

#[test]
fn truncated_transport_of_non_cas_traffic_is_not_inspected() {
    // The transport header is parsed only for CAS traffic; a cut TCP header
    // between two other hosts is just a packet.
    let mut h = setup!();
    let f = Pkt::tcp(LOCAL4, OTHER4, 40000, 443, SYN).build();
    let cut = f.clone().truncated(f.l4_off + 10);
    for hook in Hook::ALL {
        h.run(hook, &cut.bytes);
    }
    h.expect_counters(&[(Counter::Packets, 3)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

// ---------------------------------------------------------------------------
// TCP flags and the initiator
// ---------------------------------------------------------------------------

#[test]
fn syn_from_local_sets_initiator_local() {
    let mut h = setup!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
    h.run(Hook::TcEgress, &f.bytes);
    let (_, st) = h.only_flow();
    assert_eq!(st.initiator, initiator::LOCAL);
    assert_eq!(st.first_dir, Direction::Out as u8);
    // A SYN from the other side later does not change it.
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN).build().bytes,
    );
    let (_, st) = h.only_flow();
    assert_eq!(st.initiator, initiator::LOCAL);
    assert_eq!(st.tcp_flags_in, tcp_flags::SYN);
}

#[test]
fn syn_from_remote_sets_initiator_remote() {
    let mut h = setup!();
    for hook in Hook::INGRESS {
        let port = if hook == Hook::Xdp { 50001 } else { 50000 };
        h.run(
            hook,
            &Pkt::tcp(CAS6_A, LOCAL6, port, 11344, SYN).build().bytes,
        );
        let st =
            h.dp.flow(&h.key(LOCAL6, CAS6_A, 11344, port, proto::TCP))
                .expect("flow created");
        assert_eq!(st.initiator, initiator::REMOTE, "{hook:?}");
        assert_eq!(st.first_dir, Direction::In as u8, "{hook:?}");
        assert_eq!(st.tcp_flags_in, tcp_flags::SYN, "{hook:?}");
        assert_eq!(st.tcp_flags_out, 0, "{hook:?}");
    }
}

#[test]
fn syn_ack_alone_leaves_initiator_unknown() {
    let mut h = setup!();
    let syn_ack = Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, SYN | ACK).build();
    h.run(Hook::Xdp, &syn_ack.bytes);
    let ack = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    h.run(Hook::TcEgress, &ack.bytes);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 1,
            bytes_out: ack.len(),
            packets_in: 1,
            bytes_in: syn_ack.len(),
            range_id: RANGE_CAS4_A,
            tcp_flags_out: ACK.into(),
            tcp_flags_in: (SYN | ACK).into(),
            initiator: initiator::UNKNOWN,
            first_dir: Direction::In as u8,
            ..FlowStats::default()
        },
    )]);
    // A SYN-ACK from the local side does not set it either.
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN | ACK)
            .build()
            .bytes,
    );
    assert_eq!(h.only_flow().1.initiator, initiator::UNKNOWN);
    // The first bare SYN seen on an existing flow does.
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build().bytes,
    );
    assert_eq!(h.only_flow().1.initiator, initiator::LOCAL);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 1),
    ]);
}

#[test]
fn tcp_flag_unions_are_exact() {
    let mut h = setup!();
    let out = [SYN, ACK, PSH | ACK, URG | ACK, RST];
    let inn = [SYN | ACK, ECE | ACK, CWR | ACK, FIN | ACK];
    let (mut out_bytes, mut in_bytes) = (0, 0);
    for (i, flags) in out.iter().enumerate() {
        let f = Pkt::tcp(LOCAL6, CAS6_A, 40000, 443, *flags)
            .payload(i * 10)
            .build();
        h.run(Hook::TcEgress, &f.bytes);
        out_bytes += f.len();
        if let Some(flags) = inn.get(i) {
            let f = Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, *flags)
                .payload(i * 7)
                .build();
            h.run(
                if i % 2 == 0 {
                    Hook::Xdp
                } else {
                    Hook::TcIngress
                },
                &f.bytes,
            );
            in_bytes += f.len();
        }
    }
    let key = h.key(LOCAL6, CAS6_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        FlowStats {
            packets_out: 5,
            bytes_out: out_bytes,
            packets_in: 4,
            bytes_in: in_bytes,
            range_id: RANGE_CAS6_A,
            tcp_flags_out: tcp_flags::SYN
                | tcp_flags::ACK
                | tcp_flags::PSH
                | tcp_flags::URG
                | tcp_flags::RST,
            tcp_flags_in: tcp_flags::SYN
                | tcp_flags::ACK
                | tcp_flags::ECE
                | tcp_flags::CWR
                | tcp_flags::FIN,
            initiator: initiator::LOCAL,
            first_dir: Direction::Out as u8,
            ..FlowStats::default()
        },
    )]);
    h.expect_ranges(&[(
        RANGE_CAS6_A,
        RangeStats {
            packets_out: 5,
            bytes_out: out_bytes,
            packets_in: 4,
            bytes_in: in_bytes,
        },
    )]);
}

#[test]
fn udp_flows_have_no_flags_and_no_initiator() {
    let mut h = setup!();
    h.run(
        Hook::TcEgress,
        &Pkt::udp(LOCAL4, CAS4_A, 40000, 443)
            .payload(2)
            .build()
            .bytes,
    );
    let (_, st) = h.only_flow();
    assert_eq!((st.initiator, st.tcp_flags_out, st.tcp_flags_in), (0, 0, 0));
}

// ---------------------------------------------------------------------------
// Flow events
// ---------------------------------------------------------------------------

#[test]
fn udp_to_a_disallowed_port_emits_one_event() {
    let mut h = setup!();
    let f = Pkt::udp(LOCAL4, CAS4_A, 40000, 8443).payload(12).build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 8443, proto::UDP);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert!(ev[0].ts_ns > 0);
    assert_eq!(
        ev[0],
        FlowEvent {
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS4_A,
            service_port: 8443,
            initiator: initiator::UNKNOWN,
            dir: Direction::Out as u8,
            packets: 1,
            bytes: f.len() as u32,
            tcp_flags: 0,
            _pad: [0; 3],
        }
    );
    let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), 0);
    st.flagged = 1;
    h.expect_flows(&[(key, st)]);
    assert_eq!(h.only_flow().1.first_seen_ns, ev[0].ts_ns);

    // The flow's next packets (either way) emit nothing more.
    h.run(Hook::TcEgress, &f.bytes);
    let back = Pkt::udp(CAS4_A, LOCAL4, 8443, 40000).payload(40).build();
    h.run(Hook::Xdp, &back.bytes);
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
    assert!(h.events().is_empty());
    let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 2, 2 * f.len(), 0);
    st.packets_in = 1;
    st.bytes_in = back.len();
    st.flagged = 1;
    h.expect_flows(&[(key, st)]);
}

#[test]
fn udp_from_a_disallowed_remote_port_emits_an_event_on_ingress() {
    let mut h = setup!();
    let f = Pkt::udp(CAS6_A, LOCAL6, 3478, 50000).payload(20).build();
    h.run(Hook::Xdp, &f.bytes);
    let key = h.key(LOCAL6, CAS6_A, 50000, 3478, proto::UDP);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0],
        FlowEvent {
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS6_A,
            service_port: 3478,
            initiator: initiator::UNKNOWN,
            dir: Direction::In as u8,
            packets: 1,
            bytes: f.len() as u32,
            tcp_flags: 0,
            _pad: [0; 3],
        }
    );
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
}

#[test]
fn tcp_syn_to_443_emits_no_event() {
    let mut h = setup!();
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build().bytes,
    );
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL6, CAS6_A, 40000, 80, SYN).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    assert!(h.flows().values().all(|s| s.flagged == 0));
}

#[test]
fn tcp_syn_to_a_disallowed_port_emits_an_event() {
    let mut h = setup!();
    let syn = Pkt::tcp(LOCAL4, CAS4_B, 443, 22, SYN).build();
    h.run(Hook::TcEgress, &syn.bytes);
    let key = h.key(LOCAL4, CAS4_B, 443, 22, proto::TCP);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0],
        FlowEvent {
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS4_B,
            // The local side opened the connection: the remote port is the
            // service, even though the local port is an allowed one.
            service_port: 22,
            initiator: initiator::LOCAL,
            dir: Direction::Out as u8,
            packets: 1,
            bytes: syn.len() as u32,
            tcp_flags: SYN,
            _pad: [0; 3],
        }
    );
}

#[test]
fn remote_syn_to_local_11344_emits_no_event() {
    let mut h = setup!();
    for hook in Hook::INGRESS {
        let port = if hook == Hook::Xdp { 50001 } else { 50000 };
        h.run(
            hook,
            &Pkt::tcp(CAS4_B, LOCAL4, port, 11344, SYN).build().bytes,
        );
    }
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    for (k, s) in h.flows() {
        assert_eq!(
            (k.local_port, s.initiator, s.flagged),
            (11344, initiator::REMOTE, 0)
        );
    }
}

#[test]
fn remote_syn_to_a_disallowed_local_port_emits_an_event() {
    let mut h = setup!();
    // The CAS side connects from port 443 to local port 8080: the service
    // is the local port, and it is not allowed.
    h.run(
        Hook::TcIngress,
        &Pkt::tcp(CAS4_A, LOCAL4, 443, 8080, SYN).build().bytes,
    );
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        (ev[0].service_port, ev[0].initiator, ev[0].dir),
        (8080, initiator::REMOTE, Direction::In as u8)
    );
    assert_eq!(ev[0].key, h.key(LOCAL4, CAS4_A, 8080, 443, proto::TCP));
}

#[test]
fn udp_from_a_local_allowed_port_emits_no_event() {
    // Start unseen (UDP): the remote port is the service unless only the
    // local port is allowed, as here.
    let mut h = setup!();
    h.run(
        Hook::TcEgress,
        &Pkt::udp(LOCAL4, CAS4_A, 443, 50000)
            .payload(1)
            .build()
            .bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    assert!(h.events().is_empty());
}

#[test]
fn tcp_midstream_to_a_local_allowed_port_emits_no_event() {
    // The SYN was not seen (initiator unknown): the remote port is the
    // service unless only the local port is allowed, as here, where the CAS
    // side is a client of the local port 443.
    let mut h = setup!();
    h.run(
        Hook::TcIngress,
        &Pkt::tcp(CAS4_A, LOCAL4, 50000, 443, PSH | ACK)
            .payload(100)
            .build()
            .bytes,
    );
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL6, CAS6_A, 443, 50001, ACK).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    // Neither port allowed: the remote one is judged.
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_B, LOCAL4, 50000, 40000, ACK).build().bytes,
    );
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        (ev[0].service_port, ev[0].initiator, ev[0].dir),
        (50000, initiator::UNKNOWN, Direction::In as u8)
    );
}

#[test]
fn icmp_emits_no_event() {
    let mut h = setup!();
    let e4 = Pkt::echo(LOCAL4, CAS4_A).payload(56).build();
    let e6 = Pkt::echo(CAS6_A, LOCAL6).payload(56).build();
    h.run(Hook::TcEgress, &e4.bytes);
    h.run(Hook::Xdp, &e6.bytes);
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 2),
    ]);
    assert!(h.events().is_empty());
    h.expect_flows(&[
        (
            h.key(LOCAL4, CAS4_A, 0, 0, proto::ICMP),
            flow_stats(Direction::Out, RANGE_CAS4_A, 1, e4.len(), 0),
        ),
        (
            h.key(LOCAL6, CAS6_A, 0, 0, proto::ICMPV6),
            flow_stats(Direction::In, RANGE_CAS6_A, 1, e6.len(), 0),
        ),
    ]);
}

#[test]
fn gre_emits_an_event() {
    let mut h = setup!();
    let f = Pkt::raw(LOCAL4, CAS4_A, PROTO_GRE).payload(24).build();
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::Events, 1),
    ]);
    let key = h.key(LOCAL4, CAS4_A, 0, 0, PROTO_GRE);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        ev[0],
        FlowEvent {
            ts_ns: ev[0].ts_ns,
            key,
            range_id: RANGE_CAS4_A,
            service_port: 0,
            initiator: initiator::UNKNOWN,
            dir: Direction::Out as u8,
            packets: 1,
            bytes: f.len() as u32,
            tcp_flags: 0,
            _pad: [0; 3],
        }
    );
    let mut st = flow_stats(Direction::Out, RANGE_CAS4_A, 1, f.len(), 0);
    st.flagged = 1;
    h.expect_flows(&[(key, st)]);
}

// ---------------------------------------------------------------------------
// GSO / GRO super-packets
// ---------------------------------------------------------------------------

#[test]
fn gso_segments_on_tc_egress() {
    let mut h = setup!();
    // 4 segments of 800 bytes behind 14 + 20 + 32 bytes of headers (test
    // runs take at most a page of data, so the super-packet stays small).
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, PSH | ACK)
        .tcp_options(12)
        .payload(3200)
        .build();
    let hdr = f.l4_end as u64;
    assert_eq!(hdr, 14 + 20 + 32);
    h.run_gso(Hook::TcEgress, &f.bytes, 4);
    let bytes = f.len() + 3 * hdr;
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 4),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(4, bytes))]);
    let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
    h.expect_flows(&[(
        key,
        flow_stats(Direction::Out, RANGE_CAS4_A, 4, bytes, PSH | ACK),
    )]);
}

#[test]
fn gro_segments_on_tc_ingress_ipv6_with_extension_header() {
    let mut h = setup!();
    let f = Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, ACK)
        .ext(Ext::DestOpts)
        .payload(2800)
        .build();
    let hdr = f.l4_end as u64;
    assert_eq!(hdr, 14 + 40 + 8 + 20);
    h.run_gso(Hook::TcIngress, &f.bytes, 2);
    let bytes = f.len() + hdr;
    h.expect_counters(&[
        (Counter::Packets, 2),
        (Counter::Matched, 2),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS6_A, range_in(2, bytes))]);
    h.expect_flows(&[(
        h.key(LOCAL6, CAS6_A, 40000, 443, proto::TCP),
        flow_stats(Direction::In, RANGE_CAS6_A, 2, bytes, ACK),
    )]);
}

#[test]
fn gso_segs_one_is_a_plain_packet() {
    let mut h = setup!();
    let f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK)
        .payload(10)
        .build();
    h.run_gso(Hook::TcEgress, &f.bytes, 1);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(1, f.len()))]);
    h.expect_counters(&[
        (Counter::Packets, 1),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
}

#[test]
fn big_tcp_super_packet_with_zero_total_length() {
    // BIG TCP (IPv4) super-packets carry total length 0.
    let mut h = setup!();
    let mut f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK)
        .payload(3000)
        .build();
    f.set_u16(f.l3_off + 2, 0);
    f.fix_ipv4_checksum();
    h.run_gso(Hook::TcEgress, &f.bytes, 3);
    let bytes = f.len() + 2 * f.l4_end as u64;
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 3),
        (Counter::FlowsCreated, 1),
    ]);
    h.expect_ranges(&[(RANGE_CAS4_A, range_out(3, bytes))]);
    // The same packet without GSO is malformed.
    h.run(Hook::TcEgress, &f.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 3),
        (Counter::FlowsCreated, 1),
        (Counter::Malformed, 1),
    ]);
}

#[test]
fn gso_malformed_counts_every_segment() {
    // Total length is not checked for super-packets, the header length is.
    let mut h = setup!();
    let mut f = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, ACK).build();
    f.bytes.truncate(f.l3_off + 40);
    f.bytes[f.l3_off] = 0x4f;
    f.fix_ipv4_checksum();
    h.run_gso(Hook::TcEgress, &f.bytes, 5);
    h.expect_counters(&[(Counter::Packets, 5), (Counter::Malformed, 5)]);
    h.expect_ranges(&[]);
    h.expect_no_flows();
}

// ---------------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------------

#[test]
fn every_packet_is_passed() {
    let mut h = setup!();
    let frames: Vec<Vec<u8>> = vec![
        Pkt::tcp(LOCAL4, CAS4_A, 1, 443, SYN).build().bytes,
        Pkt::tcp(CAS4_A, LOCAL4, 443, 1, SYN | ACK).build().bytes,
        Pkt::tcp(LOCAL4, OTHER4, 1, 443, SYN).build().bytes,
        Pkt::udp(LOCAL6, CAS6_A, 1, 8443).build().bytes,
        Pkt::raw(LOCAL4, CAS4_A, PROTO_GRE).build().bytes,
        Pkt::raw(LOCAL4, CAS4_A, proto::UDP)
            .fragment(7, false)
            .payload(8)
            .build()
            .bytes,
        full_ext_chain(Pkt::tcp(LOCAL6, CAS6_A, 1, 443, SYN))
            .ext(Ext::DestOpts)
            .build()
            .bytes,
        cas_to_cas_tcp().build().truncated(ETH_HLEN + 20 + 5).bytes,
        arp_request(),
        vec![0; ETH_HLEN],
        vec![0xff; 1500],
    ];
    for f in &frames {
        for hook in Hook::ALL {
            // `run` asserts the pass verdict.
            h.run(hook, f);
        }
        let ctx = gso_ctx(3, 100);
        for hook in [Hook::TcEgress, Hook::TcIngress] {
            let rv = h.try_run(hook, f, Some(&ctx)).expect("gso test run");
            assert_eq!(rv, TC_ACT_UNSPEC);
        }
    }
    let c = h.dp.counters().expect("counters");
    assert_eq!(c.get(Counter::Packets), frames.len() as u64 * (3 + 2 * 3));
}

/// The prefilter over the top 16 address bits must pass every address of a
/// prefix shorter than /16 (and stop those just outside it) so that the
/// trie still decides.
#[test]
fn prefilter_passes_every_address_of_a_wide_prefix() {
    let Some(mut h) = harness_with(
        "prefilter_passes_every_address_of_a_wide_prefix",
        &["10.0.0.0/8", "2000::/12"],
    ) else {
        return;
    };
    let v4 = |a: [u8; 4]| Pkt::tcp(LOCAL4, Ipv4Addr::from(a), 40000, 443, SYN).build();
    let v6 = |a: &str| Pkt::tcp(LOCAL6, a.parse::<Ipv6Addr>().unwrap(), 40000, 443, SYN).build();
    let hits = [
        v4([10, 0, 0, 1]),
        v4([10, 128, 7, 7]),
        v4([10, 255, 255, 254]),
        v6("2000::1"),
        v6("2007:1234::1"),
        v6("200f:ffff:ffff::1"),
    ];
    let misses = [
        v4([9, 255, 255, 255]),
        v4([11, 0, 0, 1]),
        v6("1fff:ffff::1"),
        v6("2010::1"),
    ];
    for f in hits.iter().chain(misses.iter()) {
        h.run(Hook::TcEgress, &f.bytes);
    }
    h.expect_counters(&[
        (Counter::Packets, 10),
        (Counter::Matched, 6),
        (Counter::FlowsCreated, 6),
    ]);
    assert_eq!(h.flows().len(), 6);
}

// ---------------------------------------------------------------------------
// Flow history, RST TTL and ICMP errors
// ---------------------------------------------------------------------------

/// The flow's history string.
fn history_of(st: &FlowStats) -> String {
    st.history
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect()
}

#[test]
fn history_follows_a_connection_on_both_hooks() {
    for hook in Hook::INGRESS {
        let mut h = setup!();
        let out = |flags, n| {
            Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, flags)
                .payload(n)
                .build()
        };
        let inn = |flags, n| {
            Pkt::tcp(CAS4_A, LOCAL4, 443, 40000, flags)
                .payload(n)
                .build()
        };
        let key = h.key(LOCAL4, CAS4_A, 40000, 443, proto::TCP);
        let mut seen = Vec::new();
        for (dir_out, f) in [
            (true, out(SYN, 0)),
            (true, out(SYN, 0)), // a retry adds nothing
            (false, inn(SYN | ACK, 0)),
            (true, out(ACK, 0)),
            (true, out(ACK | PSH, 100)),
            (false, inn(ACK, 0)),
            (false, inn(ACK | PSH, 300)),
            (true, out(FIN | ACK, 0)),
            (false, inn(FIN | ACK, 0)),
            (true, out(ACK, 0)),
        ] {
            h.run(if dir_out { Hook::TcEgress } else { hook }, &f.bytes);
            seen.push(history_of(&h.flows()[&key]));
        }
        assert_eq!(
            seen,
            ["S", "S", "Sh", "ShA", "ShAD", "ShADa", "ShADad", "ShADadF", "ShADadFf", "ShADadFf"],
            "{hook:?}"
        );
        let st = h.flows()[&key];
        let k = history::KINDS;
        assert_eq!(
            st.history_mask,
            history::SYN
                | history::ACK
                | history::DATA
                | history::FIN
                | (history::SYN_ACK | history::ACK | history::DATA | history::FIN) << k
        );
        assert_eq!(st.rst_ttl, 0);
    }
}

#[test]
fn a_flow_opened_by_the_remote_side_has_it_as_originator() {
    let mut h = setup!();
    h.run(
        Hook::Xdp,
        &Pkt::tcp(CAS4_A, LOCAL4, 50000, 11344, SYN).build().bytes,
    );
    h.run(
        Hook::TcEgress,
        &Pkt::tcp(LOCAL4, CAS4_A, 11344, 50000, RST | ACK)
            .ttl(61)
            .build()
            .bytes,
    );
    let st = h.only_flow().1;
    assert_eq!(history_of(&st), "Sr");
    // The RST went out: not a remote RST, no TTL recorded.
    assert_eq!(st.rst_ttl, 0);
}

#[test]
fn the_first_remote_rst_records_its_ttl() {
    for hook in Hook::INGRESS {
        let mut h = setup!();
        h.run(
            Hook::TcEgress,
            &Pkt::tcp(LOCAL6, CAS6_A, 40000, 443, SYN).build().bytes,
        );
        h.run(
            hook,
            &Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, RST | ACK)
                .ttl(57)
                .build()
                .bytes,
        );
        h.run(
            hook,
            &Pkt::tcp(CAS6_A, LOCAL6, 443, 40000, RST | ACK)
                .ttl(64)
                .build()
                .bytes,
        );
        let st = h.only_flow().1;
        assert_eq!(
            (history_of(&st).as_str(), st.rst_ttl),
            ("Sr", 57),
            "{hook:?}"
        );
    }
}

#[test]
fn udp_history_counts_datagrams_each_way() {
    let mut h = setup!();
    h.run(
        Hook::TcEgress,
        &Pkt::udp(LOCAL4, CAS4_A, 40000, 443)
            .payload(10)
            .build()
            .bytes,
    );
    assert_eq!(history_of(&h.only_flow().1), "D");
    h.run(
        Hook::Xdp,
        &Pkt::udp(CAS4_A, LOCAL4, 443, 40000)
            .payload(10)
            .build()
            .bytes,
    );
    assert_eq!(history_of(&h.only_flow().1), "Dd");
}

#[test]
fn icmp_unreachable_is_attached_to_the_flow_it_quotes() {
    // IPv4: admin-prohibited (3/13) from a firewall that is not a CAS address.
    for hook in Hook::INGRESS {
        let mut h = setup!();
        let syn = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
        h.run(Hook::TcEgress, &syn.bytes);
        let err = Pkt::icmp_error(OTHER4, LOCAL4, 3, 13, &syn).build();
        h.run(hook, &err.bytes);
        h.expect_counters(&[
            (Counter::Packets, 2),
            (Counter::Matched, 1),
            (Counter::FlowsCreated, 1),
            (Counter::IcmpErrors, 1),
        ]);
        let st = h.only_flow().1;
        assert_eq!(st.icmp_errors, 1, "{hook:?}");
        assert_eq!((st.icmp_type, st.icmp_code), (3, 13));
        assert_eq!(st.reporter_family, family::V4);
        assert_eq!(st.reporter[..4], OTHER4.octets());
        assert_eq!(st.reporter[4..], [0; 12]);
        // The error itself is no flow and no CAS traffic.
        assert_eq!(history_of(&st), "S");
        assert_eq!((st.packets_out, st.packets_in), (1, 0));
    }
    // IPv6: admin-prohibited (1/1), quoting a UDP datagram.
    let mut h = setup!();
    let dgram = Pkt::udp(LOCAL6, CAS6_A, 40000, 443).payload(30).build();
    h.run(Hook::TcEgress, &dgram.bytes);
    let err = Pkt::icmp_error(OTHER6, LOCAL6, 1, 1, &dgram).build();
    h.run(Hook::TcIngress, &err.bytes);
    h.run(Hook::TcIngress, &err.bytes);
    let st = h.only_flow().1;
    assert_eq!((st.icmp_errors, st.icmp_type, st.icmp_code), (2, 1, 1));
    assert_eq!(st.reporter_family, family::V6);
    assert_eq!(st.reporter, OTHER6.octets());
    h.expect_counters(&[
        (Counter::Packets, 3),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::IcmpErrors, 2),
    ]);
}

#[test]
fn icmp_errors_that_are_not_about_a_cas_flow_are_ordinary_packets() {
    let mut h = setup!();
    // Quoting a non-CAS packet: the error is neither attached nor counted.
    let other = Pkt::tcp(LOCAL4, OTHER4, 40000, 443, SYN).build();
    h.run(
        Hook::TcIngress,
        &Pkt::icmp_error(OTHER4, LOCAL4, 3, 13, &other).build().bytes,
    );
    // Fragmentation needed (3/4) is path-MTU discovery, not a rejection.
    let syn = Pkt::tcp(LOCAL4, CAS4_A, 40000, 443, SYN).build();
    h.run(Hook::TcEgress, &syn.bytes);
    h.run(
        Hook::TcIngress,
        &Pkt::icmp_error(OTHER4, LOCAL4, 3, 4, &syn).build().bytes,
    );
    // A truncated quote (no transport ports) is passed over too.
    let cut = Pkt::icmp_error(OTHER4, LOCAL4, 3, 13, &syn).build();
    // Cut two bytes into the quoted transport header: no whole ports.
    let quote_at = cut.bytes.len() - (syn.bytes.len() - syn.l3_off);
    let cut = cut.truncated(quote_at + (syn.l4_off - syn.l3_off) + 2);
    h.run(Hook::TcIngress, &cut.bytes);
    h.expect_counters(&[
        (Counter::Packets, 4),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
    ]);
    assert_eq!(h.only_flow().1.icmp_errors, 0);
    // An error about a CAS flow the table does not hold is counted as such.
    let gone = Pkt::tcp(LOCAL4, CAS4_A, 40001, 443, SYN).build();
    h.run(
        Hook::TcIngress,
        &Pkt::icmp_error(OTHER4, LOCAL4, 3, 1, &gone).build().bytes,
    );
    h.expect_counters(&[
        (Counter::Packets, 5),
        (Counter::Matched, 1),
        (Counter::FlowsCreated, 1),
        (Counter::IcmpUnmatched, 1),
    ]);
}

#[test]
fn an_error_from_the_cas_host_itself_names_it_as_reporter() {
    let mut h = setup!();
    let dgram = Pkt::udp(LOCAL4, CAS4_A, 40000, 8443).payload(10).build();
    h.run(Hook::TcEgress, &dgram.bytes);
    h.run(
        Hook::Xdp,
        &Pkt::icmp_error(CAS4_A, LOCAL4, 3, 3, &dgram).build().bytes,
    );
    let st = h.only_flow().1;
    assert_eq!((st.icmp_errors, st.icmp_type, st.icmp_code), (1, 3, 3));
    assert_eq!(st.reporter[..4], CAS4_A.octets());
    // Attached, not a flow of its own.
    assert_eq!(h.flows().len(), 1);
}
