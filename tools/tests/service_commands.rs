//! What a Redis client observes, byte for byte: requests go through the
//! parser and `dispatch`, writes through the log payload and `Kv::apply`
//! (committed at once, as a single-node group would), reads through
//! `Kv::query`. Node 1 of 3; group g (of 3) is led by node g + 1.

use ringraft_engine::raft::{ProgressState, Role};
use ringraft_engine::shard::{Entry, ResponseSlots, StateMachine};
use ringraft_tools::service::command::{
    Action, PeerStatus, ReplicationStatus, ServerView, command_slot, dispatch,
};
use ringraft_tools::service::kv::{Kv, KvConfig};
use ringraft_tools::service::resp::{Limits, Parsed, Parser, ReplyBuf, RespSink};
use ringraft_tools::service::slots::{NodeAddr, RoutingTable, key_slot};
use ringraft_wal::IoId;

struct Node {
    routing: RoutingTable,
    shards: Vec<ReplicationStatus>,
    groups: Vec<Kv>,
    slots: ResponseSlots,
    index: u64,
    parser: Parser,
    payload: Vec<u8>,
    now_ms: u64,
}

fn nodes() -> Vec<NodeAddr> {
    (1..=3)
        .map(|id| NodeAddr {
            id,
            client: format!("127.0.0.1:{}", 7000 + id).parse().unwrap(),
            bus_port: 17000 + id as u16,
        })
        .collect()
}

impl Node {
    fn new() -> Node {
        let mut routing = RoutingTable::new(1, &nodes(), 3).unwrap();
        for group in 0..3 {
            routing
                .set_leader(group, Some(u64::from(group) + 1))
                .unwrap();
        }
        let leader = ReplicationStatus {
            role: Role::Leader,
            term: 4,
            leader: Some(1),
            commit: 10,
            applied: 9,
            snapshot_index: 4,
            peers: vec![
                PeerStatus {
                    node: 2,
                    matched: 10,
                    state: ProgressState::Replicate,
                },
                PeerStatus {
                    node: 3,
                    matched: 0,
                    state: ProgressState::Probe,
                },
            ],
        };
        let follower = |leader| ReplicationStatus {
            role: Role::Follower,
            term: 3,
            leader: Some(leader),
            commit: 7,
            applied: 7,
            snapshot_index: 0,
            peers: Vec::new(),
        };
        Node {
            routing,
            shards: vec![leader, follower(2), follower(3)],
            groups: (0..3).map(|_| Kv::new(KvConfig::default())).collect(),
            slots: ResponseSlots::new(64, 128),
            index: 0,
            parser: Parser::new(Limits::default()),
            payload: vec![0; 4096],
            now_ms: 1000,
        }
    }

    /// Sends `request` on one connection; returns the bytes the client
    /// receives and whether the server closes the connection.
    fn send(&mut self, request: &[u8]) -> (Vec<u8>, bool) {
        let mut out = ReplyBuf::new(1 << 16);
        let mut at = 0;
        let view = ServerView {
            cluster_id: 7,
            routing: &self.routing,
            shards: &self.shards,
            fsync: true,
        };
        loop {
            let (command, used) = match self.parser.parse(&request[at..]) {
                Ok(Parsed::Command(command, used)) => (command, used),
                Ok(Parsed::Incomplete { skipped }) => {
                    assert_eq!(at + skipped, request.len(), "a request was cut short");
                    return (out.as_bytes().to_vec(), false);
                }
                Err(error) => {
                    error.write_reply(&mut out).unwrap();
                    return (out.as_bytes().to_vec(), true);
                }
            };
            at += used;
            match dispatch(&command, &view, self.now_ms, &mut self.payload, &mut out).unwrap() {
                Action::Replied => {}
                Action::Close => return (out.as_bytes().to_vec(), true),
                Action::Propose {
                    group,
                    payload_bytes,
                    ..
                } => {
                    self.index += 1;
                    let id = IoId::new(1, self.index);
                    let entry = Entry {
                        id,
                        payload: &self.payload[..payload_bytes],
                    };
                    let kv = &mut self.groups[usize::from(group)];
                    kv.apply(std::iter::once(entry), &mut self.slots).unwrap();
                    out.put(self.slots.response(id).unwrap()).unwrap();
                }
                Action::Read {
                    group,
                    request_bytes,
                    ..
                } => {
                    let kv = &self.groups[usize::from(group)];
                    kv.query(&self.payload[..request_bytes], &mut out.writer())
                        .unwrap();
                }
            }
        }
    }

