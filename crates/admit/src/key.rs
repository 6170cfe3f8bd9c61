//! The unit a per-IP limit counts: one IPv4 address, or one IPv6 /64.

use std::net::IpAddr;

/// Who a per-IP limit counts a connection against.
///
/// An IPv6 host is handed a whole /64 (SLAAC, privacy addresses), so a stranger can pick a new
/// source address for every connection: counting single IPv6 addresses would limit nothing.
/// The /64 is what one host or one home network holds, and what OpenSSH's `PerSourceNetBlockSize`
/// and nginx setups commonly key on. IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack
/// listener reports) counts as the IPv4 address it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpKey(u128);

impl IpKey {
    /// The key of a connection from `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpKey(u128::from(u32::from(v4))),
            // The top bit is never set in an IPv4 key (32 bits), so the two cannot collide.
            IpAddr::V6(v6) => IpKey((u128::from(v6) & !((1u128 << 64) - 1)) | (1 << 127)),
        }
    }

    /// A well-mixed 64-bit value for picking a shard (no hasher needed: the map hashes again).
    pub(crate) fn spread(self) -> u64 {
        let folded = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        folded.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            IpKey::of(ip("2001:db8::1")),
            IpKey::of(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            IpKey::of(ip("2001:db8::1")),
            IpKey::of(ip("2001:db8:0:1::1"))
        );
        assert_eq!(
            IpKey::of(ip("::ffff:192.0.2.7")),
            IpKey::of(ip("192.0.2.7"))
        );
        assert_ne!(IpKey::of(ip("192.0.2.7")), IpKey::of(ip("192.0.2.8")));
        assert_ne!(IpKey::of(ip("0.0.0.1")), IpKey::of(ip("::1")));
    }
}
