//! A new file flushed while still empty still streams its parts as it is
//! written. A shell's `cmd > file` and GNU dd open the file, dup2 the
//! descriptor and close the first one: that close is a flush of the empty
//! file, which used to end streaming, so the whole file went up at close.
//! Its parts are kept in memory for their upload and written to the
//! staging file as they come: a reader sees every byte while it is open.
//! A chmod and a utimens on the open file after its upload was created
//! (`cp -p` sets times on the descriptor before closing it) reach the
//! stored object.
//!
//! One test in this file on purpose: a process another test spawned would
//! inherit the open descriptor, and its close-on-exec is a flush too.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use support::mount::Mount;
use support::proxy::FaultProxy;
use support::{blocking, new_bucket, server, sha256, test_data, wait_until};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_flushed_while_empty_streams_and_reads_back_while_open() {
    let c = new_bucket("flushstream").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &["-d", "-o", "part_size=5MiB"]);
    let data = test_data(17 * MIB, 3);
    let path = mount.path.join("out.bin");
    let file = blocking({
        let (data, path) = (data.clone(), path.clone());
        move || {
            let mut f = std::fs::File::create(&path).unwrap();
            // What `> file` does: the first descriptor is closed (a flush)
            // and writing goes on through its duplicate.
            drop(f.try_clone().unwrap());
            // Whole blocks first, then odd-sized writes that are not
            // block-aligned.
            let (blocks, odd) = data.split_at(9 * MIB);
            for chunk in blocks.chunks(MIB) {
                f.write_all(chunk).unwrap();
            }
            for chunk in odd.chunks(100_003) {
                f.write_all(chunk).unwrap();
            }
            f
        }
    })
    .await;
    let streamed = wait_until(Duration::from_secs(20), || {
        proxy.count("PUT", "partNumber=3") > 0
    });
    let parts_before_close = proxy.count("PUT", "partNumber=");
    let read_back = blocking({
        let path = path.clone();
        move || {
            let mut all = Vec::new();
            std::fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut all)
                .unwrap();
            all
        }
    })
    .await;
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    blocking(move || {
        // fchmod and futimens, on the open descriptor.
        file.set_permissions(std::fs::Permissions::from_mode(0o640))
            .unwrap();
        file.set_modified(mtime).unwrap();
        drop(file)
    })
    .await;
    assert!(
        mount
            .log_text()
            .contains("a whole part goes up from memory"),
        "the parts were uploaded from memory, not read back"
    );
    assert!(
        streamed,
        "three whole parts went up while the file was still open (saw {parts_before_close})"
    );
    assert_eq!(
        sha256(&read_back),
        sha256(&data),
        "every byte readable while the file is open"
    );
    let (_, stored) = c
        .get_object_bytes("out.bin", Default::default())
        .await
        .unwrap();
    assert_eq!(sha256(&stored), sha256(&data), "the content, exactly");
    let meta = c.head_object("out.bin", None).await.unwrap().user_metadata;
    assert_eq!(
        meta.get("mode").map(String::as_str),
        Some(&*(libc::S_IFREG | 0o640).to_string()),
        "{meta:?}"
    );
    assert_eq!(
        meta.get("mtime").map(String::as_str),
        Some("1000000000"),
        "{meta:?}"
    );
    assert_eq!(proxy.count("PUT", "partNumber=4"), 1, "the tail at close");
}
