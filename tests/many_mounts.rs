//! Several mounts of one bucket, as on several machines: what one mount
//! closes, renames or deletes, the other sees within `metadata_ttl` (plus
//! the time of a request), and a reader never gets a mix of two versions
//! (SEMANTICS.md "Consistency").
//!
//! Each test mounts the same bucket twice, from two daemons with their
//! own caches, as two machines would.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::mount::Mount;
use support::{blocking, server, test_data, wait_until};

const MIB: usize = 1024 * 1024;

/// The default `metadata_ttl` and `negative_ttl`.
const TTL: Duration = Duration::from_secs(1);

/// How long past the TTL a change may take to show on the other mount on
/// a busy test machine: the time of a request or two, and scheduling.
const SLACK: Duration = Duration::from_secs(4);

fn write_closed(path: &Path, data: &[u8]) {
    support::write_closed(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn names(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// Wait until `check` holds, at most `TTL + SLACK`; how long it took.
fn seen_within_ttl(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    assert!(
        wait_until(TTL + SLACK, &mut check),
        "{what}: not seen on the other mount within {:?}",
        TTL + SLACK
    );
    start.elapsed()
}

/// Close-to-open between mounts: after a close on A, B sees the new
/// content (even of the same size, which only the ETag tells apart), the
/// new name and the deletion, each within the TTL. B's cached pages of
/// the old content are dropped when its open finds the ETag changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_on_one_mount_is_seen_by_the_other_within_the_ttl() {
    let c = support::new_bucket("mm-c2o").await;
    let a = Mount::start(c.bucket(), &server().endpoint, &[]);
    let b = Mount::start(c.bucket(), &server().endpoint, &[]);
    let (pa, pb) = (a.path.clone(), b.path.clone());
    blocking(move || {
        let v1 = test_data(MIB, 1);
        let v2 = test_data(MIB, 2);
        write_closed(&pa.join("f"), &v1);
        seen_within_ttl("a new file", || {
            std::fs::read(pb.join("f")).is_ok_and(|d| d[..] == v1[..])
        });
        // B reads it whole: its pages are in B's page cache now.
        assert!(std::fs::read(pb.join("f")).expect("read on B")[..] == v1[..]);

        // Same size, other bytes: only the ETag says it changed.
        write_closed(&pa.join("f"), &v2);
        seen_within_ttl("new content of the same size", || {
            std::fs::read(pb.join("f")).is_ok_and(|d| d[..] == v2[..])
        });

        std::fs::rename(pa.join("f"), pa.join("g")).expect("rename on A");
        seen_within_ttl("a rename", || {
            !pb.join("f").exists()
                && std::fs::read(pb.join("g")).is_ok_and(|d| d[..] == v2[..])
                && names(&pb).is_ok_and(|n| n.contains("g") && !n.contains("f"))
        });

        std::fs::remove_file(pa.join("g")).expect("unlink on A");
        seen_within_ttl("a deletion", || {
            !pb.join("g").exists() && names(&pb).is_ok_and(|n| !n.contains("g"))
        });
    })
    .await;
}

/// With `metadata_ttl=0` (and `negative_ttl=0`) every check asks the
/// bucket: B sees each of A's closes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_ttl_the_other_mount_sees_each_close_at_once() {
    let c = support::new_bucket("mm-strict").await;
    let strict = ["-o", "metadata_ttl=0,negative_ttl=0"];
    let a = Mount::start(c.bucket(), &server().endpoint, &strict);
    let b = Mount::start(c.bucket(), &server().endpoint, &strict);
    let (pa, pb) = (a.path.clone(), b.path.clone());
    blocking(move || {
        assert!(!pb.join("f").exists(), "nothing there yet");
        for round in 0..3u64 {
            let data = test_data(64 * 1024, round);
            write_closed(&pa.join("f"), &data);
            assert!(
                std::fs::read(pb.join("f")).expect("B reads at once")[..] == data[..],
                "round {round}: B reads what A closed"
            );
            assert!(names(&pb).expect("list on B").contains("f"));
        }
        std::fs::remove_file(pa.join("f")).expect("unlink on A");
        assert!(!pb.join("f").exists(), "gone on B at once");
        assert!(!names(&pb).expect("list on B").contains("f"));
    })
    .await;
}

/// Writers on both mounts fill one new directory at once: every file of
/// both is there afterwards, whole, seen from both mounts and in the
/// bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_mounts_fill_one_new_directory() {
    let c = support::new_bucket("mm-fill").await;
    let a = Mount::start(c.bucket(), &server().endpoint, &[]);
    let b = Mount::start(c.bucket(), &server().endpoint, &[]);
    let (pa, pb) = (a.path.clone(), b.path.clone());
    const EACH: u64 = 40;
    blocking(move || {
        std::fs::create_dir(pa.join("shared")).expect("mkdir on A");
        seen_within_ttl("a new directory", || pb.join("shared").is_dir());
        let writer = |root: PathBuf, tag: &'static str| {
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let data = test_data(1000 + i as usize, i + if tag == "a" { 0 } else { 1000 });
                    write_closed(&root.join("shared").join(format!("{tag}{i:02}")), &data);
                }
            })
        };
        let (ta, tb) = (writer(pa.clone(), "a"), writer(pb.clone(), "b"));
        ta.join().expect("writer on A");
        tb.join().expect("writer on B");
        let all: BTreeSet<String> = (0..EACH)
            .flat_map(|i| [format!("a{i:02}"), format!("b{i:02}")])
            .collect();
        for root in [&pa, &pb] {
            seen_within_ttl("every file of both writers", || {
                names(&root.join("shared")).is_ok_and(|n| n == all)
            });
            for i in 0..EACH {
                for (tag, seed) in [("a", i), ("b", i + 1000)] {
                    let got = std::fs::read(root.join("shared").join(format!("{tag}{i:02}")))
                        .expect("read");
                    assert!(
                        got[..] == test_data(1000 + i as usize, seed)[..],
                        "{tag}{i:02} is whole on {}",
                        root.display()
                    );
                }
            }
        }
    })
    .await;
    let listed = c.list_all("shared/", None).await.expect("list");
    let files = listed
        .objects
        .iter()
        .filter(|o| !o.key.ends_with('/'))
        .count();
    assert_eq!(files as u64, 2 * EACH, "every file is in the bucket");
}

