/*!
llxprt-code's encrypted fallback envelope, byte for byte.

A fallback file holds one line of compact JSON:

```text
{"v":2,"crypto":{"alg":"aes-256-gcm","kdf":"scrypt","N":16384,"r":8,"p":1,"saltLen":16},"data":"<base64>"}
```

`data` is standard base64 of `salt(16) ‖ iv(12) ‖ tag(16) ‖ ciphertext`,
AES-256-GCM without associated data over the UTF-8 value. The key is
`scrypt(kdf_input, salt, N=16384, r=8, p=1, 32 bytes)` where

- v1: `kdf_input = service + "-" + machine_id`
- v2: `kdf_input = hex(machine_secret) + "|" + service + "|" + machine_id`

and `machine_id = hex(sha256(hostname + username))`. We read v1 and v2 and
write v2 (v1 only when no machine secret can be had, and never over a v2
file: that rule lives in the secure store).

File names escape `* < > : " / \ | ?` as `%XX` (upper-case hex) and end in
`.enc`; the unescaped "legacy" name is still read and deleted.
*/
#![forbid(unsafe_code)]

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::{StoreError, StoreErrorKind, StoreResult};

/// scrypt cost parameter N = 2^14.
const SCRYPT_LOG_N: u8 = 14;
const SCRYPT_N: u64 = 1 << SCRYPT_LOG_N;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// Salt, IV and tag lengths in bytes.
pub const SALT_LEN: usize = 16;
/// AES-GCM nonce length in bytes.
pub const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of the machine secret in bytes.
pub const MACHINE_SECRET_LEN: usize = 32;

/// A 32-byte machine secret, wiped on drop.
pub type MachineSecretBytes = Zeroizing<[u8; MACHINE_SECRET_LEN]>;

/// Envelope format versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Key from service + machine id only (obfuscation).
    V1,
    /// Key from the machine secret + service + machine id.
    V2,
}

impl Version {
    fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
}

/// What the key derivation needs besides the salt.
pub struct KeyInputs<'a> {
    /// The secure-store service name (`llxprt-code-oauth`, ...).
    pub service: &'a str,
    /// `hex(sha256(hostname + username))`.
    pub machine_id: &'a str,
    /// The machine secret, when one is known (needed for v2).
    pub machine_secret: Option<&'a [u8; MACHINE_SECRET_LEN]>,
}

impl KeyInputs<'_> {
    fn kdf_input(&self, version: Version) -> StoreResult<Zeroizing<String>> {
        match version {
            Version::V1 => Ok(Zeroizing::new(format!("{}-{}", self.service, self.machine_id))),
            Version::V2 => {
                let secret = self.machine_secret.ok_or_else(|| {
                    corrupt("Fallback file needs the machine secret, which is not available")
                })?;
                Ok(Zeroizing::new(format!(
                    "{}|{}|{}",
                    crate::random::to_hex(secret),
                    self.service,
                    self.machine_id
                )))
            }
        }
    }
}

fn corrupt(message: &str) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, message)
}

/// `hex(sha256(hostname + username))`, as llxprt-code computes it.
pub fn machine_id_for(hostname: &str, username: &str) -> String {
    let mut h = Sha256::new();
    h.update(hostname.as_bytes());
    h.update(username.as_bytes());
    crate::random::to_hex(&h.finalize())
}

/// This machine's id: host name plus the login name of our uid (or the
/// numeric uid when the password database has no entry).
pub fn machine_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let uid = crate::sys::current_uid();
        let user = crate::sys::passwd_entry(uid).map(|p| p.name).unwrap_or_else(|| uid.0.to_string());
        machine_id_for(&crate::sys::hostname(), &user)
    })
}

fn derive_key(kdf_input: &str, salt: &[u8]) -> Zeroizing<[u8; 32]> {
    let params =
        scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P).expect("fixed scrypt parameters are valid");
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(kdf_input.as_bytes(), salt, &params, key.as_mut()).expect("32-byte output is valid");
    key
}

