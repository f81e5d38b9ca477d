//! The outputs: one markdown table, the raw figures as JSON, and two hand-written SVG charts
//! (deliveries per second against offered load; latency percentiles per workload).

use std::fmt::Write as _;

use serde::Serialize;

use crate::workload::{Figures, Scale, Workload};

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Race {
    pub commit: Option<String>,
    pub machine: String,
    pub smoke: bool,
    pub scale: Scale,
    pub figures: Vec<Figures>,
    /// Workloads that could not run on a server, with the reason.
    pub failures: Vec<(String, String, String)>,
}

const SERIES: [(&str, &str); 3] = [
    ("roam", "#1f77b4"),
    ("socketio", "#d62728"),
    ("bun", "#2ca02c"),
];

fn color(server: &str) -> &'static str {
    SERIES
        .iter()
        .find(|(s, _)| *s == server)
        .map_or("#555555", |(_, c)| c)
}

/// 1234567 -> "1,234,567".
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn mib(kib: u64) -> String {
    let m = kib as f64 / 1024.0;
    if m >= 1024.0 {
        format!("{:.2} GiB", m / 1024.0)
    } else {
        format!("{m:.0} MiB")
    }
}

fn workload_label(f: &Figures, scale: &Scale) -> String {
    match f.workload {
        Workload::Chat => format!(
            "chat: {} clients, {} rooms, {} msg/s",
            thousands(f.clients as f64),
            scale.chat_rooms,
            thousands(scale.chat_rate)
        ),
        Workload::Broadcast => format!(
            "broadcast: 1 room × {} receivers, {} msg/s",
            thousands(scale.broadcast_receivers as f64),
            thousands(scale.broadcast_rate)
        ),
        Workload::Saturation => format!(
            "saturation: offered {}/s",
            thousands(f.offered_deliveries_per_sec.unwrap_or(0.0))
        ),
        Workload::Idle => format!("idle: {} sockets", thousands(f.clients as f64)),
    }
}