/// Renames on A while B lists the directory again and again: B's listings
/// never fail and never lose a file (a rename copies before it deletes,
/// so a listing shows a file under its old name, its new one, or both),
/// and once A is done B shows exactly the final names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_on_one_mount_while_the_other_lists() {
    let c = support::new_bucket("mm-rename").await;
    const FILES: usize = 12;
    for i in 0..FILES {
        support::put(&c, &format!("d/f{i:02}"), format!("file {i}").as_bytes()).await;
    }
    let a = Mount::start(c.bucket(), &server().endpoint, &[]);
    let b = Mount::start(c.bucket(), &server().endpoint, &["-o", "metadata_ttl=0"]);
    let (pa, pb) = (a.path.clone(), b.path.clone());
    blocking(move || {
        let renamer = std::thread::spawn(move || {
            for round in 0..3 {
                for i in 0..FILES {
                    let (from, to) = if round % 2 == 0 {
                        (format!("f{i:02}"), format!("g{i:02}"))
                    } else {
                        (format!("g{i:02}"), format!("f{i:02}"))
                    };
                    std::fs::rename(pa.join("d").join(&from), pa.join("d").join(&to))
                        .unwrap_or_else(|e| panic!("rename {from} to {to} on A: {e}"));
                }
            }
        });
        let mut listings = 0;
        while !renamer.is_finished() {
            let seen = names(&pb.join("d")).expect("a listing on B never fails");
            for i in 0..FILES {
                assert!(
                    seen.contains(&format!("f{i:02}")) || seen.contains(&format!("g{i:02}")),
                    "file {i} is under neither name in B's listing {seen:?}"
                );
            }
            listings += 1;
        }
        renamer.join().expect("renames on A");
        assert!(listings > 0);
        // Three rounds: every file ends as g.., and only so.
        let last: BTreeSet<String> = (0..FILES).map(|i| format!("g{i:02}")).collect();
        seen_within_ttl("the final names", || {
            names(&pb.join("d")).is_ok_and(|n| n == last)
        });
        for i in 0..FILES {
            assert_eq!(
                std::fs::read_to_string(pb.join("d").join(format!("g{i:02}"))).expect("read"),
                format!("file {i}")
            );
        }
    })
    .await;
}

/// A reader on B holds a file open while A replaces it: B reads the old
/// version whole or gets ESTALE, never a mix of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_one_mount_never_mixes_versions_replaced_on_the_other() {
    let c = support::new_bucket("mm-reader").await;
    let old = test_data(16 * MIB, 1);
    let new = test_data(16 * MIB, 2);
    support::put(&c, "f", &old).await;
    let a = Mount::start(c.bucket(), &server().endpoint, &[]);
    let b = Mount::start(c.bucket(), &server().endpoint, &[]);
    let (pa, pb) = (a.path.clone(), b.path.clone());
    blocking(move || {
        let mut reader = std::fs::File::open(pb.join("f")).expect("open on B");
        let mut first = vec![0u8; MIB];
        reader.read_exact(&mut first).expect("first MiB");
        assert!(first[..] == old[..MIB]);
        write_closed(&pa.join("f"), &new);
        // Read the rest from far on, where B has fetched nothing yet.
        reader.seek(SeekFrom::Start(8 * MIB as u64)).expect("seek");
        let mut rest = Vec::new();
        match reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest[..] == old[8 * MIB..],
                "the open file reads its own version whole"
            ),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
        }
        drop(reader);
        seen_within_ttl("the new version on a new open", || {
            std::fs::read(pb.join("f")).is_ok_and(|d| d[..] == new[..])
        });
    })
    .await;
}
