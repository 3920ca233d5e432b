#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! A real collector process whose store sits on a 16 MiB tmpfs, filled to `ENOSPC` with `dd`
//! and freed again: `503` + `Retry-After` and `/readyz` not ready while full, accepting again
//! within 5 s of the `rm`, a clean SIGTERM exit, and every `202`'d report in the store after.
//! Needs root (mount); skips with a printed reason otherwise. Always unmounts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::UnixMillis;
use vantage_agent::wire::AgentIdentity;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{
    CollectorConfig, CollectorProc, HttpClient, seal_envelope, unix_now, write_collector_key,
};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}: {status}", dir.display());
        Mount(dir.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_then_recovers_and_loses_nothing_acknowledged() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _mount = Mount::tmpfs(&mnt, "16m");
    let collector_dir = dir.path().join("collector");
    std::fs::create_dir(&collector_dir).unwrap();
    let key = write_collector_key(&collector_dir, [33; 32]);
    let store_path = mnt.join("data");
    let toml = CollectorConfig { unlimited: true, ..Default::default() }.to_toml().replace(
        "path = \"data\"\n",
        &format!(
            "path = \"{}\"\nmin_free_bytes = 4194304\nreserve_bytes = 2097152\n",
            store_path.display()
        ),
    );
    let collector = CollectorProc::start(&collector_dir, &toml);
    let addr = collector.plain_addr().unwrap();
    let mut client = HttpClient::connect_plain(addr).await.unwrap();

    let mut rng = SeededEntropy::insecure_from_seed([5; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let mut acknowledged: HashSet<[u8; 16]> = HashSet::new();
    let public = key.public_key();
    let mut seq = 0u64;
    let mut post = async |client: &mut HttpClient| {
        seq += 1;
        let envelope = seal_envelope(&agent, &public, seq, 3, unix_now(), &mut rng);
        (client.post_envelope(envelope.bytes).await.unwrap(), envelope.report_ids)
    };
    for _ in 0..20 {
        let ((status, body), ids) = post(&mut client).await;
        assert_eq!(status, 202, "{body:?}");
        acknowledged.extend(ids);
    }
    let (status, _) = client.get("/readyz").await.unwrap();
    assert_eq!(status, 200);

    // Fill the file system to ENOSPC.
    let fill = mnt.join("fill");
    let dd = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", fill.display()))
        .args(["bs=1M", "status=none"])
        .output()
        .unwrap();
    assert!(!dd.status.success(), "dd should stop at ENOSPC");
    assert!(String::from_utf8_lossy(&dd.stderr).contains("No space left"), "{dd:?}");

    let mut refused = 0;
    for _ in 0..10 {
        let ((status, body), ids) = post(&mut client).await;
        match status.as_u16() {
            503 => {
                assert!(String::from_utf8_lossy(&body).starts_with("retry after"), "{body:?}");
                refused += 1;
            }
            // Accepted before the guard saw the disk fill: it must survive like the others.
            202 => acknowledged.extend(ids),
            other => panic!("{other}: {body:?}"),
        }
    }
    assert!(refused >= 9, "only {refused} of 10 refused while the disk is full");
    let (status, body) = client.get("/readyz").await.unwrap();
    assert_eq!(status, 503, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("min_free_bytes"), "{body:?}");

    // Free the space: accepted again within 5 s, without a restart.
    std::fs::remove_file(&fill).unwrap();
    let freed = Instant::now();
    loop {
        let ((status, _), ids) = post(&mut client).await;
        if status == 202 {
            acknowledged.extend(ids);
            break;
        }
        assert!(freed.elapsed() < Duration::from_secs(5), "still {status} 5 s after the rm");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = freed.elapsed();
    let (status, body) = client.get("/readyz").await.unwrap();
    assert_eq!(status, 200, "{body:?}");
    for _ in 0..5 {
        let ((status, body), ids) = post(&mut client).await;
        assert_eq!(status, 202, "{body:?}");
        acknowledged.extend(ids);
    }
    drop(client);

    let stderr = collector.stderr();
    let exit = collector.terminate();
    assert!(exit.success(), "SIGTERM exit {exit}: {stderr}");

    let store = Store::open(StoreConfig::new(&store_path)).unwrap();
    let stored: HashSet<[u8; 16]> =
        store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).map(|r| r.unwrap().id).collect();
    let missing = acknowledged.difference(&stored).count();
    assert_eq!(missing, 0, "{missing} acknowledged reports missing after restart");
    store.close().await.unwrap();
    eprintln!(
        "disk full: {refused}/10 refused with 503, recovered {recovery:?} after rm, {} \
         acknowledged reports all stored after restart",
        acknowledged.len()
    );
}
