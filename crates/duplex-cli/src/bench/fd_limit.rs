//! The open-file limit: a run holds a descriptor per connection, often more
//! than a shell's default soft limit allows.

/// Open files a run needs besides its connections.
pub(super) const SPARE_FDS: u64 = 64;

/// Raises the soft limit on open files to the hard limit, and says so on
/// stderr if that is still fewer than `needed`.
pub(super) fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    // Tested by `fd_limit_can_be_read_and_raised`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        eprintln!("duplex bench: cannot read the open-file limit; --conns may fail");
        return;
    }
    // An unlimited hard limit still stops at the kernel's fs.nr_open.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only the call reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
        }
    }
    let current = limit.rlim_cur;
    tracing::debug!(soft = current, hard = limit.rlim_max, "open-file limit");
    if current < needed {
        eprintln!(
            "duplex bench: the open-file limit is {current} (hard limit {}), but {needed} are \
             needed; connections past the limit will fail (raise it with `ulimit -n`)",
            limit.rlim_max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_can_be_read_and_raised() {
        raise_fd_limit(16);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_fd_limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert!(limit.rlim_cur >= 16);
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.rlim_cur, limit.rlim_max);
        }
    }
}
