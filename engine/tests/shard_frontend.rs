//! A frontend driven by the shard loop, through the public engine API: it
//! reads requests from a pipe on the shard's own thread, proposes each
//! straight into the ring with a tag, and gets every tag back exactly
//! once, in order, with the state machine's reply.

mod common;
use common::{Journal, ports};

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringraft_engine::shard::{Frontend, FrontendFactory, Node, NodeConfig, Outcome, ShardRequests};

/// What the test sees of the frontend's completions: (tag, outcome, reply).
type Done = Arc<Mutex<Vec<(u64, Outcome, Vec<u8>)>>>;

/// Proposes every byte read from a pipe as a one-byte entry, tagged with
/// its position in the stream.
struct PipeFrontend {
    pipe: OwnedFd,
    next_tag: u64,
    done: Done,
    /// Bytes read but not yet proposed (the group had no leader yet).
    waiting: Vec<u8>,
    /// After the stream: what a proposal one byte over
    /// `request_bytes_max` got (it must be refused at once, for good).
    oversize: Arc<Mutex<Option<Result<(), Outcome>>>>,
}

impl Frontend<Journal> for PipeFrontend {
    fn fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    fn poll(&mut self, requests: &mut ShardRequests<'_, Journal>) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer of its length; the fd is non-blocking.
        let n = unsafe { libc::read(self.pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            self.waiting.extend_from_slice(&buf[..n as usize]);
        }
        while let Some(&byte) = self.waiting.first() {
            match requests.propose(self.next_tag, 1, |dst| dst[0] = byte) {
                Ok(()) => {
                    self.waiting.remove(0);
                    self.next_tag += 1;
                }
                // Not leading yet: retried on a later turn.
                Err(_) => break,
            }
        }
        let mut oversize = self.oversize.lock().unwrap();
        if self.next_tag == STREAM_BYTES && oversize.is_none() {
            let len = requests.request_bytes_max() + 1;
            *oversize = Some(requests.propose(u64::MAX, len, |dst| dst.fill(0)));
        }
    }

    fn proposal_done(&mut self, tag: u64, outcome: Outcome, reply: &[u8]) {
        self.done
            .lock()
            .unwrap()
            .push((tag, outcome, reply.to_vec()));
    }

    fn flush(&mut self) -> bool {
        false
    }
}

const STREAM_BYTES: u64 = 100;

#[test]
fn a_frontend_proposes_on_the_shard_thread_and_gets_each_tag_back_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let peer = ports::addr();
    let mut config = NodeConfig::new(1, vec![(1, peer)], 1, dir.path().into());
    config.wal.capacity_bytes = 16 << 20;
    config.wal.ring_bytes = 8 << 20;
    config.wal.inflight_bytes_max = 2 << 20;
    config.pin_cores = false;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds into the local array; checked below.
    let created = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(created, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let done: Done = Arc::default();
    let oversize = Arc::new(Mutex::new(None));
    let read_end = Mutex::new(Some(read_end));
    let factory: FrontendFactory<Journal> = {
        let done = done.clone();
        let oversize = oversize.clone();
        Arc::new(move |context| {
            assert_eq!(context.shard, 0);
            assert_eq!(context.shards.len(), 1);
            let pipe = read_end.lock().unwrap().take().expect("one shard");
            Ok(Box::new(PipeFrontend {
                pipe,
                next_tag: 0,
                done: done.clone(),
                waiting: Vec::new(),
                oversize: oversize.clone(),
            }) as Box<dyn Frontend<Journal>>)
        })
    };
    let node = Node::start_with_frontends(config, vec![Journal::default()], factory).unwrap();
    let mut pipe = std::fs::File::from(write_end);
    let payload: Vec<u8> = (1..=STREAM_BYTES as u8).collect();
    pipe.write_all(&payload).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.lock().unwrap().len() < payload.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} proposals done",
            done.lock().unwrap().len(),
            payload.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = done.lock().unwrap().clone();
    for (i, (tag, outcome, reply)) in done.iter().enumerate() {
        assert_eq!((*tag, *outcome), (i as u64, Outcome::Replied));
        // The journal's reply: its length after this entry.
        assert_eq!(reply, &(i as u64 + 1).to_le_bytes());
    }
    // The library path still works beside the frontend, and sees its writes.
    let mut reply = Vec::new();
    node.read_index(0, b"", &mut reply).unwrap();
    assert_eq!(reply, payload);
    // Too large is its own answer, not `Busy` (a retry could never succeed).
    let request_bytes_max = NodeConfig::new(1, vec![(1, peer)], 1, dir.path().into())
        .bounds
        .request_bytes_max;
    assert_eq!(
        *oversize.lock().unwrap(),
        Some(Err(Outcome::TooLarge {
            bytes: request_bytes_max + 1,
            request_bytes_max
        }))
    );
    node.stop().unwrap();
}
