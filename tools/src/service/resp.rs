//! RESP2: the request parser and the reply writer.
//!
//! Requests come in two forms:
//!
//! ```text
//!  multibulk:  *<n>\r\n  then n times  $<len>\r\n<len bytes>\r\n
//!              e.g. *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n
//!  inline:     a line of words separated by spaces, ending in \n or \r\n
//!              (what telnet sends): PING\r\n   SET k "hello world"\r\n
//! ```
//!
//! [`Parser::parse`] looks at the front of the connection's input buffer
//! and returns one whole [`Command`] whose arguments borrow from that
//! buffer (spans kept in a table sized once, so no allocation per command)
//! plus the number of bytes it used, or [`Parsed::Incomplete`] when the
//! buffer holds only part of a command: the caller reads more and calls
//! again with the same buffer front, and the parser resumes at the first
//! argument it had not finished (bulk bodies are skipped by length, never
//! scanned), so a command trickling in byte by byte costs linear time.
//! Pipelined commands come out one per call.
//!
//! Bounds (a [`Limits`] field each): arguments per command
//! (`command_args_max`), bytes per bulk argument (`bulk_bytes_max`), bytes
//! per inline line (`inline_bytes_max`) and bytes per whole command
//! (`command_bytes_max`, so the caller's input buffer has a fixed size). A
//! request that breaks one is a [`ProtocolError`]; as in Redis, the server
//! then writes the error and closes the connection, because the stream can
//! no longer be framed. Errors of a well-framed command (unknown command,
//! wrong arity) are replies, and the connection stays usable.
//!
//! Inline quoting: `"..."` and `'...'` group words; escapes (`\n`, `\x41`)
//! are not supported (the argument would no longer be a slice of the
//! input) and are a protocol error.
//!
//! Replies go through [`RespSink`], implemented by the engine's
//! [`ResponseWriter`] (apply replies, query replies) and by [`ReplyBuf`]
//! (a connection's bounded output buffer).

use ringraft_engine::shard::{ResponseTooLarge, ResponseWriter};

/// The bounds a request must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Arguments in one command (the name included).
    pub command_args_max: usize,
    /// Bytes in one bulk argument.
    pub bulk_bytes_max: usize,
    /// Bytes in one inline request line.
    pub inline_bytes_max: usize,
    /// Bytes of one whole command as framed on the wire; a connection's
    /// input buffer of this size always holds a full command.
    pub command_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            command_args_max: 1024,
            bulk_bytes_max: 512 * 1024,
            inline_bytes_max: 64 * 1024,
            command_bytes_max: 1024 * 1024,
        }
    }
}

/// A length header (`*<n>\r\n`, `$<n>\r\n`) longer than this is malformed.
const HEADER_BYTES_MAX: usize = 32;

/// A request stream that cannot be framed or breaks a bound. The message is
/// the reply text after `-ERR Protocol error: `, as Redis words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*` header not a number, or more arguments than `command_args_max`.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` header not a number, negative, or above `bulk_bytes_max`.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// Something other than `$` where a bulk argument should start.
    #[error("expected '$', got '{}'", char::from(*.got))]
    ExpectedBulk {
        /// The byte found.
        got: u8,
    },
    /// A bulk argument not followed by `\r\n`.
    #[error("bulk argument not terminated by CRLF")]
    BulkNotTerminated,
    /// An inline line longer than `inline_bytes_max`.
    #[error("too big inline request")]
    InlineTooBig,
    /// An inline quote left open, or closed and not followed by a space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A backslash inside inline double quotes.
    #[error("escapes in quoted inline arguments are not supported")]
    InlineEscape,
    /// More inline words than `command_args_max`.
    #[error("too many arguments in inline request")]
    InlineTooManyArgs,
    /// A command larger than `command_bytes_max`.
    #[error("command larger than the connection buffer")]
    CommandTooLarge,
    /// (Client side) a reply that starts with none of `+ - : $ *`.
    #[error("unexpected reply type '{}'", char::from(*.got))]
    UnexpectedReplyType {
        /// The byte found.
        got: u8,
    },
}