/// Encrypts `plaintext` with a given salt and IV. Only tests and fixed
/// vectors choose these; [`seal`] draws them from the OS.
pub fn seal_with(
    version: Version,
    plaintext: &[u8],
    inputs: &KeyInputs<'_>,
    salt: &[u8; SALT_LEN],
    iv: &[u8; IV_LEN],
) -> StoreResult<String> {
    let key = derive_key(&inputs.kdf_input(version)?, salt);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let mut buf = Zeroizing::new(plaintext.to_vec());
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(*iv), b"", buf.as_mut_slice().into())
        .map_err(|_| StoreError::new(StoreErrorKind::Unavailable, "encryption failed"))?;
    let mut data = Vec::with_capacity(SALT_LEN + IV_LEN + TAG_LEN + buf.len());
    data.extend_from_slice(salt);
    data.extend_from_slice(iv);
    data.extend_from_slice(&tag);
    data.extend_from_slice(&buf);
    Ok(format!(
        "{{\"v\":{},\"crypto\":{{\"alg\":\"aes-256-gcm\",\"kdf\":\"scrypt\",\"N\":{SCRYPT_N},\"r\":{SCRYPT_R},\"p\":{SCRYPT_P},\"saltLen\":{SALT_LEN}}},\"data\":\"{}\"}}",
        version.number(),
        BASE64.encode(&data)
    ))
}

/// Encrypts `plaintext` with a fresh random salt and IV.
pub fn seal(version: Version, plaintext: &[u8], inputs: &KeyInputs<'_>) -> StoreResult<String> {
    let mut salt = [0u8; SALT_LEN];
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut salt)
        .and_then(|()| getrandom::fill(&mut iv))
        .map_err(|_| StoreError::new(StoreErrorKind::Unavailable, "the OS random generator failed"))?;
    seal_with(version, plaintext, inputs, &salt, &iv)
}

/// Parsed header of an envelope, before decryption.
pub struct Parsed {
    /// Format version.
    pub version: Version,
    data: Vec<u8>,
}

/// Parses an envelope and checks every header field, without decrypting.
pub fn parse(text: &[u8]) -> StoreResult<Parsed> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|_| corrupt("Fallback file is corrupt or uses an unrecognized format"))?;
    let version = match value.get("v").and_then(Value::as_u64) {
        Some(1) => Version::V1,
        Some(2) => Version::V2,
        _ => return Err(corrupt("Unrecognized envelope version")),
    };
    let crypto = value.get("crypto");
    let field = |name: &str| crypto.and_then(|c| c.get(name));
    let header_ok = field("alg").and_then(Value::as_str) == Some("aes-256-gcm")
        && field("kdf").and_then(Value::as_str) == Some("scrypt")
        && field("N").and_then(Value::as_u64) == Some(SCRYPT_N)
        && field("r").and_then(Value::as_u64) == Some(u64::from(SCRYPT_R))
        && field("p").and_then(Value::as_u64) == Some(u64::from(SCRYPT_P))
        && field("saltLen").and_then(Value::as_u64) == Some(SALT_LEN as u64);
    let data = value.get("data").and_then(Value::as_str);
    let (true, Some(data)) = (header_ok, data) else {
        return Err(corrupt("Fallback file envelope is malformed"));
    };
    let data = BASE64.decode(data).map_err(|_| corrupt("Fallback file envelope is malformed"))?;
    if data.len() < SALT_LEN + IV_LEN + TAG_LEN {
        return Err(corrupt("Fallback file envelope is truncated"));
    }
    Ok(Parsed { version, data })
}

/// The version of an envelope, or `None` when it does not parse.
pub fn version_of(text: &[u8]) -> Option<Version> {
    parse(text).ok().map(|p| p.version)
}

