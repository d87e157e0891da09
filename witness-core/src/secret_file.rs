//! The rule every service applies to a file holding a secret (a private key,
//! a TLS key, a storage credential) before reading it, as PostgreSQL does for
//! its server key: the file may be readable by its owner only, or, when root
//! owns it, also by its group.
//!
//! The second case is how Kubernetes mounts a Secret into a non-root pod: the
//! file is `root:<fsGroup>` with mode 0440, and the service runs in that
//! group. Group write, and any access by others, is refused in every case.

/// `None` if a file with permission bits `mode` owned by `owner_uid` may hold
/// a secret; otherwise why not, for the error message.
pub fn secret_file_mode_problem(mode: u32, owner_uid: u32) -> Option<String> {
    let mode = mode & 0o777;
    if mode & 0o007 != 0 {
        return Some(format!("mode {mode:o} lets others access it (chmod 600)"));
    }
    if mode & 0o070 == 0 {
        return None;
    }
    if owner_uid == 0 && mode & 0o070 == 0o040 {
        return None;
    }
    Some(format!(
        "mode {mode:o} lets its group access it; only a root-owned file may be group-readable (chmod 600)"
    ))
}

#[cfg(test)]
mod tests {
    use super::secret_file_mode_problem;

    #[test]
    fn owner_only_files_are_accepted_whoever_owns_them() {
        for mode in [0o600, 0o400, 0o100600] {
            assert_eq!(secret_file_mode_problem(mode, 65532), None);
            assert_eq!(secret_file_mode_problem(mode, 0), None);
        }
    }

    #[test]
    fn kubernetes_secret_mounts_root_group_readable_are_accepted() {
        assert_eq!(secret_file_mode_problem(0o440, 0), None);
        assert_eq!(secret_file_mode_problem(0o640, 0), None);
    }

    #[test]
    fn group_readable_files_of_other_owners_are_refused() {
        assert!(secret_file_mode_problem(0o640, 65532).is_some());
        assert!(secret_file_mode_problem(0o440, 1000).is_some());
    }

    #[test]
    fn group_writable_or_other_accessible_files_are_refused_even_for_root() {
        for mode in [0o660, 0o620, 0o604, 0o644, 0o606, 0o601, 0o650] {
            assert!(secret_file_mode_problem(mode, 0).is_some(), "{mode:o}");
        }
    }
}
