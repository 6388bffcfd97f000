//! A minimal `log` backend: one line per record on stderr, with the time
//! since start, the level and the target. `RUST_LOG=debug|info|warn|error`
//! picks the level (default info).

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

/// Longest log line written whole; longer ones are cut.
const LINE_BYTES_MAX: usize = 1024;
const CUT_MARK: &[u8] = "…".as_bytes();

struct StderrLogger {
    start: Instant,
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = self.start.elapsed();
        // One write per line, from a stack buffer: stderr is unbuffered, and
        // `writeln!` straight to it issues one write per piece, so the lines
        // of nodes sharing a terminal (`ringraft cluster`) would interleave
        // mid-line.
        let mut line = [0u8; LINE_BYTES_MAX];
        let len = render(
            &mut line,
            format_args!(
                "{:>6}.{:03} {:<5} {}: {}",
                t.as_secs(),
                t.subsec_millis(),
                record.level(),
                record.target(),
                record.args()
            ),
        );
        let _ = std::io::stderr().lock().write_all(&line[..len]);
    }

    fn flush(&self) {}
}

/// Writes `args` and a newline into `line`; returns the bytes used. A line
/// longer than the buffer is cut and marked with "…".
fn render(line: &mut [u8; LINE_BYTES_MAX], args: std::fmt::Arguments<'_>) -> usize {
    let text_bytes_max = LINE_BYTES_MAX - CUT_MARK.len() - 1;
    let mut cursor = std::io::Cursor::new(&mut line[..text_bytes_max]);
    let complete = cursor.write_fmt(args).is_ok();
    let mut len = cursor.position() as usize;
    if !complete {
        line[len..len + CUT_MARK.len()].copy_from_slice(CUT_MARK);
        len += CUT_MARK.len();
    }
    line[len] = b'\n';
    len + 1
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

/// Installs the logger once (later calls do nothing).
pub fn init() {
    let level = match std::env::var("RUST_LOG").as_deref() {
        Ok("trace") => log::LevelFilter::Trace,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("error") => log::LevelFilter::Error,
        Ok("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Info,
    };
    let logger = LOGGER.get_or_init(|| StderrLogger {
        start: Instant::now(),
        level,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_rendered_whole_with_its_newline() {
        let mut line = [0u8; LINE_BYTES_MAX];
        let len = render(&mut line, format_args!("shard {}: {}", 0, "ready"));
        assert_eq!(&line[..len], b"shard 0: ready\n");
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_cut_and_marked() {
        let mut line = [0u8; LINE_BYTES_MAX];
        let long = "x".repeat(3 * LINE_BYTES_MAX);
        let len = render(&mut line, format_args!("{long}"));
        assert_eq!(len, LINE_BYTES_MAX);
        assert!(line[..len].ends_with("…\n".as_bytes()));
        assert!(line[..len - CUT_MARK.len() - 1].iter().all(|&b| b == b'x'));
    }
}
