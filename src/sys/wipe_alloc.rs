/*!
A global allocator that wipes every block before giving it back: the
daemon's memory holds refresh tokens, authorization codes and PKCE
verifiers, and copies of them end up in buffers this crate does not own
(an HTTP library's output buffer, a JSON parser's scratch space). With
this allocator a copy lives only as long as its buffer; freed memory never
keeps one for a later heap read or core file to find.

The wipe is `explicit_bzero(3)` on Linux (a `memset` the compiler may not
remove), volatile writes elsewhere. `realloc` allocates, copies and wipes
the old block, so growing a buffer leaves no copy behind either.
*/

use std::alloc::{GlobalAlloc, Layout, System};

/// The wiping allocator; install it with
/// `#[global_allocator] static A: WipeOnFree = WipeOnFree;`.
pub struct WipeOnFree;

/// Overwrites `len` bytes at `ptr` with zeros in a way the optimiser keeps.
///
/// # Safety
///
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    // SAFETY: the caller promises `ptr` is valid for `len` bytes.
    unsafe {
        libc::explicit_bzero(ptr.cast(), len)
    };
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    for i in 0..len {
        // SAFETY: as above; `i < len`.
        unsafe { std::ptr::write_volatile(ptr.add(i), 0) };
    }
}

// SAFETY: every method forwards to `System`, which upholds the
// `GlobalAlloc` contract; the only additions are writes of zeros into a
// block the caller is giving back (valid for `layout.size()` bytes until
// it is freed) and a realloc built from alloc + copy + dealloc with the
// same layout rules.
unsafe impl GlobalAlloc for WipeOnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract; passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `layout` by this allocator and is
        // still live, so it is valid for `layout.size()` bytes.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises `new_size`, rounded up to
        // `layout.align()`, does not overflow `isize`, so the layout is
        // valid; the new block is fresh, the old one live until dealloc,
        // and the copy covers the smaller of the two sizes.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let fresh = System.alloc(new_layout);
            if !fresh.is_null() {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_grow_with_their_contents() {
        let a = WipeOnFree;
        // SAFETY: a non-zero layout; every pointer is used within its size
        // and freed once with the layout it was allocated with.
        unsafe {
            let layout = Layout::from_size_align(64, 8).unwrap();
            let p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..64 {
                *p.add(i) = i as u8;
            }
            let q = a.realloc(p, layout, 4096);
            assert!(!q.is_null());
            assert!((0..64).all(|i| *q.add(i) == i as u8), "contents kept");
            wipe(q, 64);
            assert!((0..64).all(|i| *q.add(i) == 0), "wiped");
            a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
    }
}
