//! Network-namespace test bed for cas-audit.
//!
//! [`Topology::new`] builds three network namespaces joined by veth pairs:
//!
//! ```text
//!  {tag}-lan                {tag}-gw                        {tag}-cloud
//!  lan0 ──────────────── inside        uplink ──────────────── edge
//!  198.51.100.2/24       198.51.100.1  203.0.113.1/24          203.0.113.2/24
//!  2001:db8:1::2/64      2001:db8:1::1 2001:db8:2::1/64        2001:db8:2::2/64
//!                                                              lo: simulated CAS
//!                                                                  endpoints
//! ```
//!
//! The gateway forwards IPv4 and IPv6; the cloud namespace answers for the
//! addresses given to [`Topology::new`] on its loopback device. Both ends of
//! every veth pair are created directly inside the namespaces, so nothing is
//! ever added to the root namespace, and dropping the [`Topology`] deletes the
//! namespaces (and with them the veths).
//!
//! The [`traffic`] module has bounded UDP/TCP helpers that run inside a
//! namespace.
//!
//! The [`dns`] module runs a real DNS server (dnsmasq) in a namespace.
//!
//! The [`observers`] module runs the independent witnesses of the gateway
//! tests: tshark captures, `conntrack -L`, nftables rulesets.
//!
//! [`scratch`] holds the suites' temporary directories and BPF file
//! systems, removed on drop.
//!
//! The [`packet`] module builds Ethernet frames (VLAN tags, IPv4 options,
//! IPv6 extension headers, fragments, TCP, UDP, ICMP errors) for the
//! datapath tests and the benchmark. With the `testrun` feature,
//! `testrun` runs the kernel programs on them through `BPF_PROG_TEST_RUN`
//! and reads back what they counted (`tests/tests/datapath_*.rs`).

#![warn(missing_docs)]

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};

pub mod dns;
pub mod observers;
pub mod packet;
pub mod process;
pub mod scratch;
#[cfg(feature = "testrun")]
pub mod testrun;
pub mod traffic;

/// A file Microsoft published, in `../shared/data` beside the repository
/// (as CI has it): `pages/...md`, `servicetags/...json`. The address-data
/// tests read them; a missing file panics, naming it: they are test input.
pub fn shared_data(file: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(file);
    assert!(
        p.is_file(),
        "{} is missing: the published data beside the repository is test input",
        p.display()
    );
    p
}

/// Prefix of every namespace name this crate creates ("casa" + pid + "n" + counter).
pub const NS_PREFIX: &str = "casa";

/// Directory where `ip netns` keeps the bind mounts of named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);

// Fixed, locally administered MAC addresses. Each topology lives in its own
// namespaces, so parallel topologies never share an L2 segment.
const MAC_LAN0: &str = "02:ca:5a:00:00:01";
const MAC_INSIDE: &str = "02:ca:5a:00:00:02";
const MAC_UPLINK: &str = "02:ca:5a:00:00:03";
const MAC_EDGE: &str = "02:ca:5a:00:00:04";
const MAC_UPLINK2: &str = "02:ca:5a:00:00:05";
const MAC_EDGE2: &str = "02:ca:5a:00:00:06";

/// Three network namespaces (lan, gw, cloud) wired together with veth pairs.
///
/// Dropping it deletes the namespaces.
#[derive(Debug)]
pub struct Topology {
    tag: String,
    lan: String,
    gw: String,
    cloud: String,
    /// Namespaces actually created so far (deleted on drop, newest first).
    created: Vec<String>,
}

impl Topology {
    /// Name of the gateway's veth towards the cloud namespace.
    pub const GW_UPLINK: &'static str = "uplink";
    /// Name of the gateway's veth towards the lan namespace.
    pub const GW_INSIDE: &'static str = "inside";
    /// Name of the lan namespace's veth.
    pub const LAN_IF: &'static str = "lan0";
    /// Name of the cloud namespace's veth.
    pub const CLOUD_IF: &'static str = "edge";

