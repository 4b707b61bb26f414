//! Where a key lives among several servers: the ketama continuum, as libmemcached builds it with
//! `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED` (the classic libketama ring), so that clients in other
//! languages configured for ketama place every key on the same server.
//!
//! Each server gets `floor(weight share * 40 * servers) * 4` points (160 with equal weights):
//! for `i` in `0..points / 4`, the MD5 of `"host:port-i"` (`"host-i"` when the port is memcached's
//! default, 11211, as libmemcached writes it) gives four points, its bytes read four at a time as
//! little-endian `u32`s. A key's point is the first four bytes of its MD5, read the same way; it
//! belongs to the server of the first point at or after it, wrapping to the first point.

use md5::{Digest, Md5};

/// The points per server with equal weights, and per MD5 digest.
const POINTS_PER_SERVER: f32 = 160.0;
const POINTS_PER_HASH: u32 = 4;

/// A server as the ring names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RingServer {
    /// The host as configured, without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) weight: u32,
}

impl RingServer {
    /// From `host:port` (IPv6 hosts bracketed), weight 1.
    pub(crate) fn from_address(address: &str) -> Option<Self> {
        let (host, port) = address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(Self {
            host: host.to_string(),
            port: port.parse().ok()?,
            weight: 1,
        })
    }

    /// The text hashed for the `index`-th group of four points.
    fn point_name(&self, index: u32) -> String {
        if self.port == 11211 {
            format!("{}-{index}", self.host)
        } else {
            format!("{}:{}-{index}", self.host, self.port)
        }
    }
}

/// The continuum over some servers: points sorted by value, each naming its server.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// `(point, server)`, sorted by point, then by server index (libmemcached's order).
    points: Vec<(u32, usize)>,
}

fn md5(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

fn point(digest: &[u8; 16], alignment: usize) -> u32 {
    let at = alignment * 4;
    u32::from_le_bytes([digest[at], digest[at + 1], digest[at + 2], digest[at + 3]])
}

/// The ketama point of a key.
pub(crate) fn key_point(key: &[u8]) -> u32 {
    point(&md5(key), 0)
}

impl Ring {
    /// The ring over `servers`, each given with the index it is known by; servers left out
    /// (down) are simply not passed.
    pub(crate) fn new(servers: &[(usize, &RingServer)]) -> Self {
        let total: u64 = servers.iter().map(|(_, s)| u64::from(s.weight)).sum();
        let live = servers.len() as f32;
        let mut points = Vec::with_capacity(servers.len() * 160);
        for (index, server) in servers {
            // libmemcached computes this in single precision; the same arithmetic gives the
            // same counts.
            let share = server.weight as f32 / total.max(1) as f32;
            let per_server = ((share * POINTS_PER_SERVER / 4.0 * live + 0.000_000_000_1_f32).floor()
                as u32)
                * POINTS_PER_HASH;
            for group in 0..per_server / POINTS_PER_HASH {
                let digest = md5(server.point_name(group).as_bytes());
                for alignment in 0..POINTS_PER_HASH as usize {
                    points.push((point(&digest, alignment), *index));
                }
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The server of `key`, or `None` for a ring without servers.
    pub(crate) fn locate(&self, key: &[u8]) -> Option<usize> {
        self.locate_point(key_point(key))
    }

    /// The server of the point `hash`.
    pub(crate) fn locate_point(&self, hash: u32) -> Option<usize> {
        let at = self.points.partition_point(|(p, _)| *p < hash);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map(|(_, server)| *server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(ports: &[u16]) -> Vec<RingServer> {
        ports
            .iter()
            .map(|port| RingServer {
                host: "127.0.0.1".into(),
                port: *port,
                weight: 1,
            })
            .collect()
    }

    fn ring(list: &[RingServer]) -> Ring {
        let indexed: Vec<(usize, &RingServer)> = list.iter().enumerate().collect();
        Ring::new(&indexed)
    }

    #[test]
    fn equal_weights_give_160_points_each() {
        for n in 1..=12 {
            let list = servers(&(0..n).map(|i| 20000 + i).collect::<Vec<_>>());
            assert_eq!(ring(&list).points.len(), 160 * list.len(), "{n} servers");
        }
    }

    #[test]
    fn point_names_follow_libmemcached() {
        let default = RingServer::from_address("cache1:11211").unwrap();
        assert_eq!(default.point_name(3), "cache1-3");
        let other = RingServer::from_address("10.0.0.1:11300").unwrap();
        assert_eq!(other.point_name(0), "10.0.0.1:11300-0");
        let v6 = RingServer::from_address("[::1]:11300").unwrap();
        assert_eq!(v6.point_name(1), "::1:11300-1");
    }

    #[test]
    fn key_points_are_little_endian_md5_prefixes() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e.
        assert_eq!(key_point(b""), 0xd98c_1dd4);
    }

    #[test]
    fn a_key_goes_to_the_first_point_at_or_after_it_wrapping_around() {
        let list = servers(&[20001, 20002, 20003]);
        let ring = ring(&list);
        let (first, first_server) = ring.points[0];
        let (last, _) = ring.points[ring.points.len() - 1];
        assert_eq!(ring.locate_point(first), Some(first_server));
        assert_eq!(
            ring.locate_point(last.saturating_add(1)),
            Some(first_server)
        );
        let (mid, mid_server) = ring.points[100];
        assert_eq!(ring.locate_point(mid), Some(mid_server));
        assert_eq!(Ring::new(&[]).locate(b"k"), None);
    }

    #[test]
    fn adding_a_fourth_server_moves_about_a_quarter_of_the_keys() {
        let three = ring(&servers(&[20001, 20002, 20003]));
        let four = ring(&servers(&[20001, 20002, 20003, 20004]));
        let keys = 100_000;
        let moved = (0..keys)
            .filter(|i| {
                let key = format!("key:{i}");
                three.locate(key.as_bytes()) != four.locate(key.as_bytes())
            })
            .count();
        let share = moved as f64 / keys as f64;
        // Only keys that now belong to the new server move.
        assert!(share <= 0.25 + 0.05, "{share}");
        assert!(share > 0.1, "{share}");
    }
}
