//! The handshake of a connection, dialer and acceptor sides.
//!
//! ```text
//!  dialer                                 acceptor (pending slot)
//!    connect ─────────────────────────▶  accept, deadline = now + handshake_timeout
//!    Hello{cluster, node, shard,     ──▶  check cluster, node, shard, version,
//!          version, lane, auth, nonce}    auth offered ── refuse: Error frame, close
//!                                    ◀──  Hello{own ids, nonce, mac}
//!    check ids (and mac) ── or close      without auth: promoted into the peer's
//!    [HelloProof{mac}]               ──▶  inbound slot; with auth: after the proof
//!    lane up                              lane up (an older one is replaced)
//! ```
//! Handshake frames are read exactly (header first, then the rest), so no
//! byte after them is consumed here.

use std::time::Instant;

use super::*;

impl Transport {
    pub(super) fn finish_connect(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        conn.writable = false;
        let stream = conn.stream.as_ref().expect("connecting has a stream");
        if let Err(error) =
            crate::socket::finish_connect(stream).and_then(|_| stream.set_nodelay(true))
        {
            self.close(slot, CloseReason::PeerClosed, &error);
            return;
        }
        conn.phase = Phase::Handshaking;
        conn.handshake_deadline = Some(Instant::now() + self.config.handshake_timeout);
        let (lane, nonce) = (conn.lane, conn.nonce);
        let hello = Message::Hello(self.own_hello(lane, nonce, [0; MAC_BYTES]));
        self.queue_frame(slot, &hello);
        self.write_outbox(slot);
    }

    pub(super) fn own_hello(
        &self,
        lane: Lane,
        nonce: [u8; NONCE_BYTES],
        mac: [u8; MAC_BYTES],
    ) -> Hello {
        Hello {
            cluster_id: self.config.cluster_id,
            node_id: self.config.node_id,
            shard_id: self.config.shard_id,
            version: PROTOCOL_VERSION as u16,
            lane,
            auth: self.config.secret.is_some(),
            nonce,
            mac,
        }
    }

    /// Reads one handshake frame (exactly: never past it) and acts on it.
    pub(super) fn read_handshake(&mut self, slot: usize) {
        let target = if self.conns[slot].inbox_end < FRAME_HEADER_BYTES {
            FRAME_HEADER_BYTES
        } else {
            let raw = self.conns[slot].inbox[..FRAME_HEADER_BYTES]
                .try_into()
                .expect("16 bytes");
            match frame::decode_header(raw, CONTROL_FRAME_BYTES_MAX) {
                Ok(header) => header.frame_bytes(),
                Err(error) => return self.close_for_frame_error(slot, error),
            }
        };
        match self.read_into_inbox(slot, target) {
            Ok(true) => {}
            Ok(false) | Err(()) => return,
        }
        let conn = &self.conns[slot];
        let bytes = &conn.inbox[..conn.inbox_end];
        let message = match frame::decode(bytes, CONTROL_FRAME_BYTES_MAX) {
            Ok(None) => return self.read_handshake(slot), // header only: read the rest
            Ok(Some((frame, _))) => frame.message,
            Err(error) => return self.close_for_frame_error(slot, error),
        };
        let conn = &mut self.conns[slot];
        conn.inbox_start = 0;
        conn.inbox_end = 0;
        match (conn.dialer, message) {
            (_, Message::Error(e)) => self.close(slot, CloseReason::RefusedByPeer, &e),
            (false, Message::Hello(hello)) if conn.peer.is_none() => {
                self.acceptor_got_hello(slot, hello)
            }
            (false, Message::HelloProof { mac }) if conn.peer.is_some() => {
                self.acceptor_got_proof(slot, mac)
            }
            (true, Message::Hello(hello)) => self.dialer_got_hello(slot, hello),
            (_, other) => self.close(slot, CloseReason::UnexpectedKind, &other.kind()),
        }
    }

    pub(super) fn binding(
        &self,
        dialer_node_id: u32,
        acceptor_node_id: u32,
        lane: Lane,
    ) -> Binding {
        Binding {
            cluster_id: self.config.cluster_id,
            dialer_node_id,
            acceptor_node_id,
            shard_id: self.config.shard_id,
            lane,
        }
    }

    /// Checks a Hello's identity fields; on refusal returns the reason, the
    /// error frame to send and a detail for the log line.
    pub(super) fn check_hello(
        &self,
        hello: &Hello,
    ) -> Result<usize, (CloseReason, ErrorCode, u64)> {
        if hello.version != PROTOCOL_VERSION as u16 {
            return Err((
                CloseReason::UnsupportedVersion,
                ErrorCode::UnsupportedVersion,
                PROTOCOL_VERSION as u64,
            ));
        }
        if hello.cluster_id != self.config.cluster_id {
            return Err((
                CloseReason::WrongCluster,
                ErrorCode::WrongCluster,
                hello.cluster_id,
            ));
        }
        let Some(peer) = self.peer_index(hello.node_id) else {
            return Err((
                CloseReason::UnknownNode,
                ErrorCode::UnknownNode,
                hello.node_id as u64,
            ));
        };
        if hello.shard_id != self.config.shard_id {
            return Err((
                CloseReason::WrongShard,
                ErrorCode::WrongShard,
                hello.shard_id as u64,
            ));
        }
        if hello.auth != self.config.secret.is_some() {
            return Err((
                CloseReason::AuthFailed,
                ErrorCode::AuthFailed,
                hello.auth as u64,
            ));
        }
        Ok(peer)
    }

