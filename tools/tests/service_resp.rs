//! The RESP2 parser as a connection sees it: commands survive the trip
//! through the writer, arrive whole whatever the TCP segment boundaries,
//! and arbitrary bytes never panic it.

use proptest::prelude::*;
use ringraft_tools::service::resp::{
    Limits, Parsed, Parser, ProtocolError, ReplyBuf, RespSink, parse_moved, reply_len,
};

type Args = Vec<Vec<u8>>;

/// Encodes commands as a client does (multibulk).
fn encode(commands: &[Args]) -> Vec<u8> {
    let mut out = ReplyBuf::new(1 << 20);
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        out.command(&args).unwrap();
    }
    out.as_bytes().to_vec()
}

/// Feeds `stream` to a parser in pieces cut at `cuts`, the way a
/// connection's input buffer fills: parse what is there, keep the rest.
fn receive(stream: &[u8], cuts: &[usize], limits: Limits) -> Result<Vec<Args>, ProtocolError> {
    let mut parser = Parser::new(limits);
    let mut buffer: Vec<u8> = Vec::new();
    let mut commands = Vec::new();
    let mut fed = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (stream.len() + 1)).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    for cut in cuts {
        buffer.extend_from_slice(&stream[fed..cut.max(fed)]);
        fed = fed.max(cut);
        loop {
            match parser.parse(&buffer)? {
                Parsed::Command(command, used) => {
                    assert!(used <= buffer.len());
                    commands.push(command.args().map(<[u8]>::to_vec).collect());
                    buffer.drain(..used);
                }
                Parsed::Incomplete { skipped } => {
                    buffer.drain(..skipped);
                    break;
                }
            }
        }
    }
    assert!(buffer.is_empty(), "bytes left after the last command");
    Ok(commands)
}

fn command() -> impl Strategy<Value = Args> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..12)
}

proptest! {
    #[test]
    fn multibulk_round_trips(commands in prop::collection::vec(command(), 1..8)) {
        let stream = encode(&commands);
        prop_assert_eq!(receive(&stream, &[], Limits::default()).unwrap(), commands);
    }

    #[test]
    fn any_split_points_give_the_same_commands(
        commands in prop::collection::vec(command(), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let stream = encode(&commands);
        prop_assert_eq!(receive(&stream, &cuts, Limits::default()).unwrap(), commands);
    }

    #[test]
    fn inline_commands_split_anywhere(
        words in prop::collection::vec(prop::collection::vec("[a-zA-Z0-9]{1,8}", 1..6), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for line in &words {
            stream.extend_from_slice(line.join(" ").as_bytes());
            stream.extend_from_slice(b"\r\n");
        }
        let expected: Vec<Args> = words
            .iter()
            .map(|line| line.iter().map(|w| w.as_bytes().to_vec()).collect())
            .collect();
        prop_assert_eq!(receive(&stream, &cuts, Limits::default()).unwrap(), expected);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits { command_args_max: 8, bulk_bytes_max: 64, inline_bytes_max: 64, command_bytes_max: 256 };
        let mut parser = Parser::new(limits);
        let mut at = 0;
        // Each call either consumes bytes, waits for more, or errs: it ends.
        while let Ok(Parsed::Command(command, used)) = parser.parse(&bytes[at..]) {
            prop_assert!(used > 0 && at + used <= bytes.len());
            prop_assert!(command.len() <= limits.command_args_max);
            prop_assert!(command.args().all(|arg| arg.len() <= limits.bulk_bytes_max.max(limits.inline_bytes_max)));
            at += used;
        }
    }

    #[test]
    fn garbage_after_valid_commands_leaves_them_intact(
        commands in prop::collection::vec(command(), 1..4),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut stream = encode(&commands);
        stream.extend_from_slice(&garbage);
        let mut parser = Parser::new(Limits::default());
        let mut at = 0;
        for expected in &commands {
            let (command, used) = parser.parse(&stream[at..]).unwrap().command().unwrap();
            prop_assert_eq!(&command.args().map(<[u8]>::to_vec).collect::<Args>(), expected);
            at += used;
        }
    }
}

#[test]
fn a_bulk_argument_may_hold_crlf_and_binary() {
    let commands = vec![vec![
        b"SET".to_vec(),
        b"k".to_vec(),
        b"a\r\nb\0\xff".to_vec(),
    ]];
    let stream = encode(&commands);
    assert_eq!(
        stream,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\r\nb\0\xff\r\n"
    );
    assert_eq!(
        receive(&stream, &[9, 20], Limits::default()).unwrap(),
        commands
    );
}

#[test]
fn a_bound_is_checked_as_soon_as_its_header_arrives() {
    let limits = Limits {
        bulk_bytes_max: 100,
        ..Limits::default()
    };
    // The 101-byte body never has to arrive for the error to show.
    assert_eq!(
        receive(b"*2\r\n$3\r\nGET\r\n$101\r\n", &[], limits),
        Err(ProtocolError::InvalidBulkLength)
    );
    let limits = Limits {
        command_args_max: 3,
        ..Limits::default()
    };
    assert_eq!(
        receive(b"*4\r\n", &[], limits),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    // A length header that never ends is malformed, not a reason to wait.
    assert_eq!(
        receive(
            b"*11111111111111111111111111111111111",
            &[],
            Limits::default()
        ),
        Err(ProtocolError::InvalidMultibulkLength)
    );
}

/// A reply tree, written with the server's writer.
#[derive(Debug, Clone)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Reply>),
}

fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        "[a-zA-Z ]{0,12}".prop_map(Reply::Simple),
        "[A-Z]{1,4} [a-z ]{0,12}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Integer),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Reply::Bulk),
        Just(Reply::Null),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop::collection::vec(inner, 0..5).prop_map(Reply::Array)
    })
}

