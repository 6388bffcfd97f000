//! The superblock: what the WAL file is and where its live log starts.
//!
//! The file begins with two 4 KiB copies, A at offset 0 and B at 4096. Each
//! update writes the copy the previous one did not (generation `g` goes to
//! copy `g % 2`), so a torn superblock write leaves the other copy intact;
//! open takes the valid copy with the highest generation.
//!
//! ```text
//!  file:  [ copy A: 4 KiB ][ copy B: 4 KiB ][ data area: capacity_bytes ............ ]
//!
//!  copy:  offset  size  field
//!         0       4     crc32c           CRC32C of bytes [4, 4096)
//!         4       4     magic            0x4C575252 ("RRWL")
//!         8       4     format_version   FORMAT_VERSION
//!         12      4     reserved         0
//!         16      8     generation       +1 on every update
//!         24      16    cluster_id
//!         40      8     shard_id
//!         48      8     capacity_bytes   size of the data area
//!         56      8     ring_bytes       wrap unit: records never straddle a multiple of it
//!         64      8     start_position   log position of the first live record
//!         72      8     start_prev_term  (term, index) of the entry before it
//!         80      8     start_prev_index   (the last purged entry; 0-0 for none)
//!         88      8     hard_term        Raft hard state
//!         96      8     hard_vote        node voted for in hard_term, 0 for none
//!         104     8     hard_commit
//!         112     8     truncate_term    term of the last truncate_after: records of a
//!                                        lower term past the tail are dead remnants
//!         120     8     inflight_bytes_max  bound on bytes past the durable point that
//!                                        writes in flight may touch (recovery's window)
//!         128     3968  zero
//! ```
//! All integers little-endian. A *log position* is a byte position in the
//! data area that only grows: file offset = `SUPERBLOCK_AREA_BYTES + position % capacity_bytes`.

use crate::IoId;
use crate::error::{Result, WalError};

/// Size of one superblock copy (one disk block).
pub const SUPERBLOCK_BYTES: usize = 4096;
/// The two copies precede the data area.
pub const SUPERBLOCK_AREA_BYTES: u64 = 2 * SUPERBLOCK_BYTES as u64;
/// "RRWL" little-endian.
pub const SUPERBLOCK_MAGIC: u32 = 0x4C57_5252;
/// Version of the file format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The Raft hard state the WAL persists for the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Node voted for in `term`, 0 for none.
    pub vote: u64,
    /// Highest index known committed.
    pub commit: u64,
}

/// The decoded content of a superblock copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Bumped by each update.
    pub generation: u64,
    /// Cluster the file belongs to.
    pub cluster_id: u128,
    /// Shard the file belongs to.
    pub shard_id: u64,
    /// Size of the data area.
    pub capacity_bytes: u64,
    /// Ring memory size: records never straddle a multiple of it.
    pub ring_bytes: u64,
    /// Log position of the first live record.
    pub start_position: u64,
    /// (term, index) of the entry just before the live log.
    pub start_prev: IoId,
    /// Raft hard state.
    pub hard_state: HardState,
    /// Term of the last truncation.
    pub truncate_term: u64,
    /// Writes in flight never reach further than this past the durable
    /// point: recovery's torn-tail window.
    pub inflight_bytes_max: u64,
}

/// Why one copy is unusable (open falls back to the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyFault {
    NoMagic,
    BadCrc,
}

