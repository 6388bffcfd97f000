//! One client connection: read RESP, dispatch, and for writes and
//! linearizable reads go through the group's shard mailbox; reply in order.
//!
//! Every buffer is allocated once per connection: the input buffer holds one
//! whole command at most (`Limits::command_bytes_max`), the reply buffer is
//! written to the socket whenever it passes half full.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ringraft_engine::shard::{Node, RequestError};
use ringraft_tools::service::command::{Action, ServerView, dispatch, write_route_error};
use ringraft_tools::service::resp::{Limits, Parsed, Parser, ReplyBuf, RespSink};
use ringraft_tools::service::slots::{Route, RoutingTable};

use super::Shared;

/// Reply bytes kept before they are written out.
const REPLY_FLUSH_BYTES: usize = 256 << 10;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn refresh_routing(node: &Node, routing: &mut RoutingTable) {
    for group in 0..node.shards() {
        // A leader id outside the table cannot come from a validated config.
        let _ = routing.set_leader(group as u16, node.leader(group));
    }
}

/// Serves one client until it closes or breaks the protocol.
pub fn serve(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let limits = Limits::default();
    let mut parser = Parser::new(limits);
    let mut input = vec![0u8; limits.command_bytes_max].into_boxed_slice();
    let mut filled = 0;
    let mut out = ReplyBuf::new(2 * REPLY_FLUSH_BYTES + limits.command_bytes_max);
    let mut payload = vec![0u8; limits.command_bytes_max + 4096].into_boxed_slice();
    let mut reply = Vec::with_capacity(64 << 10);
    let mut routing = shared.routing.clone();
    let mut statuses = shared.replication_status();
    loop {
        let n = stream.read(&mut input[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut at = 0;
        let mut close = false;
        loop {
            let (command, used) = match parser.parse(&input[at..filled]) {
                Ok(Parsed::Command(command, used)) => (command, used),
                Ok(Parsed::Incomplete { skipped }) => {
                    at += skipped;
                    break;
                }
                Err(error) => {
                    let _ = error.write_reply(&mut out);
                    close = true;
                    break;
                }
            };
            at += used;
            refresh_routing(&shared.node, &mut routing);
            let name = command.name();
            if name.eq_ignore_ascii_case(b"INFO") || name.eq_ignore_ascii_case(b"CLUSTER") {
                statuses = shared.replication_status();
            }
            let view = ServerView {
                cluster_id: shared.cluster_id,
                routing: &routing,
                shards: &statuses,
                fsync: shared.fsync,
            };
            let action = match dispatch(&command, &view, now_ms(), &mut payload, &mut out) {
                Ok(action) => action,
                Err(_) => {
                    let _ = out.error(b"ERR reply too large");
                    Action::Replied
                }
            };
            match action {
                Action::Replied => {}
                Action::Close => close = true,
                Action::Propose {
                    group,
                    slot,
                    payload_bytes,
                } => {
                    let result = shared.node.propose(
                        u32::from(group),
                        &payload[..payload_bytes],
                        &mut reply,
                    );
                    answer(result, &reply, slot, &shared.node, &mut routing, &mut out);
                }
                Action::Read {
                    group,
                    slot,
                    request_bytes,
                } => {
                    let result = shared.node.read_index(
                        u32::from(group),
                        &payload[..request_bytes],
                        &mut reply,
                    );
                    answer(result, &reply, slot, &shared.node, &mut routing, &mut out);
                }
            }
            if close {
                break;
            }
            if out.as_bytes().len() >= REPLY_FLUSH_BYTES {
                stream.write_all(out.as_bytes())?;
                out.clear();
            }
        }
        if !out.as_bytes().is_empty() {
            stream.write_all(out.as_bytes())?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        input.copy_within(at..filled, 0);
        filled -= at;
    }
}

fn answer(
    result: Result<(), RequestError>,
    reply: &[u8],
    slot: u16,
    node: &Node,
    routing: &mut RoutingTable,
    out: &mut ReplyBuf,
) {
    let written = match result {
        Ok(()) => out.put(reply),
        Err(RequestError::NotLeader { .. }) => {
            refresh_routing(node, routing);
            match routing.route(slot) {
                // Our view still says local: leadership is moving right now.
                Route::Local { .. } => out.error(b"TRYAGAIN leadership is changing"),
                route => write_route_error(route, out),
            }
        }
        Err(RequestError::Busy) => out.error(b"TRYAGAIN the group is busy, retry"),
        Err(RequestError::Dropped) => {
            out.error(b"TRYAGAIN the write was dropped by a leader change, retry")
        }
        Err(RequestError::Stopped) => out.error(b"ERR shard stopped"),
        Err(error) => {
            let text = format!("TRYAGAIN {error}");
            out.error(text.as_bytes())
        }
    };
    if written.is_err() {
        let _ = out.error(b"ERR reply too large");
    }
}
