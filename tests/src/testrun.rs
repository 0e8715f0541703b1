//! The kernel programs run on crafted frames through `BPF_PROG_TEST_RUN`
//! (feature `testrun`; used by `tests/tests/datapath_*.rs`).
//!
//! A [`Harness`] loads its own [`Datapath`] (tests run in parallel and the
//! maps are per object) with the CAS [`RANGES`] of the address plan below,
//! runs `cas_tc_egress`, `cas_tc_ingress` or `cas_xdp_ingress` ([`Hook`]) on
//! a frame (built with [`crate::packet`]), with an optional `__sk_buff`
//! context ([`gso_ctx`]), and asserts the exact contents of the counters,
//! the per-range totals, the flow table and the event ring buffer
//! afterwards. Nothing is attached to any interface.
//!
//! `BPF_PROG_TEST_RUN` runs skb programs on an skb whose device is the
//! loopback device of the caller's network namespace, and XDP programs with
//! that device's receive queue, so every flow lists the loopback's
//! interface index ([`Harness::lo`], [`LO_IFINDEX`]). An skb program's
//! `__sk_buff.ingress_ifindex` can be set ([`arrived_ctx`]) to run TC
//! egress on a packet that arrived on another interface.
//!
//! What the test run itself refuses (so the programs never see it): frames
//! under 14 bytes (all program types), IPv4/IPv6-EtherType frames shorter
//! than the fixed IP header for skb programs (see [`skb_test_run_refuses`]),
//! and skb data over about a page. `gso_segs` and `gso_size` in a
//! `__sk_buff` passed as `ctx_in` are accepted and seen by the programs.
//!
//! A harness needs root (CAP_BPF + CAP_NET_ADMIN) and an agent built with
//! its eBPF object (`CAS_AUDIT_EBPF=require`); otherwise [`Harness::new`]
//! says why and returns `None` (the test is skipped), or fails when
//! [`crate::REQUIRE_ROOT_ENV`] is set and root is missing.
//!
//! # Address plan
//!
//! | range id | prefix | inside | just outside |
//! | --- | --- | --- | --- |
//! | 0 | 13.64.196.27/32 | [`CAS4_A`] | [`NEAR_CAS4_A`] |
//! | 1 | 65.55.234.192/26 | [`CAS4_B`] | [`NEAR_CAS4_B`] |
//! | 2 | 2001:db8:ca5::/48 | [`CAS6_A`] | [`OTHER6`] |
//! | 3 | 2a01:111:f100::/44 | [`CAS6_B`] | |
//!
//! The audited host is [`LOCAL4`] / [`LOCAL6`]; [`OTHER4`] and [`OTHER6`]
//! are neither local nor CAS.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp};
use cas_audit::addrset::Range;
use cas_audit::datapath::{
    events::{PayloadRecord, RingRecord},
    Datapath, DatapathError, LoadOptions,
};
use cas_audit::flow::{AllowedPorts, PortPolicy};
use cas_audit_common::{
    family, names, proto, sizes, tcp_flags, Counter, Direction, FlowEvent, FlowKey, FlowStats,
    RangeStats,
};

use crate::packet::{self, Ext, Pkt, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, SYN};

// The builder's flag bytes and protocol numbers are the datapath's.
const _: () = {
    assert!(packet::FIN as u32 == tcp_flags::FIN);
    assert!(packet::SYN as u32 == tcp_flags::SYN);
    assert!(packet::RST as u32 == tcp_flags::RST);
    assert!(packet::PSH as u32 == tcp_flags::PSH);
    assert!(packet::ACK as u32 == tcp_flags::ACK);
    assert!(packet::URG as u32 == tcp_flags::URG);
    assert!(packet::ECE as u32 == tcp_flags::ECE);
    assert!(packet::CWR as u32 == tcp_flags::CWR);
    assert!(packet::PROTO_ICMP == proto::ICMP);
    assert!(packet::PROTO_TCP == proto::TCP);
    assert!(packet::PROTO_UDP == proto::UDP);
    assert!(packet::PROTO_ICMPV6 == proto::ICMPV6);
};

// ---------------------------------------------------------------------------
// Address plan
// ---------------------------------------------------------------------------

