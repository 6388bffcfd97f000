//! The `ringraft` binary as a user runs it, on real WAL files.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use ringraft_wal::{CreateOptions, IoId, Tuning, Wal};

fn ringraft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringraft"))
        .args(args)
        .output()
        .expect("run ringraft")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn small_wal(path: &Path, entries: u64) {
    let options = CreateOptions {
        cluster_id: 7,
        capacity_bytes: 1 << 20,
        ring_bytes: 256 << 10,
        inflight_bytes_max: 64 << 10,
        tuning: Tuning {
            read_buffer_bytes: 32 << 10,
            flush_io_bytes_max: 16 << 10,
            index_chunk_bytes: 4 << 10,
            ..Tuning::default()
        },
        ..CreateOptions::default()
    };
    let mut wal = Wal::create(path, &options).unwrap();
    for index in 1..=entries {
        let payload = vec![index as u8; 100 + index as usize % 50];
        assert_eq!(wal.append(2, &payload).unwrap(), IoId::new(2, index));
        wal.flush_submit().unwrap();
        wal.flush_reap().unwrap();
    }
    wal.sync().unwrap();
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/var/tmp").unwrap()
}

#[test]
fn inspect_shows_the_live_range_and_last_io_id() {
    let dir = temp_dir();
    let path = dir.path().join("a.wal");
    small_wal(&path, 30);
    let output = ringraft(&["wal", "inspect", path.to_str().unwrap()]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(
        text.contains("live_indexes        1..=30 (30 entries)"),
        "{text}"
    );
    assert!(text.contains("last_io_id          2-30"), "{text}");
    assert!(text.contains("capacity_bytes      1048576"), "{text}");
    assert!(text.contains("cluster_id          0x7"), "{text}");
    assert!(text.contains("tail                clean"), "{text}");
}

#[test]
fn verify_is_clean_then_names_the_offset_of_damage() {
    let dir = temp_dir();
    let path = dir.path().join("a.wal");
    // Enough entries that damage near the start lies far before the tail.
    small_wal(&path, 900);
    let path_text = path.to_str().unwrap();
    let output = ringraft(&["wal", "verify", path_text]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).starts_with("clean: 900 entries"));
    // Entries 1 and 2 carry 101 and 102 payload bytes: 32-byte header plus
    // payload, 8-aligned, is 136 bytes each, so entry 3 starts 272 bytes in.
    let third_record = 8192 + 136 + 136;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xEE], third_record + 50).unwrap();
    file.sync_all().unwrap();
    let output = ringraft(&["wal", "verify", path_text]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains(&format!("damaged at file offset {third_record}")),
        "{}",
        stdout(&output)
    );
}

#[test]
fn dump_prints_the_asked_range() {
    let dir = temp_dir();
    let path = dir.path().join("a.wal");
    small_wal(&path, 10);
    let output = ringraft(&[
        "wal",
        "dump",
        path.to_str().unwrap(),
        "--from",
        "3",
        "--to",
        "5",
    ]);
    assert!(output.status.success());
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("3\t2\t103\t0303"), "{text}");
    assert!(lines[2].starts_with("5\t2\t105\t"), "{text}");
}

#[test]
fn bench_wal_prints_the_json_keys() {
    let dir = temp_dir();
    let path = dir.path().join("bench.wal");
    let output = ringraft(&[
        "bench",
        "wal",
        "--payload-bytes",
        "200",
        "--appenders",
        "4",
        "--duration",
        "200ms",
        "--capacity-bytes",
        "8388608",
        "--ring-bytes",
        "8388608",
        "--file",
        path.to_str().unwrap(),
        "--durability",
        "none",
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    for key in [
        "\"appends_per_sec\":",
        "\"mb_per_sec\":",
        "\"latency_us\":{\"p50\":",
        "\"p99\":",
        "\"p999\":",
        "\"max\":",
        "\"durability\":\"none\"",
    ] {
        assert!(text.contains(key), "{key} missing in {text}");
    }
    // The appends it measured (without RWF_DSYNC) are in the file it
    // kept, which a clean close made durable.
    let output = ringraft(&["wal", "verify", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[test]
fn an_unknown_durability_is_refused_naming_the_choices() {
    for command in [&["serve"][..], &["bench"], &["bench", "wal"]] {
        let mut args = command.to_vec();
        if command == ["serve"] {
            args.extend([
                "--id",
                "1",
                "--data-dir",
                "/nonexistent",
                "--peers",
                "1=127.0.0.1:1",
                "--client-addr",
                "127.0.0.1:2",
            ]);
        }
        args.extend(["--durability", "sometimes"]);
        let output = ringraft(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid value 'sometimes' for '--durability")
                && stderr.contains("[possible values: fsync, none]"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn serve_stops_on_sigterm_with_status_zero() {
    let dir = temp_dir();
    let (peer_port, client_port) = (common::ports::block(1), common::ports::block(1));
    let peers = format!("1=127.0.0.1:{peer_port}");
    let client = format!("127.0.0.1:{client_port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringraft"))
        .args(["serve", "--id", "1", "--shards", "1", "--wal-mib", "8"])
        .args(["--peers", &peers, "--client-addr", &client])
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Serving once a PING is answered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let answered = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(&client) {
            use std::io::{Read, Write};
            stream.write_all(b"PING\r\n").unwrap();
            let mut reply = [0u8; 7];
            if stream.read_exact(&mut reply).is_ok() {
                break reply;
            }
        }
        assert!(std::time::Instant::now() < deadline, "serve never answered");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(&answered, b"+PONG\r\n");
    // SAFETY: plain syscall on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            child.kill().unwrap();
            panic!("serve still running 10 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "status {status:?}: {stderr}");
    assert!(stderr.contains("signal 15: stopping"), "{stderr}");
}