    /// IPv4 address of the lan host (`lan0`).
    pub const LAN_ADDR4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
    /// IPv6 address of the lan host (`lan0`).
    pub const LAN_ADDR6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2));
    /// IPv4 address of the gateway's `inside` veth (the lan's default router).
    pub const GW_INSIDE_ADDR4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    /// IPv6 address of the gateway's `inside` veth (the lan's default router).
    pub const GW_INSIDE_ADDR6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));
    /// IPv4 address of the gateway's `uplink` veth.
    pub const GW_UPLINK_ADDR4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    /// IPv6 address of the gateway's `uplink` veth.
    pub const GW_UPLINK_ADDR6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1));
    /// IPv4 address of the cloud namespace's `edge` veth (the gateway's default router).
    pub const CLOUD_ADDR4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
    /// IPv6 address of the cloud namespace's `edge` veth (the gateway's default router).
    pub const CLOUD_ADDR6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2));

    /// The lan's IPv4 network.
    pub const LAN_NET4: &'static str = "198.51.100.0/24";
    /// The lan's IPv6 network.
    pub const LAN_NET6: &'static str = "2001:db8:1::/64";
    /// The gw–cloud IPv4 network.
    pub const UPLINK_NET4: &'static str = "203.0.113.0/24";
    /// The gw–cloud IPv6 network.
    pub const UPLINK_NET6: &'static str = "2001:db8:2::/64";

    /// Creates three namespaces `{tag}-lan`, `{tag}-gw` and `{tag}-cloud`,
    /// where `tag` is `"casa{pid}n{counter}"` (unique per process and call).
    ///
    /// * lan: veth `lan0` 198.51.100.2/24, 2001:db8:1::2/64, default routes
    ///   via the gw (198.51.100.1, 2001:db8:1::1).
    /// * gw: veth `inside` 198.51.100.1/24, 2001:db8:1::1/64; veth `uplink`
    ///   203.0.113.1/24, 2001:db8:2::1/64; IPv4 and IPv6 forwarding on;
    ///   default routes via the cloud (203.0.113.2, 2001:db8:2::2).
    /// * cloud: veth `edge` 203.0.113.2/24, 2001:db8:2::2/64; routes back to
    ///   198.51.100.0/24 and 2001:db8:1::/64 via the gw; every address of
    ///   `cloud_addrs` on `lo` (as /32 or /128): the simulated CAS endpoints.
    ///
    /// All links and every loopback are up, IPv6 DAD is off (so addresses are
    /// usable at once), `rp_filter` is 0, `tcp_tw_reuse` is 1, and the
    /// neighbours on each veth are permanent entries (no ARP/ND delay or
    /// drops on the first packets of a burst).
    ///
    /// On error everything created so far is removed again.
    pub fn new(cloud_addrs: &[IpAddr]) -> Result<Topology> {
        let tag = format!(
            "{NS_PREFIX}{}n{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut topo = Topology {
            lan: format!("{tag}-lan"),
            gw: format!("{tag}-gw"),
            cloud: format!("{tag}-cloud"),
            tag,
            created: Vec::new(),
        };
        topo.build(cloud_addrs)
            .with_context(|| format!("building test topology {}", topo.tag))?;
        Ok(topo)
    }

    fn build(&mut self, cloud_addrs: &[IpAddr]) -> Result<()> {
        let (lan, gw, cloud) = (self.lan.clone(), self.gw.clone(), self.cloud.clone());
        for ns in [&lan, &gw, &cloud] {
            ip(["netns", "add", ns])?;
            self.created.push(ns.clone());
            ip(["-n", ns, "link", "set", "lo", "up"])?;
            // Set before the veths exist so that they inherit `default`.
            for (key, value) in [
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.tcp_tw_reuse", "1"),
            ] {
                sysctl(ns, key, value)?;
            }
        }
        sysctl(&gw, "net.ipv4.ip_forward", "1")?;
        sysctl(&gw, "net.ipv6.conf.all.forwarding", "1")?;

        // Both ends are created inside namespaces: `-n` puts the first end
        // there and `netns` the peer; nothing touches the root namespace.
        let (lan_if, inside) = (Self::LAN_IF, Self::GW_INSIDE);
        ip([
            "-n", &lan, "link", "add", lan_if, "address", MAC_LAN0, "type", "veth", "peer", "name",
            inside, "address", MAC_INSIDE, "netns", &gw,
        ])?;
        let addrs: [(&str, &str, IpAddr, u8); 4] = [
            (&lan, lan_if, Self::LAN_ADDR4, 24),
            (&lan, lan_if, Self::LAN_ADDR6, 64),
            (&gw, inside, Self::GW_INSIDE_ADDR4, 24),
            (&gw, inside, Self::GW_INSIDE_ADDR6, 64),
        ];
        for (ns, dev, addr, len) in addrs {
            add_addr(ns, dev, addr, len)?;
        }
        for addr in cloud_addrs {
            let len = if addr.is_ipv4() { 32 } else { 128 };
            add_addr(&cloud, "lo", *addr, len)?;
        }
        for (ns, dev) in [(&lan, lan_if), (&gw, inside)] {
            ip(["-n", ns, "link", "set", dev, "up"])?;
        }

        let neighbours: [(&str, &str, IpAddr, &str); 4] = [
            (&lan, lan_if, Self::GW_INSIDE_ADDR4, MAC_INSIDE),
            (&lan, lan_if, Self::GW_INSIDE_ADDR6, MAC_INSIDE),
            (&gw, inside, Self::LAN_ADDR4, MAC_LAN0),
            (&gw, inside, Self::LAN_ADDR6, MAC_LAN0),
        ];
        neighbour_entries(&neighbours)?;
        let routes: [(&str, &str, &str, IpAddr); 2] = [
            (&lan, "-4", "default", Self::GW_INSIDE_ADDR4),
            (&lan, "-6", "default", Self::GW_INSIDE_ADDR6),
        ];
        add_routes(&routes)?;
        self.wire_uplink()
    }

    /// Creates the gw `uplink` – cloud `edge` veth pair with its addresses,
    /// neighbours and routes (the routes that use it).
    fn wire_uplink(&self) -> Result<()> {
        let (gw, cloud) = (self.gw.clone(), self.cloud.clone());
        let (uplink, edge) = (Self::GW_UPLINK, Self::CLOUD_IF);
        ip([
            "-n", &gw, "link", "add", uplink, "address", MAC_UPLINK, "type", "veth", "peer",
            "name", edge, "address", MAC_EDGE, "netns", &cloud,
        ])?;
        let addrs: [(&str, &str, IpAddr, u8); 4] = [
            (&gw, uplink, Self::GW_UPLINK_ADDR4, 24),
            (&gw, uplink, Self::GW_UPLINK_ADDR6, 64),
            (&cloud, edge, Self::CLOUD_ADDR4, 24),
            (&cloud, edge, Self::CLOUD_ADDR6, 64),
        ];
        for (ns, dev, addr, len) in addrs {
            add_addr(ns, dev, addr, len)?;
        }
        for (ns, dev) in [(&gw, uplink), (&cloud, edge)] {
            ip(["-n", ns, "link", "set", dev, "up"])?;
        }
        let neighbours: [(&str, &str, IpAddr, &str); 4] = [
            (&gw, uplink, Self::CLOUD_ADDR4, MAC_EDGE),
            (&gw, uplink, Self::CLOUD_ADDR6, MAC_EDGE),
            (&cloud, edge, Self::GW_UPLINK_ADDR4, MAC_UPLINK),
            (&cloud, edge, Self::GW_UPLINK_ADDR6, MAC_UPLINK),
        ];
        neighbour_entries(&neighbours)?;
        let routes: [(&str, &str, &str, IpAddr); 4] = [
            (&gw, "-4", "default", Self::CLOUD_ADDR4),
            (&gw, "-6", "default", Self::CLOUD_ADDR6),
            (&cloud, "-4", Self::LAN_NET4, Self::GW_UPLINK_ADDR4),
            (&cloud, "-6", Self::LAN_NET6, Self::GW_UPLINK_ADDR6),
        ];
        add_routes(&routes)
    }

    /// Deletes the gw `uplink` veth (and with it the cloud's `edge`): what
    /// an agent on `uplink` sees when its interface disappears.
    pub fn delete_uplink(&self) -> Result<()> {
        ip(["-n", &self.gw, "link", "del", Self::GW_UPLINK])
    }

    /// Creates the uplink pair again, configured as [`Topology::new`] did
    /// (a new interface index).
    pub fn recreate_uplink(&self) -> Result<()> {
        self.wire_uplink()
    }

    /// Name of the gateway's second uplink ([`Topology::add_return_uplink`]).
    pub const GW_UPLINK2: &'static str = "uplink2";
    /// Name of the cloud namespace's end of it.
    pub const CLOUD_IF2: &'static str = "edge2";
    /// IPv4 address of the gateway's `uplink2` (a /32, next hops on-link).
    pub const GW_UPLINK2_ADDR4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    /// IPv4 address of the cloud's `edge2` (a /32).
    pub const CLOUD2_ADDR4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

    /// An asymmetric path: a second veth pair, gw `uplink2` – cloud
    /// `edge2` (203.0.113.9/32 – 203.0.113.10/32, next hops on-link,
    /// permanent neighbours), and the cloud's IPv4 route back to the LAN
    /// moved onto it. Packets to the cloud still leave by `uplink`; their
    /// answers come back by `uplink2`.
    pub fn add_return_uplink(&self) -> Result<()> {
        let (gw, cloud) = (self.gw.clone(), self.cloud.clone());
        let (up2, edge2) = (Self::GW_UPLINK2, Self::CLOUD_IF2);
        ip([
            "-n",
            &gw,
            "link",
            "add",
            up2,
            "address",
            MAC_UPLINK2,
            "type",
            "veth",
            "peer",
            "name",
            edge2,
            "address",
            MAC_EDGE2,
            "netns",
            &cloud,
        ])?;
        add_addr(&gw, up2, Self::GW_UPLINK2_ADDR4, 32)?;
        add_addr(&cloud, edge2, Self::CLOUD2_ADDR4, 32)?;
        for (ns, dev) in [(&gw, up2), (&cloud, edge2)] {
            ip(["-n", ns, "link", "set", dev, "up"])?;
        }
        neighbour_entries(&[
            (&gw, up2, Self::CLOUD2_ADDR4, MAC_EDGE2),
            (&cloud, edge2, Self::GW_UPLINK2_ADDR4, MAC_UPLINK2),
        ])?;
        let via = Self::GW_UPLINK2_ADDR4.to_string();
        ip([
            "-n",
            &cloud,
            "-4",
            "route",
            "replace",
            Self::LAN_NET4,
            "via",
            &via,
            "dev",
            edge2,
            "onlink",
        ])
    }

    /// Sets the gw `uplink` down or up.
    pub fn set_uplink(&self, up: bool) -> Result<()> {
        ip([
            "-n",
            &self.gw,
            "link",
            "set",
            Self::GW_UPLINK,
            if up { "up" } else { "down" },
        ])
    }
}