fn write_reply(reply: &Reply, out: &mut ReplyBuf) {
    match reply {
        Reply::Simple(text) => out.simple(text.as_bytes()).unwrap(),
        Reply::Error(text) => out.error(text.as_bytes()).unwrap(),
        Reply::Integer(n) => out.integer(*n).unwrap(),
        Reply::Bulk(bytes) => out.bulk(bytes).unwrap(),
        Reply::Null => out.null_bulk().unwrap(),
        Reply::Array(items) => {
            out.array(items.len()).unwrap();
            items.iter().for_each(|item| write_reply(item, out));
        }
    }
}

proptest! {
    #[test]
    fn a_client_finds_where_each_reply_ends(replies in prop::collection::vec(reply(), 1..6)) {
        let mut lengths = Vec::new();
        let mut out = ReplyBuf::new(1 << 16);
        for reply in &replies {
            let before = out.as_bytes().len();
            write_reply(reply, &mut out);
            lengths.push(out.as_bytes().len() - before);
        }
        let stream = out.as_bytes();
        let mut at = 0;
        for &len in &lengths {
            // Every strict prefix of a reply is incomplete.
            for cut in [0, len / 2, len - 1] {
                prop_assert_eq!(reply_len(&stream[at..at + cut]).unwrap(), None);
            }
            prop_assert_eq!(reply_len(&stream[at..]).unwrap(), Some(len));
            at += len;
        }
    }

    #[test]
    fn reply_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some(len)) = reply_len(&bytes) {
            prop_assert!(len <= bytes.len());
        }
    }
}

#[test]
fn moved_replies_name_slot_and_address() {
    assert_eq!(
        parse_moved(b"-MOVED 12182 127.0.0.1:7003\r\n"),
        Some((12182, "127.0.0.1:7003"))
    );
    assert_eq!(parse_moved(b"-MOVED 16384 127.0.0.1:7003"), None);
    assert_eq!(parse_moved(b"-ERR x"), None);
    assert_eq!(
        reply_len(b"!x\r\n"),
        Err(ProtocolError::UnexpectedReplyType { got: b'!' })
    );
}

#[test]
fn a_client_sending_only_empty_requests_cannot_fill_the_buffer() {
    // Blank lines and empty multibulks, forever: every read can be dropped.
    let noise = b"\r\n*0\r\n\n*-1\r\n".repeat(1000);
    assert_eq!(
        receive(&noise, &[5, 999, 4000], Limits::default()).unwrap(),
        Vec::<Args>::new()
    );
    let mut parser = Parser::new(Limits::default());
    match parser.parse(&noise).unwrap() {
        Parsed::Incomplete { skipped } => assert_eq!(skipped, noise.len()),
        Parsed::Command(..) => panic!("no command in noise"),
    }
}

#[test]
fn a_command_arriving_byte_by_byte_resumes_where_it_stopped() {
    let mut out = ReplyBuf::new(1 << 16);
    let value = vec![b'x'; 3000];
    let args: Vec<&[u8]> = [&b"XADD"[..], b"s", b"*"]
        .into_iter()
        .chain(std::iter::repeat_n(&value[..], 10))
        .collect();
    out.command(&args).unwrap();
    out.put(b"PING with words\r\n").unwrap();
    let stream = out.as_bytes();
    let cuts: Vec<usize> = (0..stream.len()).collect();
    let got = receive(stream, &cuts, Limits::default()).unwrap();
    let expected: Vec<Args> = vec![
        args.iter().map(|a| a.to_vec()).collect(),
        vec![b"PING".to_vec(), b"with".to_vec(), b"words".to_vec()],
    ];
    assert_eq!(got, expected);
}