    fn reply(&mut self, request: &str) -> String {
        let (bytes, closed) = self.send(request.as_bytes());
        assert!(!closed, "connection closed after {request:?}");
        String::from_utf8(bytes).unwrap()
    }
}

#[test]
fn ping_echo_and_inline_commands() {
    let mut node = Node::new();
    assert_eq!(node.reply("PING\r\n"), "+PONG\r\n");
    assert_eq!(node.reply("ping\n"), "+PONG\r\n");
    assert_eq!(
        node.reply("*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n"),
        "$2\r\nhi\r\n"
    );
    assert_eq!(node.reply("ECHO \"a b\"\r\n"), "$3\r\na b\r\n");
    assert_eq!(
        node.reply("PING a b\r\n"),
        "-ERR wrong number of arguments for 'ping' command\r\n"
    );
}

#[test]
fn set_get_del_on_a_local_slot() {
    let mut node = Node::new();
    // "bar" is slot 5061, group 0, led by this node.
    assert_eq!(key_slot(b"bar"), 5061);
    assert_eq!(node.reply("GET bar\r\n"), "$-1\r\n");
    assert_eq!(node.reply("SET bar hello\r\n"), "+OK\r\n");
    assert_eq!(node.reply("GET bar\r\n"), "$5\r\nhello\r\n");
    assert_eq!(node.reply("SET bar \"\"\r\n"), "+OK\r\n");
    assert_eq!(node.reply("GET bar\r\n"), "$0\r\n\r\n");
    // Pipelined, mixed forms.
    assert_eq!(
        node.reply("SET {bar}x 1\r\n*2\r\n$3\r\nGET\r\n$6\r\n{bar}x\r\nDEL bar {bar}x {bar}y\r\nGET bar\r\n"),
        "+OK\r\n$1\r\n1\r\n:2\r\n$-1\r\n"
    );
    assert_eq!(
        node.reply("DEL bar foo\r\n"),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        node.reply("SET bar v EX 10\r\n"),
        "-ERR SET options (NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL) are not supported\r\n"
    );
    assert_eq!(node.reply("GET bar\r\n"), "$-1\r\n");
}

#[test]
fn keys_of_groups_led_elsewhere_are_moved() {
    let mut node = Node::new();
    assert_eq!(
        node.reply("SET foo 1\r\n"),
        "-MOVED 12182 127.0.0.1:7003\r\n"
    );
    assert_eq!(node.reply("GET foo\r\n"), "-MOVED 12182 127.0.0.1:7003\r\n");
    assert_eq!(
        node.reply("XLEN foo\r\n"),
        "-MOVED 12182 127.0.0.1:7003\r\n"
    );
    node.routing.set_leader(2, None).unwrap();
    assert_eq!(
        node.reply("GET foo\r\n"),
        "-CLUSTERDOWN No leader elected yet for hash slot 12182\r\n"
    );
    node.routing.set_leader(2, Some(1)).unwrap();
    assert_eq!(node.reply("SET foo 1\r\n"), "+OK\r\n");
}

