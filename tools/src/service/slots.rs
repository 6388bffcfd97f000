//! Keys to hash slots, slots to groups, groups to leaders: the routing a
//! cluster-aware Redis client follows.
//!
//! ```text
//!   key ─▶ hash tag? ─▶ CRC16/XMODEM mod 16384 ─▶ slot
//!   slot ─▶ group g  (contiguous ranges: g owns [g·16384/S, (g+1)·16384/S) )
//!   group ─▶ leader node (RoutingTable, kept current by the runtime)
//!            ─▶ this node: serve it   other node: -MOVED <slot> <ip>:<port>
//! ```
//!
//! Hash tags as in Redis Cluster: if the key holds a `{` followed later by
//! a `}` with at least one byte between them, only the bytes between the
//! first `{` and the first `}` after it are hashed, so
//! `{user1000}.following` and `{user1000}.followers` share a slot.

use crc::{CRC_16_XMODEM, Crc};
use std::net::SocketAddr;

/// Number of hash slots, as in Redis Cluster.
pub const SLOTS: u16 = 16384;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The hash slot of `key`, honouring hash tags.
pub fn key_slot(key: &[u8]) -> u16 {
    CRC16.checksum(hashed_part(key)) % SLOTS
}

/// The bytes of `key` that decide its slot.
fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

/// Slots split into `groups` contiguous ranges of near-equal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotMap {
    groups: u16,
}

impl SlotMap {
    /// `groups` ranges; 1 ≤ groups ≤ 16384.
    pub fn new(groups: u16) -> Result<SlotMap, RoutingError> {
        if groups == 0 || groups > SLOTS {
            return Err(RoutingError::Groups { groups });
        }
        Ok(SlotMap { groups })
    }

    /// Number of groups.
    pub fn groups(&self) -> u16 {
        self.groups
    }

    /// First slot of `group`: floor(group · 16384 / groups).
    fn start(&self, group: u16) -> u16 {
        (u32::from(group) * u32::from(SLOTS) / u32::from(self.groups)) as u16
    }

    /// The inclusive slot range `group` owns.
    pub fn range(&self, group: u16) -> (u16, u16) {
        assert!(group < self.groups, "group {group} out of range");
        let end = if group + 1 == self.groups {
            SLOTS
        } else {
            self.start(group + 1)
        };
        (self.start(group), end - 1)
    }

    /// The group owning `slot`: the largest g with start(g) ≤ slot, i.e.
    /// floor(((slot + 1) · groups − 1) / 16384).
    pub fn group_of(&self, slot: u16) -> u16 {
        assert!(slot < SLOTS, "slot {slot} out of range");
        (((u32::from(slot) + 1) * u32::from(self.groups) - 1) / u32::from(SLOTS)) as u16
    }
}

/// A node of the cluster as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAddr {
    /// The node's id (`--id`).
    pub id: u64,
    /// Where clients connect.
    pub client: SocketAddr,
    /// The node's peer (cluster bus) port, shown after `@` in CLUSTER NODES.
    pub bus_port: u16,
}

/// Where a command on a slot must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node leads the slot's group: run it on the local shard `group`.
    Local {
        /// The group (and local shard index).
        group: u16,
    },
    /// Another node leads it: answer `-MOVED`.
    Moved {
        /// The key's slot.
        slot: u16,
        /// The leader's client address.
        addr: SocketAddr,
    },
    /// No known leader yet: answer `-CLUSTERDOWN`, the client retries.
    NoLeader {
        /// The key's slot.
        slot: u16,
        /// Its group.
        group: u16,
    },
}

/// A routing table that cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// Groups must be 1..=16384.
    #[error("{groups} groups: must be between 1 and 16384")]
    Groups {
        /// The requested count.
        groups: u16,
    },
    /// This node is not in the node list.
    #[error("node {id} is not in the node list")]
    UnknownNode {
        /// The id.
        id: u64,
    },
    /// Two nodes share an id.
    #[error("node id {id} appears twice")]
    DuplicateNode {
        /// The id.
        id: u64,
    },
}

/// Which node leads each group, and where clients reach every node. The
/// runtime calls [`RoutingTable::set_leader`] whenever a shard learns of a
/// new leader; sized once (one entry per group and per node).
#[derive(Debug, Clone)]
pub struct RoutingTable {
    me: u64,
    nodes: Box<[NodeAddr]>,
    slots: SlotMap,
    /// leaders[g] is the id of group g's leader, if known.
    leaders: Box<[Option<u64>]>,
}

