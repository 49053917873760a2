//! kubectl's human durations and timestamps.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// apimachinery's `duration.HumanDuration`: ~2-3 significant figures (`5s`, `3m2s`, `4h`, `2d`).
pub fn human_duration(seconds: i64) -> String {
    // Up to 2 seconds in the future counts as now (clock skew).
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{}h", hours / 24, h) };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{}d", hours / 24 / 365, dy) };
    }
    format!("{}y", hours / 24 / 365)
}

/// kubectl's `translateTimestampSince`: the age of `t` at `now`, `<unknown>` without a time.
pub fn since(t: Option<&Time>, now: Timestamp) -> String {
    match t {
        None => "<unknown>".into(),
        Some(t) => human_duration(seconds_between(t.0, now)),
    }
}

pub(crate) fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    let d = to.as_duration() - from.as_duration();
    d.as_secs()
}

/// Go's `time.RFC1123Z` in the local time zone: `Mon, 02 Jan 2006 15:04:05 -0700`.
pub fn rfc1123z(t: &Time) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32).single() {
        Some(dt) => dt.format("%a, %d %b %Y %H:%M:%S %z").to_string(),
        None => t.0.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_apimachinery() {
        let cases = [
            (-3, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (4 * 3600 + 30 * 60, "4h30m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn since_a_time() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        let t = Time("2024-05-01T11:57:00Z".parse().unwrap());
        assert_eq!(since(Some(&t), now), "3m");
        assert_eq!(since(None, now), "<unknown>");
    }
}
