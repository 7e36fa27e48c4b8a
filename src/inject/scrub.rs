/*!
The response scrub (defence in depth): the providers do not echo
credentials, but gateways and error pages sometimes do. Every occurrence of
the real credential in a response's headers and body is replaced by a mask
of the same length (so a `Content-Length` stays true). A stream is scrubbed
read by read: at the end of each read only the longest tail that could be
the start of the credential is held back (usually nothing), never a fixed
window that would delay the end of every event.
*/
#![forbid(unsafe_code)]

use zeroize::Zeroizing;

/// The shortest credential scrubbed (shorter ones would mask ordinary
/// text).
const MIN_SECRET: usize = 8;

/// Scrubs one credential out of a stream of bytes.
pub struct Scrubber {
    secret: Zeroizing<Vec<u8>>,
    held: Vec<u8>,
}

impl Scrubber {
    /// A scrubber for `secret`; `None` for one too short to scrub.
    pub fn new(secret: &[u8]) -> Option<Scrubber> {
        (secret.len() >= MIN_SECRET)
            .then(|| Scrubber { secret: Zeroizing::new(secret.to_vec()), held: Vec::new() })
    }

    /// Masks every whole occurrence of the secret in `bytes`, in place.
    pub fn mask(&self, bytes: &mut [u8]) {
        let n = self.secret.len();
        let mut i = 0;
        while i + n <= bytes.len() {
            if bytes[i..i + n] == self.secret[..] {
                bytes[i..i + n].fill(b'*');
                i += n;
            } else {
                i += 1;
            }
        }
    }

    /// The next read: what may be sent now, the secret masked, holding
    /// back a tail that could be the secret's beginning.
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(data);
        self.mask(&mut buf);
        let keep = (1..self.secret.len().min(buf.len() + 1))
            .rev()
            .find(|&k| buf.ends_with(&self.secret[..k]))
            .unwrap_or(0);
        self.held = buf.split_off(buf.len() - keep);
        buf
    }

    /// The end of the stream: what was held back (it was not the secret).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_masked_across_reads_and_nothing_else_is_held() {
        let mut s = Scrubber::new(b"sk-SECRET-123").unwrap();
        let mut out = Vec::new();
        for piece in [&b"data: a sk-SEC"[..], b"RET-123 b\n\n", b"event: x\n\n", b"tail sk-S"] {
            out.extend(s.feed(piece));
        }
        assert_eq!(s.feed(b"").len(), 0);
        out.extend(s.finish());
        assert_eq!(out, b"data: a ************* b\n\nevent: x\n\ntail sk-S");
        // an event that cannot begin the secret is not delayed at all
        let mut s = Scrubber::new(b"sk-SECRET-123").unwrap();
        assert_eq!(s.feed(b"data: {}\n\n"), b"data: {}\n\n");
        assert!(Scrubber::new(b"short").is_none());
    }
}