/// Decrypts an envelope. Any failure is `Corrupt`.
pub fn open(text: &[u8], inputs: &KeyInputs<'_>) -> StoreResult<Zeroizing<Vec<u8>>> {
    let parsed = parse(text)?;
    let (salt, rest) = parsed.data.split_at(SALT_LEN);
    let (iv, rest) = rest.split_at(IV_LEN);
    let (tag, ciphertext) = rest.split_at(TAG_LEN);
    let key = derive_key(&inputs.kdf_input(parsed.version)?, salt);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let nonce = Nonce::try_from(iv).expect("split at IV_LEN");
    let tag = aes_gcm::Tag::try_from(tag).expect("split at TAG_LEN");
    cipher
        .decrypt_inout_detached(&nonce, b"", buf.as_mut_slice().into(), &tag)
        .map_err(|_| corrupt("Failed to decrypt fallback file"))?;
    Ok(buf)
}

/// The current file name of `key`: `* < > : " / \ | ?` become `%XX`.
pub fn file_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        if matches!(c, '*' | '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?') {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.push_str(".enc");
    out
}

/// The legacy (unescaped) file name of `key`.
pub fn legacy_file_name(key: &str) -> String {
    format!("{key}.enc")
}

/// Recovers a key from a file name (`%XX` decoding, llxprt-code's
/// `decodeURIComponent`); `None` for names that do not end in `.enc`.
pub fn key_from_file_name(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".enc")?;
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                // decodeURIComponent throws on a bad escape; llxprt-code then uses the raw name.
                return Some(stem.to_owned());
            };
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok().or_else(|| Some(stem.to_owned()))
}

