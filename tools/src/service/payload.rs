//! The binary form of a write (a log entry's payload) and of a read request
//! (a `StateMachine::query` argument). Written in place into a caller
//! buffer (the WAL ring, at the record's payload), decoded by borrowing.
//!
//! All integers little-endian; `bytes(n)` is n raw bytes.
//!
//! ```text
//! SET     | 0x01 | key_len u32 | value_len u32 | key bytes(key_len) | value bytes(value_len) |
//! DEL     | 0x02 | key_count u32 | key_count × ( key_len u32 | key ) |
//! XADD    | 0x03 | key_len u32 | id_mode u8 | ms u64 | seq u64 | fields_len u32 | key | fields |
//!           id_mode: 0 `*` (ms = leader clock, seq unused), 1 explicit ms-seq, 2 `<ms>-*`
//!           fields:  | pair_count u32 | 2·pair_count × ( len u32 | bytes(len) ) |
//! GET     | 0x81 | key_len u32 | key |
//! XLEN    | 0x82 | key_len u32 | key |
//! XRANGE  | 0x83 | key_len u32 | start_ms u64 | start_seq u64 | end_ms u64 | end_seq u64 |
//!           count u64 (u64::MAX: no COUNT) | key |
//! ```
//!
//! Writes (0x0_) go through the log; reads (0x8_) never do.

use super::stream::{StreamId, XaddId};

const OP_SET: u8 = 0x01;
const OP_DEL: u8 = 0x02;
const OP_XADD: u8 = 0x03;
const OP_GET: u8 = 0x81;
const OP_XLEN: u8 = 0x82;
const OP_XRANGE: u8 = 0x83;

/// The caller's buffer cannot hold the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payload larger than the {capacity_bytes}-byte buffer")]
pub struct PayloadTooLarge {
    /// The buffer's size.
    pub capacity_bytes: usize,
}

/// Bytes that are not a payload of this service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed payload")]
pub struct Malformed;

/// Appends to a fixed buffer.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), PayloadTooLarge> {
        let end = self.len + bytes.len();
        if end > self.buf.len() {
            return Err(PayloadTooLarge {
                capacity_bytes: self.buf.len(),
            });
        }
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn u32(&mut self, n: usize) -> Result<(), PayloadTooLarge> {
        let n = u32::try_from(n).map_err(|_| PayloadTooLarge {
            capacity_bytes: self.buf.len(),
        })?;
        self.bytes(&n.to_le_bytes())
    }

    fn u64(&mut self, n: u64) -> Result<(), PayloadTooLarge> {
        self.bytes(&n.to_le_bytes())
    }
}

/// Reads from a payload.
struct In<'a> {
    bytes: &'a [u8],
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.bytes.len() {
            return Err(Malformed);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, Malformed> {
        let bytes = self.take(4)?.try_into().expect("4 bytes");
        Ok(u32::from_le_bytes(bytes) as usize)
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }
}

/// Encodes `SET key value`; returns the payload's length.
pub fn encode_set(buf: &mut [u8], key: &[u8], value: &[u8]) -> Result<usize, PayloadTooLarge> {
    let mut out = Out { buf, len: 0 };
    out.bytes(&[OP_SET])?;
    out.u32(key.len())?;
    out.u32(value.len())?;
    out.bytes(key)?;
    out.bytes(value)?;
    Ok(out.len)
}

/// Encodes `DEL key...`.
pub fn encode_del<'k>(
    buf: &mut [u8],
    keys: impl ExactSizeIterator<Item = &'k [u8]>,
) -> Result<usize, PayloadTooLarge> {
    let mut out = Out { buf, len: 0 };
    out.bytes(&[OP_DEL])?;
    out.u32(keys.len())?;
    for key in keys {
        out.u32(key.len())?;
        out.bytes(key)?;
    }
    Ok(out.len)
}

