//! Configuration of one Raft node. Every bound the core honours is named here
//! and fixed at construction; nothing the core holds grows past these.

use super::NodeId;

/// Most voters a group may have. Quorum maths works on stack arrays of this
/// size, so counting votes or matches never allocates.
pub const VOTERS_MAX: usize = 9;

/// Configuration of one node of a Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must be one of `voters`.
    pub id: NodeId,
    /// All voters of the group, this node included. Fixed for the group's life.
    pub voters: Vec<NodeId>,
    /// A follower (or candidate) that hears nothing from a leader for a random
    /// number of ticks in `election_timeout_ticks..2 * election_timeout_ticks`
    /// starts an election. Also the CheckQuorum period of a leader.
    pub election_timeout_ticks: u64,
    /// A leader broadcasts heartbeats, and a follower in `probe` may receive
    /// one more append, every this many ticks.
    pub heartbeat_interval_ticks: u64,
    /// Ask for votes only after a PreVote round shows a quorum would grant them.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers that heard from a leader within one ignore votes.
    pub check_quorum: bool,
    /// Serve reads under a leader lease instead of a heartbeat round. Needs
    /// `check_quorum`; assumes ticks of all nodes advance at the same rate.
    pub lease_reads: bool,
    /// Appends in flight to one follower in `replicate` state.
    pub inflight_msgs_max: usize,
    /// Record bytes in flight to one follower in `replicate` state.
    pub inflight_bytes_max: u64,
    /// Record bytes in one append, and bytes in one snapshot chunk. An append
    /// always carries at least one entry, even a larger one.
    pub msg_bytes_max: u64,
    /// Entries the core tracks metadata for (from the first unpurged entry to
    /// the last). The caller purges applied entries to make room.
    pub log_entries_max: usize,
    /// A leader refuses proposals while this many entries are uncommitted.
    /// Must leave room below `log_entries_max` for applied entries not yet
    /// purged and for the empty entries of leaders that fail before
    /// committing: a candidate whose log metadata is full cannot campaign.
    pub uncommitted_entries_max: usize,
    /// Runs of equal term the term index can hold.
    pub term_runs_max: usize,
    /// ReadIndex requests waiting for confirmation or for the caller to take them.
    pub reads_max: usize,
    /// Tasks that may await the `committed` and `applied` watermarks (each).
    pub watermark_waiters_max: usize,
}

/// A configuration the core refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `id` is not listed in `voters`.
    #[error("node {0} is not one of the voters")]
    NotAVoter(NodeId),
    /// No voters, more than [`VOTERS_MAX`], or a voter listed twice.
    #[error("voters must be 1..={VOTERS_MAX} distinct ids")]
    BadVoters,
    /// Heartbeats must be more frequent than elections.
    #[error(
        "heartbeat_interval_ticks ({heartbeat}) must be in 1..election_timeout_ticks ({election})"
    )]
    BadTimeouts {
        /// Configured heartbeat interval.
        heartbeat: u64,
        /// Configured election timeout.
        election: u64,
    },
    /// Lease reads are only safe when a leader steps down without a quorum.
    #[error("lease_reads requires check_quorum")]
    LeaseWithoutCheckQuorum,
    /// Uncommitted entries must leave room in the log metadata.
    #[error("uncommitted_entries_max must be below log_entries_max")]
    UncommittedNotBelowLog,
    /// The recovered log has more entries or terms than the bounds allow.
    #[error("the recovered log does not fit: {0}")]
    RecoveredLogTooLarge(super::log::LogFull),
    /// A bound is zero.
    #[error("`{0}` must be at least 1")]
    ZeroBound(&'static str),
}

impl Config {
    /// A configuration with the defaults used by tests and the simulator.
    pub fn new(id: NodeId, voters: &[NodeId]) -> Config {
        Config {
            id,
            voters: voters.to_vec(),
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            inflight_msgs_max: 16,
            inflight_bytes_max: 1 << 20,
            msg_bytes_max: 64 << 10,
            log_entries_max: 1 << 16,
            uncommitted_entries_max: 1 << 15,
            term_runs_max: 1024,
            reads_max: 64,
            watermark_waiters_max: 4,
        }
    }

    /// Checks the relationships between the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.voters.is_empty() || self.voters.len() > VOTERS_MAX {
            return Err(ConfigError::BadVoters);
        }
        for (i, v) in self.voters.iter().enumerate() {
            if self.voters[..i].contains(v) {
                return Err(ConfigError::BadVoters);
            }
        }
        if !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter(self.id));
        }
        if self.heartbeat_interval_ticks == 0
            || self.heartbeat_interval_ticks >= self.election_timeout_ticks
        {
            return Err(ConfigError::BadTimeouts {
                heartbeat: self.heartbeat_interval_ticks,
                election: self.election_timeout_ticks,
            });
        }
        if self.lease_reads && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        if self.uncommitted_entries_max >= self.log_entries_max {
            return Err(ConfigError::UncommittedNotBelowLog);
        }
        let bounds: [(&'static str, u64); 8] = [
            ("inflight_msgs_max", self.inflight_msgs_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("msg_bytes_max", self.msg_bytes_max),
            ("log_entries_max", self.log_entries_max as u64),
            (
                "uncommitted_entries_max",
                self.uncommitted_entries_max as u64,
            ),
            ("term_runs_max", self.term_runs_max as u64),
            ("reads_max", self.reads_max as u64),
            ("watermark_waiters_max", self.watermark_waiters_max as u64),
        ];
        for (name, value) in bounds {
            if value == 0 {
                return Err(ConfigError::ZeroBound(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_ones_are_named() {
        assert_eq!(Config::new(1, &[1, 2, 3]).validate(), Ok(()));
        assert_eq!(
            Config::new(4, &[1, 2, 3]).validate(),
            Err(ConfigError::NotAVoter(4))
        );
        assert_eq!(
            Config::new(1, &[1, 1, 2]).validate(),
            Err(ConfigError::BadVoters)
        );
        let mut c = Config::new(1, &[1, 2, 3]);
        c.heartbeat_interval_ticks = 10;
        assert!(matches!(c.validate(), Err(ConfigError::BadTimeouts { .. })));
        let mut c = Config::new(1, &[1, 2, 3]);
        c.check_quorum = false;
        c.lease_reads = true;
        assert_eq!(c.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
        let mut c = Config::new(1, &[1, 2, 3]);
        c.inflight_msgs_max = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroBound("inflight_msgs_max"))
        );
        let mut c = Config::new(1, &[1, 2, 3]);
        c.uncommitted_entries_max = c.log_entries_max;
        assert_eq!(c.validate(), Err(ConfigError::UncommittedNotBelowLog));
    }
}