/// llxprt-code's key check for secure-store keys: non-empty, no `/`, `\`
/// or NUL, and not `.`, `..` or starting with `./` or `../`.
pub fn check_store_key(key: &str) -> StoreResult<()> {
    let bad = key.is_empty()
        || key.contains(['/', '\\', '\0'])
        || key == "."
        || key == ".."
        || key.starts_with("./")
        || key.starts_with("../");
    if bad {
        return Err(StoreError::new(StoreErrorKind::Corrupt, "Invalid secure-store key"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7u8; 32];

    fn inputs(secret: Option<&[u8; 32]>) -> KeyInputs<'_> {
        KeyInputs { service: "llxprt-code-oauth", machine_id: "abc", machine_secret: secret }
    }

    #[test]
    fn round_trip_v1_and_v2() {
        for (version, secret) in [(Version::V1, None), (Version::V2, Some(&SECRET))] {
            let text = seal(version, "héllo {\"k\":1}".as_bytes(), &inputs(secret)).unwrap();
            assert_eq!(version_of(text.as_bytes()), Some(version));
            let out = open(text.as_bytes(), &inputs(secret)).unwrap();
            assert_eq!(&out[..], "héllo {\"k\":1}".as_bytes());
        }
    }

    #[test]
    fn wrong_secret_service_or_missing_secret_is_corrupt() {
        let text = seal(Version::V2, b"v", &inputs(Some(&SECRET))).unwrap();
        let other = [8u8; 32];
        assert_eq!(open(text.as_bytes(), &inputs(Some(&other))).unwrap_err().kind, StoreErrorKind::Corrupt);
        assert_eq!(open(text.as_bytes(), &inputs(None)).unwrap_err().kind, StoreErrorKind::Corrupt);
        let wrong_service = KeyInputs { service: "llxprt-code-provider-keys", ..inputs(Some(&SECRET)) };
        assert_eq!(open(text.as_bytes(), &wrong_service).unwrap_err().kind, StoreErrorKind::Corrupt);
    }

    #[test]
    fn header_fields_are_checked() {
        let good = seal(Version::V1, b"v", &inputs(None)).unwrap();
        for (from, to) in [
            ("\"v\":1", "\"v\":3"),
            ("aes-256-gcm", "aes-128-gcm"),
            ("\"kdf\":\"scrypt\"", "\"kdf\":\"pbkdf2\""),
            ("16384", "1024"),
            ("\"r\":8", "\"r\":4"),
            ("\"p\":1", "\"p\":2"),
            ("\"saltLen\":16", "\"saltLen\":8"),
        ] {
            let bad = good.replace(from, to);
            assert_eq!(
                open(bad.as_bytes(), &inputs(None)).unwrap_err().kind,
                StoreErrorKind::Corrupt,
                "{to}"
            );
        }
        for bad in ["", "null", "[]", "{\"v\":1}", "plaintext-secret"] {
            assert!(open(bad.as_bytes(), &inputs(None)).is_err());
        }
        // truncated data and a flipped ciphertext bit
        let v: Value = serde_json::from_str(&good).unwrap();
        let mut data = BASE64.decode(v["data"].as_str().unwrap()).unwrap();
        let short = good.replace(v["data"].as_str().unwrap(), &BASE64.encode(&data[..40]));
        assert!(open(short.as_bytes(), &inputs(None)).is_err());
        let last = data.len() - 1;
        data[last] ^= 1;
        let tampered = good.replace(v["data"].as_str().unwrap(), &BASE64.encode(&data));
        assert_eq!(
            open(tampered.as_bytes(), &inputs(None)).unwrap_err().message,
            "Failed to decrypt fallback file"
        );
    }

    #[test]
    fn empty_plaintext_is_fine() {
        let text = seal(Version::V1, b"", &inputs(None)).unwrap();
        assert!(open(text.as_bytes(), &inputs(None)).unwrap().is_empty());
    }

    #[test]
    fn file_names_escape_like_llxprt_code() {
        assert_eq!(file_name("anthropic:default"), "anthropic%3Adefault.enc");
        assert_eq!(file_name("a*<>:\"/\\|?b"), "a%2A%3C%3E%3A%22%2F%5C%7C%3Fb.enc");
        assert_eq!(file_name("OPENAI_KEY"), "OPENAI_KEY.enc");
        assert_eq!(legacy_file_name("anthropic:default"), "anthropic:default.enc");
        assert_eq!(key_from_file_name("anthropic%3Adefault.enc").as_deref(), Some("anthropic:default"));
        assert_eq!(key_from_file_name("bad%zz.enc").as_deref(), Some("bad%zz"));
        assert_eq!(key_from_file_name("x.tmp.1234abcd"), None);
    }

    #[test]
    fn store_keys_are_checked() {
        for bad in ["", ".", "..", "./a", "../a", "a/b", "a\\b", "a\0"] {
            assert!(check_store_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_store_key("anthropic:default").is_ok());
    }

    /// Vectors made by Node's crypto from the documented format
    /// (scripts/make-envelope-vectors.js): we must decode them and produce
    /// the same bytes from the same inputs.
    #[test]
    fn node_vectors_decode_and_reencode_byte_for_byte() {
        let v: Value = serde_json::from_str(include_str!("../../tests/data/envelope-vectors.json")).unwrap();
        let machine_id = machine_id_for(v["hostname"].as_str().unwrap(), v["username"].as_str().unwrap());
        assert_eq!(machine_id, v["machineId"].as_str().unwrap());
        let secret: [u8; 32] =
            BASE64.decode(v["machineSecretBase64"].as_str().unwrap()).unwrap().try_into().unwrap();
        let unhex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let salt: [u8; 16] = unhex(v["saltHex"].as_str().unwrap()).try_into().unwrap();
        let iv: [u8; 12] = unhex(v["ivHex"].as_str().unwrap()).try_into().unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let inputs = KeyInputs {
                service: case["service"].as_str().unwrap(),
                machine_id: &machine_id,
                machine_secret: Some(&secret),
            };
            let envelope = case["envelope"].as_str().unwrap();
            let plain = open(envelope.as_bytes(), &inputs).unwrap();
            assert_eq!(std::str::from_utf8(&plain).unwrap(), case["plaintext"].as_str().unwrap());
            let version = if case["version"] == 1 { Version::V1 } else { Version::V2 };
            let ours = seal_with(version, &plain, &inputs, &salt, &iv).unwrap();
            assert_eq!(ours, envelope);
        }
    }
}
