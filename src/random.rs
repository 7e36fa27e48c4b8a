/*!
Randomness from the OS (`getrandom`): nonces, owner tokens, salts, secrets.
A failing OS generator is treated as fatal for the operation at hand.
*/
#![forbid(unsafe_code)]

use std::io;

/// Fills `buf` from the OS random generator.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| io::Error::other(format!("OS random generator failed: {e}")))
}

/// `n` random bytes as lower-case hex (`2n` characters).
pub fn hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    fill(&mut buf)?;
    Ok(to_hex(&buf))
}

/// A random UUID version 4 in its canonical text form.
pub fn uuid_v4() -> io::Result<String> {
    let mut b = [0u8; 16];
    fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = to_hex(&b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// A uniformly random integer in `0..bound` (`bound` > 0), for jitter.
pub fn below(bound: u64) -> u64 {
    let mut b = [0u8; 8];
    if fill(&mut b).is_err() {
        return 0;
    }
    u64::from_le_bytes(b) % bound.max(1)
}

/// Lower-case hexadecimal of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_shape() {
        let u = super::uuid_v4().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, super::uuid_v4().unwrap());
    }
}