/// Permanent neighbour entries `(namespace, device, address, MAC)`.
fn neighbour_entries(entries: &[(&str, &str, IpAddr, &str)]) -> Result<()> {
    for &(ns, dev, addr, mac) in entries {
        let addr = addr.to_string();
        ip([
            "-n",
            ns,
            "neigh",
            "replace",
            &addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// Routes `(namespace, family flag, destination, gateway)`.
fn add_routes(routes: &[(&str, &str, &str, IpAddr)]) -> Result<()> {
    for &(ns, family, dst, via) in routes {
        let via = via.to_string();
        ip(["-n", ns, family, "route", "add", dst, "via", &via])?;
    }
    Ok(())
}

impl Topology {
    /// The unique tag shared by the three namespace names (`casa{pid}n{counter}`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Name of the lan namespace (`{tag}-lan`).
    pub fn lan(&self) -> &str {
        &self.lan
    }

    /// Name of the gateway namespace (`{tag}-gw`), where cas-audit attaches.
    pub fn gw(&self) -> &str {
        &self.gw
    }

    /// Name of the cloud namespace (`{tag}-cloud`).
    pub fn cloud(&self) -> &str {
        &self.cloud
    }

    /// The three namespace names: lan, gw, cloud.
    pub fn namespaces(&self) -> [&str; 3] {
        [&self.lan, &self.gw, &self.cloud]
    }

    /// Runs `f` on a fresh thread that has entered network namespace `ns`
    /// and returns its result. Sockets made inside belong to that namespace
    /// (and stay there when moved to another thread).
    ///
    /// Panics (on the calling thread) if the namespace cannot be entered or
    /// if `f` panics.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(ns, f)
    }

    /// Like [`Topology::in_ns`], but failing to enter the namespace is an
    /// error rather than a panic.
    pub fn try_in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        try_in_netns(ns, f)
    }

    /// Like [`Topology::in_ns`] but does not wait: returns the thread's handle.
    pub fn spawn_in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        spawn_in_netns(ns, f)
    }

    /// A [`Command`] for `ip netns exec NS prog`; add arguments with `.arg(..)`.
    pub fn command(&self, ns: &str, prog: &str) -> Command {
        netns_command(ns, prog)
    }
}

#[cfg(feature = "testrun")]
impl Topology {
    /// The names of the programs attached to `iface` of namespace `ns`
    /// through TCX, egress then ingress (bpftool 7.1 does not list them).
    pub fn tcx_programs(&self, ns: &str, iface: &'static str) -> Vec<String> {
        self.in_ns(ns, move || {
            use aya::programs::{tc::TcAttachType, SchedClassifier};
            let mut names = Vec::new();
            for t in [TcAttachType::Egress, TcAttachType::Ingress] {
                let (_, progs) = SchedClassifier::query_tcx(iface, t).expect("query_tcx");
                names.extend(
                    progs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
                );
            }
            names
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            match Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "cas-audit-tests: `ip netns del {ns}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("cas-audit-tests: cannot run `ip netns del {ns}`: {e}"),
            }
        }
    }
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`
/// (`/run/netns/{ns}`, `setns(CLONE_NEWNET)`) and returns its result.
///
/// Panics if the namespace cannot be entered or if `f` panics.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in_netns(ns, f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Like [`in_netns`], but failing to enter the namespace is an error rather
/// than a panic (a panic of `f` itself is still propagated).
pub fn try_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let name = ns.to_owned();
    let handle = std::thread::Builder::new()
        .name(format!("netns:{ns}"))
        .spawn(move || -> Result<T> {
            enter_netns(&name)?;
            Ok(f())
        })
        .context("spawning a thread")?;
    match handle.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Spawns a thread that enters network namespace `ns` and then runs `f`.
///
/// The thread panics if the namespace cannot be entered.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.to_owned();
    std::thread::Builder::new()
        .name(format!("netns:{ns}"))
        .spawn(move || {
            if let Err(e) = enter_netns(&ns) {
                panic!("cannot enter network namespace {ns:?}: {e:#}");
            }
            f()
        })
        .expect("spawning a thread")
}

/// Moves the *calling thread* into network namespace `ns` for good.
///
/// Only call this on a thread you own (see [`spawn_in_netns`]).
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = format!("{NETNS_DIR}/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: plain syscall on a valid, open file descriptor.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("setns({path})"));
    }
    Ok(())
}

/// A [`Command`] for `ip netns exec NS prog`.
pub fn netns_command(ns: &str, prog: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, prog]);
    cmd
}

/// Whether the process runs with effective uid 0 (needed for namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// For privileged tests: returns `true` when running as root; otherwise
/// prints a clear "skipped" message naming `test` and returns `false`.
///
/// ```no_run
/// if !cas_audit_tests::require_root("my_test") {
///     return;
/// }
/// ```
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    // `cargo xtask test` and CI must run every privileged test: a skip there
    // would be a test that cannot fail.
    if std::env::var_os(REQUIRE_ROOT_ENV).is_some() {
        panic!("{test} needs root to create network namespaces (euid is {euid}) and {REQUIRE_ROOT_ENV} is set");
    }
    eprintln!("SKIPPED {test}: needs root to create network namespaces (euid is {euid})");
    false
}

/// When set, [`require_root`] fails instead of skipping.
pub const REQUIRE_ROOT_ENV: &str = "CAS_AUDIT_REQUIRE_ROOT";

/// Names of the network namespaces known to `ip netns`.
pub fn list_netns() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
        .context("running `ip netns list`")?;
    if !out.status.success() {
        bail!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The pid encoded in a namespace name made by this crate
/// (`casa{pid}n{counter}-...`), if it is one.
pub fn creator_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(NS_PREFIX)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 || !rest[digits..].starts_with('n') {
        return None;
    }
    rest[..digits].parse().ok()
}

/// Removes namespaces left over by earlier crashed runs: those whose name
/// starts with `casa` and whose creating pid (encoded in the name) no
/// longer exists. Errors are logged to stderr and otherwise ignored.
pub fn cleanup_stale() {
    let names = match list_netns() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cas-audit-tests: cleanup_stale: {e:#}");
            return;
        }
    };
    for ns in names {
        let Some(pid) = creator_pid(&ns) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("cas-audit-tests: removing stale namespace {ns} (pid {pid} is gone)");
        if let Err(e) = ip(["netns", "del", &ns]) {
            eprintln!("cas-audit-tests: cleanup_stale: {e:#}");
        }
    }
}

