/*!
The peer identity a login session is bound to: the peer's uid and a digest
of the capability token its connection presented. Another identity cannot
use, see or cancel the session.
*/
#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};

/// The peer identity a session is bound to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    uid: u32,
    principal: Option<[u8; 32]>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Owner {{ uid: {}, capability: {} }}", self.uid, self.principal.is_some())
    }
}

impl Owner {
    /// A peer of `uid` whose handshake presented `capability` (when the
    /// daemon requires one). Only a digest of the token is kept.
    pub fn new(uid: u32, capability: Option<&str>) -> Owner {
        Owner { uid, principal: capability.map(|t| Sha256::digest(t.as_bytes()).into()) }
    }

    /// The current process (logins run by `llxprt-cred` on the host).
    pub fn local() -> Owner {
        Owner::new(crate::sys::current_uid().0, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_compare_uid_and_capability() {
        assert_eq!(Owner::new(1, Some("t")), Owner::new(1, Some("t")));
        assert_ne!(Owner::new(1, Some("t")), Owner::new(2, Some("t")));
        assert_ne!(Owner::new(1, Some("t")), Owner::new(1, Some("u")));
        assert_ne!(Owner::new(1, Some("t")), Owner::new(1, None));
        assert!(!format!("{:?}", Owner::new(1, Some("secret-token"))).contains("secret"));
    }
}
