//! Log setup: human lines with a timestamp on a terminal or file, and
//! syslog-prefixed lines without timestamps under systemd's journal
//! (`JOURNAL_STREAM` set), which stamps and levels them itself.

use std::io::Write;

/// Installs the logger. `RUST_LOG`, when set, overrides `level`.
pub fn init(level: log::LevelFilter) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // fuser warns about things that are normal here (a second unmount
    // attempt after `umount`); keep it at error unless asked.
    builder.filter_module("fuser", log::LevelFilter::Error.min(level));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    if journal {
        builder.format(|buf, record| journal_line(buf, record.level(), record.args()));
    } else {
        builder.format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                buf.timestamp_millis(),
                record.level(),
                record.args()
            )
        });
    }
    // A second init (tests) keeps the first logger.
    let _ = builder.try_init();
}

/// One line for the journal: `<N>` (the syslog priority, which journald
/// strips and files as the level) and the message, no timestamp.
fn journal_line(
    out: &mut impl Write,
    level: log::Level,
    args: &std::fmt::Arguments,
) -> std::io::Result<()> {
    let prio = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    writeln!(out, "<{prio}>{args}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_the_syslog_priority_and_no_timestamp() {
        let mut out = Vec::new();
        for (level, msg) in [
            (log::Level::Error, "disk gone"),
            (log::Level::Warn, "slow"),
            (log::Level::Info, "serving"),
            (log::Level::Debug, "detail"),
            (log::Level::Trace, "more"),
        ] {
            journal_line(&mut out, level, &format_args!("{msg}")).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<3>disk gone\n<4>slow\n<6>serving\n<7>detail\n<7>more\n"
        );
    }
}