impl ProtocolError {
    /// Writes the error reply the server sends before closing.
    pub fn write_reply<S: RespSink + ?Sized>(&self, sink: &mut S) -> Result<(), ResponseTooLarge> {
        sink.put(b"-ERR Protocol error: ")?;
        let mut text = [0u8; 64];
        let len = {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            write!(cursor, "{self}").expect("protocol messages fit 64 bytes");
            cursor.position() as usize
        };
        sink.put(&text[..len])?;
        sink.put(b"\r\n")
    }
}

/// Argument `i` is `input[start..end]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// One parsed command; its arguments borrow from the input buffer.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    input: &'a [u8],
    spans: &'a [Span],
}

impl<'a> Command<'a> {
    /// Number of arguments, the command name included (at least 1).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Never true: empty requests are skipped by the parser.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i` (0 is the command name).
    pub fn arg(&self, i: usize) -> &'a [u8] {
        let span = self.spans[i];
        &self.input[span.start..span.end]
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> &'a [u8] {
        self.arg(0)
    }

    /// Every argument in order.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone + use<'a> {
        let input = self.input;
        self.spans
            .iter()
            .map(move |span| &input[span.start..span.end])
    }
}

/// The request parser of one connection: the span table, sized once by
/// `command_args_max`, and where it stopped inside a partial command.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// Argument i of the command being parsed is `request[spans[i]]`, in
    /// offsets from the command's first byte.
    spans: Box<[Span]>,
    progress: Progress,
}

/// How far the parse of a partial command at the front of the input got,
/// so the next call resumes there instead of rescanning. Kept only for a
/// command that starts at offset 0 (nothing skipped before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Fresh,
    /// `done` of `argc` arguments are whole; the next starts at `pos`.
    Multibulk {
        argc: usize,
        done: usize,
        pos: usize,
    },
    /// The first `scanned` bytes hold no newline.
    Inline {
        scanned: usize,
    },
}

