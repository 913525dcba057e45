//! The address ranges webhooks must never be sent to: checked on a
//! callback URL's literal address and again on every address a host
//! resolves to when a delivery connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv4 ranges that are not the public internet.
const FORBIDDEN_V4: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),      // "this network", includes unspecified 0.0.0.0
    v4(10, 0, 0, 0, 8),     // private
    v4(100, 64, 0, 0, 10),  // carrier-grade NAT
    v4(127, 0, 0, 0, 8),    // loopback
    v4(169, 254, 0, 0, 16), // link-local, includes cloud metadata 169.254.169.254
    v4(172, 16, 0, 0, 12),  // private
    v4(192, 0, 0, 0, 24),   // IETF protocol assignments
    v4(192, 168, 0, 0, 16), // private
    v4(198, 18, 0, 0, 15),  // benchmarking
    v4(224, 0, 0, 0, 4),    // multicast
    v4(240, 0, 0, 0, 4),    // reserved, includes broadcast 255.255.255.255
];

/// IPv6 ranges that are not the public internet. Ranges that embed an IPv4
/// address are handled separately in [`is_forbidden_ip`].
const FORBIDDEN_V6: &[Ipv6Net] = &[
    // IPv4-compatible (deprecated; some stacks still route ::a.b.c.d to
    // a.b.c.d), includes unspecified :: and loopback ::1.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // local-use NAT64, by definition internal
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),     // unique-local, includes AWS metadata fd00:ec2::254
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),    // link-local
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),    // deprecated site-local, still private where used
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),     // multicast
];

const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// Whether webhooks must not be sent to `ip`: loopback, private, link-local,
/// multicast and other non-public ranges, including IPv6 forms that carry
/// such an IPv4 address (IPv4-mapped, NAT64, 6to4).
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => FORBIDDEN_V4.iter().any(|net| net.contains(&ip)),
        IpAddr::V6(ip) => {
            if let Some(embedded) = ip.to_ipv4_mapped() {
                return is_forbidden_ip(IpAddr::V4(embedded));
            }
            let bits = ip.to_bits();
            if NAT64.contains(&ip) {
                // Low 32 bits are the IPv4 address; truncation is the intent.
                return is_forbidden_ip(IpAddr::V4(Ipv4Addr::from_bits(bits as u32)));
            }
            if SIX_TO_FOUR.contains(&ip) {
                // 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD right after the prefix.
                let embedded = Ipv4Addr::from_bits((bits >> 80) as u32);
                return is_forbidden_ip(IpAddr::V4(embedded));
            }
            FORBIDDEN_V6.iter().any(|net| net.contains(&ip))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        is_forbidden_ip(s.parse().unwrap())
    }

    #[test]
    fn forbidden_ipv4_ranges() {
        for s in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
        ] {
            assert!(forbidden(s), "{s} should be forbidden");
        }
    }

    #[test]
    fn public_ipv4_neighbours_are_allowed() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "11.0.0.1",
            "223.255.255.255",
        ] {
            assert!(!forbidden(s), "{s} should be allowed");
        }
    }

    #[test]
    fn forbidden_ipv6_ranges() {
        for s in [
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "::127.0.0.1",
            "::7f00:1",
            "::169.254.169.254",
            "::10.0.0.1",
            "::8.8.8.8",
            "::ffff",
        ] {
            assert!(forbidden(s), "{s} should be forbidden");
        }
    }

    #[test]
    fn public_ipv6_is_allowed_including_embedded_public_ipv4() {
        for s in [
            "2606:4700::1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(!forbidden(s), "{s} should be allowed");
        }
    }
}