impl RoutingTable {
    /// A table for node `me` among `nodes`, with `groups` groups and no
    /// known leaders.
    pub fn new(me: u64, nodes: &[NodeAddr], groups: u16) -> Result<RoutingTable, RoutingError> {
        let slots = SlotMap::new(groups)?;
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|other| other.id == node.id) {
                return Err(RoutingError::DuplicateNode { id: node.id });
            }
        }
        if !nodes.iter().any(|node| node.id == me) {
            return Err(RoutingError::UnknownNode { id: me });
        }
        Ok(RoutingTable {
            me,
            nodes: nodes.into(),
            slots,
            leaders: vec![None; usize::from(groups)].into_boxed_slice(),
        })
    }

    /// This node's id.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// Every node, in the order given at start-up.
    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    /// The node `id`, if known.
    pub fn node(&self, id: u64) -> Option<&NodeAddr> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The slot-to-group map.
    pub fn slot_map(&self) -> SlotMap {
        self.slots
    }

    /// Records `group`'s leader (None: unknown). An id that is not a node
    /// of the table is an error, and the table is unchanged.
    pub fn set_leader(&mut self, group: u16, leader: Option<u64>) -> Result<(), RoutingError> {
        if let Some(id) = leader
            && self.node(id).is_none()
        {
            return Err(RoutingError::UnknownNode { id });
        }
        self.leaders[usize::from(group)] = leader;
        Ok(())
    }

    /// `group`'s leader, if known.
    pub fn leader(&self, group: u16) -> Option<&NodeAddr> {
        self.leaders[usize::from(group)].and_then(|id| self.node(id))
    }

    /// Where a command on `slot` must run.
    pub fn route(&self, slot: u16) -> Route {
        let group = self.slots.group_of(slot);
        match self.leader(group) {
            Some(node) if node.id == self.me => Route::Local { group },
            Some(node) => Route::Moved {
                slot,
                addr: node.client,
            },
            None => Route::NoLeader { slot, group },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_published_examples() {
        // CRC16/XMODEM check value.
        assert_eq!(CRC16.checksum(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            CRC16.checksum(b"foo{}{bar}") % SLOTS
        );
        // The first '{' and the first '}' after it.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // No closing brace: the whole key.
        assert_eq!(key_slot(b"foo{bar"), CRC16.checksum(b"foo{bar") % SLOTS);
    }

    #[test]
    fn groups_own_contiguous_ranges_covering_every_slot() {
        for groups in [1u16, 2, 3, 5, 7, 16, 64, 16384] {
            let map = SlotMap::new(groups).unwrap();
            let mut next = 0u32;
            for group in 0..groups {
                let (start, end) = map.range(group);
                assert_eq!(u32::from(start), next, "groups={groups} group={group}");
                assert!(start <= end);
                assert_eq!(map.group_of(start), group);
                assert_eq!(map.group_of(end), group);
                next = u32::from(end) + 1;
            }
            assert_eq!(next, u32::from(SLOTS));
        }
        assert_eq!(SlotMap::new(3).unwrap().range(0), (0, 5460));
        assert_eq!(SlotMap::new(3).unwrap().range(2), (10922, 16383));
        assert_eq!(SlotMap::new(0), Err(RoutingError::Groups { groups: 0 }));
    }

    fn three_nodes() -> Vec<NodeAddr> {
        (1..=3)
            .map(|id| NodeAddr {
                id,
                client: format!("127.0.0.1:{}", 7000 + id).parse().unwrap(),
                bus_port: 17000 + id as u16,
            })
            .collect()
    }

    #[test]
    fn route_follows_the_leader_of_the_slots_group() {
        let mut table = RoutingTable::new(1, &three_nodes(), 2).unwrap();
        assert_eq!(
            table.route(100),
            Route::NoLeader {
                slot: 100,
                group: 0
            }
        );
        table.set_leader(0, Some(1)).unwrap();
        table.set_leader(1, Some(3)).unwrap();
        assert_eq!(table.route(100), Route::Local { group: 0 });
        assert_eq!(
            table.route(12182),
            Route::Moved {
                slot: 12182,
                addr: "127.0.0.1:7003".parse().unwrap()
            }
        );
        assert_eq!(
            table.set_leader(1, Some(9)),
            Err(RoutingError::UnknownNode { id: 9 })
        );
        assert_eq!(table.leader(1).unwrap().id, 3);
        assert_eq!(
            RoutingTable::new(4, &three_nodes(), 2).unwrap_err(),
            RoutingError::UnknownNode { id: 4 }
        );
    }
}