/// Outcome of a header line read.
enum Line {
    /// The number and the offset just past its `\r\n`.
    Number(i64, usize),
    Incomplete,
    Malformed,
}

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Parser {
        assert!(limits.command_args_max > 0, "command_args_max must be > 0");
        Parser {
            limits,
            spans: vec![Span::default(); limits.command_args_max].into_boxed_slice(),
            progress: Progress::Fresh,
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses the first whole command of `input`, or says that none has
    /// fully arrived (and how many bytes of empty requests in front may be
    /// dropped already), or fails with a protocol error after which the
    /// connection must be closed.
    ///
    /// Contract: after [`Parsed::Incomplete`], the next call gets the same
    /// bytes at the front (minus at most the `skipped` ones), more appended.
    /// The parser then resumes where it stopped.
    pub fn parse<'a>(&'a mut self, input: &'a [u8]) -> Result<Parsed<'a>, ProtocolError> {
        let mut start = 0;
        let progress = std::mem::replace(&mut self.progress, Progress::Fresh);
        loop {
            if start == input.len() {
                return Ok(Parsed::Incomplete { skipped: start });
            }
            let request = &input[start..];
            // Progress belongs to a command at offset 0 only.
            let resume = if start == 0 {
                progress
            } else {
                Progress::Fresh
            };
            let outcome = if request[0] == b'*' {
                self.parse_multibulk(request, resume)?
            } else {
                self.parse_inline(request, resume)?
            };
            match outcome {
                Framed::Incomplete(progress) => {
                    if start == 0 {
                        self.progress = progress;
                    }
                    return Ok(Parsed::Incomplete { skipped: start });
                }
                Framed::Empty { end } => start += end,
                Framed::Command { argc, end } => {
                    let command = Command {
                        input: request,
                        spans: &self.spans[..argc],
                    };
                    return Ok(Parsed::Command(command, start + end));
                }
            }
        }
    }

    /// Parses a multibulk request at the front of `request` (offsets are
    /// from its first byte).
    fn parse_multibulk(
        &mut self,
        request: &[u8],
        resume: Progress,
    ) -> Result<Framed, ProtocolError> {
        let (argc, done, mut pos) = match resume {
            Progress::Multibulk { argc, done, pos } if pos <= request.len() => (argc, done, pos),
            _ => {
                let (count, pos) = match read_number(request, 1) {
                    Line::Number(n, end) => (n, end),
                    Line::Incomplete => return Ok(Framed::Incomplete(Progress::Fresh)),
                    Line::Malformed => return Err(ProtocolError::InvalidMultibulkLength),
                };
                if count <= 0 {
                    return Ok(Framed::Empty { end: pos });
                }
                let argc =
                    usize::try_from(count).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
                if argc > self.limits.command_args_max {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                (argc, 0, pos)
            }
        };
        for i in done..argc {
            let incomplete = Framed::Incomplete(Progress::Multibulk { argc, done: i, pos });
            let Some(&first) = request.get(pos) else {
                return Ok(incomplete);
            };
            if first != b'$' {
                return Err(ProtocolError::ExpectedBulk { got: first });
            }
            let (len, body) = match read_number(request, pos + 1) {
                Line::Number(n, end) => (n, end),
                Line::Incomplete => return Ok(incomplete),
                Line::Malformed => return Err(ProtocolError::InvalidBulkLength),
            };
            let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
            if len > self.limits.bulk_bytes_max {
                return Err(ProtocolError::InvalidBulkLength);
            }
            let end = body + len + 2;
            if end > self.limits.command_bytes_max {
                return Err(ProtocolError::CommandTooLarge);
            }
            if end > request.len() {
                return Ok(incomplete);
            }
            if &request[body + len..end] != b"\r\n" {
                return Err(ProtocolError::BulkNotTerminated);
            }
            self.spans[i] = Span {
                start: body,
                end: body + len,
            };
            pos = end;
        }
        Ok(Framed::Command { argc, end: pos })
    }

    /// Parses an inline request at the front of `request`.
    fn parse_inline(&mut self, request: &[u8], resume: Progress) -> Result<Framed, ProtocolError> {
        let scanned = match resume {
            Progress::Inline { scanned } if scanned <= request.len() => scanned,
            _ => 0,
        };
        let window_end = request.len().min(self.limits.inline_bytes_max + 1);
        let Some(newline) = request[scanned..window_end]
            .iter()
            .position(|&b| b == b'\n')
        else {
            if window_end > self.limits.inline_bytes_max {
                return Err(ProtocolError::InlineTooBig);
            }
            return Ok(Framed::Incomplete(Progress::Inline {
                scanned: window_end,
            }));
        };
        let line_end = scanned + newline;
        let end = line_end + 1;
        if end > self.limits.command_bytes_max {
            return Err(ProtocolError::CommandTooLarge);
        }
        let argc = self.split_words(&request[..line_end])?;
        if argc == 0 {
            return Ok(Framed::Empty { end });
        }
        Ok(Framed::Command { argc, end })
    }

    /// Splits an inline line into words (quotes group), filling the span
    /// table; returns the word count.
    fn split_words(&mut self, line: &[u8]) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        let mut argc = 0;
        loop {
            while pos < line.len() && line[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos == line.len() {
                return Ok(argc);
            }
            let span = match line[pos] {
                quote @ (b'"' | b'\'') => {
                    let body = pos + 1;
                    let Some(len) = line[body..].iter().position(|&b| b == quote) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if quote == b'"' && line[body..body + len].contains(&b'\\') {
                        return Err(ProtocolError::InlineEscape);
                    }
                    pos = body + len + 1;
                    if pos < line.len() && !line[pos].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    Span {
                        start: body,
                        end: body + len,
                    }
                }
                _ => {
                    let word = pos;
                    while pos < line.len() && !line[pos].is_ascii_whitespace() {
                        pos += 1;
                    }
                    Span {
                        start: word,
                        end: pos,
                    }
                }
            };
            if argc == self.limits.command_args_max {
                return Err(ProtocolError::InlineTooManyArgs);
            }
            self.spans[argc] = span;
            argc += 1;
        }
    }
}

/// What [`Parser::parse`] found at the front of the input.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A whole command, and the bytes it used (empty requests before it
    /// included): drop them once the command is handled.
    Command(Command<'a>, usize),
    /// No whole command yet: read more. The first `skipped` bytes were
    /// empty requests (blank lines, `*0`) and may be dropped now, so that a
    /// client sending only those cannot fill the input buffer.
    Incomplete {
        /// Bytes that may be dropped.
        skipped: usize,
    },
}

impl<'a> Parsed<'a> {
    /// The command and the bytes it used, if one was whole.
    pub fn command(self) -> Option<(Command<'a>, usize)> {
        match self {
            Parsed::Command(command, used) => Some((command, used)),
            Parsed::Incomplete { .. } => None,
        }
    }
}

/// What one request at the front of the buffer turned out to be.
enum Framed {
    /// Not whole yet; where the parse stopped.
    Incomplete(Progress),
    /// An empty request (`*0`, `*-1`, a blank line): skipped.
    Empty {
        end: usize,
    },
    Command {
        argc: usize,
        end: usize,
    },
}

/// Reads `[-]digits\r\n` at `pos`.
fn read_number(input: &[u8], pos: usize) -> Line {
    let window = &input[pos.min(input.len())..input.len().min(pos + HEADER_BYTES_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() == HEADER_BYTES_MAX {
            Line::Malformed
        } else {
            Line::Incomplete
        };
    };
    match window.get(cr + 1) {
        None => return Line::Incomplete,
        Some(b'\n') => {}
        Some(_) => return Line::Malformed,
    }
    let text = &window[..cr];
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Line::Malformed;
    }
    let magnitude = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    let value = if negative { -magnitude } else { magnitude };
    Line::Number(value, pos + cr + 2)
}

/// Client side: the length of the first whole reply at the front of
/// `input`, nested arrays included, or None if it has not fully arrived.
/// Allocates nothing: an array only adds to the count of elements still
/// expected.
pub fn reply_len(input: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let mut pos = 0;
    // Elements still expected; each consumes at least 3 bytes, so the loop
    // ends with the input.
    let mut remaining: u64 = 1;
    while remaining > 0 {
        let Some(&kind) = input.get(pos) else {
            return Ok(None);
        };
        remaining -= 1;
        match kind {
            b'+' | b'-' | b':' => {
                let Some(cr) = input[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += cr + 2;
            }
            b'$' | b'*' => {
                let (n, end) = match read_number(input, pos + 1) {
                    Line::Number(n, end) => (n, end),
                    Line::Incomplete => return Ok(None),
                    Line::Malformed if kind == b'$' => {
                        return Err(ProtocolError::InvalidBulkLength);
                    }
                    Line::Malformed => return Err(ProtocolError::InvalidMultibulkLength),
                };
                pos = end;
                match (kind, u64::try_from(n)) {
                    (_, Err(_)) => {} // -1: the null bulk or null array
                    (b'$', Ok(len)) => {
                        let body_end = pos as u64 + len + 2;
                        if body_end > input.len() as u64 {
                            return Ok(None);
                        }
                        pos = body_end as usize;
                        if &input[pos - 2..pos] != b"\r\n" {
                            return Err(ProtocolError::BulkNotTerminated);
                        }
                    }
                    (_, Ok(count)) => remaining = remaining.saturating_add(count),
                }
            }
            got => return Err(ProtocolError::UnexpectedReplyType { got }),
        }
    }
    Ok(Some(pos))
}

/// Client side: the slot and address of a `-MOVED <slot> <ip>:<port>`
/// reply (with or without its CRLF), or None for any other reply.
pub fn parse_moved(reply: &[u8]) -> Option<(u16, &str)> {
    let text = reply.strip_prefix(b"-MOVED ")?;
    let text = text.strip_suffix(b"\r\n").unwrap_or(text);
    let text = std::str::from_utf8(text).ok()?;
    let (slot, addr) = text.split_once(' ')?;
    let slot: u16 = slot.parse().ok()?;
    (slot < super::slots::SLOTS && !addr.is_empty()).then_some((slot, addr))
}

/// Formats `n` in decimal into `buf`, returning the digits.
pub fn format_u64(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut rest = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return &buf[i..];
        }
    }
}

/// Somewhere a reply can be written, bounded. Every helper writes one RESP2
/// element; a reply that does not fit leaves the sink partly written, so a
/// caller that must stay well-formed records [`RespSink::written_len`]
/// first and truncates back on error.
pub trait RespSink {
    /// Appends `bytes` whole, or nothing and an error.
    fn put(&mut self, bytes: &[u8]) -> Result<(), ResponseTooLarge>;

    /// Bytes written so far.
    fn written_len(&self) -> usize;

    /// Drops everything after the first `len` bytes.
    fn truncate_to(&mut self, len: usize);

    /// `+text\r\n`
    fn simple(&mut self, text: &[u8]) -> Result<(), ResponseTooLarge> {
        self.put(b"+")?;
        self.put(text)?;
        self.put(b"\r\n")
    }

    /// `-text\r\n` (text includes the prefix word, e.g. `ERR ...`).
    fn error(&mut self, text: &[u8]) -> Result<(), ResponseTooLarge> {
        self.put(b"-")?;
        self.put(text)?;
        self.put(b"\r\n")
    }

    /// `:n\r\n`
    fn integer(&mut self, n: i64) -> Result<(), ResponseTooLarge> {
        let mut digits = [0u8; 20];
        self.put(b":")?;
        if n < 0 {
            self.put(b"-")?;
        }
        self.put(format_u64(n.unsigned_abs(), &mut digits))?;
        self.put(b"\r\n")
    }

    /// A length header: `<prefix><n>\r\n`.
    fn header(&mut self, prefix: u8, n: usize) -> Result<(), ResponseTooLarge> {
        let mut digits = [0u8; 20];
        self.put(&[prefix])?;
        self.put(format_u64(n as u64, &mut digits))?;
        self.put(b"\r\n")
    }

    /// `$len\r\nbytes\r\n`
    fn bulk(&mut self, bytes: &[u8]) -> Result<(), ResponseTooLarge> {
        self.header(b'$', bytes.len())?;
        self.put(bytes)?;
        self.put(b"\r\n")
    }

    /// `$-1\r\n`, the null bulk string (GET of a missing key).
    fn null_bulk(&mut self) -> Result<(), ResponseTooLarge> {
        self.put(b"$-1\r\n")
    }

    /// `*n\r\n`, followed by n elements.
    fn array(&mut self, n: usize) -> Result<(), ResponseTooLarge> {
        self.header(b'*', n)
    }

    /// A request as clients send it: a multibulk of the arguments.
    fn command(&mut self, args: &[&[u8]]) -> Result<(), ResponseTooLarge> {
        self.array(args.len())?;
        args.iter().try_for_each(|arg| self.bulk(arg))
    }
}

impl RespSink for ResponseWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ResponseTooLarge> {
        self.write(bytes)
    }

    fn written_len(&self) -> usize {
        self.len()
    }

    fn truncate_to(&mut self, len: usize) {
        self.truncate(len);
    }
}

