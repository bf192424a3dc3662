//! CPU and memory of the server under test, from `/proc/<pid>`.

use crate::error::BenchError;

/// One sample of a process's accounting.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime of every thread, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

/// Reads utime + stime (fields 14 and 15 of `/proc/PID/stat`) and VmRSS.
pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let err = |source| BenchError::Proc { pid, source };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(err)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(err)?;
    let bad = || err(std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"));
    let cpu_ticks = parse_stat_ticks(&stat).ok_or_else(bad)?;
    let rss_kib = parse_rss_kib(&status).ok_or_else(bad)?;
    Ok(ProcSample { cpu_ticks, rss_kib })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 1000 200";
        assert_eq!(parse_stat_ticks(stat), Some(300));
    }

    #[test]
    fn parses_rss() {
        assert_eq!(parse_rss_kib("Name:\tx\nVmRSS:\t   12345 kB\n"), Some(12345));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
