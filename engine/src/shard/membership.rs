//! The membership a data directory was created for, stored beside its WAL
//! files and checked on every start: a node restarted with another id,
//! another voter set or another shard count over existing data is refused
//! (it would vote with a log that belongs to another node or group, and
//! could help elect two leaders in one term).
//!
//! `<data-dir>/membership`, little-endian, written once to
//! `membership.tmp`, fsynced, renamed over, and the directory fsynced:
//!
//! ```text
//!  offset  size  field
//!  ------  ----  -----------------------------------------------------------
//!       0     8  magic "RRMEMBR\0"
//!       8     4  crc32c of bytes [12, end)
//!      12     4  format version (1)
//!      16     8  cluster id
//!      24     8  this node's id
//!      32     4  shard count
//!      36     4  voter count n (1..=VOTERS_MAX)
//!      40   ...  n voters, ascending id, each:
//!                  8  node id
//!                  2  address length a (1..=ADDRESS_BYTES_MAX)
//!                  a  peer base address, UTF-8 "host:port" ("[v6]:port")
//! ```
//!
//! A voter whose address changed is accepted (machines move; a node is its
//! id, and Raft's safety rests on the voter ids, not on where they listen):
//! the change is logged and the file rewritten. A directory of the previous
//! version (WAL files, no membership file) is adopted: the file is written
//! from the configuration, unless a WAL file belongs to a shard the
//! configuration does not run.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::raft::NodeId;

/// File name inside the data directory.
pub const FILE_NAME: &str = "membership";
const TEMP_FILE_NAME: &str = "membership.tmp";
const MAGIC: [u8; 8] = *b"RRMEMBR\0";
const FORMAT_VERSION: u32 = 1;
const FIXED_BYTES: usize = 40;
/// Bound on voters (and so on the file's size).
pub const VOTERS_MAX: usize = 1024;
/// Bound on one address's text.
pub const ADDRESS_BYTES_MAX: usize = 64;
const FILE_BYTES_MAX: usize = FIXED_BYTES + VOTERS_MAX * (10 + ADDRESS_BYTES_MAX);

/// Who this data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Cluster id.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: NodeId,
    /// Number of shards (Raft groups).
    pub shards: u32,
    /// Every voter and its base peer address, ascending by id.
    pub voters: Vec<(NodeId, SocketAddr)>,
}

/// Why the stored membership refuses this start (or could not be read or written).
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Reading or writing the file failed.
    #[error("{path}: {context}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is damaged or not a membership file.
    #[error("{path}: not a valid membership file: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The configuration cannot be stored.
    #[error("membership cannot be stored: {0}")]
    Invalid(&'static str),
    /// Another cluster's data directory.
    #[error(
        "{path} belongs to cluster {stored}, the configuration says cluster {configured}; refusing to start"
    )]
    ClusterId {
        /// The file.
        path: PathBuf,
        /// Stored value.
        stored: u64,
        /// Configured value.
        configured: u64,
    },
    /// Another node's data directory.
    #[error(
        "{path} belongs to node {stored}, the configuration says node {configured}; refusing to start"
    )]
    NodeId {
        /// The file.
        path: PathBuf,
        /// Stored value.
        stored: NodeId,
        /// Configured value.
        configured: NodeId,
    },
    /// The voter set differs.
    #[error(
        "{path} was created for voters {stored}, the configuration has voters {configured}; \
         changing the voter set by restarting with other peers is refused (it could elect two \
         leaders in one term)"
    )]
    Voters {
        /// The file.
        path: PathBuf,
        /// Stored voter ids.
        stored: String,
        /// Configured voter ids.
        configured: String,
    },
    /// The shard count differs (shard i of every node forms group i).
    #[error(
        "{path} was created with {stored} shards, the configuration has {configured}; refusing to start"
    )]
    Shards {
        /// The file (or the WAL file of a shard the configuration lacks).
        path: PathBuf,
        /// Stored (or found) value.
        stored: u32,
        /// Configured value.
        configured: u32,
    },
}

