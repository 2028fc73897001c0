//! Pressure stall information (PSI): `some avg10` of `cpu.pressure`, the share of the last
//! ten seconds in which at least one task waited for a CPU, in percent. On cgroup2 each
//! cgroup has its own file; the host's is `/proc/pressure/cpu`.
use std::path::Path;

/// The host's CPU pressure file under a proc root.
pub fn host_cpu(proc_root: &Path) -> Option<f64> {
    read(&proc_root.join("pressure/cpu"))
}

/// A cgroup's CPU pressure (`cgroup` relative to the cgroup2 mount at `root`); None if the
/// cgroup is gone, PSI is off (`psi=0`), or the file does not parse.
pub fn cgroup_cpu(root: &Path, cgroup: &str) -> Option<f64> {
    let relative = cgroup.trim_start_matches('/');
    if relative.split('/').any(|s| s == "..") {
        return None;
    }
    read(&root.join(relative).join("cpu.pressure"))
}

fn read(path: &Path) -> Option<f64> {
    some_avg10(&std::fs::read_to_string(path).ok()?)
}

/// `some avg10=1.23 avg60=... total=...` -> 1.23.
pub fn some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v: f64 = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()?;
    (v.is_finite() && (0.0..=100.0).contains(&v)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_avg10_of_a_pressure_file() {
        let text = "some avg10=12.50 avg60=3.00 avg300=0.50 total=123456\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=42\n";
        assert_eq!(some_avg10(text), Some(12.5));
        assert_eq!(some_avg10("full avg10=1.00\n"), None);
        assert_eq!(some_avg10("some avg10=nan avg60=0\n"), None);
        assert_eq!(some_avg10("some avg10=250.0\n"), None);
        assert_eq!(some_avg10(""), None);
    }

    #[test]
    fn a_cgroup_file_under_the_root_given_and_never_above_it() {
        let root = std::env::temp_dir().join(format!("gimbal-psi-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a.slice/b.service")).unwrap();
        std::fs::write(
            root.join("a.slice/b.service/cpu.pressure"),
            "some avg10=40.00 avg60=0 avg300=0 total=1\n",
        )
        .unwrap();
        assert_eq!(cgroup_cpu(&root, "a.slice/b.service"), Some(40.0));
        assert_eq!(cgroup_cpu(&root, "/a.slice/b.service"), Some(40.0));
        assert_eq!(cgroup_cpu(&root, "a.slice/../a.slice/b.service"), None);
        assert_eq!(cgroup_cpu(&root, "gone.service"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
