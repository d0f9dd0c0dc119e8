//! Sixteen readers and writers at once, for a bounded time, on a mix of
//! large and small files: no errors, exact bytes, and the daemon's memory
//! within cache_size + write_buffer + four parts being filled + a stated
//! constant.

mod support;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use support::mount::Mount;
use support::{blocking, new_bucket, server, sha256, test_data, upload};

const MIB: usize = 1024 * 1024;
/// What the daemon may use beyond its caches: code, runtime, HTTP buffers,
/// in-flight request bodies (see README, "Memory").
const BASE_RSS_MIB: u64 = 160;

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_workers_for_thirty_seconds() {
    let c = new_bucket("load").await;
    let shared = test_data(24 * MIB, 99);
    upload(&c, "shared.bin", shared.clone()).await;
    let mount = Mount::start(
        c.bucket(),
        &server().endpoint,
        &[
            "-o",
            "cache_size=32MiB,write_buffer=32MiB,read_ahead_max=8MiB",
        ],
    );
    let pid = mount.pid().unwrap();
    let root = mount.path.clone();
    let (ops, errors) = blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let workers: Vec<_> = (0..16u64)
            .map(|w| {
                let root = root.clone();
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let mut seed = w * 7919 + 1;
                    let mut next = move |n: u64| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed % n.max(1)
                    };
                    let (mut ops, mut errors) = (0u64, Vec::new());
                    let reader = std::fs::File::open(root.join("shared.bin")).unwrap();
                    while Instant::now() < deadline {
                        if w % 2 == 0 {
                            // Writers: a new file of up to 6 MiB, then read it back.
                            let size = next(6 * MIB as u64) as usize;
                            let data = test_data(size, w * 1000 + ops);
                            let path = root.join(format!("w{w}-{}.bin", ops % 3));
                            let result = std::fs::File::create(&path)
                                .and_then(|mut f| f.write_all(&data).and_then(|()| f.sync_all()))
                                .and_then(|()| std::fs::read(&path));
                            match result {
                                Ok(back) if sha256(&back) == sha256(&data) => {}
                                Ok(_) => errors.push(format!("{} read back wrong", path.display())),
                                Err(e) => errors.push(format!("{}: {e}", path.display())),
                            }
                        } else {
                            // Readers: random ranges of the shared object,
                            // with the kernel's copy dropped so that reads
                            // reach the daemon's cache and the server.
                            // SAFETY: advice on our own open descriptor.
                            unsafe {
                                libc::posix_fadvise(
                                    std::os::fd::AsRawFd::as_raw_fd(&reader),
                                    0,
                                    0,
                                    libc::POSIX_FADV_DONTNEED,
                                )
                            };
                            let offset = next(shared.len() as u64) as usize;
                            let len =
                                (next(2 * MIB as u64) as usize + 1).min(shared.len() - offset);
                            let mut buf = vec![0u8; len];
                            match reader.read_exact_at(&mut buf, offset as u64) {
                                Ok(()) if buf[..] == shared[offset..offset + len] => {}
                                Ok(()) => {
                                    errors.push(format!("shared.bin at {offset}+{len} differs"))
                                }
                                Err(e) => errors.push(format!("shared.bin at {offset}: {e}")),
                            }
                        }
                        ops += 1;
                    }
                    (ops, errors)
                })
            })
            .collect();
        let mut total = 0;
        let mut errors = Vec::new();
        for w in workers {
            let (ops, errs) = w.join().unwrap();
            total += ops;
            errors.extend(errs);
        }
        (total, errors)
    })
    .await;
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(ops > 100, "only {ops} operations in 30 s");
    let peak = peak_rss_mib(pid);
    eprintln!("{ops} operations; daemon peak RSS {peak} MiB");
    assert!(
        peak <= 32 + 32 + 4 * 8 + BASE_RSS_MIB,
        "peak RSS {peak} MiB over the bound"
    );
}
