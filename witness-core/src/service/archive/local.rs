//! A local archive's checkpoints, written a batch at a time on one thread.
//!
//! Through the object store's local backend every object was its own blocking
//! task: at 2,000 cosignatures/s that was 2,000 hand-offs a second to the
//! blocking pool and back, which cost the witness more CPU than the files
//! themselves. Here a batch is one blocking call: each object is created the
//! way the local backend creates it (a staging file `<name>#1`, hard-linked to
//! its name, so it appears whole or not at all and never replaces another,
//! then the staging name removed), and one `syncfs` makes the batch durable.
//! Staging names end in `#` and digits, which the object store's listings
//! skip; one left by a crash is overwritten by the retry. Paths are the object
//! paths under the root, as the local backend maps them (archive object names
//! use only `[a-z0-9._-]` and `/`).

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write as _};
use std::path::{Path, PathBuf};

/// What became of one object of a batch.
#[derive(Debug)]
pub(crate) enum Created {
    /// Written under its name.
    New,
    /// The name was taken; these are the bytes found under it.
    Existing(Vec<u8>),
}

/// A batch's outcome: one entry per object, in order, and the `syncfs` made
/// after it (`Ok` when no object needed one).
#[derive(Debug)]
pub(crate) struct LocalBatch {
    pub objects: Vec<io::Result<Created>>,
    pub synced: io::Result<()>,
}

/// Creates each `(object path, bytes)` under `root` unless its name is taken,
/// then, if any object was created or found, makes the filesystem durable with
/// one `syncfs`. Blocking.
pub(crate) fn create_batch(root: &Path, objects: &[(String, Vec<u8>)]) -> LocalBatch {
    let outcomes: Vec<io::Result<Created>> = objects
        .iter()
        .map(|(name, bytes)| create(&root.join(name), bytes))
        .collect();
    let synced = if outcomes.iter().any(Result::is_ok) {
        sync_filesystem(root)
    } else {
        Ok(())
    };
    LocalBatch {
        objects: outcomes,
        synced,
    }
}

/// Makes everything written to the filesystem holding `root` durable: one
/// `syncfs`. Blocking.
pub(crate) fn sync_filesystem(root: &Path) -> io::Result<()> {
    let dir = fs::File::open(root)?;
    rustix::fs::syncfs(&dir).map_err(io::Error::from)
}

fn staging_path(path: &Path) -> PathBuf {
    let mut staging = path.as_os_str().to_owned();
    staging.push("#1");
    PathBuf::from(staging)
}

/// Creates `path` holding `bytes`, never replacing a file already there.
fn create(path: &Path, bytes: &[u8]) -> io::Result<Created> {
    let staging = staging_path(path);
    let open = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staging)
    };
    let mut file = match open() {
        Err(error) if error.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            open()?
        }
        other => other?,
    };
    let linked = file
        .write_all(bytes)
        .and_then(|()| fs::hard_link(&staging, path));
    drop(file);
    // The staging name goes whatever happened; a failure to remove it only
    // leaves a name the listings skip and the next write of the object reuses.
    let _ = fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(Created::New),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            fs::read(path).map(Created::Existing)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::{ObjectStore as _, ObjectStoreExt as _};

    const NAME: &str = "checkpoints/log.example_2fv1/0000000000000000000/0000000000000000007-20261130T000000Z-ab.txt";

    fn created(outcome: &io::Result<Created>) -> bool {
        matches!(outcome, Ok(Created::New))
    }

    #[tokio::test]
    async fn objects_are_read_back_through_the_object_store_at_the_same_names() {
        let root = tempfile::tempdir().unwrap();
        let other = "checkpoints/log.example_2fv1/0000000000000000000/0000000000000000008-20261130T000000Z-cd.txt";
        let batch = create_batch(
            root.path(),
            &[
                (NAME.to_owned(), b"seven\n".to_vec()),
                (other.to_owned(), b"eight\n".to_vec()),
            ],
        );
        assert!(batch.objects.iter().all(created), "{batch:?}");
        batch.synced.unwrap();
        let store = LocalFileSystem::new_with_prefix(root.path()).unwrap();
        let read = store
            .get(&NAME.into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(read.as_ref(), b"seven\n");
        let listed: Vec<_> = {
            use futures::StreamExt as _;
            store
                .list(None)
                .map(|meta| meta.unwrap().location.to_string())
                .collect()
                .await
        };
        assert_eq!(listed.len(), 2, "no staging name is listed: {listed:?}");
    }

    #[test]
    fn a_name_already_taken_is_never_replaced_and_its_bytes_are_returned() {
        let root = tempfile::tempdir().unwrap();
        let first = create_batch(root.path(), &[(NAME.to_owned(), b"first\n".to_vec())]);
        assert!(created(&first.objects[0]));
        let again = create_batch(root.path(), &[(NAME.to_owned(), b"second\n".to_vec())]);
        match &again.objects[0] {
            Ok(Created::Existing(found)) => assert_eq!(found, b"first\n"),
            other => panic!("the taken name was not reported: {other:?}"),
        }
        assert_eq!(fs::read(root.path().join(NAME)).unwrap(), b"first\n");
        assert!(!staging_path(&root.path().join(NAME)).exists());
    }

    #[test]
    fn staging_file_left_by_a_crash_is_overwritten_not_published() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(NAME);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A crash after the staging write began, before the link.
        fs::write(staging_path(&path), b"torn staging bytes that are longer").unwrap();
        let batch = create_batch(root.path(), &[(NAME.to_owned(), b"whole\n".to_vec())]);
        assert!(created(&batch.objects[0]), "{batch:?}");
        assert_eq!(fs::read(&path).unwrap(), b"whole\n");
        assert!(!staging_path(&path).exists());
    }

    #[test]
    fn one_failed_object_fails_alone_and_the_rest_are_written_and_synced() {
        let root = tempfile::tempdir().unwrap();
        // A file where the object's folder should be.
        fs::write(root.path().join("checkpoints"), b"not a folder").unwrap();
        let batch = create_batch(
            root.path(),
            &[
                (NAME.to_owned(), b"blocked\n".to_vec()),
                ("manifests/other.txt".to_owned(), b"fine\n".to_vec()),
            ],
        );
        assert!(batch.objects[0].is_err(), "{batch:?}");
        assert!(created(&batch.objects[1]), "{batch:?}");
        batch.synced.unwrap();
        assert_eq!(
            fs::read(root.path().join("manifests/other.txt")).unwrap(),
            b"fine\n"
        );
    }
}
