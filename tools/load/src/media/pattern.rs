//! The bytes of a load file: a function of the file's seed and the offset, so that an upload
//! streams them without holding the file and a download checks any range by making it again.

use sha2::{Digest, Sha256};

/// The first 8 bytes of every file: no content sniffer takes them for an image (which the
/// server would decode) or anything but `application/octet-stream`.
pub const MAGIC: [u8; 8] = *b"MSVLOAD\0";

/// splitmix64's increment.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A file of `size` bytes made from `seed`.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    pub seed: u64,
    pub size: u64,
}

impl Pattern {
    /// The 8 bytes at offset `8 * i`.
    fn word(&self, i: u64) -> [u8; 8] {
        if i == 0 {
            return MAGIC;
        }
        let mut z = self.seed.wrapping_add(i.wrapping_mul(GAMMA));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// Fills `buf` with the file's bytes from `offset` on (past the end: more of the same).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut i = 0;
        let mut pos = offset;
        let skew = (pos % 8) as usize;
        if skew != 0 && !buf.is_empty() {
            let n = (8 - skew).min(buf.len());
            buf[..n].copy_from_slice(&self.word(pos / 8)[skew..skew + n]);
            i = n;
            pos += n as u64;
        }
        let mut word = pos / 8;
        let mut words = buf[i..].chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.word(word));
            word += 1;
        }
        let rest = words.into_remainder();
        let n = rest.len();
        rest.copy_from_slice(&self.word(word)[..n]);
    }

    /// The sha-256 of the whole file, made piece by piece.
    pub fn sha256(&self) -> [u8; 32] {
        let mut hash = Sha256::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < self.size {
            let n = (self.size - at).min(buf.len() as u64) as usize;
            self.fill(at, &mut buf[..n]);
            hash.update(&buf[..n]);
            at += n as u64;
        }
        hash.finalize().into()
    }

    /// Where `got`, read at `offset`, first differs from the file: (offset, got, wanted).
    pub fn first_difference(
        &self,
        offset: u64,
        got: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Option<(u64, u8, u8)> {
        scratch.resize(got.len(), 0);
        self.fill(offset, scratch);
        let i = got.iter().zip(scratch.iter()).position(|(a, b)| a != b)?;
        Some((offset + i as u64, got[i], scratch[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_is_the_same_bytes_as_the_whole() {
        let p = Pattern {
            seed: 42,
            size: 1000,
        };
        let mut whole = vec![0u8; 1000];
        p.fill(0, &mut whole);
        assert_eq!(whole[..8], MAGIC);
        for (from, len) in [
            (0, 1),
            (1, 7),
            (3, 5),
            (5, 100),
            (8, 8),
            (9, 0),
            (997, 3),
            (13, 987),
        ] {
            let mut part = vec![0u8; len];
            p.fill(from as u64, &mut part);
            assert_eq!(part, whole[from..from + len], "{from}+{len}");
            let mut scratch = Vec::new();
            assert_eq!(p.first_difference(from as u64, &part, &mut scratch), None);
        }
        let mut bad = whole[100..200].to_vec();
        bad[17] ^= 1;
        let mut scratch = Vec::new();
        assert_eq!(
            p.first_difference(100, &bad, &mut scratch),
            Some((117, whole[117] ^ 1, whole[117]))
        );
    }

    #[test]
    fn seeds_make_different_files_and_the_digest_is_of_the_bytes() {
        let (a, b) = (
            Pattern {
                seed: 1,
                size: 3000,
            },
            Pattern {
                seed: 2,
                size: 3000,
            },
        );
        let (mut x, mut y) = (vec![0u8; 3000], vec![0u8; 3000]);
        a.fill(0, &mut x);
        b.fill(0, &mut y);
        assert_ne!(x[8..], y[8..]);
        let mut h = Sha256::default();
        h.update(&x);
        assert_eq!(<[u8; 32]>::from(h.finalize()), a.sha256());
    }
}
