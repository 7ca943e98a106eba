//! Which partition a user or a conversation belongs to, and which live node should own a
//! partition (docs/CLUSTER.md sections 2 and 3).

/// The partition of a one-partition cluster (`cluster_partitions = 1`).
pub const ONE_PARTITION: u32 = 0;

/// FNV-1a, 64 bits: stable across versions and machines (the partition of a user must never
/// change for a cluster's life), cheap, and well spread over short ids.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of `user` among `partitions`.
pub fn partition_of(user: &str, partitions: u32) -> u32 {
    (fnv1a64(user.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// The home partition of a direct conversation: the partition of the smaller id (bytewise),
/// so both users' sends to each other meet in one place.
pub fn direct_home(a: &str, b: &str, partitions: u32) -> u32 {
    partition_of(if a <= b { a } else { b }, partitions)
}

/// The live node that should own `partition`: the highest rendezvous score among `nodes`
/// (highest random weight hashing). Adding or removing a node moves only the partitions whose
/// best node changed, about 1/n of them. `None` when no node is live.
pub fn preferred<'a>(partition: u32, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .map(|node| (score(partition, node), node))
        .max()
        .map(|(_, node)| node)
}

fn score(partition: u32, node: &str) -> u64 {
    let mut key = Vec::with_capacity(4 + node.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(node.as_bytes());
    // A final mix so that nodes named alike ("n1", "n2") do not score alike.
    let mut h = fnv1a64(&key);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_values() {
        // The reference values of FNV-1a 64 (the empty string and "a").
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn users_spread_over_partitions_and_one_partition_is_everything() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[partition_of(&format!("user{i}"), 16) as usize] += 1;
        }
        for (p, c) in counts.iter().enumerate() {
            assert!((800..1200).contains(c), "partition {p} has {c} of 16000");
        }
        assert_eq!(partition_of("anyone", 1), 0);
        assert_eq!(direct_home("bob", "alice", 64), partition_of("alice", 64));
        assert_eq!(direct_home("alice", "bob", 64), partition_of("alice", 64));
    }

    #[test]
    fn a_new_node_takes_about_its_share_and_nothing_else_moves() {
        let before = ["n1", "n2", "n3"];
        let after = ["n1", "n2", "n3", "n4"];
        let mut moved = 0;
        for p in 0..256 {
            let a = preferred(p, before).unwrap();
            let b = preferred(p, after).unwrap();
            if a != b {
                assert_eq!(
                    b, "n4",
                    "partition {p} moved from {a} to {b}, not to the new node"
                );
                moved += 1;
            }
        }
        assert!(
            (40..90).contains(&moved),
            "{moved} of 256 moved to the 4th node"
        );
        assert_eq!(preferred(0, []), None);
    }
}
