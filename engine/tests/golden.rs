//! Data-driven golden tests, in the manner of etcd raft's `testdata/`.
//!
//! Each file in `testdata/` is a script of blocks:
//! ```text
//! # comments and blank lines between blocks are kept
//! command arg key=value
//! ----
//! expected output (one or more lines)
//! <blank line>
//! ```
//! Commands run in order against one state that lives for the whole file.
//! `REWRITE=1 cargo test -p ringraft-engine --test golden` rewrites the
//! expected outputs from what the code does now; review the diff.

use std::fmt::Write as _;
use std::path::PathBuf;

use ringraft_engine::raft::quorum::{self, VoteResult};
use ringraft_engine::raft::{Progress, ProgressState};

/// One parsed command: name, positional args, key=value args.
struct Command<'a> {
    name: &'a str,
    args: Vec<&'a str>,
}

impl<'a> Command<'a> {
    fn parse(line: &'a str) -> Command<'a> {
        let mut parts = line.split_whitespace();
        let name = parts.next().expect("command name");
        Command {
            name,
            args: parts.collect(),
        }
    }

    fn key(&self, key: &str) -> u64 {
        self.args
            .iter()
            .find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("`{}` needs {key}=N", self.name))
            .parse()
            .expect("a number")
    }

    fn positional(&self) -> Vec<&'a str> {
        self.args
            .iter()
            .copied()
            .filter(|a| !a.contains('='))
            .collect()
    }
}

/// Runs every block of `file` through `run`; compares or rewrites.
fn run_file(file: &str, mut run: impl FnMut(&Command) -> String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    let mut mismatches = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let command = Command::parse(line);
        assert_eq!(
            lines.next(),
            Some("----"),
            "{file}: `{line}` must be followed by ----"
        );
        let mut expected = String::new();
        while let Some(l) = lines.next_if(|l| !l.trim().is_empty()) {
            expected.push_str(l);
            expected.push('\n');
        }
        let actual = run(&command);
        if actual != expected {
            mismatches.push(format!(
                "{line}\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
        let _ = write!(out, "{line}\n----\n{actual}");
    }
    if rewrite {
        std::fs::write(&path, out).expect("rewrite golden file");
    } else {
        assert!(
            mismatches.is_empty(),
            "{file}: {} block(s) differ (REWRITE=1 to accept):\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
    }
}

fn describe(pr: &Progress) -> String {
    let state = match pr.state {
        ProgressState::Probe => "probe",
        ProgressState::Replicate => "replicate",
        ProgressState::Snapshot => "snapshot",
    };
    let mut s = format!("{state} match={} next={}", pr.matched, pr.next);
    if pr.state == ProgressState::Snapshot {
        let _ = write!(s, " pending_snapshot={}", pr.pending_snapshot);
    }
    let _ = writeln!(
        s,
        " paused={} inflight={} inflight_bytes={}",
        pr.is_paused(),
        pr.inflights.count(),
        pr.inflights.bytes()
    );
    s
}

#[test]
fn progress_transitions() {
    let mut pr: Option<Progress> = None;
    run_file("progress.txt", |c| {
        let changed = match c.name {
            "new" => {
                pr = Some(Progress::new(
                    c.key("last"),
                    c.key("msgs") as usize,
                    c.key("bytes"),
                ));
                true
            }
            name => {
                let p = pr.as_mut().expect("`new` first");
                match name {
                    "send" => {
                        if p.is_paused() {
                            false
                        } else {
                            let last = c.key("last");
                            p.sent_entries(last, c.key("bytes"));
                            true
                        }
                    }
                    "ack" => p.on_ack(c.key("index")),
                    "reject" => p.on_reject(c.key("rejected"), c.key("hint")),
                    "become-snapshot" => {
                        p.become_snapshot(c.key("index"));
                        true
                    }
                    "snapshot-done" => p.on_snapshot_done(c.key("index")),
                    "snapshot-failed" => p.on_snapshot_failed(),
                    "heartbeat-interval" => {
                        p.on_heartbeat_interval();
                        true
                    }
                    "heartbeat-response" => {
                        p.on_heartbeat_response();
                        true
                    }
                    other => panic!("unknown command {other}"),
                }
            }
        };
        let p = pr.as_ref().expect("progress");
        let mut out = describe(p);
        if !changed {
            out.insert_str(0, "(ignored) ");
        }
        out
    });
}

#[test]
fn quorum_maths() {
    run_file("quorum.txt", |c| match c.name {
        "commit" => {
            let acked: Vec<u64> = c.positional().iter().map(|a| a.parse().unwrap()).collect();
            format!("committed={}\n", quorum::committed_index(&acked))
        }
        "votes" => {
            let votes: Vec<Option<bool>> = c
                .positional()
                .iter()
                .map(|a| match *a {
                    "y" => Some(true),
                    "n" => Some(false),
                    "_" => None,
                    other => panic!("vote {other}: y, n or _"),
                })
                .collect();
            let result = match quorum::vote_result(&votes) {
                VoteResult::Won => "won",
                VoteResult::Lost => "lost",
                VoteResult::Pending => "pending",
            };
            format!(
                "{result} (majority {} of {})\n",
                quorum::majority(votes.len()),
                votes.len()
            )
        }
        other => panic!("unknown command {other}"),
    });
}