    pub(super) fn refuse(
        &mut self,
        slot: usize,
        reason: CloseReason,
        code: ErrorCode,
        detail: u64,
    ) {
        let error = ErrorFrame { code, detail };
        self.queue_frame(slot, &Message::Error(error));
        self.write_outbox(slot); // best effort: the connection closes anyway
        self.close(slot, reason, &format_args!("{code:?} (detail {detail})"));
    }

    pub(super) fn acceptor_got_hello(&mut self, slot: usize, hello: Hello) {
        let peer = match self.check_hello(&hello) {
            Ok(peer) => peer,
            Err((reason, code, detail)) => return self.refuse(slot, reason, code, detail),
        };
        let nonce = auth::random_nonce();
        let mut mac = [0; MAC_BYTES];
        if let Some(secret) = &self.config.secret {
            let binding = self.binding(hello.node_id, self.config.node_id, hello.lane);
            mac = auth::tag(secret, Role::Acceptor, &hello.nonce, binding);
        }
        let reply = Message::Hello(self.own_hello(hello.lane, nonce, mac));
        let conn = &mut self.conns[slot];
        conn.peer = Some(peer);
        conn.lane = hello.lane;
        conn.nonce = nonce;
        self.queue_frame(slot, &reply);
        self.write_outbox(slot);
        if self.config.secret.is_none() && self.conns[slot].stream.is_some() {
            self.promote_inbound(slot);
        }
    }

    pub(super) fn acceptor_got_proof(&mut self, slot: usize, mac: [u8; MAC_BYTES]) {
        let conn = &self.conns[slot];
        let peer = conn.peer.expect("proof follows an accepted Hello");
        let Some(secret) = &self.config.secret else {
            return self.close(slot, CloseReason::UnexpectedKind, &Kind::HelloProof);
        };
        let binding = self.binding(
            self.config.peers[peer].node_id,
            self.config.node_id,
            conn.lane,
        );
        if !auth::verify(secret, Role::Dialer, &conn.nonce, binding, &mac) {
            return self.refuse(slot, CloseReason::AuthFailed, ErrorCode::AuthFailed, 0);
        }
        self.promote_inbound(slot);
    }

    /// Moves a handshaken pending connection into its peer's inbound slot,
    /// replacing (closing) an older connection there: a restarted peer's new
    /// connection wins.
    pub(super) fn promote_inbound(&mut self, pending: usize) {
        let peer = self.conns[pending].peer.expect("promoted after Hello");
        let lane = self.conns[pending].lane;
        let target = Self::slot(
            peer,
            if lane == Lane::Control {
                IN_CONTROL
            } else {
                IN_DATA
            },
        );
        if self.conns[target].stream.is_some() {
            self.close(
                target,
                CloseReason::Replaced,
                &"a new connection from the same peer",
            );
        }
        let source = &mut self.conns[pending];
        let stream = source.stream.take();
        // Bytes of our Hello reply the socket has not taken yet move along.
        let mut out = [0u8; CONTROL_FRAME_BYTES_MAX];
        let leftover_len = source.outbox_end - source.outbox_start;
        out[..leftover_len].copy_from_slice(&source.outbox[source.outbox_start..source.outbox_end]);
        // The pending slot's polls refer to the moved socket: retire them.
        source.reset(None);
        let conn = &mut self.conns[target];
        conn.stream = stream;
        conn.phase = Phase::Up;
        conn.readable = true;
        conn.handshake_deadline = None;
        conn.queue(&out[..leftover_len]);
        self.counters.connections_up += 1;
        if !self.conns[target].outbox_empty() {
            self.write_outbox(target);
        }
    }

    pub(super) fn dialer_got_hello(&mut self, slot: usize, hello: Hello) {
        let peer = self.conns[slot]
            .peer
            .expect("dialer slots belong to a peer");
        let expected = self.config.peers[peer].node_id;
        if let Err((reason, _, detail)) = self.check_hello(&hello) {
            return self.close(
                slot,
                reason,
                &format_args!("in the peer's Hello (detail {detail})"),
            );
        }
        if hello.node_id != expected || hello.lane != self.conns[slot].lane {
            let why = format_args!("expected node {expected}, got node {}", hello.node_id);
            return self.close(slot, CloseReason::UnknownNode, &why);
        }
        if let Some(secret) = self.config.secret {
            let conn = &self.conns[slot];
            let binding = self.binding(self.config.node_id, expected, conn.lane);
            if !auth::verify(&secret, Role::Acceptor, &conn.nonce, binding, &hello.mac) {
                return self.close(slot, CloseReason::AuthFailed, &"the peer's tag is wrong");
            }
            let mac = auth::tag(&secret, Role::Dialer, &hello.nonce, binding);
            self.queue_frame(slot, &Message::HelloProof { mac });
        }
        let conn = &mut self.conns[slot];
        conn.phase = Phase::Up;
        conn.handshake_deadline = None;
        conn.failures = 0;
        self.counters.connections_up += 1;
        self.write_outbox(slot);
    }
}
