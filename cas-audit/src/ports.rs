//! The service ports a CAS flow may use.

use std::collections::BTreeSet;

/// Ports allowed by default: 443 (HTTPS), 80 (OCSP certificate checks) and
/// 11344 (the DLP integration's stunnel).
pub const DEFAULT_ALLOWED_PORTS: [u16; 3] = [80, 443, 11344];

/// A set of allowed service ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPorts(BTreeSet<u16>);

impl Default for AllowedPorts {
    fn default() -> Self {
        AllowedPorts(DEFAULT_ALLOWED_PORTS.into_iter().collect())
    }
}

impl AllowedPorts {
    /// The given ports, or the defaults when `ports` is empty.
    pub fn from_flags(ports: &[u16]) -> Self {
        if ports.is_empty() {
            Self::default()
        } else {
            AllowedPorts(ports.iter().copied().collect())
        }
    }

    /// Whether `port` is allowed.
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }

    /// The ports in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

impl std::fmt::Display for AllowedPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Vec<String> = self.0.iter().map(u16::to_string).collect();
        f.write_str(&v.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_override() {
        let d = AllowedPorts::from_flags(&[]);
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![80, 443, 11344]);
        let o = AllowedPorts::from_flags(&[8443, 443, 8443]);
        assert_eq!(o.iter().collect::<Vec<_>>(), vec![443, 8443]);
        assert!(!o.contains(80));
        assert_eq!(o.to_string(), "443, 8443");
    }
}