impl Superblock {
    /// Encodes into a 4 KiB block.
    pub fn encode(&self, dst: &mut [u8]) {
        assert_eq!(dst.len(), SUPERBLOCK_BYTES);
        dst.fill(0);
        let mut put = |at: usize, bytes: &[u8]| dst[at..at + bytes.len()].copy_from_slice(bytes);
        put(4, &SUPERBLOCK_MAGIC.to_le_bytes());
        put(8, &FORMAT_VERSION.to_le_bytes());
        put(16, &self.generation.to_le_bytes());
        put(24, &self.cluster_id.to_le_bytes());
        put(40, &self.shard_id.to_le_bytes());
        put(48, &self.capacity_bytes.to_le_bytes());
        put(56, &self.ring_bytes.to_le_bytes());
        put(64, &self.start_position.to_le_bytes());
        put(72, &self.start_prev.term.to_le_bytes());
        put(80, &self.start_prev.index.to_le_bytes());
        put(88, &self.hard_state.term.to_le_bytes());
        put(96, &self.hard_state.vote.to_le_bytes());
        put(104, &self.hard_state.commit.to_le_bytes());
        put(112, &self.truncate_term.to_le_bytes());
        put(120, &self.inflight_bytes_max.to_le_bytes());
        let crc = crc32c::crc32c(&dst[4..]);
        dst[0..4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes one copy. The format version is checked by the caller on the
    /// copy it picks, so a newer file is refused with a clear error.
    pub(crate) fn decode(src: &[u8]) -> Result<(Superblock, u32), CopyFault> {
        assert_eq!(src.len(), SUPERBLOCK_BYTES);
        let u32_at = |at: usize| u32::from_le_bytes(src[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(src[at..at + 8].try_into().unwrap());
        if u32_at(4) != SUPERBLOCK_MAGIC {
            return Err(CopyFault::NoMagic);
        }
        if u32_at(0) != crc32c::crc32c(&src[4..]) {
            return Err(CopyFault::BadCrc);
        }
        let superblock = Superblock {
            generation: u64_at(16),
            cluster_id: u128::from_le_bytes(src[24..40].try_into().unwrap()),
            shard_id: u64_at(40),
            capacity_bytes: u64_at(48),
            ring_bytes: u64_at(56),
            start_position: u64_at(64),
            start_prev: IoId::new(u64_at(72), u64_at(80)),
            hard_state: HardState {
                term: u64_at(88),
                vote: u64_at(96),
                commit: u64_at(104),
            },
            truncate_term: u64_at(112),
            inflight_bytes_max: u64_at(120),
        };
        Ok((superblock, u32_at(8)))
    }

    /// File offset of the copy this generation is written to.
    pub fn copy_offset(generation: u64) -> u64 {
        (generation % 2) * SUPERBLOCK_BYTES as u64
    }

    /// Picks the newest valid copy of the two and checks its version.
    pub(crate) fn pick(copy_a: &[u8], copy_b: &[u8]) -> Result<Superblock> {
        let decoded = [Superblock::decode(copy_a), Superblock::decode(copy_b)];
        let newest = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .max_by_key(|(superblock, _)| superblock.generation);
        match newest {
            Some(&(superblock, version)) if version == FORMAT_VERSION => Ok(superblock),
            Some(&(_, version)) => Err(WalError::FormatVersion {
                found: version,
                expected: FORMAT_VERSION,
            }),
            None if decoded.iter().all(|d| *d == Err(CopyFault::NoMagic)) => Err(WalError::NotAWal),
            None => Err(WalError::SuperblockCorrupt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(generation: u64) -> Superblock {
        Superblock {
            generation,
            cluster_id: 0xC1,
            shard_id: 3,
            capacity_bytes: 1 << 20,
            ring_bytes: 1 << 18,
            start_position: 4096,
            start_prev: IoId::new(2, 7),
            hard_state: HardState {
                term: 3,
                vote: 2,
                commit: 6,
            },
            truncate_term: 2,
            inflight_bytes_max: 1 << 16,
        }
    }

    fn encoded(superblock: &Superblock) -> Vec<u8> {
        let mut block = vec![0; SUPERBLOCK_BYTES];
        superblock.encode(&mut block);
        block
    }

    #[test]
    fn newest_valid_copy_wins_and_a_torn_copy_falls_back() {
        let a = encoded(&sample(4));
        let mut b = encoded(&sample(5));
        assert_eq!(Superblock::pick(&a, &b).unwrap().generation, 5);
        b[100] ^= 1;
        assert_eq!(Superblock::pick(&a, &b).unwrap(), sample(4));
    }

    #[test]
    fn another_version_or_garbage_is_refused_clearly() {
        let mut a = encoded(&sample(1));
        a[8] = 9;
        let crc = crc32c::crc32c(&a[4..]);
        a[0..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Superblock::pick(&a, &a),
            Err(WalError::FormatVersion { found: 9, .. })
        ));
        let zeros = vec![0; SUPERBLOCK_BYTES];
        assert!(matches!(
            Superblock::pick(&zeros, &zeros),
            Err(WalError::NotAWal)
        ));
        let mut bad = encoded(&sample(1));
        bad[200] ^= 4;
        assert!(matches!(
            Superblock::pick(&bad, &zeros),
            Err(WalError::SuperblockCorrupt)
        ));
    }
}
