//! The INFO reply: `server`, `replication` (one line per local shard and,
//! on a group's leader, one per peer), `memory` (the live RSS beside the
//! start-up budget it must stay under) and `cluster` sections, as Redis
//! clients parse them (`key:value` lines, `# Section` headers, CRLF).

use super::cluster::leads_any;
use super::command::{ServerView, bulk_text};
use super::resp::{Command, RespSink};
use ringraft_engine::raft::{ProgressState, Role};
use ringraft_engine::shard::ResponseTooLarge;
use std::fmt::Write as _;

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
    }
}

fn state_name(state: ProgressState) -> &'static str {
    match state {
        ProgressState::Probe => "probe",
        ProgressState::Replicate => "replicate",
        ProgressState::Snapshot => "snapshot",
    }
}

const INFO_SECTIONS: [&str; 4] = ["server", "replication", "memory", "cluster"];

pub(super) fn info<S: RespSink>(
    command: &Command<'_>,
    view: &ServerView<'_>,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let wanted = |section: &str| {
        command.len() == 1
            || command.args().skip(1).any(|arg| {
                [section.as_bytes(), b"all", b"default", b"everything"]
                    .iter()
                    .any(|name| name.eq_ignore_ascii_case(arg))
            })
    };
    let selected: [bool; 4] = INFO_SECTIONS.map(wanted);
    // Read once: the reply's text is produced twice (length, then bytes).
    let memory = Memory {
        rss_bytes: super::process::rss_bytes(),
        budget_bytes: super::process::memory_budget_bytes(),
    };
    bulk_text(out, |text| {
        let mut first = true;
        for (section, _) in INFO_SECTIONS.iter().zip(selected).filter(|(_, on)| *on) {
            if !first {
                text.write_str("\r\n")?;
            }
            first = false;
            info_section(section, view, memory, text)?;
        }
        Ok(())
    })
}

/// The figures of `# Memory`.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_bytes: u64,
    budget_bytes: u64,
}

fn info_section(
    section: &str,
    view: &ServerView<'_>,
    memory: Memory,
    text: &mut impl std::fmt::Write,
) -> std::fmt::Result {
    let me = view.routing.me();
    match section {
        "server" => {
            write!(
                text,
                "# Server\r\nredis_version:7.0.0\r\nringraft_version:{}\r\n",
                env!("CARGO_PKG_VERSION")
            )?;
            write!(
                text,
                "redis_mode:cluster\r\nnode_id:{me}\r\ncluster_id:{}\r\n",
                view.cluster_id
            )?;
            write!(text, "shards:{}\r\n", view.shards.len())?;
            let durability = if view.fsync { "fsync" } else { "none" };
            write!(text, "durability:{durability}\r\n")
        }
        "replication" => {
            let role = if leads_any(view, me) {
                "master"
            } else {
                "slave"
            };
            write!(
                text,
                "# Replication\r\nrole:{role}\r\nshards:{}\r\n",
                view.shards.len()
            )?;
            for (shard, status) in view.shards.iter().enumerate() {
                write!(
                    text,
                    "shard{shard}:role={},term={},leader=",
                    role_name(status.role),
                    status.term
                )?;
                match status.leader {
                    Some(leader) => write!(text, "{leader}")?,
                    None => text.write_str("none")?,
                }
                // New keys go last: clients and the bench parse the line
                // by key, older ones by position up to `applied`.
                write!(
                    text,
                    ",commit={},applied={},snapshot_index={}\r\n",
                    status.commit, status.applied, status.snapshot_index
                )?;
                if status.role == Role::Leader {
                    for (i, peer) in status.peers.iter().enumerate() {
                        write!(
                            text,
                            "shard{shard}_peer{i}:id={},match={},state={}\r\n",
                            peer.node,
                            peer.matched,
                            state_name(peer.state)
                        )?;
                    }
                }
            }
            Ok(())
        }
        "memory" => {
            // `used_memory_rss` as Redis names it; the budget is the
            // worst case computed at start-up (`serve --print-budget`).
            write!(
                text,
                "# Memory\r\nused_memory_rss:{}\r\nmemory_budget_bytes:{}\r\n",
                memory.rss_bytes, memory.budget_bytes
            )
        }
        _ => text.write_str("# Cluster\r\ncluster_enabled:1\r\n"),
    }
}