/// A bounded output buffer allocated once (a connection's reply buffer).
#[derive(Debug)]
pub struct ReplyBuf {
    bytes: Box<[u8]>,
    len: usize,
}

impl ReplyBuf {
    /// A buffer of `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> ReplyBuf {
        ReplyBuf {
            bytes: vec![0; capacity_bytes].into_boxed_slice(),
            len: 0,
        }
    }

    /// What has been written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Empties it (after the bytes were sent).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// A writer over the free space, for the engine's `query`.
    pub fn writer(&mut self) -> ResponseWriter<'_> {
        ResponseWriter::new(&mut self.bytes, &mut self.len)
    }
}

impl RespSink for ReplyBuf {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ResponseTooLarge> {
        self.writer().write(bytes)
    }

    fn written_len(&self) -> usize {
        self.len
    }

    fn truncate_to(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut parser = Parser::new(Limits::default());
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((command, used)) = parser.parse(&input[at..])?.command() {
            out.push(command.args().map(<[u8]>::to_vec).collect());
            at += used;
        }
        Ok(out)
    }

    #[test]
    fn inline_and_multibulk_pipelined() {
        let input = b"PING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n\r\n  set a  \"b c\" 'd'\n";
        let got = parse_all(input).unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"PING".to_vec()],
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![
                    b"set".to_vec(),
                    b"a".to_vec(),
                    b"b c".to_vec(),
                    b"d".to_vec()
                ],
            ]
        );
    }

    #[test]
    fn malformed_streams_are_named_errors() {
        assert_eq!(
            parse_all(b"*x\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n+PING\r\n"),
            Err(ProtocolError::ExpectedBulk { got: b'+' })
        );
        assert_eq!(
            parse_all(b"*1\r\n$-3\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n$1\r\nab\r\n"),
            Err(ProtocolError::BulkNotTerminated)
        );
        assert_eq!(
            parse_all(b"SET \"a b\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"SET \"a\"b\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"SET \"a\\n\"\n"),
            Err(ProtocolError::InlineEscape)
        );
        // Empty requests are skipped.
        assert_eq!(parse_all(b"*0\r\n*-1\r\n\r\n").unwrap().len(), 0);
    }

    #[test]
    fn bounds_are_enforced_before_the_body_arrives() {
        let limits = Limits {
            command_args_max: 2,
            bulk_bytes_max: 4,
            inline_bytes_max: 8,
            command_bytes_max: 32,
        };
        let mut parser = Parser::new(limits);
        assert_eq!(
            parser.parse(b"*3\r\n").unwrap_err(),
            ProtocolError::InvalidMultibulkLength
        );
        assert_eq!(
            parser.parse(b"*1\r\n$5\r\n").unwrap_err(),
            ProtocolError::InvalidBulkLength
        );
        assert_eq!(
            parser.parse(b"PINGPINGPING").unwrap_err(),
            ProtocolError::InlineTooBig
        );
        assert_eq!(
            parser.parse(b"a b c\n").unwrap_err(),
            ProtocolError::InlineTooManyArgs
        );
        assert!(matches!(
            parser.parse(b"PINGPING").unwrap(),
            Parsed::Incomplete { skipped: 0 }
        ));
        // Empty requests alone may be dropped before any command arrives.
        let mut parser = Parser::new(limits);
        assert!(matches!(
            parser.parse(b"\r\n*0\r\n\nPI").unwrap(),
            Parsed::Incomplete { skipped: 7 }
        ));
        let mut parser = Parser::new(Limits {
            command_bytes_max: 16,
            ..limits
        });
        assert_eq!(
            parser.parse(b"*2\r\n$4\r\nabcd\r\n$4\r\n").unwrap_err(),
            ProtocolError::CommandTooLarge
        );
    }

    #[test]
    fn protocol_error_reply_text() {
        let mut out = ReplyBuf::new(128);
        ProtocolError::ExpectedBulk { got: b'+' }
            .write_reply(&mut out)
            .unwrap();
        assert_eq!(
            out.as_bytes(),
            b"-ERR Protocol error: expected '$', got '+'\r\n"
        );
    }

    #[test]
    fn writer_elements() {
        let mut out = ReplyBuf::new(64);
        out.simple(b"OK").unwrap();
        out.integer(-12).unwrap();
        out.bulk(b"hi").unwrap();
        out.null_bulk().unwrap();
        out.array(0).unwrap();
        assert_eq!(out.as_bytes(), b"+OK\r\n:-12\r\n$2\r\nhi\r\n$-1\r\n*0\r\n");
        let mut tiny = ReplyBuf::new(4);
        assert!(tiny.bulk(b"hello").is_err());
    }
}