/// What [`check_or_store`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipCheck {
    /// A new data directory: the membership was written.
    Created,
    /// WAL files without a membership file (the previous version): written now.
    Adopted {
        /// WAL files found.
        wal_files: usize,
    },
    /// The stored membership is the configured one.
    Matched,
    /// Same voters; these moved: (id, stored address, configured address).
    /// The file now holds the new addresses.
    AddressesMoved(Vec<(NodeId, SocketAddr, SocketAddr)>),
}

fn ids(voters: &[(NodeId, SocketAddr)]) -> String {
    voters
        .iter()
        .map(|(id, _)| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Membership {
    /// The membership of a configuration (voters sorted by id).
    pub fn new(
        cluster_id: u64,
        node_id: NodeId,
        shards: u32,
        voters: &[(NodeId, SocketAddr)],
    ) -> Membership {
        let mut voters = voters.to_vec();
        voters.sort_by_key(|v| v.0);
        Membership {
            cluster_id,
            node_id,
            shards,
            voters,
        }
    }

    /// The file's bytes (layout in the module doc).
    pub fn encode(&self) -> Result<Vec<u8>, MembershipError> {
        if self.voters.is_empty() || self.voters.len() > VOTERS_MAX {
            return Err(MembershipError::Invalid("1 to 1024 voters"));
        }
        let mut bytes = Vec::with_capacity(FIXED_BYTES + self.voters.len() * 32);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&[0; 4]); // crc, filled below
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.cluster_id.to_le_bytes());
        bytes.extend_from_slice(&self.node_id.to_le_bytes());
        bytes.extend_from_slice(&self.shards.to_le_bytes());
        bytes.extend_from_slice(&(self.voters.len() as u32).to_le_bytes());
        for (id, address) in &self.voters {
            let text = address.to_string();
            if text.len() > ADDRESS_BYTES_MAX {
                return Err(MembershipError::Invalid(
                    "a peer address longer than 64 bytes",
                ));
            }
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        let crc = crc32c::crc32c(&bytes[12..]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        Ok(bytes)
    }

    /// Parses the file's bytes; `Err` says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Membership, &'static str> {
        if bytes.len() < FIXED_BYTES || bytes[..8] != MAGIC {
            return Err("no membership magic");
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if u32_at(8) != crc32c::crc32c(&bytes[12..]) {
            return Err("checksum mismatch");
        }
        if u32_at(12) != FORMAT_VERSION {
            return Err("unknown format version");
        }
        let count = u32_at(36) as usize;
        if count == 0 || count > VOTERS_MAX {
            return Err("voter count out of range");
        }
        let mut voters = Vec::with_capacity(count);
        let mut at = FIXED_BYTES;
        for _ in 0..count {
            if bytes.len() < at + 10 {
                return Err("truncated voter");
            }
            let id = u64_at(at);
            let len = u16::from_le_bytes([bytes[at + 8], bytes[at + 9]]) as usize;
            at += 10;
            let text = bytes
                .get(at..at + len)
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or("truncated or non-UTF-8 address")?;
            let address = text.parse().map_err(|_| "unparsable address")?;
            voters.push((id, address));
            at += len;
        }
        if at != bytes.len() {
            return Err("trailing bytes");
        }
        Ok(Membership {
            cluster_id: u64_at(16),
            node_id: u64_at(24),
            shards: u32_at(32),
            voters,
        })
    }

    /// Reads `<dir>/membership`; None if there is none.
    pub fn load(dir: &Path) -> Result<Option<Membership>, MembershipError> {
        let path = dir.join(FILE_NAME);
        let io = |context| {
            let path = path.clone();
            move |source| MembershipError::Io {
                path,
                context,
                source,
            }
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io("read")(error)),
        };
        if bytes.len() > FILE_BYTES_MAX {
            return Err(MembershipError::Corrupt {
                path,
                why: "larger than any membership file",
            });
        }
        Membership::decode(&bytes)
            .map(Some)
            .map_err(|why| MembershipError::Corrupt { path, why })
    }

    /// Writes `<dir>/membership` durably: temp file, fsync, rename, fsync
    /// of the directory. A crash leaves the old file or the new one.
    pub fn store(&self, dir: &Path) -> Result<(), MembershipError> {
        let bytes = self.encode()?;
        let temp = dir.join(TEMP_FILE_NAME);
        let path = dir.join(FILE_NAME);
        let io = |path: &Path, context| {
            let path = path.to_path_buf();
            move |source| MembershipError::Io {
                path,
                context,
                source,
            }
        };
        let mut file = File::create(&temp).map_err(io(&temp, "create"))?;
        file.write_all(&bytes).map_err(io(&temp, "write"))?;
        file.sync_all().map_err(io(&temp, "fsync"))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(io(&path, "rename"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir, "fsync directory"))?;
        Ok(())
    }
}

/// Shard indexes of the `shard-<i>.wal` files in `dir`.
fn wal_shards(dir: &Path) -> Result<Vec<u32>, MembershipError> {
    let entries = std::fs::read_dir(dir).map_err(|source| MembershipError::Io {
        path: dir.to_path_buf(),
        context: "list",
        source,
    })?;
    let mut shards = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = name
            .strip_prefix("shard-")
            .and_then(|rest| rest.strip_suffix(".wal"))
            .and_then(|index| index.parse().ok())
        {
            shards.push(index);
        }
    }
    shards.sort_unstable();
    Ok(shards)
}

