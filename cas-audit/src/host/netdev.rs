//! What the datapath decides from the machine it runs on: TCX from the
//! kernel version, native XDP for `--ingress auto` from an interface's
//! driver. Shared by the datapath (which attaches) and `cas-audit doctor`
//! (which only reads), so both give the same answer.

use std::path::Path;

use aya::util::KernelVersion;

/// First kernel with TCX (BPF links on the TC hooks, no clsact qdisc).
pub const TCX_MIN_KERNEL: KernelVersion = KernelVersion::new(6, 6, 0);

/// Whether a kernel of `version` attaches the TC programs with TCX.
pub fn tcx_supported(version: KernelVersion) -> bool {
    version >= TCX_MIN_KERNEL
}

/// Whether the running kernel attaches the TC programs with TCX (false
/// when its version cannot be read).
pub fn tcx_available() -> bool {
    KernelVersion::current().map(tcx_supported).unwrap_or(false)
}

/// Drivers of physical (or paravirtual) NICs on which `auto` does not use
/// native XDP: it costs more than it saves there.
const AUTO_TC_DRIVERS: [&str; 3] = ["virtio_net", "vmxnet3", "hv_netvsc"];

/// Whether `--ingress auto` tries native XDP on an interface: one with a bus
/// device (`/sys/class/net/IF/device`, so not a veth, bridge, tunnel or
/// loopback) bound to a known `driver` that is not in [`AUTO_TC_DRIVERS`].
/// The driver may still refuse; the datapath then falls back to TC.
pub fn auto_native_xdp(bus_device: bool, driver: Option<&str>) -> bool {
    match driver {
        Some(d) if bus_device => !d.is_empty() && !AUTO_TC_DRIVERS.contains(&d),
        _ => false,
    }
}

/// The bus device of `iface` as sysfs shows it: whether there is one, and
/// the name of the driver bound to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusDevice {
    /// `/sys/class/net/IF/device` exists.
    pub present: bool,
    /// File name of the `device/driver` link.
    pub driver: Option<String>,
}

/// Reads `/sys/class/net/IF/device` and its `driver` link.
pub fn bus_device(iface: &str) -> BusDevice {
    let dev = Path::new("/sys/class/net").join(iface).join("device");
    if !dev.exists() {
        return BusDevice::default();
    }
    let driver = std::fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()));
    BusDevice {
        present: true,
        driver,
    }
}

/// Whether `--ingress auto` tries native XDP on `iface` (see
/// [`auto_native_xdp`]).
pub fn native_xdp_candidate(iface: &str) -> bool {
    let dev = bus_device(iface);
    auto_native_xdp(dev.present, dev.driver.as_deref())
}

/// The driver name the kernel reports for `iface` (`ETHTOOL_GDRVINFO`, as
/// `ethtool -i` shows it: `veth`, `bridge`, `virtio_net`, ...), read
/// without privileges. `None` when the device has no ethtool operations.
pub fn ethtool_driver(iface: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    // struct ethtool_drvinfo (linux/ethtool.h).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    // struct ifreq with ifr_data (40 bytes on 64-bit, 32 on 32-bit).
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return None;
    }
    // SAFETY: all-zero is a valid value of both plain C structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (&mut info as *mut DrvInfo).cast(),
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name);
    // SAFETY: plain syscalls; `req` and `info` outlive the ioctl, the
    // descriptor is closed right after it.
    let rc = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq);
        libc::close(fd);
        rc
    };
    if rc != 0 {
        return None;
    }
    let len = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    let driver = String::from_utf8_lossy(&info.driver[..len]).into_owned();
    (!driver.is_empty()).then_some(driver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcx_from_6_6() {
        assert!(!tcx_supported(KernelVersion::new(5, 15, 0)));
        assert!(!tcx_supported(KernelVersion::new(6, 5, 13)));
        assert!(tcx_supported(KernelVersion::new(6, 6, 0)));
        assert!(tcx_supported(KernelVersion::new(6, 18, 44)));
    }

    #[test]
    fn auto_native_xdp_by_driver() {
        // Virtual devices have no bus device.
        assert!(!auto_native_xdp(false, None));
        assert!(!auto_native_xdp(false, Some("veth")));
        // Paravirtual NICs: XDP costs more than it saves.
        for d in ["virtio_net", "vmxnet3", "hv_netvsc"] {
            assert!(!auto_native_xdp(true, Some(d)), "{d}");
        }
        // A bus device without a bound driver.
        assert!(!auto_native_xdp(true, None));
        assert!(!auto_native_xdp(true, Some("")));
        for d in ["ixgbe", "i40e", "mlx5_core", "ice"] {
            assert!(auto_native_xdp(true, Some(d)), "{d}");
        }
    }

    #[test]
    fn loopback_has_no_bus_device() {
        assert_eq!(bus_device("lo"), BusDevice::default());
        assert!(!native_xdp_candidate("lo"));
        assert_eq!(ethtool_driver(""), None);
        assert_eq!(ethtool_driver("a-name-longer-than-ifnamsiz"), None);
    }
}

/// An interface name that does not exist in this network namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown interface {0:?}")]
pub struct UnknownInterface(pub String);

/// Whether `iface` is administratively up (`None`: no such interface).
pub fn is_up(iface: &str) -> Option<bool> {
    if iface.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a datagram socket only used for the ioctl below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: ifreq is plain data; the name fits (checked) with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a valid socket and ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return None;
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Some(flags as i32 & libc::IFF_UP != 0)
}

/// Interface index of `iface` in the current network namespace.
pub fn ifindex(iface: &str) -> Result<u32, UnknownInterface> {
    let name = std::ffi::CString::new(iface).map_err(|_| UnknownInterface(iface.to_string()))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        Err(UnknownInterface(iface.to_string()))
    } else {
        Ok(idx)
    }
}
