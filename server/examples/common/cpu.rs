//! CPU time of this process, its threads and other processes, read from `/proc` (Linux).

/// Linux reports CPU times in /proc in units of USER_HZ, which the kernel ABI fixes at 100.
const USER_HZ: f64 = 100.0;

/// utime + stime of one `/proc/…/stat` line, in seconds.
pub fn cpu_of_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line are utime and stime; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU seconds of this process so far.
pub fn own_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_of_stat(&s))
        .unwrap_or(0.0)
}

/// CPU seconds of this process's live threads whose name starts with `prefix` (the kernel keeps
/// the first 15 bytes of a thread's name).
#[allow(dead_code)] // not every example that includes this module asks for its threads
pub fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| {
            s.find('(')
                .is_some_and(|open| s[open + 1..].starts_with(prefix))
        })
        .filter_map(|s| cpu_of_stat(&s))
        .sum()
}

/// Bytes this process's live threads whose name starts with `prefix` passed to `write`-family
/// calls so far (`wchar` of `/proc/self/task/*/io`), whether or not they reached the disk yet.
#[allow(dead_code)] // not every example that includes this module asks for it
pub fn threads_written(prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|name| name.starts_with(prefix))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("io")).ok())
        .filter_map(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}