/// Checks the configured membership against the one stored in `dir` (an
/// existing directory), storing it if there is none. Refuses another
/// cluster id, node id, voter set or shard count; accepts and records
/// moved addresses.
pub fn check_or_store(
    dir: &Path,
    configured: &Membership,
) -> Result<MembershipCheck, MembershipError> {
    let path = dir.join(FILE_NAME);
    let Some(stored) = Membership::load(dir)? else {
        let wal_shards = wal_shards(dir)?;
        if let Some(&beyond) = wal_shards.iter().find(|&&s| s >= configured.shards) {
            return Err(MembershipError::Shards {
                path: dir.join(format!("shard-{beyond}.wal")),
                stored: beyond + 1,
                configured: configured.shards,
            });
        }
        configured.store(dir)?;
        return Ok(if wal_shards.is_empty() {
            MembershipCheck::Created
        } else {
            MembershipCheck::Adopted {
                wal_files: wal_shards.len(),
            }
        });
    };
    if stored.cluster_id != configured.cluster_id {
        return Err(MembershipError::ClusterId {
            path,
            stored: stored.cluster_id,
            configured: configured.cluster_id,
        });
    }
    if stored.node_id != configured.node_id {
        return Err(MembershipError::NodeId {
            path,
            stored: stored.node_id,
            configured: configured.node_id,
        });
    }
    if ids(&stored.voters) != ids(&configured.voters) {
        return Err(MembershipError::Voters {
            path,
            stored: ids(&stored.voters),
            configured: ids(&configured.voters),
        });
    }
    if stored.shards != configured.shards {
        return Err(MembershipError::Shards {
            path,
            stored: stored.shards,
            configured: configured.shards,
        });
    }
    let moved: Vec<_> = stored
        .voters
        .iter()
        .zip(&configured.voters)
        .filter(|(old, new)| old.1 != new.1)
        .map(|(old, new)| (old.0, old.1, new.1))
        .collect();
    if moved.is_empty() {
        return Ok(MembershipCheck::Matched);
    }
    configured.store(dir)?;
    Ok(MembershipCheck::AddressesMoved(moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn three(port_base: u16) -> Membership {
        let voters: Vec<_> = (1..=3)
            .map(|id| (id, addr(port_base + id as u16)))
            .collect();
        Membership::new(7, 2, 4, &voters)
    }

    #[test]
    fn encodes_and_decodes_and_detects_damage() {
        let mut m = three(9000);
        m.voters
            .push((9, "[::1]:7000".parse::<SocketAddr>().unwrap()));
        let bytes = m.encode().unwrap();
        assert_eq!(Membership::decode(&bytes).unwrap(), m);
        for at in [0, 9, 20, 45, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x04;
            assert!(Membership::decode(&damaged).is_err(), "flip at {at}");
        }
        assert!(Membership::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_new_directory_is_stored_then_checked() {
        let dir = tempfile::tempdir().unwrap();
        let m = three(9000);
        assert_eq!(
            check_or_store(dir.path(), &m).unwrap(),
            MembershipCheck::Created
        );
        assert_eq!(
            check_or_store(dir.path(), &m).unwrap(),
            MembershipCheck::Matched
        );
        assert_eq!(Membership::load(dir.path()).unwrap(), Some(m.clone()));
        // Peers given in another order are the same membership.
        let mut reordered = m.voters.clone();
        reordered.reverse();
        let same = Membership::new(7, 2, 4, &reordered);
        assert_eq!(
            check_or_store(dir.path(), &same).unwrap(),
            MembershipCheck::Matched
        );
        assert!(!dir.path().join(TEMP_FILE_NAME).exists());
    }

    #[test]
    fn another_node_voter_set_shard_count_or_cluster_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let m = three(9000);
        check_or_store(dir.path(), &m).unwrap();
        let mut other = m.clone();
        other.node_id = 3;
        let error = check_or_store(dir.path(), &other).unwrap_err().to_string();
        assert!(
            error.contains("node 2") && error.contains("node 3"),
            "{error}"
        );
        let mut other = m.clone();
        other.voters.push((4, addr(9004)));
        let error = check_or_store(dir.path(), &other).unwrap_err().to_string();
        assert!(
            error.contains("1,2,3") && error.contains("1,2,3,4"),
            "{error}"
        );
        let mut other = m.clone();
        other.voters[0].0 = 5;
        other.voters.sort_by_key(|v| v.0);
        assert!(matches!(
            check_or_store(dir.path(), &other),
            Err(MembershipError::Voters { .. })
        ));
        let mut other = m.clone();
        other.shards = 2;
        let error = check_or_store(dir.path(), &other).unwrap_err().to_string();
        assert!(
            error.contains("4 shards") && error.contains("has 2"),
            "{error}"
        );
        let mut other = m.clone();
        other.cluster_id = 8;
        assert!(matches!(
            check_or_store(dir.path(), &other),
            Err(MembershipError::ClusterId {
                stored: 7,
                configured: 8,
                ..
            })
        ));
        // Nothing refused was written.
        assert_eq!(Membership::load(dir.path()).unwrap(), Some(m));
    }

    #[test]
    fn a_moved_address_is_accepted_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let m = three(9000);
        check_or_store(dir.path(), &m).unwrap();
        let mut moved = m.clone();
        moved.voters[2].1 = addr(9500);
        assert_eq!(
            check_or_store(dir.path(), &moved).unwrap(),
            MembershipCheck::AddressesMoved(vec![(3, addr(9003), addr(9500))])
        );
        assert_eq!(Membership::load(dir.path()).unwrap(), Some(moved.clone()));
        assert_eq!(
            check_or_store(dir.path(), &moved).unwrap(),
            MembershipCheck::Matched
        );
    }

    #[test]
    fn a_previous_version_directory_is_adopted_unless_it_has_more_shards() {
        let dir = tempfile::tempdir().unwrap();
        for shard in 0..2 {
            std::fs::write(dir.path().join(format!("shard-{shard}.wal")), b"x").unwrap();
        }
        let mut one_shard = three(9000);
        one_shard.shards = 1;
        let error = check_or_store(dir.path(), &one_shard).unwrap_err();
        assert!(matches!(
            error,
            MembershipError::Shards {
                stored: 2,
                configured: 1,
                ..
            }
        ));
        assert_eq!(Membership::load(dir.path()).unwrap(), None);
        let m = three(9000);
        assert_eq!(
            check_or_store(dir.path(), &m).unwrap(),
            MembershipCheck::Adopted { wal_files: 2 }
        );
        assert_eq!(Membership::load(dir.path()).unwrap(), Some(m));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let m = three(9000);
        check_or_store(dir.path(), &m).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            check_or_store(dir.path(), &m),
            Err(MembershipError::Corrupt { .. })
        ));
    }
}
