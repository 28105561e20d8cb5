//! A proxy's CPU time and memory from `/proc`, summed over its process tree (Dante forks
//! worker processes; socksgate and microsocks are one process each).

use std::collections::HashMap;

use crate::error::{BenchError, Result};

/// `pid` and every live descendant of it.
pub(crate) fn tree(root: u32) -> Vec<u32> {
    let mut parent = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(fields) = stat_fields(pid)
                && let Some(ppid) = fields.get(1).and_then(|f| f.parse::<u32>().ok())
            {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut out = vec![root];
    // Bounded: each pass adds only unseen pids, and there are finitely many.
    loop {
        let before = out.len();
        for (&pid, &ppid) in &parent {
            if out.contains(&ppid) && !out.contains(&pid) {
                out.push(pid);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// `/proc/PID/stat` fields after the command name: index 0 is the state (field 3), index 1
/// the parent pid (field 4), index 11 utime (field 14), … .
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time of a process tree, in seconds, split as the kernel accounts it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuTimes {
    /// In user space (the program's own code and its libraries).
    pub(crate) user: f64,
    /// In the kernel on the process's behalf: its system calls, and the network stack's work
    /// done in them (on loopback, a send also delivers the packet to the receiving socket).
    pub(crate) system: f64,
}

impl CpuTimes {
    pub(crate) fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::AddAssign for CpuTimes {
    fn add_assign(&mut self, more: Self) {
        self.user += more.user;
        self.system += more.system;
    }
}

impl std::ops::Sub for CpuTimes {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// CPU time spent by `root`'s tree so far: utime and stime of every live process plus the
/// root's cutime and cstime (children it already reaped).
pub(crate) fn cpu_times(root: u32) -> Result<CpuTimes> {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let (mut user, mut system) = (0u64, 0u64);
    for pid in tree(root) {
        let Some(f) = stat_fields(pid) else { continue };
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        user += field(11);
        system += field(12);
        if pid == root {
            user += field(13);
            system += field(14);
        }
    }
    if user + system == 0 && stat_fields(root).is_none() {
        return Err(BenchError::Setup(format!("process {root} is gone")));
    }
    Ok(CpuTimes {
        user: user as f64 / hz,
        system: system as f64 / hz,
    })
}

/// CPU seconds spent by `root`'s tree so far (see [`cpu_times`]).
pub(crate) fn cpu_seconds(root: u32) -> Result<f64> {
    cpu_times(root).map(CpuTimes::total)
}

/// CPU seconds spent by process `pid` alone (all its threads), not its children.
pub(crate) fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let f = stat_fields(pid).ok_or_else(|| BenchError::Setup(format!("process {pid} is gone")))?;
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((field(11) + field(12)) as f64 / hz)
}

/// A `kB` line of `/proc/PID/status` or `smaps_rollup`, summed over `root`'s tree.
fn sum_kib(root: u32, file: &str, key: &str) -> Result<u64> {
    let mut total = 0;
    let mut seen = false;
    for pid in tree(root) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/{file}")) else {
            continue;
        };
        seen = true;
        total += text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    if seen {
        Ok(total)
    } else {
        Err(BenchError::Setup(format!("process {root} is gone")))
    }
}

/// Resident memory of `root`'s tree in KiB (VmRSS summed; shared pages count once per
/// process).
pub(crate) fn rss_kib(root: u32) -> Result<u64> {
    sum_kib(root, "status", "VmRSS:")
}

/// Proportional set size of `root`'s tree in KiB (shared pages split between processes).
pub(crate) fn pss_kib(root: u32) -> Result<u64> {
    sum_kib(root, "smaps_rollup", "Pss:")
}

/// Number of processes in `root`'s tree.
pub(crate) fn processes(root: u32) -> usize {
    tree(root).len()
}

/// Datagrams the kernel dropped at the UDP sockets bound to local `port` (`/proc/net/udp`'s
/// last column, `drops`: a full receive queue, mostly), or `None` if no socket has that port.
pub(crate) fn udp_drops(port: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    udp_drops_in(&text, port)
}

fn udp_drops_in(table: &str, port: u16) -> Option<u64> {
    let mut found = None;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields
            .get(1)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if local_port != Some(port) {
            continue;
        }
        let drops = fields.last().and_then(|d| d.parse::<u64>().ok())?;
        *found.get_or_insert(0) += drops;
    }
    found
}

/// Datagrams the kernel dropped at full UDP receive queues in this network namespace, all
/// sockets together (`/proc/net/snmp`, `Udp: RcvbufErrors`).
pub(crate) fn udp_rcvbuf_errors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    snmp_field(&text, "Udp:", "RcvbufErrors")
}

/// `field` of the `proto` lines of a `/proc/net/snmp` table (a line of names, then one of
/// values).
fn snmp_field(table: &str, proto: &str, field: &str) -> Option<u64> {
    let mut lines = table.lines().filter(|l| l.starts_with(proto));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        let t = cpu_times(me).unwrap();
        assert!(t.user >= 0.0 && t.system >= 0.0);
        // Read later, while other test threads run: never less.
        assert!(cpu_seconds(me).unwrap() >= t.total());
        assert!(tree(me).contains(&me));
    }

    #[test]
    fn udp_drops_of_a_port() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 0100007F:D431 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123 2 0000000000000000 17\n\
          2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 124 2 0000000000000000 0\n";
        assert_eq!(udp_drops_in(table, 0xD431), Some(17));
        assert_eq!(udp_drops_in(table, 53), Some(0));
        assert_eq!(udp_drops_in(table, 54), None);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        assert_eq!(udp_drops(port), Some(0));
    }

    #[test]
    fn snmp_counters() {
        let table = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                     Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                     Udp: 10 0 7 12 5 0\n\
                     UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                     UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(snmp_field(table, "Udp:", "RcvbufErrors"), Some(5));
        assert_eq!(snmp_field(table, "Udp:", "InErrors"), Some(7));
        assert_eq!(snmp_field(table, "Udp:", "Nope"), None);
        assert!(udp_rcvbuf_errors().is_some());
    }
}