/// Encodes `XADD key id field value ...`; `fields` alternate field and
/// value (an even count).
pub fn encode_xadd<'f>(
    buf: &mut [u8],
    key: &[u8],
    id: XaddId,
    fields: impl ExactSizeIterator<Item = &'f [u8]> + Clone,
) -> Result<usize, PayloadTooLarge> {
    assert!(fields.len().is_multiple_of(2), "fields come in pairs");
    let fields_len = 4 + fields.clone().map(|f| 4 + f.len()).sum::<usize>();
    let (mode, ms, seq) = match id {
        XaddId::Auto { now_ms } => (0, now_ms, 0),
        XaddId::Explicit(id) => (1, id.ms, id.seq),
        XaddId::AutoSeq { ms } => (2, ms, 0),
    };
    let mut out = Out { buf, len: 0 };
    out.bytes(&[OP_XADD])?;
    out.u32(key.len())?;
    out.bytes(&[mode])?;
    out.u64(ms)?;
    out.u64(seq)?;
    out.u32(fields_len)?;
    out.bytes(key)?;
    out.u32(fields.len() / 2)?;
    for field in fields {
        out.u32(field.len())?;
        out.bytes(field)?;
    }
    Ok(out.len)
}

/// Encodes a GET request.
pub fn encode_get(buf: &mut [u8], key: &[u8]) -> Result<usize, PayloadTooLarge> {
    encode_key_op(buf, OP_GET, key)
}

/// Encodes an XLEN request.
pub fn encode_xlen(buf: &mut [u8], key: &[u8]) -> Result<usize, PayloadTooLarge> {
    encode_key_op(buf, OP_XLEN, key)
}

fn encode_key_op(buf: &mut [u8], op: u8, key: &[u8]) -> Result<usize, PayloadTooLarge> {
    let mut out = Out { buf, len: 0 };
    out.bytes(&[op])?;
    out.u32(key.len())?;
    out.bytes(key)?;
    Ok(out.len)
}

/// Encodes an XRANGE request (`count`: None for no COUNT).
pub fn encode_xrange(
    buf: &mut [u8],
    key: &[u8],
    start: StreamId,
    end: StreamId,
    count: Option<u64>,
) -> Result<usize, PayloadTooLarge> {
    let mut out = Out { buf, len: 0 };
    out.bytes(&[OP_XRANGE])?;
    out.u32(key.len())?;
    for n in [
        start.ms,
        start.seq,
        end.ms,
        end.seq,
        count.unwrap_or(u64::MAX),
    ] {
        out.u64(n)?;
    }
    out.bytes(key)?;
    Ok(out.len)
}

/// A decoded write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// SET key value.
    Set {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// DEL key...
    Del {
        /// The keys.
        keys: Keys<'a>,
    },
    /// XADD key id fields.
    Xadd {
        /// The stream's key.
        key: &'a [u8],
        /// How the id is chosen.
        id: XaddId,
        /// The encoded field list (`pair_count u32 | (len u32 | bytes)*`).
        fields: Fields<'a>,
    },
}

/// A decoded read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read<'a> {
    /// GET key.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// XLEN key.
    Xlen {
        /// The key.
        key: &'a [u8],
    },
    /// XRANGE key start end [COUNT n].
    Xrange {
        /// The key.
        key: &'a [u8],
        /// First id (inclusive).
        start: StreamId,
        /// Last id (inclusive).
        end: StreamId,
        /// Most entries to return (None: all).
        count: Option<u64>,
    },
}

/// The keys of a DEL, validated, iterated without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a> {
    count: usize,
    bytes: &'a [u8],
}

impl<'a> Keys<'a> {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The keys in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        LenPrefixed { bytes: self.bytes }
    }
}

/// An encoded field list: `pair_count u32 | 2·pair_count × (len u32 | bytes)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pairs: usize,
    encoded: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Validates an encoded field list.
    pub fn decode(encoded: &'a [u8]) -> Result<Fields<'a>, Malformed> {
        let mut input = In { bytes: encoded };
        let pairs = input.u32()?;
        if pairs == 0 {
            return Err(Malformed);
        }
        let values = pairs.checked_mul(2).ok_or(Malformed)?;
        for _ in 0..values {
            let len = input.u32()?;
            input.take(len)?;
        }
        input.end()?;
        Ok(Fields { pairs, encoded })
    }

    /// Number of field/value pairs.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// The whole encoding (what a stream stores).
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// Field, value, field, value, ...
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        LenPrefixed {
            bytes: &self.encoded[4..],
        }
    }
}

/// Iterates `len u32 | bytes` items of already validated bytes.
struct LenPrefixed<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for LenPrefixed<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let mut input = In { bytes: self.bytes };
        let len = input.u32().ok()?;
        let item = input.take(len).expect("validated at decode");
        self.bytes = input.bytes;
        Some(item)
    }
}

