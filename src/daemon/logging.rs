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
        builder.format(|buf, record| {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{prio}>{}", record.args())
        });
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
