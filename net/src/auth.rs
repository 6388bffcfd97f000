//! Optional peer authentication with a shared cluster secret.
//!
//! ```text
//!  dialer                                   acceptor
//!    Hello{auth=1, nonce=Nd}          ──▶
//!                                     ◀──   Hello{auth=1, nonce=Na,
//!                                                mac=H(secret, "accept", Nd, ids)}
//!    checks mac; HelloProof{
//!      mac=H(secret, "dial", Na, ids)} ──▶  checks mac; lane is up
//! ```
//! `H` is HMAC-SHA256; `ids` are the cluster id, both node ids, the shard and
//! the lane, so a tag cannot be replayed for another connection. Each side
//! answers a fresh random challenge of the other, so a recorded handshake
//! cannot be replayed either. Tags are compared in constant time. A side
//! with a secret refuses a side without one (`AuthFailed`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::{Lane, MAC_BYTES, NONCE_BYTES};

type HmacSha256 = Hmac<Sha256>;

/// Who computes a tag: the two roles use different labels so one side's tag
/// is never a valid answer for the other.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Dialer,
    Acceptor,
}

/// What a tag binds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding {
    pub cluster_id: u64,
    pub dialer_node_id: u32,
    pub acceptor_node_id: u32,
    pub shard_id: u32,
    pub lane: Lane,
}

fn keyed(secret: &[u8; 32], role: Role, challenge: &[u8; NONCE_BYTES], b: Binding) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    let label: &[u8] = match role {
        Role::Dialer => b"ringraft-dial",
        Role::Acceptor => b"ringraft-accept",
    };
    mac.update(label);
    mac.update(challenge);
    mac.update(&b.cluster_id.to_le_bytes());
    mac.update(&b.dialer_node_id.to_le_bytes());
    mac.update(&b.acceptor_node_id.to_le_bytes());
    mac.update(&b.shard_id.to_le_bytes());
    mac.update(&[b.lane as u8]);
    mac
}

/// The tag `role` sends in answer to the other side's `challenge`.
pub(crate) fn tag(
    secret: &[u8; 32],
    role: Role,
    challenge: &[u8; NONCE_BYTES],
    binding: Binding,
) -> [u8; MAC_BYTES] {
    keyed(secret, role, challenge, binding)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `received` is the tag `role` must send for `challenge`
/// (constant-time comparison).
pub(crate) fn verify(
    secret: &[u8; 32],
    role: Role,
    challenge: &[u8; NONCE_BYTES],
    binding: Binding,
    received: &[u8; MAC_BYTES],
) -> bool {
    keyed(secret, role, challenge, binding)
        .verify_slice(received)
        .is_ok()
}

/// A fresh challenge from the kernel's random source.
pub(crate) fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    let mut filled = 0;
    while filled < NONCE_BYTES {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `nonce`, which getrandom writes at most `NONCE_BYTES - filled` of.
        let got = unsafe {
            libc::getrandom(nonce[filled..].as_mut_ptr().cast(), NONCE_BYTES - filled, 0)
        };
        assert!(
            got > 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted,
            "getrandom failed"
        );
        filled += got.max(0) as usize;
    }
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINDING: Binding = Binding {
        cluster_id: 7,
        dialer_node_id: 1,
        acceptor_node_id: 2,
        shard_id: 0,
        lane: Lane::Control,
    };

    #[test]
    fn a_tag_verifies_only_for_its_secret_role_challenge_and_binding() {
        let secret = [9u8; 32];
        let challenge = random_nonce();
        let t = tag(&secret, Role::Dialer, &challenge, BINDING);
        assert!(verify(&secret, Role::Dialer, &challenge, BINDING, &t));
        assert!(!verify(&[8u8; 32], Role::Dialer, &challenge, BINDING, &t));
        assert!(!verify(&secret, Role::Acceptor, &challenge, BINDING, &t));
        assert!(!verify(&secret, Role::Dialer, &random_nonce(), BINDING, &t));
        let other_lane = Binding {
            lane: Lane::Data,
            ..BINDING
        };
        assert!(!verify(&secret, Role::Dialer, &challenge, other_lane, &t));
    }
}