#[test]
fn streams_add_and_range() {
    let mut node = Node::new();
    let key = "{bar}s";
    assert_eq!(
        node.reply(&format!("XADD {key} * f v\r\n")),
        "$6\r\n1000-0\r\n"
    );
    assert_eq!(
        node.reply(&format!("XADD {key} * g w h x\r\n")),
        "$6\r\n1000-1\r\n"
    );
    // The next leader's clock is behind: the id still grows.
    node.now_ms = 900;
    assert_eq!(
        node.reply(&format!("XADD {key} * a b\r\n")),
        "$6\r\n1000-2\r\n"
    );
    assert_eq!(
        node.reply(&format!("XADD {key} 2000-5 c d\r\n")),
        "$6\r\n2000-5\r\n"
    );
    assert_eq!(
        node.reply(&format!("XADD {key} 2000-* e f\r\n")),
        "$6\r\n2000-6\r\n"
    );
    assert_eq!(
        node.reply(&format!("XADD {key} 1500 c d\r\n")),
        "-ERR The ID specified in XADD is equal or smaller than the target stream top item\r\n"
    );
    assert_eq!(
        node.reply("XADD {bar}new 0-0 c d\r\n"),
        "-ERR The ID specified in XADD must be greater than 0-0\r\n"
    );
    assert_eq!(
        node.reply(&format!("XADD {key} 1-x c d\r\n")),
        "-ERR Invalid stream ID specified as stream command argument\r\n"
    );
    assert_eq!(
        node.reply(&format!("XADD {key} * c\r\n")),
        "-ERR wrong number of arguments for 'xadd' command\r\n"
    );
    assert_eq!(
        node.reply(&format!("XADD {key} MAXLEN 10 * c d\r\n")),
        "-ERR XADD options (NOMKSTREAM, MAXLEN, MINID, LIMIT) are not supported\r\n"
    );
    assert_eq!(node.reply(&format!("XLEN {key}\r\n")), ":5\r\n");
    assert_eq!(node.reply("XLEN {bar}none\r\n"), ":0\r\n");
    assert_eq!(
        node.reply(&format!("XRANGE {key} - + COUNT 2\r\n")),
        "*2\r\n\
         *2\r\n$6\r\n1000-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n\
         *2\r\n$6\r\n1000-1\r\n*4\r\n$1\r\ng\r\n$1\r\nw\r\n$1\r\nh\r\n$1\r\nx\r\n"
    );
    assert_eq!(
        node.reply(&format!("XRANGE {key} (1000-2 2000\r\n")),
        "*2\r\n\
         *2\r\n$6\r\n2000-5\r\n*2\r\n$1\r\nc\r\n$1\r\nd\r\n\
         *2\r\n$6\r\n2000-6\r\n*2\r\n$1\r\ne\r\n$1\r\nf\r\n"
    );
    assert_eq!(
        node.reply(&format!("XRANGE {key} 1000-2 1000-2\r\n")),
        "*1\r\n*2\r\n$6\r\n1000-2\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert_eq!(node.reply(&format!("XRANGE {key} + -\r\n")), "*0\r\n");
    assert_eq!(
        node.reply(&format!("XRANGE {key} - + COUNT 0\r\n")),
        "*0\r\n"
    );
    assert_eq!(node.reply("XRANGE {bar}none - +\r\n"), "*0\r\n");
    assert_eq!(
        node.reply(&format!("XRANGE {key} - + COUNT x\r\n")),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        node.reply(&format!("XRANGE {key} - + LIMIT 1\r\n")),
        "-ERR syntax error\r\n"
    );
    // Types are kept apart.
    let wrongtype = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    assert_eq!(node.reply(&format!("GET {key}\r\n")), wrongtype);
    node.reply("SET {bar}str v\r\n");
    assert_eq!(node.reply("XADD {bar}str * a b\r\n"), wrongtype);
    assert_eq!(node.reply("XLEN {bar}str\r\n"), wrongtype);
    // SET replaces a stream, as in Redis.
    assert_eq!(node.reply(&format!("SET {key} plain\r\n")), "+OK\r\n");
    assert_eq!(node.reply(&format!("GET {key}\r\n")), "$5\r\nplain\r\n");
}

#[test]
fn unknown_commands_and_arity_errors_keep_the_connection() {
    let mut node = Node::new();
    assert_eq!(
        node.reply("FOO a b\r\nPING\r\n"),
        "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n+PONG\r\n"
    );
    assert_eq!(
        node.reply("*2\r\n$3\r\nBAR\r\n$3\r\nx\ny\r\n"),
        "-ERR unknown command 'BAR', with args beginning with: 'x y' \r\n"
    );
    assert_eq!(
        node.reply("GET\r\nGET a b\r\nSET a\r\n"),
        "-ERR wrong number of arguments for 'get' command\r\n\
         -ERR wrong number of arguments for 'get' command\r\n\
         -ERR wrong number of arguments for 'set' command\r\n"
    );
    assert_eq!(
        node.reply("CLUSTER FOO\r\n"),
        "-ERR unknown subcommand 'FOO'. Try CLUSTER HELP.\r\n"
    );
    assert_eq!(
        node.reply("COMMAND DOCS\r\n"),
        "-ERR unknown subcommand 'DOCS'. Try COMMAND HELP.\r\n"
    );
    assert_eq!(node.reply("SELECT 0\r\nREADONLY\r\n"), "+OK\r\n+OK\r\n");
    assert_eq!(
        node.reply("SELECT 1\r\n"),
        "-ERR SELECT is not allowed in cluster mode\r\n"
    );
    assert_eq!(node.send(b"QUIT\r\n"), (b"+OK\r\n".to_vec(), true));
}

#[test]
fn a_malformed_stream_gets_an_error_then_the_close() {
    let mut node = Node::new();
    let (reply, closed) = node.send(b"PING\r\n*1\r\n+PING\r\n");
    assert_eq!(
        reply,
        b"+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    );
    assert!(closed);
    let (reply, closed) = node.send(b"*x\r\n");
    assert_eq!(reply, b"-ERR Protocol error: invalid multibulk length\r\n");
    assert!(closed);
}

#[test]
fn cluster_topology_replies() {
    let mut node = Node::new();
    assert_eq!(node.reply("CLUSTER KEYSLOT foo\r\n"), ":12182\r\n");
    assert_eq!(
        node.reply("CLUSTER KEYSLOT {user1000}.following\r\n"),
        node.reply("CLUSTER KEYSLOT {user1000}.followers\r\n")
    );
    let name = |id: u64| format!("000000000000000000000007{id:016x}");
    assert_eq!(
        node.reply("CLUSTER MYID\r\n"),
        format!("$40\r\n{}\r\n", name(1))
    );
    let nodes = format!(
        "{} 127.0.0.1:7001@17001 myself,master - 0 0 0 connected 0-5460\n\
         {} 127.0.0.1:7002@17002 master - 0 0 0 connected 5461-10921\n\
         {} 127.0.0.1:7003@17003 master - 0 0 0 connected 10922-16383\n",
        name(1),
        name(2),
        name(3)
    );
    assert_eq!(
        node.reply("CLUSTER NODES\r\n"),
        format!("${}\r\n{nodes}\r\n", nodes.len())
    );
    let slot_node = |id: u64| {
        format!(
            "*3\r\n$9\r\n127.0.0.1\r\n:{}\r\n$40\r\n{}\r\n",
            7000 + id,
            name(id)
        )
    };
    let range = |start: u32, end: u32, ids: [u64; 3]| {
        format!(
            "*5\r\n:{start}\r\n:{end}\r\n{}{}{}",
            slot_node(ids[0]),
            slot_node(ids[1]),
            slot_node(ids[2])
        )
    };
    assert_eq!(
        node.reply("CLUSTER SLOTS\r\n"),
        format!(
            "*3\r\n{}{}{}",
            range(0, 5460, [1, 2, 3]),
            range(5461, 10921, [2, 1, 3]),
            range(10922, 16383, [3, 1, 2])
        )
    );
    let shards = node.reply("CLUSTER SHARDS\r\n");
    assert!(shards.starts_with(
        "*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*3\r\n*14\r\n$2\r\nid\r\n"
    ));
    assert_eq!(shards.matches("$6\r\nmaster\r\n").count(), 3);
    assert_eq!(shards.matches("$7\r\nreplica\r\n").count(), 6);

    // Node 2 steps down in group 1 and nobody leads it yet; node 3 leads
    // groups 1 and 2 later: node 2 shows as a replica.
    node.routing.set_leader(1, None).unwrap();
    let info = node.reply("CLUSTER INFO\r\n");
    assert!(info.contains("cluster_state:fail\r\n"), "{info}");
    assert!(info.contains("cluster_slots_ok:10923\r\n"), "{info}");
    assert_eq!(
        node.reply("CLUSTER SLOTS\r\n").matches(":5461\r\n").count(),
        0
    );
    node.routing.set_leader(1, Some(3)).unwrap();
    let info = node.reply("CLUSTER INFO\r\n");
    assert!(
        info.contains(
            "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"
        ),
        "{info}"
    );
    assert!(
        info.contains("cluster_known_nodes:3\r\ncluster_size:2\r\ncluster_current_epoch:4\r\n"),
        "{info}"
    );
    let nodes = node.reply("CLUSTER NODES\r\n");
    assert!(
        nodes.contains(&format!(
            "127.0.0.1:7002@17002 slave {} 0 0 0 connected\n",
            name(1)
        )),
        "{nodes}"
    );
    assert!(
        nodes.contains("master - 0 0 0 connected 5461-10921 10922-16383\n"),
        "{nodes}"
    );
}

#[test]
fn info_and_config_as_clients_read_them() {
    let mut node = Node::new();
    let info = node.reply("INFO replication\r\n");
    let body = "# Replication\r\nrole:master\r\nshards:3\r\n\
         shard0:role=leader,term=4,leader=1,commit=10,applied=9,snapshot_index=4\r\n\
         shard0_peer0:id=2,match=10,state=replicate\r\n\
         shard0_peer1:id=3,match=0,state=probe\r\n\
         shard1:role=follower,term=3,leader=2,commit=7,applied=7,snapshot_index=0\r\n\
         shard2:role=follower,term=3,leader=3,commit=7,applied=7,snapshot_index=0\r\n";
    assert_eq!(info, format!("${}\r\n{body}\r\n", body.len()));
    let all = node.reply("INFO\r\n");
    assert!(all.contains("# Server\r\nredis_version:7.0.0\r\n"), "{all}");
    assert!(all.contains("shards:3\r\ndurability:fsync\r\n"), "{all}");
    assert!(all.contains("\r\n\r\n# Replication\r\n"), "{all}");
    assert!(all.contains("# Cluster\r\ncluster_enabled:1\r\n"), "{all}");
    assert_eq!(node.reply("INFO nosuchsection\r\n"), "$0\r\n\r\n");
    // What redis-benchmark asks every master.
    assert_eq!(
        node.reply("CONFIG GET save\r\nCONFIG GET appendonly\r\n"),
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"
    );
    assert_eq!(node.reply("CONFIG GET maxmemory\r\n"), "*0\r\n");
    assert_eq!(
        node.reply("CONFIG SET save x\r\n"),
        "-ERR CONFIG subcommand 'SET' is not supported, only CONFIG GET\r\n"
    );
    assert_eq!(node.reply("COMMAND COUNT\r\n"), ":16\r\n");
    assert_eq!(
        node.reply("COMMAND INFO get nope\r\n"),
        "*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*-1\r\n"
    );
}

#[test]
fn the_slot_is_known_before_dispatch() {
    let mut parser = Parser::new(Limits::default());
    let slot_of = |parser: &mut Parser, request: &[u8]| {
        let (command, _) = parser.parse(request).unwrap().command().unwrap();
        command_slot(&command)
    };
    assert_eq!(slot_of(&mut parser, b"SET foo 1\r\n"), Some(12182));
    assert_eq!(slot_of(&mut parser, b"xrange {foo}s - +\r\n"), Some(12182));
    assert_eq!(slot_of(&mut parser, b"DEL bar foo\r\n"), Some(5061));
    assert_eq!(slot_of(&mut parser, b"GET\r\n"), None);
    assert_eq!(slot_of(&mut parser, b"PING\r\n"), None);
    assert_eq!(slot_of(&mut parser, b"CLUSTER KEYSLOT foo\r\n"), None);

    // The action carries the slot, for a -MOVED if leadership moves before
    // the proposal.
    let node = Node::new();
    let view = ServerView {
        cluster_id: 7,
        routing: &node.routing,
        shards: &node.shards,
        fsync: true,
    };
    let (command, _) = parser.parse(b"SET bar 1\r\n").unwrap().command().unwrap();
    let mut out = ReplyBuf::new(128);
    let action = dispatch(&command, &view, 0, &mut [0u8; 64], &mut out).unwrap();
    assert_eq!(
        action,
        Action::Propose {
            group: 0,
            slot: 5061,
            payload_bytes: 1 + 4 + 4 + 3 + 1
        }
    );
    // Too small a log buffer: a clear error instead of a proposal.
    let action = dispatch(&command, &view, 0, &mut [0u8; 8], &mut out).unwrap();
    assert_eq!(action, Action::Replied);
    assert_eq!(
        out.as_bytes(),
        b"-ERR command too large for one log entry\r\n"
    );
    // A full output buffer: nothing written, the caller retries later.
    let mut tiny = ReplyBuf::new(4);
    let (command, _) = parser.parse(b"PING hello\r\n").unwrap().command().unwrap();
    assert!(dispatch(&command, &view, 0, &mut [0u8; 8], &mut tiny).is_err());
    assert_eq!(tiny.as_bytes(), b"");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use ringraft_tools::service::resp::reply_len;

    fn arg() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                "SET",
                "get",
                "DEL",
                "xadd",
                "XRANGE",
                "xlen",
                "INFO",
                "cluster",
                "COMMAND",
                "CONFIG",
                "ping",
                "ECHO",
                "SELECT",
                "slots",
                "NODES",
                "shards",
                "keyslot",
                "myid",
                "info",
                "help",
                "COUNT",
                "docs",
                "GET",
                "*",
                "-",
                "+",
                "(1-1",
                "5-*",
                "0-0",
                "1",
                "18446744073709551615-18446744073709551615",
                "-1",
                "{bar}s",
                "bar",
                "foo",
                "MAXLEN",
                "EX",
                "replication",
                "save",
                "appendonly",
            ])
            .prop_map(|s: &str| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the arguments, every command gets exactly one
        /// well-formed reply and the connection stays open (QUIT aside).
        #[test]
        fn every_command_gets_exactly_one_well_formed_reply(
            commands in prop::collection::vec(prop::collection::vec(arg(), 1..7), 1..8),
        ) {
            let mut node = Node::new();
            for args in &commands {
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                let mut request = ReplyBuf::new(1 << 12);
                request.command(&args).unwrap();
                let quit = args[0].eq_ignore_ascii_case(b"QUIT");
                let (reply, closed) = node.send(request.as_bytes());
                prop_assert_eq!(closed, quit);
                prop_assert_eq!(reply_len(&reply).unwrap(), Some(reply.len()), "{:?}", String::from_utf8_lossy(&reply));
            }
        }
    }
}
