//! What the figures were measured on (CPU, cores, kernel, RAM, load), and the `/proc` readers the memory figure
//! needs.

use std::process::Command;

/// The machine and the moment of a run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) os: String,
    pub(crate) ram_bytes: u64,
    pub(crate) date: String,
    pub(crate) tools: Vec<(String, String)>,
}

impl Machine {
    pub(crate) fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let tools = [
            ("runc", &["--version"][..]),
            ("crun", &["--version"]),
            ("/usr/bin/docker", &["--version"]),
            ("rustc", &["--version"]),
        ]
        .iter()
        .filter_map(|(bin, args)| {
            let out = Command::new(bin).args(*args).output().ok()?;
            let first = String::from_utf8_lossy(&out.stdout).lines().next()?.trim().to_owned();
            Some(((*bin).trim_start_matches("/usr/bin/").to_owned(), first))
        })
        .collect();
        Machine {
            cpu: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os: os_name(&read("/etc/os-release")).unwrap_or_else(|| "unknown".into()),
            ram_bytes: meminfo_kib(&read("/proc/meminfo"), "MemTotal").unwrap_or(0) * 1024,
            date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            tools,
        }
    }
}

fn command_line(bin: &str, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The first `model name` of `/proc/cpuinfo`.
pub(crate) fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_owned())
}

/// `PRETTY_NAME` of `/etc/os-release`.
pub(crate) fn os_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

/// A `kB` field of `/proc/meminfo` or `/proc/<pid>/status` (`VmHWM:   12345 kB`), in KiB.
pub(crate) fn meminfo_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| *k == field)
        .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
}

/// The 1-, 5- and 15-minute load averages of `/proc/loadavg`.
pub(crate) fn load_average(loadavg: &str) -> Option<[f64; 3]> {
    let mut it = loadavg.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The current load averages, written `0.52 / 0.61 / 0.70`.
pub(crate) fn load_now() -> String {
    match load_average(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()) {
        Some([a, b, c]) => format!("{a:.2} / {b:.2} / {c:.2}"),
        None => "unknown".into(),
    }
}

/// The CPU time (user + system) of the waited-for children of a process, in clock ticks: fields 16 and 17
/// (`cutime`, `cstime`) of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub(crate) fn children_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let cutime: u64 = fields.get(16 - 3)?.parse().ok()?;
    let cstime: u64 = fields.get(17 - 3)?.parse().ok()?;
    Some(cutime + cstime)
}

/// The CPU seconds (user + system) this process's waited-for children have used so far.
pub(crate) fn children_cpu_secs() -> Option<f64> {
    let ticks = children_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Peak resident set size (`VmHWM`) of a process, in bytes.
pub(crate) fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    meminfo_kib(&status, "VmHWM").map(|k| k * 1024)
}

/// Resident set size now (`VmRSS`) of a process, in bytes.
pub(crate) fn rss_now(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    meminfo_kib(&status, "VmRSS").map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        let status = "Name:\tdagger-rs\nVmPeak:\t  900000 kB\nVmHWM:\t   41236 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(meminfo_kib(status, "VmHWM"), Some(41236));
        assert_eq!(meminfo_kib(status, "VmSwap"), None);
        assert_eq!(load_average("1.73 1.20 0.98 3/512 4242\n"), Some([1.73, 1.20, 0.98]));
        assert_eq!(load_average("garbage"), None);
        // A command name with a space and a parenthesis; utime 11, stime 12, cutime 300, cstime 45.
        let stat = "4242 (a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 11 12 300 45 20 0 1 0 123 456 789";
        assert_eq!(children_cpu_ticks(stat), Some(345));
        assert_eq!(children_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(
            os_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }
}
