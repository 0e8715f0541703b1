//! A real DNS server for the names tests: dnsmasq (Debian's dnsmasq-base)
//! in a namespace of the test bed, answering given names only.

use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::Topology;

/// dnsmasq, killed (and reaped) on drop.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// dnsmasq in namespace `ns` on `listen` port 53, answering each of
    /// `records` (a name and its addresses, A and AAAA) with TTL `ttl`
    /// seconds; no upstream, no /etc/hosts: any other name is REFUSED.
    /// Returns once it answers the first name.
    pub fn start(
        topo: &Topology,
        ns: &str,
        listen: IpAddr,
        ttl: u32,
        records: &[(&str, &[IpAddr])],
    ) -> Result<Dnsmasq> {
        let mut cmd = topo.command(ns, "dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file",
        ])
        .arg(format!("--listen-address={listen}"))
        .arg(format!("--local-ttl={ttl}"));
        for (name, addrs) in records {
            let a: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            cmd.arg(format!("--host-record={name},{}", a.join(",")));
        }
        let dns = Dnsmasq(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting dnsmasq (install dnsmasq-base)")?,
        );
        let Some((first, _)) = records.first() else {
            return Ok(dns);
        };
        for _ in 0..50 {
            let out = topo
                .command(ns, "dig")
                .args([
                    &format!("@{listen}"),
                    "+time=1",
                    "+tries=1",
                    "+short",
                    first,
                ])
                .stdin(Stdio::null())
                .output()
                .context("running dig (install bind9-dnsutils)")?;
            if !out.stdout.is_empty() {
                return Ok(dns);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("dnsmasq on {listen} in {ns} does not answer {first}")
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
