//! `check` with names and TLS in a namespace lab: dnsmasq (`--resolver`)
//! answers the set's names with lab addresses; openssl `s_server`s serve a
//! certificate from a test CA the check trusts (`--ca-file`: reachable)
//! and one from an unknown CA (an intercepting middlebox: intercepted, with
//! its issuer); the OCSP name's address refuses port 80 (nothing listens);
//! a name the server does not know is unresolved; the tenant's portal
//! wildcard is probed under `--tenant`. `--proxy` goes through a CONNECT
//! proxy in the cloud namespace that refuses one target (403) and cannot
//! reach another (502).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use cas_audit_tests::dns::Dnsmasq;
use cas_audit_tests::process::agent_bin_str;
use cas_audit_tests::{with_topology, Topology};

const GOOD: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 210));
const MITM: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 211));
const OCSP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 212));
const DNS: IpAddr = Topology::CLOUD_ADDR4;
const PROXY: &str = "203.0.113.2:3128";

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{ca}.pem`, `{ca}.key`) and a server certificate `{leaf}.pem`
/// for `names` signed by it.
fn pki(dir: &Path, ca: &str, cn: &str, leaf: &str, names: &[&str]) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={}", names[0]),
            "-keyout",
            &format!("{leaf}.key"),
            "-out",
            &format!("{leaf}.csr"),
        ],
    );
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(format!("{leaf}.ext")),
        format!("subjectAltName={}\n", san.join(",")),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{leaf}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &format!("{leaf}.ext"),
            "-out",
            &format!("{leaf}.pem"),
        ],
    );
}

/// Children killed on drop.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn s_server(topo: &Topology, dir: &Path, addr: IpAddr, leaf: &str) -> Child {
    topo.command(topo.cloud(), "openssl")
        .current_dir(dir)
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("{addr}:443"),
        ])
        .args([
            "-cert",
            &format!("{leaf}.pem"),
            "-key",
            &format!("{leaf}.key"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server")
}

fn set_file(dir: &Path) -> PathBuf {
    let path = dir.join("names-set.json");
    std::fs::write(
        &path,
        r#"{"schema": 2, "name": "names-lab", "source": "check_names.rs", "published": "2026-11-30", "entries": [], "dns": [
  {"name": "portal.cloudappsecurity.com", "purpose": "portal"},
  {"name": "*.us.portal.cloudappsecurity.com", "datacenter": "US1", "purpose": "portal"},
  {"name": "cdn.cloudappsecurity.com", "purpose": "portal"},
  {"name": "ocsp.msocsp.com", "purpose": "siem-agent", "ports": [80]},
  {"name": "missing.cloudappsecurity.com", "purpose": "portal"}
]}
"#,
    )
    .unwrap();
    path
}

/// Waits until something listens on `addr` in the cloud namespace.
fn wait_listening(topo: &Topology, addr: SocketAddr) {
    for _ in 0..50 {
        let ok = topo.in_ns(topo.lan(), move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {addr}");
}

fn check(topo: &Topology, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = topo
        .command(topo.lan(), &agent_bin_str())
        .arg("check")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("cas-audit check");
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        recs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn by_name<'a>(recs: &'a [Value], name: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["type"] == "check" && r["name"] == name)
        .unwrap_or_else(|| panic!("no record for {name}: {recs:#?}"))
}

#[test]
fn check_names_with_tls() {
    with_topology("check_names", &[GOOD, MITM, OCSP], |topo| {
        let dir =
            std::env::temp_dir().join(format!("cas-audit-check-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        pki(
            &dir,
            "testca",
            "cas-audit test CA",
            "good",
            &[
                "portal.cloudappsecurity.com",
                "contoso.us.portal.cloudappsecurity.com",
            ],
        );
        pki(
            &dir,
            "mitm",
            "Inspecting Middlebox CA",
            "bad",
            &["cdn.cloudappsecurity.com"],
        );
        let _dns = Dnsmasq::start(
            topo,
            topo.cloud(),
            DNS,
            0,
            &[
                ("portal.cloudappsecurity.com", &[GOOD]),
                ("contoso.us.portal.cloudappsecurity.com", &[GOOD]),
                ("cdn.cloudappsecurity.com", &[MITM]),
                ("ocsp.msocsp.com", &[OCSP]),
            ],
        )
        .expect("dnsmasq");
        let _kids = Kids(vec![
            s_server(topo, &dir, GOOD, "good"),
            s_server(topo, &dir, MITM, "bad"),
        ]);
        wait_listening(topo, SocketAddr::new(GOOD, 443));
        wait_listening(topo, SocketAddr::new(MITM, 443));
        let set = set_file(&dir);
        let ca = dir.join("testca.pem");
        let (code, recs, err) = check(
            topo,
            &[
                "--set",
                set.to_str().unwrap(),
                "--iface",
                Topology::LAN_IF,
                "--ingress",
                "tc",
                "--timeout",
                "2",
                "--resolver",
                &DNS.to_string(),
                "--tenant",
                "contoso",
                "--tls",
                "--ca-file",
                ca.to_str().unwrap(),
                "--json",
                "-",
            ],
        );
        assert_eq!(code, 1, "not everything is reachable; stderr:\n{err}");
        let good = by_name(&recs, "portal.cloudappsecurity.com");
        assert_eq!(good["result"], "reachable", "{good}");
        assert_eq!(good["address"], GOOD.to_string());
        assert!(
            good["history"].as_str().unwrap_or("").starts_with("ShAD"),
            "the datapath saw the handshakes: {good}\n{err}"
        );
        let tenant = by_name(&recs, "contoso.us.portal.cloudappsecurity.com");
        assert_eq!(tenant["result"], "reachable", "{tenant}");
        assert_eq!(tenant["pattern"], "*.us.portal.cloudappsecurity.com");
        assert_eq!(tenant["datacenters"], serde_json::json!(["US1"]));
        let mitm = by_name(&recs, "cdn.cloudappsecurity.com");
        assert_eq!(mitm["result"], "intercepted", "{mitm}");
        assert_eq!(mitm["issuer"], "CN=Inspecting Middlebox CA");
        let ocsp = by_name(&recs, "ocsp.msocsp.com");
        assert_eq!(ocsp["result"], "refused", "{ocsp}");
        assert_eq!(ocsp["port"], 80);
        assert_eq!(ocsp["rst_hops"], 2, "the host itself refused: {ocsp}");
        let missing = by_name(&recs, "missing.cloudappsecurity.com");
        assert_eq!(missing["result"], "unresolved", "{missing}");
        assert_eq!(missing["address"], Value::Null);
        let s = recs
            .iter()
            .find(|r| r["type"] == "check-summary")
            .expect("summary");
        eprintln!("check --tls summary: {s}");
        assert_eq!(
            (
                s["destinations"].as_u64(),
                s["reachable"].as_u64(),
                s["refused"].as_u64(),
                s["unresolved"].as_u64(),
                s["intercepted"].as_u64(),
                s["tls_failed"].as_u64()
            ),
            (Some(5), Some(2), Some(1), Some(1), Some(1), Some(0))
        );

        // The table and its "To fix" lines.

        let out = topo
            .command(topo.lan(), &agent_bin_str())
            .args([
                "check",
                "--set",
                set.to_str().unwrap(),
                "--timeout",
                "2",
                "--resolver",
                &DNS.to_string(),
                "--tls",
                "--ca-file",
                ca.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        eprintln!("{table}");
        assert_eq!(out.status.code(), Some(1));
        assert!(table.contains("a TLS-inspecting device answers with certificates issued by CN=Inspecting Middlebox CA: 1 destination (portal)"), "{table}");
        assert!(table.contains("names do not resolve"), "{table}");
        assert!(table.contains("Not probed (a tenant's names: give --tenant NAME): *.us.portal.cloudappsecurity.com"), "{table}");

        // Through a CONNECT proxy: it refuses cdn (403), cannot reach the
        // OCSP host (502), tunnels the rest.
        let proxy = start_proxy(topo);
        let (code, recs, err) = check(
            topo,
            &[
                "--set",
                set.to_str().unwrap(),
                "--timeout",
                "2",
                "--tenant",
                "contoso",
                "--proxy",
                &format!("http://{PROXY}"),
                "--tls",
                "--ca-file",
                ca.to_str().unwrap(),
                "--json",
                "-",
            ],
        );
        drop(proxy);
        assert_eq!(code, 1, "{err}");
        let r = |n: &str| by_name(&recs, n).clone();
        assert_eq!(
            r("portal.cloudappsecurity.com")["result"],
            "reachable",
            "{recs:#?}"
        );
        assert_eq!(r("cdn.cloudappsecurity.com")["result"], "refused");
        assert_eq!(r("cdn.cloudappsecurity.com")["proxy_status"], 403);
        assert_eq!(r("ocsp.msocsp.com")["result"], "unreachable");
        assert_eq!(r("ocsp.msocsp.com")["proxy_status"], 502);
        assert_eq!(r("missing.cloudappsecurity.com")["proxy_status"], 502);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A minimal HTTP CONNECT proxy on [`PROXY`] in the cloud namespace (test
/// scaffolding standing in for squid): 403 for cdn.cloudappsecurity.com,
/// 502 when the target is not a lab host or refuses, else a tunnel. It
/// runs in the cloud namespace: nothing it connects to leaves the lab.
fn start_proxy(topo: &Topology) -> std::thread::JoinHandle<()> {
    let listener = topo.in_ns(topo.cloud(), || {
        TcpListener::bind(PROXY).expect("proxy listen")
    });
    let targets: Vec<(String, IpAddr)> = vec![
        ("portal.cloudappsecurity.com".into(), GOOD),
        ("contoso.us.portal.cloudappsecurity.com".into(), GOOD),
        ("ocsp.msocsp.com".into(), OCSP),
    ];
    // Inside the cloud namespace, so that its upstream connections (and
    // the tunnels' threads) stay in the lab.
    cas_audit_tests::spawn_in_netns(topo.cloud(), move || {
        listener.set_nonblocking(false).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for conn in listener.incoming() {
            if std::time::Instant::now() > deadline {
                break;
            }
            let Ok(mut c) = conn else { continue };
            let mut line = String::new();
            let mut rd = BufReader::new(c.try_clone().unwrap());
            if rd.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if rd.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (host, port) = target.rsplit_once(':').unwrap_or(("", "0"));
            if host == "cdn.cloudappsecurity.com" {
                let _ = c.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n");
                continue;
            }
            let up = targets.iter().find(|(n, _)| n == host).and_then(|(_, a)| {
                TcpStream::connect_timeout(
                    &SocketAddr::new(*a, port.parse().unwrap_or(0)),
                    Duration::from_secs(1),
                )
                .ok()
            });
            let Some(mut up) = up else {
                let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                continue;
            };
            let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            // Already-connected sockets: copying on another thread sends
            // nothing outside the namespace.
            let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut up2);
                let _ = up2.shutdown(std::net::Shutdown::Write);
            });
            let mut buf = [0u8; 4096];
            while let Ok(n) = up.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    })
}
