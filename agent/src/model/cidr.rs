//! Address ranges for `--internal` and `--budget`: `10.1.0.0/16`, `2001:db8::/32`,
//! or one address (`127.0.0.5`, a /32 or /128).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: its address with the host bits cleared, and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range. An IPv4 range holds IPv4 addresses only (the
    /// agent reports IPv4-mapped IPv6 addresses as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(x: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        x & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(x: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        x & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not an address or CIDR range (10.1.0.0/16, 2001:db8::/32)")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        let net = match ip {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(u32::from(v4), prefix).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(u128::from(v6), prefix).into()),
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// `--budget CIDR=N`: at most `max` connections open from the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub range: Cidr,
    pub max: u64,
}

impl FromStr for Budget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (range, max) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: a budget is CIDR=N (10.1.0.0/16=200)"))?;
        let max = max
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: N must be a count of connections"))?;
        Ok(Budget {
            range: range.trim().parse()?,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_normalize_and_contain() {
        let r: Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(r.to_string(), "10.1.0.0/16");
        assert!(r.contains(ip("10.1.255.7")));
        assert!(!r.contains(ip("10.2.0.1")));
        assert!(
            !r.contains(ip("::ffff:10.1.0.1")),
            "v4 ranges hold v4 addresses"
        );
        let one: Cidr = "127.0.0.5".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.5/32");
        assert!(one.contains(ip("127.0.0.5")) && !one.contains(ip("127.0.0.6")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let v6: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::9")) && !v6.contains(ip("2001:db9::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("::1")));
        for bad in [
            "10.1.0.0/33",
            "nowhere",
            "10.1.0.0/",
            "::1/129",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn budgets_parse() {
        let b: Budget = "10.1.0.0/16=200".parse().unwrap();
        assert_eq!(
            (b.range.to_string(), b.max),
            ("10.1.0.0/16".to_owned(), 200)
        );
        for bad in ["10.1.0.0/16", "10.1.0.0/16=", "10.1.0.0/16=-1", "x=3"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
    }
}