/// Decodes a write payload.
pub fn decode_write(payload: &[u8]) -> Result<Write<'_>, Malformed> {
    let mut input = In { bytes: payload };
    let write = match input.u8()? {
        OP_SET => {
            let key_len = input.u32()?;
            let value_len = input.u32()?;
            Write::Set {
                key: input.take(key_len)?,
                value: input.take(value_len)?,
            }
        }
        OP_DEL => {
            let count = input.u32()?;
            let bytes = input.bytes;
            for _ in 0..count {
                let len = input.u32()?;
                input.take(len)?;
            }
            Write::Del {
                keys: Keys { count, bytes },
            }
        }
        OP_XADD => {
            let key_len = input.u32()?;
            let mode = input.u8()?;
            let ms = input.u64()?;
            let seq = input.u64()?;
            let fields_len = input.u32()?;
            let key = input.take(key_len)?;
            let fields = Fields::decode(input.take(fields_len)?)?;
            let id = match mode {
                0 => XaddId::Auto { now_ms: ms },
                1 => XaddId::Explicit(StreamId { ms, seq }),
                2 => XaddId::AutoSeq { ms },
                _ => return Err(Malformed),
            };
            Write::Xadd { key, id, fields }
        }
        _ => return Err(Malformed),
    };
    input.end()?;
    Ok(write)
}

/// Decodes a read request.
pub fn decode_read(request: &[u8]) -> Result<Read<'_>, Malformed> {
    let mut input = In { bytes: request };
    let op = input.u8()?;
    let key_len = input.u32()?;
    let read = match op {
        OP_GET => Read::Get {
            key: input.take(key_len)?,
        },
        OP_XLEN => Read::Xlen {
            key: input.take(key_len)?,
        },
        OP_XRANGE => {
            let start = StreamId {
                ms: input.u64()?,
                seq: input.u64()?,
            };
            let end = StreamId {
                ms: input.u64()?,
                seq: input.u64()?,
            };
            let count = Some(input.u64()?).filter(|&n| n != u64::MAX);
            Read::Xrange {
                key: input.take(key_len)?,
                start,
                end,
                count,
            }
        }
        _ => return Err(Malformed),
    };
    input.end()?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_round_trip() {
        let mut buf = [0u8; 128];
        let n = encode_set(&mut buf, b"k", b"value").unwrap();
        assert_eq!(n, 1 + 4 + 4 + 1 + 5);
        assert_eq!(
            decode_write(&buf[..n]),
            Ok(Write::Set {
                key: b"k",
                value: b"value"
            })
        );
        let keys: [&[u8]; 2] = [b"a", b"bc"];
        let n = encode_del(&mut buf, keys.into_iter()).unwrap();
        let Ok(Write::Del { keys: decoded }) = decode_write(&buf[..n]) else {
            panic!("not a DEL");
        };
        assert_eq!(decoded.iter().collect::<Vec<_>>(), keys);
        let fields: [&[u8]; 4] = [b"f", b"v", b"g", b""];
        let id = XaddId::Auto { now_ms: 42 };
        let n = encode_xadd(&mut buf, b"s", id, fields.into_iter()).unwrap();
        let Ok(Write::Xadd {
            key,
            id: decoded_id,
            fields: decoded,
        }) = decode_write(&buf[..n])
        else {
            panic!("not an XADD");
        };
        assert_eq!((key, decoded_id, decoded.pairs()), (&b"s"[..], id, 2));
        assert_eq!(decoded.iter().collect::<Vec<_>>(), fields);
        // Truncated or extended payloads are refused.
        assert_eq!(decode_write(&buf[..n - 1]), Err(Malformed));
        assert_eq!(decode_write(&buf[..n + 1]), Err(Malformed));
        assert_eq!(
            encode_set(&mut buf[..8], b"k", b"v"),
            Err(PayloadTooLarge { capacity_bytes: 8 })
        );
    }

    #[test]
    fn reads_round_trip() {
        let mut buf = [0u8; 128];
        let start = StreamId { ms: 1, seq: 2 };
        let n = encode_xrange(&mut buf, b"s", start, StreamId::MAX, Some(3)).unwrap();
        assert_eq!(
            decode_read(&buf[..n]),
            Ok(Read::Xrange {
                key: b"s",
                start,
                end: StreamId::MAX,
                count: Some(3)
            })
        );
        let n = encode_get(&mut buf, b"key").unwrap();
        assert_eq!(decode_read(&buf[..n]), Ok(Read::Get { key: b"key" }));
        assert_eq!(decode_write(&buf[..n]), Err(Malformed));
    }
}