/// The CAS ranges loaded into every datapath; the range id is the index.
pub const RANGES: [&str; 4] = [
    "13.64.196.27/32",
    "65.55.234.192/26",
    "2001:db8:ca5::/48",
    "2a01:111:f100::/44",
];
/// Range ids read back (a few more than loaded, to catch stray ids).
pub const RANGE_IDS_READ: usize = RANGES.len() + 4;

/// In range 0 (a /32).
pub const CAS4_A: Ipv4Addr = Ipv4Addr::new(13, 64, 196, 27);
/// In range 1 (65.55.234.192/26).
pub const CAS4_B: Ipv4Addr = Ipv4Addr::new(65, 55, 234, 200);
/// In range 2.
pub const CAS6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xca5, 0x7, 0, 0, 0, 0x1);
/// In range 3.
pub const CAS6_B: Ipv6Addr = Ipv6Addr::new(0x2a01, 0x111, 0xf10f, 0, 0, 0, 0, 0x42);

/// The audited host (IPv4).
pub const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The audited host (IPv6).
pub const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0, 0, 0, 0, 0x2);

/// Neither local nor CAS (IPv4).
pub const OTHER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// Just outside range 0.
pub const NEAR_CAS4_A: Ipv4Addr = Ipv4Addr::new(13, 64, 196, 28);
/// Just outside range 1.
pub const NEAR_CAS4_B: Ipv4Addr = Ipv4Addr::new(65, 55, 234, 191);
/// Neither local nor CAS (IPv6), just outside range 2.
pub const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xca4, 0xffff, 0, 0, 0, 0x9);

/// Range id of [`CAS4_A`].
pub const RANGE_CAS4_A: u32 = 0;
/// Range id of [`CAS4_B`].
pub const RANGE_CAS4_B: u32 = 1;
/// Range id of [`CAS6_A`].
pub const RANGE_CAS6_A: u32 = 2;
/// Range id of [`CAS6_B`].
pub const RANGE_CAS6_B: u32 = 3;

/// A TCP SYN between two CAS addresses (range 0 → range 1), so that the
/// transport header is inspected on egress and ingress alike.
pub fn cas_to_cas_tcp() -> Pkt {
    Pkt::tcp(CAS4_A, CAS4_B, 40000, 443, SYN)
}

/// A TCP SYN between two CAS addresses over IPv6 (range 3 → range 2).
pub fn cas_to_cas_tcp6() -> Pkt {
    Pkt::tcp(CAS6_B, CAS6_A, 40000, 443, SYN)
}

/// `p` with a chain of `MAX_IPV6_EXT_HEADERS` extension headers, one of
/// each kind: the longest chain the datapath parses.
pub fn full_ext_chain(p: Pkt) -> Pkt {
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

// ---------------------------------------------------------------------------
// Programs and test-run context
// ---------------------------------------------------------------------------

/// What the TC programs return: `TC_ACT_UNSPEC` (-1), "no verdict".
pub const TC_ACT_UNSPEC: u32 = -1i32 as u32;
/// What the XDP program returns: `XDP_PASS`.
pub const XDP_PASS: u32 = 2;

/// A datapath program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `cas_tc_egress`: packets leaving the host.
    TcEgress,
    /// `cas_tc_ingress`: packets arriving, seen by TC.
    TcIngress,
    /// `cas_xdp_ingress`: packets arriving, seen by XDP.
    Xdp,
}

impl Hook {
    /// The two ingress programs.
    pub const INGRESS: [Hook; 2] = [Hook::TcIngress, Hook::Xdp];
    /// Every program.
    pub const ALL: [Hook; 3] = [Hook::TcEgress, Hook::TcIngress, Hook::Xdp];

    /// The program's name in the object.
    pub fn program(self) -> &'static str {
        match self {
            Hook::TcEgress => names::PROG_TC_EGRESS,
            Hook::TcIngress => names::PROG_TC_INGRESS,
            Hook::Xdp => names::PROG_XDP_INGRESS,
        }
    }

    /// The program's "let the packet through" return value.
    pub fn pass(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            _ => TC_ACT_UNSPEC,
        }
    }
}

/// Size of the kernel's `struct __sk_buff` (UAPI, x86_64 and every other
/// 64-bit target alike).
pub const SKB_CTX_LEN: usize = 192;
/// Offset of `__sk_buff.ingress_ifindex`.
const SKB_INGRESS_IFINDEX: usize = 36;
/// Offset of `__sk_buff.gso_segs`.
const SKB_GSO_SEGS: usize = 164;
/// Offset of `__sk_buff.gso_size`.
const SKB_GSO_SIZE: usize = 176;