/// Runs `ip ARGS`, failing with its stderr if it does not succeed.
fn ip<I, S>(args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `ip {shown}`"))?;
    if !out.status.success() {
        bail!(
            "`ip {shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip netns exec NS sysctl -qw KEY=VALUE` (sysctls under net. are per namespace).
fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let out = netns_command(ns, "sysctl")
        .args(["-q", "-w", &format!("{key}={value}")])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running sysctl in {ns}"))?;
    if !out.status.success() {
        bail!(
            "`sysctl -w {key}={value}` in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn add_addr(ns: &str, dev: &str, addr: IpAddr, len: u8) -> Result<()> {
    let cidr = format!("{addr}/{len}");
    if addr.is_ipv6() {
        ip(["-n", ns, "addr", "add", &cidr, "dev", dev, "nodad"])
    } else {
        ip(["-n", ns, "addr", "add", &cidr, "dev", dev])
    }
}

/// Runs `f` on a fresh [`Topology`] whose cloud answers for `cloud_addrs`,
/// then removes it and checks that its namespaces are gone. Without root
/// (and without [`REQUIRE_ROOT_ENV`]) it returns after a message instead.
/// The first call in a process also removes namespaces left by dead test
/// runs, and every call first checks that the agent binary exists.
pub fn with_topology(test: &str, cloud_addrs: &[IpAddr], f: impl FnOnce(&Topology)) {
    if !require_root(test) {
        return;
    }
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(cleanup_stale);
    // Fail early and clearly when the binary is missing.
    process::agent_bin();
    let topo = Topology::new(cloud_addrs).expect("building the test topology");
    let names: Vec<String> = topo.namespaces().iter().map(|s| s.to_string()).collect();
    f(&topo);
    drop(topo);
    let left = list_netns().expect("listing namespaces");
    for ns in &names {
        assert!(
            !left.contains(ns),
            "namespace {ns} still exists after the topology was dropped"
        );
    }
}

pub use scratch::TempDir;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn creator_pid_parses_own_names() {
        assert_eq!(creator_pid("casa1234n0-lan"), Some(1234));
        assert_eq!(creator_pid("casa7n12-cloud"), Some(7));
        assert_eq!(creator_pid("casa-lan"), None);
        assert_eq!(creator_pid("casan1-lan"), None);
        assert_eq!(creator_pid("casa12x1-lan"), None);
        assert_eq!(creator_pid("other1n1-lan"), None);
        assert_eq!(creator_pid("casa123"), None);
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        for name in [
            Topology::LAN_IF,
            Topology::GW_INSIDE,
            Topology::GW_UPLINK,
            Topology::CLOUD_IF,
        ] {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
