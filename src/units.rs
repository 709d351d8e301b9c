//! Human units, the one place for them: memory in binary units with one decimal, CPU
//! time as `1d 23h 18m 39s`, byte counts as `3.0 MiB`, size limits parsed from `64M`, and
//! text cut to a length (guest-supplied text is bounded wherever it enters a message).

/// KiB → `512.0 KiB`, `256.0 MiB`, `8.0 GiB` (binary units, one decimal).
pub fn memory_kib(kib: u64) -> String {
    const KIB_PER_MIB: u64 = 1024;
    const KIB_PER_GIB: u64 = 1024 * 1024;
    if kib < KIB_PER_MIB {
        format!("{kib}.0 KiB")
    } else if kib < KIB_PER_GIB {
        format!("{:.1} MiB", kib as f64 / KIB_PER_MIB as f64)
    } else {
        format!("{:.1} GiB", kib as f64 / KIB_PER_GIB as f64)
    }
}

/// Whole seconds → `28d 4h 26m 33s`; leading zero units are left out, seconds always shown.
pub fn cpu_time(total_seconds: u64) -> String {
    let days = total_seconds / 86_400;
    let hours = total_seconds % 86_400 / 3_600;
    let minutes = total_seconds % 3_600 / 60;
    let seconds = total_seconds % 60;
    if days > 0 {
        format!("{days}d {hours}h {minutes}m {seconds}s")
    } else if hours > 0 {
        format!("{hours}h {minutes}m {seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// Bytes for people: "812 B", "3.0 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Parse a size limit: plain bytes or with a K/M/G suffix (powers of 1024; "MiB" and
/// "MB" alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 64M, 1G or a number of bytes)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size (try 64M, 1G or a number of bytes)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size limit"))
}

/// A duration in seconds for messages: `600 s`, `0.7 s`.
pub fn seconds(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Parse a rate: a size as [`parse_size`] takes it, with an optional `/s`; `0` turns
/// the floor off.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    if t.trim() == "0" {
        return Ok(0);
    }
    parse_size(t)
}

/// At most `max` characters of `s`; when cut, it ends with `…[N more bytes]`.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}…[{} more bytes]", &s[..at], s.len() - at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_examples() {
        assert_eq!(memory_kib(8 * 1024 * 1024), "8.0 GiB");
        assert_eq!(memory_kib(32 * 1024 * 1024), "32.0 GiB");
        assert_eq!(memory_kib(262_144), "256.0 MiB");
        assert_eq!(memory_kib(1536), "1.5 MiB");
        assert_eq!(memory_kib(0), "0.0 KiB");
        assert_eq!(memory_kib(1023), "1023.0 KiB");
        assert_eq!(cpu_time(170_319), "1d 23h 18m 39s");
        assert_eq!(cpu_time(2_435_193), "28d 4h 26m 33s");
        assert_eq!(cpu_time(0), "0s");
        assert_eq!(cpu_time(60), "1m 0s");
        assert_eq!(cpu_time(3_600), "1h 0m 0s");
        assert_eq!(cpu_time(86_400), "1d 0h 0m 0s");
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 2 kb ").unwrap(), 2048);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(parse_rate("32K/s").unwrap(), 32 << 10);
        assert_eq!(seconds(std::time::Duration::from_secs(600)), "600 s");
        assert_eq!(seconds(std::time::Duration::from_millis(700)), "0.7 s");
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert!(parse_rate("fast").is_err());
    }

    fn parse_cpu(s: &str) -> u64 {
        s.split(' ')
            .map(|part| {
                let (n, unit) = part.split_at(part.len() - 1);
                let n: u64 = n.parse().unwrap();
                n * match unit {
                    "d" => 86_400,
                    "h" => 3_600,
                    "m" => 60,
                    "s" => 1,
                    _ => panic!("unit {unit}"),
                }
            })
            .sum()
    }

    proptest! {
        #[test]
        fn cpu_time_round_trips(secs in 0u64..10_000_000_000) {
            let s = cpu_time(secs);
            prop_assert_eq!(parse_cpu(&s), secs);
            prop_assert!(s.ends_with('s'));
            prop_assert!(!s.starts_with('0') || s == "0s");
            // Units below the first are always in range.
            for part in s.split(' ').skip(1) {
                let n: u64 = part[..part.len() - 1].parse().unwrap();
                prop_assert!(n < 60 || (part.ends_with('h') && n < 24));
            }
        }

        #[test]
        fn memory_is_close_to_the_input(kib in 0u64..(1u64 << 40)) {
            let s = memory_kib(kib);
            let (num, unit) = s.split_once(' ').unwrap();
            let v: f64 = num.parse().unwrap();
            let scale = match unit { "KiB" => 1.0, "MiB" => 1024.0, "GiB" => 1_048_576.0, _ => unreachable!() };
            prop_assert!(num.split_once('.').unwrap().1.len() == 1);
            // One decimal: off by at most half a tenth of the unit.
            prop_assert!((v * scale - kib as f64).abs() <= 0.05 * scale + 1e-9);
            prop_assert!(unit != "KiB" || kib < 1024);
            prop_assert!(unit != "MiB" || (1024..1_048_576).contains(&kib));
        }
    }
}