/// A `__sk_buff` for `ctx_in` with only the GSO fields set (native byte
/// order, like the kernel's struct): the kernel (`convert___skb_to_skb` in
/// net/bpf/test_run.c) accepts mark, priority, ingress_ifindex, ifindex,
/// cb, tstamp, wire_len, gso_segs, gso_size and hwtstamp and rejects any
/// other non-zero byte with EINVAL.
pub fn gso_ctx(segs: u32, size: u32) -> [u8; SKB_CTX_LEN] {
    let mut c = [0u8; SKB_CTX_LEN];
    c[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&segs.to_ne_bytes());
    c[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
    c
}

/// A `__sk_buff` for `ctx_in` with only `ingress_ifindex` set: a packet
/// on its way out that arrived on interface `ifindex` (forwarded).
pub fn arrived_ctx(ifindex: u32) -> [u8; SKB_CTX_LEN] {
    let mut c = [0u8; SKB_CTX_LEN];
    c[SKB_INGRESS_IFINDEX..SKB_INGRESS_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    c
}

/// The loopback's interface index in every network namespace (the
/// kernel's `LOOPBACK_IFINDEX`): the device of every test run.
pub const LO_IFINDEX: u32 = 1;

/// Whether `BPF_PROG_TEST_RUN` refuses `frame` for skb (TC) programs.
///
/// Since upstream commit 12bec2bd4b76 ("bpf: reject short IPv4/IPv6 inputs
/// in bpf_prog_test_run_skb", backported to 6.18.y), the skb test run
/// returns EINVAL for a frame whose Ethernet EtherType is IPv4 or IPv6 but
/// which is shorter than 14 + 20 (IPv4) or 14 + 40 (IPv6) bytes, before any
/// program runs. Such frames reach the TC programs in these tests only
/// behind a VLAN tag (the kernel only looks at the outer EtherType); the
/// XDP test run has no such check.
pub fn skb_test_run_refuses(frame: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let l3 = frame.len() - ETH_HLEN;
    (ethertype == ETH_P_IP && l3 < 20) || (ethertype == ETH_P_IPV6 && l3 < 40)
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A loaded datapath to run programs on and read back.
pub struct Harness {
    /// The datapath (its maps are this harness's own).
    pub dp: Datapath,
    /// The loopback's interface index: the device test runs use.
    pub lo: u32,
    events: Option<RingBuf<MapData>>,
    payloads: Option<RingBuf<MapData>>,
}

/// `let mut h = harness!();` — a [`Harness`] with the plan's [`RANGES`]
/// named after the enclosing test function, or `return` (skip) when it
/// cannot be loaded (see [`Harness::new`]). `harness!(with_handoff)` makes
/// it with another constructor of the same signature.
#[macro_export]
macro_rules! harness {
    () => {
        $crate::harness!(new)
    };
    ($ctor:ident) => {{
        fn f() {}
        let name = std::any::type_name_of_val(&f).trim_end_matches("::f");
        match $crate::testrun::Harness::$ctor(name) {
            Some(h) => h,
            None => return,
        }
    }};
}

impl Harness {
    /// A fresh datapath holding [`RANGES`], or `None` (after saying why)
    /// when `test` cannot run.
    pub fn new(test: &str) -> Option<Harness> {
        Harness::with_ranges(test, &RANGES)
    }

    /// A fresh datapath holding `prefixes` (range id = index), every port
    /// policy at its default (80, 443, 11344 allowed), a 1024-entry flow
    /// table.
    pub fn with_ranges(test: &str, prefixes: &[&str]) -> Option<Harness> {
        Harness::load(test, prefixes, false)
    }

    /// Like [`Harness::new`], with DNS responses and ClientHellos handed
    /// over on the payload ring ([`Harness::payloads`]), as `run` loads the
    /// datapath when it learns names.
    pub fn with_handoff(test: &str) -> Option<Harness> {
        Harness::load(test, &RANGES, true)
    }

    fn load(test: &str, prefixes: &[&str], handoff: bool) -> Option<Harness> {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            assert!(
                std::env::var_os(crate::REQUIRE_ROOT_ENV).is_none(),
                "{test}: loading BPF programs needs root (euid {euid})"
            );
            eprintln!(
                "SKIPPED {test}: loading and test-running BPF programs needs root (euid {euid})"
            );
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
        let opts = LoadOptions {
            max_flows: 1024,
            handoff,
            ..LoadOptions::default()
        };
        let policy = PortPolicy::global(AllowedPorts::default());
        let dp = match Datapath::load_with(cas_audit::EBPF_OBJECT, &ranges, &policy, &opts) {
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
        let lo = cas_audit::host::netdev::ifindex("lo").expect("loopback ifindex");
        assert_eq!(lo, LO_IFINDEX, "the loopback's index");
        Some(Harness {
            dp,
            lo,
            events: None,
            payloads: None,
        })
    }

    /// Brings the maps back to how a fresh load leaves them: counters and
    /// per-range counters zero, no flow, nothing in the ring; the ranges,
    /// ports and prefilter stay. Cheaper than a new load (the verifier's
    /// seconds), so that one test can check a frame on every hook from a
    /// clean state.
    pub fn reset(&mut self) {
        use aya::maps::{HashMap as BpfHashMap, PerCpuArray, PerCpuValues};
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        let ebpf = self.dp.ebpf_mut();
        let mut counters: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(ebpf.map_mut(names::COUNTERS).expect("counters"))
                .expect("counters map");
        for c in Counter::ALL {
            let zero = PerCpuValues::try_from(vec![0u64; cpus]).expect("per-CPU zeros");
            counters.set(c as u32, zero, 0).expect("zeroing a counter");
        }
        let mut ranges: PerCpuArray<&mut MapData, RangeStats> =
            PerCpuArray::try_from(ebpf.map_mut(names::RANGE_STATS).expect("range stats"))
                .expect("range stats map");
        for id in 0..RANGE_IDS_READ as u32 {
            let zero =
                PerCpuValues::try_from(vec![RangeStats::default(); cpus]).expect("per-CPU zeros");
            ranges.set(id, zero, 0).expect("zeroing a range");
        }
        let mut flows: BpfHashMap<&mut MapData, FlowKey, FlowStats> =
            BpfHashMap::try_from(ebpf.map_mut(names::FLOWS).expect("flows")).expect("flow map");
        let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
        for k in keys {
            flows.remove(&k).expect("removing a flow");
        }
        self.records();
        if self.payloads.is_some() {
            self.payloads();
        }
    }

    /// Runs `hook` once on `data`, with `ctx` as the `__sk_buff` (TC only),
    /// and returns the program's return value.
    pub fn try_run(
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
    pub fn run(&mut self, hook: Hook, data: &[u8]) {
        let rv = self
            .try_run(hook, data, None)
            .unwrap_or_else(|e| panic!("test run of {hook:?} on {} bytes: {e:?}", data.len()));
        assert_eq!(rv, hook.pass(), "{hook:?} return value");
    }

    /// Runs TC egress on `data` as a packet that arrived on interface
    /// `ifindex` and checks the packet is passed.
    pub fn run_arrived(&mut self, data: &[u8], ifindex: u32) {
        let ctx = arrived_ctx(ifindex);
        let rv = self
            .try_run(Hook::TcEgress, data, Some(&ctx))
            .unwrap_or_else(|e| panic!("test run of TC egress arrived on {ifindex}: {e:?}"));
        assert_eq!(rv, Hook::TcEgress.pass(), "TC egress return value");
    }

    /// Marks interface `ifindex` audited, as attaching to it does.
    pub fn audit_iface(&mut self, ifindex: u32) {
        cas_audit::datapath::maps::set_audited(self.dp.ebpf_mut(), ifindex, true)
            .expect("marking an interface audited");
    }

    /// Runs a TC program on `data` as a GSO/GRO super-packet of `segs`
    /// segments (gso_size 1000) and checks the packet is passed.
    pub fn run_gso(&mut self, hook: Hook, data: &[u8], segs: u32) {
        assert_ne!(hook, Hook::Xdp);
        let ctx = gso_ctx(segs, 1000);
        let rv = self
            .try_run(hook, data, Some(&ctx))
            .unwrap_or_else(|e| panic!("test run of {hook:?} with gso_segs {segs}: {e:?}"));
        assert_eq!(rv, hook.pass(), "{hook:?} return value");
    }

    /// Asserts every counter: the listed ones have these values, all others zero.
    #[track_caller]
    pub fn expect_counters(&self, expected: &[(Counter, u64)]) {
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

    /// Asserts every range total (ids below [`RANGE_IDS_READ`]): the listed
    /// ids have these values, all others zero.
    #[track_caller]
    pub fn expect_ranges(&self, expected: &[(u32, RangeStats)]) {
        let got = self.dp.range_totals(RANGE_IDS_READ).expect("range totals");
        let mut want = vec![RangeStats::default(); RANGE_IDS_READ];
        for (id, s) in expected {
            want[*id as usize] = *s;
        }
        assert_eq!(got, want, "range totals by id");
    }

    /// The flow table.
    pub fn flows(&self) -> HashMap<FlowKey, FlowStats> {
        self.dp.flows().expect("flow table").into_iter().collect()
    }

    /// Asserts the flow table is empty.
    #[track_caller]
    pub fn expect_no_flows(&self) {
        let f = self.flows();
        assert!(f.is_empty(), "expected no flows, got {f:#?}");
    }

    /// Asserts the flow table holds exactly these flows (timestamps aside,
    /// which must be set and ordered; history and RST TTL too unless the
    /// expected flow sets a history mask).
    #[track_caller]
    pub fn expect_flows(&self, expected: &[(FlowKey, FlowStats)]) {
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
            if w.ifindexes == [0; 4] {
                // Every test run happens on the loopback.
                w.ifindexes[0] = LO_IFINDEX;
            }
            w.first_seen_ns = g.first_seen_ns;
            w.last_seen_ns = g.last_seen_ns;
            // History and RST TTL are asserted by the tests about them
            // (with `cas_audit::flow::evidence::history_string`); the others leave them unset.
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
    pub fn only_flow(&self) -> (FlowKey, FlowStats) {
        let f = self.flows();
        assert_eq!(f.len(), 1, "expected one flow, got {f:#?}");
        f.into_iter().next().expect("one flow")
    }

    /// Records waiting in the ring buffer (consumed), read as the agent
    /// reads them.
    pub fn records(&mut self) -> Vec<RingRecord> {
        if self.events.is_none() {
            self.events = Some(self.dp.take_events().expect("event ring buffer"));
        }
        drain(self.events.as_mut().expect("ring"))
    }

    /// Records waiting in the payload ring (consumed): the DNS responses
    /// and ClientHellos handed over ([`Harness::with_handoff`]).
    pub fn payloads(&mut self) -> Vec<PayloadRecord> {
        if self.payloads.is_none() {
            self.payloads = Some(self.dp.take_payloads().expect("payload ring buffer"));
        }
        drain(self.payloads.as_mut().expect("ring"))
            .into_iter()
            .map(|r| match r {
                RingRecord::Payload(p) => p,
                other => panic!("expected a payload record, got {other:?}"),
            })
            .collect()
    }

    /// Flag events waiting in the ring buffer (consumed); fails on any
    /// other record.
    pub fn events(&mut self) -> Vec<FlowEvent> {
        self.records()
            .into_iter()
            .map(|r| match r {
                RingRecord::Flagged(ev) => ev,
                other => panic!("expected only flag events, got {other:?}"),
            })
            .collect()
    }

    /// A flow key on the loopback device (where test runs happen).
    pub fn key(
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

/// Every record waiting in `ring` (consumed), read as the agent reads them.
fn drain(ring: &mut RingBuf<MapData>) -> Vec<RingRecord> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(RingRecord::parse(&item).expect("a whole, known ring record"));
    }
    out
}

// ---------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------

/// Range totals of `packets` and `bytes` out.
pub fn range_out(packets: u64, bytes: u64) -> RangeStats {
    RangeStats {
        packets_out: packets,
        bytes_out: bytes,
        ..RangeStats::default()
    }
}

/// Range totals of `packets` and `bytes` in.
pub fn range_in(packets: u64, bytes: u64) -> RangeStats {
    RangeStats {
        packets_in: packets,
        bytes_in: bytes,
        ..RangeStats::default()
    }
}

/// Expected stats of a flow created by `packets` packets in `dir`, seen
/// on the loopback.
pub fn flow_stats(dir: Direction, range_id: u32, packets: u64, bytes: u64, flags: u8) -> FlowStats {
    let mut s = FlowStats {
        range_id,
        first_dir: dir as u8,
        ..FlowStats::default()
    };
    s.ifindexes[0] = LO_IFINDEX;
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
