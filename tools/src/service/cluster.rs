//! The CLUSTER replies: how a cluster-aware client learns which node leads
//! which slots. A node that leads at least one group is a "master" of that
//! group's slot range; the others are "replicas".
//!
//! | subcommand | reply |
//! |---|---|
//! | `SLOTS` | per group with a leader: `[start, end, [ip, port, name], replicas...]` |
//! | `SHARDS` | per group: `slots` and `nodes` maps (id, port, ip, endpoint, role, replication-offset, health) |
//! | `NODES` | one line per node (`\n`-terminated), masters with their slot ranges |
//! | `INFO` | `cluster_state:ok` when every group has a leader, counts, epoch (max local term) |
//! | `MYID` | this node's 40-hex name |
//! | `KEYSLOT key` | the key's slot |

use super::command::{ServerView, bulk_text, unknown_subcommand, wrong_arity};
use super::resp::{Command, RespSink};
use super::slots::{SLOTS, key_slot};
use ringraft_engine::shard::ResponseTooLarge;

/// A node's 40-hex-digit name (CLUSTER MYID/NODES/SLOTS): 8 zeros, the
/// cluster id (16 digits), then the node id (16 digits).
pub fn node_name(cluster_id: u64, node_id: u64) -> [u8; 40] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = [b'0'; 40];
    let (cluster_part, node_part) = name[8..].split_at_mut(16);
    for (part, id) in [(cluster_part, cluster_id), (node_part, node_id)] {
        for (i, digit) in part.iter_mut().enumerate() {
            *digit = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
    name
}

/// Writes `addr`'s IP as text into `buf`.
fn ip_text(addr: std::net::SocketAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{}", addr.ip()).expect("an IP fits 64 bytes");
    let len = cursor.position() as usize;
    &buf[..len]
}

fn name_str(name: &[u8; 40]) -> &str {
    std::str::from_utf8(name).expect("hex digits")
}

/// Groups this node leads.
pub(super) fn leads_any(view: &ServerView<'_>, node: u64) -> bool {
    let groups = view.routing.slot_map().groups();
    (0..groups).any(|group| {
        view.routing
            .leader(group)
            .is_some_and(|leader| leader.id == node)
    })
}

pub(super) fn cluster<S: RespSink>(
    command: &Command<'_>,
    view: &ServerView<'_>,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let sub = command.arg(1);
    let is = |name: &[u8]| name.eq_ignore_ascii_case(sub);
    let arity_ok = |n: usize| command.len() == n;
    if is(b"KEYSLOT") {
        if !arity_ok(3) {
            return wrong_arity("cluster|keyslot", out);
        }
        return out.integer(i64::from(key_slot(command.arg(2))));
    }
    let fixed: [(&[u8], &str); 6] = [
        (b"SLOTS", "cluster|slots"),
        (b"SHARDS", "cluster|shards"),
        (b"NODES", "cluster|nodes"),
        (b"INFO", "cluster|info"),
        (b"MYID", "cluster|myid"),
        (b"HELP", "cluster|help"),
    ];
    let Some((name, full)) = fixed.iter().find(|(name, _)| is(name)) else {
        return unknown_subcommand(command, "CLUSTER", out);
    };
    if !arity_ok(2) {
        return wrong_arity(full, out);
    }
    match *name {
        b"SLOTS" => cluster_slots(view, out),
        b"SHARDS" => cluster_shards(view, out),
        b"NODES" => bulk_text(out, |text| cluster_nodes(view, text)),
        b"INFO" => bulk_text(out, |text| cluster_info(view, text)),
        b"MYID" => out.bulk(&node_name(view.cluster_id, view.routing.me())),
        _ => {
            const HELP: [&[u8]; 7] = [
                b"CLUSTER <subcommand> [<arg> ...]. Subcommands are:",
                b"INFO, MYID, NODES, SHARDS, SLOTS",
                b"KEYSLOT <key>",
                b"Slots map to Raft groups in contiguous ranges;",
                b"a group's leader serves its slots,",
                b"other nodes answer -MOVED.",
                b"HELP",
            ];
            out.array(HELP.len())?;
            HELP.iter().try_for_each(|line| out.simple(line))
        }
    }
}

/// Writes one node as CLUSTER SLOTS lists it: `[ip, port, name]`.
fn slots_node<S: RespSink>(
    view: &ServerView<'_>,
    id: u64,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let node = view.routing.node(id).expect("routing nodes are known");
    let mut ip = [0u8; 64];
    out.array(3)?;
    out.bulk(ip_text(node.client, &mut ip))?;
    out.integer(i64::from(node.client.port()))?;
    out.bulk(&node_name(view.cluster_id, id))
}

fn cluster_slots<S: RespSink>(view: &ServerView<'_>, out: &mut S) -> Result<(), ResponseTooLarge> {
    let map = view.routing.slot_map();
    let led = |group: u16| view.routing.leader(group);
    let groups = (0..map.groups()).filter(|&g| led(g).is_some());
    out.array(groups.clone().count())?;
    for group in groups {
        let leader = led(group).expect("filtered").id;
        let (start, end) = map.range(group);
        out.array(2 + view.routing.nodes().len())?;
        out.integer(i64::from(start))?;
        out.integer(i64::from(end))?;
        slots_node(view, leader, out)?;
        for node in view.routing.nodes().iter().filter(|node| node.id != leader) {
            slots_node(view, node.id, out)?;
        }
    }
    Ok(())
}

fn cluster_shards<S: RespSink>(view: &ServerView<'_>, out: &mut S) -> Result<(), ResponseTooLarge> {
    let map = view.routing.slot_map();
    out.array(usize::from(map.groups()))?;
    for group in 0..map.groups() {
        let leader = view.routing.leader(group).map(|node| node.id);
        let (start, end) = map.range(group);
        out.array(4)?;
        out.bulk(b"slots")?;
        out.array(2)?;
        out.integer(i64::from(start))?;
        out.integer(i64::from(end))?;
        out.bulk(b"nodes")?;
        out.array(view.routing.nodes().len())?;
        for node in view.routing.nodes() {
            let mut ip = [0u8; 64];
            let ip = ip_text(node.client, &mut ip);
            out.array(14)?;
            out.bulk(b"id")?;
            out.bulk(&node_name(view.cluster_id, node.id))?;
            out.bulk(b"port")?;
            out.integer(i64::from(node.client.port()))?;
            out.bulk(b"ip")?;
            out.bulk(ip)?;
            out.bulk(b"endpoint")?;
            out.bulk(ip)?;
            out.bulk(b"role")?;
            out.bulk(if leader == Some(node.id) {
                b"master"
            } else {
                b"replica"
            })?;
            out.bulk(b"replication-offset")?;
            out.integer(0)?;
            out.bulk(b"health")?;
            out.bulk(b"online")?;
        }
    }
    Ok(())
}

/// CLUSTER NODES: one line per node, `\n`-terminated:
/// `<name> <ip>:<port>@<bus> <flags> <master|-> 0 0 0 connected <slots>`.
/// A node that leads at least one group is a `master` owning those
/// groups' ranges; one that leads none is a `slave` of the first known
/// leader (clients then route only to leaders).
fn cluster_nodes(view: &ServerView<'_>, text: &mut impl std::fmt::Write) -> std::fmt::Result {
    let map = view.routing.slot_map();
    let first_leader = (0..map.groups())
        .find_map(|g| view.routing.leader(g))
        .map(|n| n.id);
    for node in view.routing.nodes() {
        let name = node_name(view.cluster_id, node.id);
        write!(
            text,
            "{} {}:{}@{} ",
            name_str(&name),
            node.client.ip(),
            node.client.port(),
            node.bus_port
        )?;
        if node.id == view.routing.me() {
            text.write_str("myself,")?;
        }
        let master = leads_any(view, node.id) || first_leader.is_none();
        if master {
            text.write_str("master - 0 0 0 connected")?;
        } else {
            let leader = node_name(view.cluster_id, first_leader.expect("checked"));
            write!(text, "slave {} 0 0 0 connected", name_str(&leader))?;
        }
        for group in 0..map.groups() {
            if view
                .routing
                .leader(group)
                .is_some_and(|leader| leader.id == node.id)
            {
                let (start, end) = map.range(group);
                if start == end {
                    write!(text, " {start}")?;
                } else {
                    write!(text, " {start}-{end}")?;
                }
            }
        }
        text.write_str("\n")?;
    }
    Ok(())
}

fn cluster_info(view: &ServerView<'_>, text: &mut impl std::fmt::Write) -> std::fmt::Result {
    let map = view.routing.slot_map();
    let mut slots_ok = 0u32;
    let mut leaders = 0;
    for group in 0..map.groups() {
        if let Some(leader) = view.routing.leader(group) {
            let (start, end) = map.range(group);
            slots_ok += u32::from(end - start) + 1;
            let counted_before =
                (0..group).any(|g| view.routing.leader(g).is_some_and(|l| l.id == leader.id));
            if !counted_before {
                leaders += 1;
            }
        }
    }
    let epoch = view
        .shards
        .iter()
        .map(|status| status.term)
        .max()
        .unwrap_or(0);
    let state = if slots_ok == u32::from(SLOTS) {
        "ok"
    } else {
        "fail"
    };
    write!(
        text,
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{SLOTS}\r\n"
    )?;
    write!(
        text,
        "cluster_slots_ok:{slots_ok}\r\ncluster_slots_pfail:0\r\n"
    )?;
    write!(
        text,
        "cluster_slots_fail:{}\r\n",
        u32::from(SLOTS) - slots_ok
    )?;
    write!(
        text,
        "cluster_known_nodes:{}\r\ncluster_size:{leaders}\r\n",
        view.routing.nodes().len()
    )?;
    write!(
        text,
        "cluster_current_epoch:{epoch}\r\ncluster_my_epoch:{epoch}\r\n"
    )
}
