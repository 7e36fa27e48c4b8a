/*!
Files: the umask, a path's owner and mode, and POSIX access ACLs (how the
daemon lets a container's uid reach its socket directory).
*/

use std::io;
use std::path::Path;

use super::{UserId, cerr};

/// Sets the process umask and returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and only changes process state.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The owner uid and mode bits of a path, without following a final symlink.
pub fn owner_and_mode(path: &Path) -> io::Result<(UserId, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    Ok((UserId(meta.uid()), meta.mode() & 0o7777))
}

/// The binary form of a POSIX access ACL (the `system.posix_acl_access`
/// extended attribute, version 2): the owner gets `owner_perm`, each of
/// `uids` gets `perm`, the owning group and others nothing, and the mask
/// is `perm`. Permission bits: 4 read, 2 write, 1 execute/search.
pub fn posix_acl_bytes(owner_perm: u16, uids: &[UserId], perm: u16) -> Vec<u8> {
    const VERSION: u32 = 2;
    const UNDEFINED_ID: u32 = u32::MAX;
    let (user_obj, user, group_obj, mask, other) = (0x01u16, 0x02u16, 0x04u16, 0x10u16, 0x20u16);
    let mut ids: Vec<u32> = uids.iter().map(|u| u.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut entries = vec![(user_obj, owner_perm, UNDEFINED_ID)];
    entries.extend(ids.iter().map(|&id| (user, perm, id)));
    entries.extend([(group_obj, 0, UNDEFINED_ID), (mask, perm, UNDEFINED_ID), (other, 0, UNDEFINED_ID)]);
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Sets the access ACL of `path` (see [`posix_acl_bytes`]). Fails with
/// `EOPNOTSUPP` where the file system has no POSIX ACLs.
pub fn set_access_acl(path: &Path, owner_perm: u16, uids: &[UserId], perm: u16) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let value = posix_acl_bytes(owner_perm, uids, perm);
    // SAFETY: both strings are NUL-terminated and live across the call;
    // `value` is a valid buffer of `value.len()` bytes.
    cerr(unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(|_| ())
}
