//! Giving a pass's freed memory back to the system.
//!
//! A pass at 10,000 isvcs allocates tens of MiB (decoded isvcs, the plan, the filter
//! config as JSON) and frees them at its end; glibc's malloc keeps most of that in its
//! arenas, so without a trim the controller's RSS stays at the largest pass it ever ran.

/// Returns free heap pages to the system (glibc only; elsewhere the allocator decides).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