/// The markdown report: a header, the table, then notes and violations.
pub fn markdown(race: &Race) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Server race{}",
        if race.smoke { " (smoke)" } else { "" }
    );
    let _ = writeln!(s);
    if let Some(c) = &race.commit {
        let _ = writeln!(s, "Commit `{c}`; {}.", race.machine);
    } else {
        let _ = writeln!(s, "{}.", race.machine);
    }
    let mut versions: Vec<String> = Vec::new();
    for f in &race.figures {
        let v = format!("{}: {}", f.server_label, f.version);
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    if !versions.is_empty() {
        let _ = writeln!(s, "Servers: {}.", versions.join("; "));
    }
    let loads: Vec<f64> = race.figures.iter().filter_map(|f| f.load_avg).collect();
    if !loads.is_empty() {
        let lo = loads.iter().copied().fold(f64::MAX, f64::min);
        let hi = loads.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "Machine load average (1 min, every process) at the end of the windows: {lo:.1} to {hi:.1}."
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| workload | server | deliveries/s (offered) | p50 ms | p99 ms | p99.9 ms | server CPU % | CPU-s per M deliveries | server RSS | load generator CPU % | closed by server | violations |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in &race.figures {
        let closed = if f.closed_by_server.is_empty() {
            "0".to_string()
        } else {
            f.closed_by_server
                .iter()
                .map(|(code, n)| {
                    if *code == 0 {
                        format!("{n} (no close frame)")
                    } else {
                        format!("{n} ({code})")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let bad = f.violations + f.missing;
        if let Some(idle) = &f.idle {
            let _ = writeln!(
                s,
                "| {} | {} | — | — | — | — | — | — | {} before, {} open ({:.1} KiB per socket), {} after close | — | {} | {} |",
                workload_label(f, &race.scale),
                f.server_label,
                mib(idle.rss_before_kib),
                mib(idle.rss_open_kib),
                idle.kib_per_socket,
                mib(idle.rss_after_kib),
                closed,
                bad
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            workload_label(f, &race.scale),
            f.server_label,
            thousands(f.deliveries_per_sec),
            thousands(f.offered_deliveries_per_sec.unwrap_or(0.0)),
            ms(f.p50_ms),
            ms(f.p99_ms),
            ms(f.p999_ms),
            f.cpu_percent,
            f.cpu_secs_per_million
                .map_or("—".into(), |v| format!("{v:.2}")),
            mib(f.rss_kib),
            f.generator_cpu_percent
                .map_or("—".into(), |v| format!("{v:.0}")),
            closed,
            bad
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Socket.IO and Bun authenticate nobody, number nothing and store nothing; roam-server \
         checks a token on every socket, numbers every event and commits it to SQLite before \
         delivering it."
    );
    let mut notes = Vec::new();
    for f in &race.figures {
        for n in &f.notes {
            notes.push(format!(
                "{} / {}: {n}",
                workload_label(f, &race.scale),
                f.server_label
            ));
        }
        if f.publish_errors > 0 {
            notes.push(format!(
                "{} / {}: {} publishes refused",
                workload_label(f, &race.scale),
                f.server_label,
                f.publish_errors
            ));
        }
        if f.missing > 0 {
            notes.push(format!(
                "{} / {}: {} events never arrived",
                workload_label(f, &race.scale),
                f.server_label,
                f.missing
            ));
        }
    }
    for (w, server, why) in &race.failures {
        notes.push(format!("{w} / {server}: did not run: {why}"));
    }
    if !notes.is_empty() {
        let _ = writeln!(s);
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let mut shown = Vec::new();
    for f in &race.figures {
        for v in &f.violation_samples {
            let line = format!("{} / {}: {v}", f.workload.name(), f.server);
            if !shown.contains(&line) {
                shown.push(line);
            }
        }
    }
    if !shown.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Violations (first of each run):");
        let _ = writeln!(s);
        for v in shown {
            let _ = writeln!(s, "- {v}");
        }
    }
    s
}

/// Ticks 1, 2, 5 × 10^k between `lo` and `hi`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                out.push(t);
            }
        }
        decade *= 10.0;
    }
    out
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A log axis mapping [lo, hi] to [a, b] pixels.
struct LogAxis {
    lo: f64,
    hi: f64,
    a: f64,
    b: f64,
}

impl LogAxis {
    fn new(lo: f64, hi: f64, a: f64, b: f64) -> Self {
        let lo = 10f64.powf(lo.max(1e-9).log10().floor());
        let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
        LogAxis { lo, hi, a, b }
    }

    fn at(&self, v: f64) -> f64 {
        let t = (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10());
        self.a + t * (self.b - self.a)
    }
}

fn svg_open(s: &mut String, w: u32, h: u32, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        w / 2,
        esc(title)
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn legend(s: &mut String, x: f64, y: f64, servers: &[(&str, &str)]) {
    for (i, (key, label)) in servers.iter().enumerate() {
        let yy = y + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{yy}" x2="{}" y2="{yy}" stroke="{}" stroke-width="3"/><circle cx="{}" cy="{yy}" r="4" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            color(key),
            x + 12.0,
            color(key),
            x + 30.0,
            yy + 4.0,
            esc(label)
        );
    }
}

/// Servers present in `figures`, in series order, with their labels.
fn servers_in(figures: &[&Figures]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for (key, _) in SERIES {
        if let Some(f) = figures.iter().find(|f| f.server == key) {
            out.push((f.server, f.server_label));
        }
    }
    out
}

/// Achieved against offered deliveries per second (saturation steps), log-log, one line per
/// server, with the ideal (achieved = offered) dashed.
pub fn saturation_svg(race: &Race) -> Option<String> {
    let pts: Vec<&Figures> = race
        .figures
        .iter()
        .filter(|f| f.workload == Workload::Saturation)
        .collect();
    if pts.is_empty() {
        return None;
    }
    let (w, h) = (720u32, 480u32);
    let (l, r, t, b) = (90.0, 690.0, 50.0, 400.0);
    let max = pts
        .iter()
        .map(|f| {
            f.offered_deliveries_per_sec
                .unwrap_or(0.0)
                .max(f.deliveries_per_sec)
        })
        .fold(1.0, f64::max);
    let min = pts
        .iter()
        .map(|f| {
            f.offered_deliveries_per_sec
                .unwrap_or(1.0)
                .min(f.deliveries_per_sec.max(1.0))
        })
        .fold(f64::MAX, f64::min);
    let x = LogAxis::new(min, max, l, r);
    let y = LogAxis::new(min, max, b, t);
    let mut s = String::new();
    svg_open(
        &mut s,
        w,
        h,
        "Broadcast saturation: deliveries per second achieved vs offered",
    );
    axes(&mut s, &x, &y, l, r, t, b);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">offered deliveries per second (log)</text>"#,
        (l + r) / 2.0,
        b + 40.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">achieved deliveries per second (log)</text>"#,
        (t + b) / 2.0,
        (t + b) / 2.0
    );
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="6 4"/>"##,
        x.at(x.lo),
        y.at(x.lo),
        x.at(x.hi),
        y.at(x.hi)
    );
    let servers = servers_in(&pts);
    for (key, _) in &servers {
        let line: Vec<(f64, f64)> = pts
            .iter()
            .filter(|f| f.server == *key)
            .map(|f| {
                (
                    x.at(f.offered_deliveries_per_sec.unwrap_or(0.0)),
                    y.at(f.deliveries_per_sec.max(1.0)),
                )
            })
            .collect();
        series(&mut s, key, &line);
    }
    legend(&mut s, l + 16.0, t + 14.0, &servers);
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="6 4"/><text x="{}" y="{}">achieved = offered</text>"##,
        l + 16.0,
        t + 14.0 + servers.len() as f64 * 18.0,
        l + 40.0,
        t + 14.0 + servers.len() as f64 * 18.0,
        l + 46.0,
        t + 18.0 + servers.len() as f64 * 18.0
    );
    let _ = writeln!(s, "</svg>");
    Some(s)
}

#[allow(clippy::too_many_arguments)]
fn axes(s: &mut String, x: &LogAxis, y: &LogAxis, l: f64, r: f64, t: f64, b: f64) {
    for v in log_ticks(x.lo, x.hi) {
        let px = x.at(v);
        let _ = writeln!(
            s,
            r##"<line x1="{px}" y1="{t}" x2="{px}" y2="{b}" stroke="#eee"/><text x="{px}" y="{}" text-anchor="middle">{}</text>"##,
            b + 18.0,
            short(v)
        );
    }
    for v in log_ticks(y.lo, y.hi) {
        let py = y.at(v);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{py}" x2="{r}" y2="{py}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            l - 6.0,
            py + 4.0,
            short(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        r - l,
        b - t
    );
}

fn series(s: &mut String, key: &str, pts: &[(f64, f64)]) {
    if pts.is_empty() {
        return;
    }
    let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"/>"#,
        path.join(" "),
        color(key)
    );
    for (x, y) in pts {
        let _ = writeln!(
            s,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{}"/>"#,
            color(key)
        );
    }
}

/// Latency percentiles (p50, p99, p99.9) of chat and broadcast, one panel per workload, one
/// line per server, log scale in milliseconds.
pub fn latency_svg(race: &Race) -> Option<String> {
    let panels: Vec<(Workload, Vec<&Figures>)> = [Workload::Chat, Workload::Broadcast]
        .into_iter()
        .map(|w| {
            (
                w,
                race.figures
                    .iter()
                    .filter(|f| f.workload == w && f.p50_ms.is_some())
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    if panels.is_empty() {
        return None;
    }
    let all: Vec<&Figures> = panels.iter().flat_map(|(_, f)| f.iter().copied()).collect();
    let vals: Vec<f64> = all
        .iter()
        .flat_map(|f| [f.p50_ms, f.p99_ms, f.p999_ms])
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    let lo = vals.iter().copied().fold(f64::MAX, f64::min).min(1.0);
    let hi = vals.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let panel_w = 360.0;
    let (t, b) = (60.0, 390.0);
    let w = (90.0 + panel_w * panels.len() as f64 + 30.0) as u32;
    let h = 500u32;
    let mut s = String::new();
    svg_open(
        &mut s,
        w,
        h,
        "Client-to-client latency percentiles (ms, log scale; lower is better)",
    );
    let y = LogAxis::new(lo, hi, b, t);
    for (i, (workload, figs)) in panels.iter().enumerate() {
        let l = 90.0 + panel_w * i as f64;
        // The gap leaves room for the next panel's tick labels.
        let r = l + panel_w - 80.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            (l + r) / 2.0,
            t - 10.0,
            workload.name()
        );
        for v in log_ticks(y.lo, y.hi) {
            let py = y.at(v);
            let _ = writeln!(
                s,
                r##"<line x1="{l}" y1="{py}" x2="{r}" y2="{py}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                l - 6.0,
                py + 4.0,
                trim(v)
            );
        }
        let xs: Vec<f64> = (0..3)
            .map(|k| l + 40.0 + k as f64 * (r - l - 80.0) / 2.0)
            .collect();
        for (k, name) in ["p50", "p99", "p99.9"].iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{name}</text>"#,
                xs[k],
                b + 18.0
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            r - l,
            b - t
        );
        for f in figs {
            let pts: Vec<(f64, f64)> = [f.p50_ms, f.p99_ms, f.p999_ms]
                .iter()
                .enumerate()
                .filter_map(|(k, v)| v.map(|v| (xs[k], y.at(v.max(y.lo)))))
                .collect();
            series(&mut s, f.server, &pts);
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">milliseconds (log)</text>"#,
        (t + b) / 2.0,
        (t + b) / 2.0
    );
    legend(&mut s, 100.0, b + 44.0, &servers_in(&all));
    let _ = writeln!(s, "</svg>");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(250_000.0), "250k");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(
            log_ticks(1.0, 100.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
    }

    #[test]
    fn log_axis_maps_ends() {
        let a = LogAxis::new(3.0, 700.0, 0.0, 300.0);
        assert_eq!(a.lo, 1.0);
        assert_eq!(a.hi, 1000.0);
        assert!((a.at(1.0) - 0.0).abs() < 1e-9);
        assert!((a.at(1000.0) - 300.0).abs() < 1e-9);
        assert!((a.at(10.0) - 100.0).abs() < 1e-9);
    }
}
