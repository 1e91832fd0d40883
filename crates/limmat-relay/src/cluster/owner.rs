//! Which node owns a domain: rendezvous (highest-random-weight) hashing, spec 7.3.
//!
//! Pure, so every node computes the same owner from the same live set, and when a member
//! joins or leaves only the domains it wins or held move (no ring, no virtual nodes, nothing
//! to keep in sync). Keyed on the stable `node_id`, so a restarted node gets its domains back.

use sha2::{Digest, Sha256};

/// *w(n, d)*: the first 8 bytes, big-endian, of SHA-256(`limmat-hrw/1` ‖ 0 ‖ node_id ‖ 0 ‖ d).
pub fn weight(node_id: &str, domain: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"limmat-hrw/1\0");
    h.update(node_id.as_bytes());
    h.update(b"\0");
    h.update(domain.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The index of the owner of `domain` among `node_ids`: the largest weight, a tie going to
/// the bytewise smaller id. `None` for an empty set.
pub fn owner<'a, I>(node_ids: I, domain: &str) -> Option<usize>
where
    I: IntoIterator<Item = &'a str>,
{
    node_ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| (weight(id, domain), std::cmp::Reverse(id), i))
        .max()
        .map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checklist 85: the normative vectors of 7.3.
    #[test]
    fn spec_test_vectors() {
        let rows = [
            (
                "gsiot-ffmq-ttd5",
                ["e4620375bd018f98", "dd793790b380c1f3", "1f9f69c53d9eef7b"],
                0,
                0,
            ),
            (
                "dom",
                ["671a57bba3151d0c", "c07adb89670e7490", "c511e06140dd1113"],
                2,
                1,
            ),
            (
                "sap4iot-7z1d-gm66",
                ["7ed971e1ee938a02", "438f0d6abd1f3627", "4841919414d4bf01"],
                0,
                0,
            ),
        ];
        let nodes = ["node-a", "node-b", "node-c"];
        for (domain, weights, of_abc, of_ab) in rows {
            for (node, w) in nodes.iter().zip(weights) {
                assert_eq!(
                    format!("{:016x}", weight(node, domain)),
                    w,
                    "{node} {domain}"
                );
            }
            assert_eq!(owner(nodes, domain), Some(of_abc), "{domain}");
            assert_eq!(
                owner(nodes[..2].iter().copied(), domain),
                Some(of_ab),
                "{domain}"
            );
        }
        assert_eq!(owner([], "dom"), None);
    }

    /// Only the domains a joining node wins move, about 1/n of them.
    #[test]
    fn a_joining_node_moves_only_what_it_wins() {
        let three = ["n1", "n2", "n3"];
        let four = ["n1", "n2", "n3", "n4"];
        let mut moved = 0;
        for i in 0..10_000 {
            let d = format!("dev-{i}");
            let before = three[owner(three, &d).unwrap()];
            let after = four[owner(four, &d).unwrap()];
            if before != after {
                assert_eq!(after, "n4");
                moved += 1;
            }
        }
        assert!((2_300..=2_700).contains(&moved), "{moved}");
    }
}
