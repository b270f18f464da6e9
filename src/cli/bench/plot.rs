//! `wsgate bench --plot FILE.svg`: the latency distribution of one or more runs as
//! percentile curves, one per run (per method), in plain SVG written here: no
//! plotting or XML crate.
//!
//! x is the percentile on a scale that gives the tail room: `log10(1 / (1 - p))`, so
//! 0, 90, 99, 99.9 and 99.99 are evenly spaced (a curve stops at the percentile its
//! sample count can tell: 99.9 needs 1 000 connections). y is the time from the
//! connection's start to its `authenticated` phase, in ms on a log scale.

use std::fmt::Write as _;

use super::Report;

/// The phase drawn: from the connection's start to an authenticated session (the
/// `101`, or the `authenticated` frame for `message`; `ticket` includes its `POST`).
pub const PHASE: &str = "authenticated";

const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 56.0;
const PLOT_W: f64 = 560.0;
const PLOT_H: f64 = 400.0;
/// Decades of `1 / (1 - p)` on the x axis: 0 to 99.99.
const DECADES: f64 = 4.0;
/// Points per decade of a curve.
const STEPS: f64 = 50.0;
/// Distinct on white and for the common colour-vision deficiencies (Okabe–Ito).
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// The x position of percentile `p` (0 ≤ p < 1).
fn x_of(p: f64) -> f64 {
    let decades = (-(1.0 - p).log10()).clamp(0.0, DECADES);
    LEFT + PLOT_W * decades / DECADES
}

/// Escapes text for an SVG text node or attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `ms` for an axis label: `0.01`, `1`, `250`.
fn ms_label(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        let s = format!("{ms:.6}");
        s.trim_end_matches('0').to_owned()
    }
}

/// The sorted samples (µs) of [`PHASE`] in `r`.
fn samples(r: &Report) -> &[u32] {
    r.samples_us
        .iter()
        .find(|(phase, _)| *phase == PHASE)
        .map_or(&[], |(_, v)| v.as_slice())
}

/// The sample at percentile `p` (nearest rank, as the report's percentiles).
fn at(v: &[u32], p: f64) -> f64 {
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1] as f64
}

/// The plot as an SVG document: one `<polyline>` per run, each with a `<title>` (its
/// label) and an entry in the legend. A run is labelled by its method, and by its
/// number too when two runs share a method.
pub fn svg(reports: &[Report]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n"
    );
    let url = reports.first().map_or("", |r| r.url.as_str());
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">wsgate bench {}: \
         latency to authenticated, by percentile</text>",
        escape(url)
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"40\" fill=\"#555\">ms from the connection's start to an \
         authenticated session (log scale); percentiles spaced by log(1/(1-p))</text>"
    );

    // y range: whole decades around every sample.
    let all = reports.iter().flat_map(|r| samples(r).iter().copied());
    let (lo_us, hi_us) = all.fold((u32::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_us, hi_us) = if lo_us > hi_us {
        (1000, 1000)
    } else {
        (lo_us, hi_us)
    };
    let lo = (f64::from(lo_us.max(1)) / 1e3).log10().floor();
    let mut hi = (f64::from(hi_us.max(1)) / 1e3).log10().ceil();
    if hi <= lo {
        hi = lo + 1.0;
    }
    let y_of = |ms: f64| TOP + PLOT_H * (1.0 - (ms.log10() - lo) / (hi - lo));

    // Grid, ticks and labels.
    let _ = writeln!(s, "<g stroke=\"#ddd\" stroke-width=\"1\">");
    let mut decade = lo;
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let ms = m * 10f64.powf(decade);
            if ms.log10() > hi + 1e-9 {
                break;
            }
            let y = y_of(ms);
            let colour = if m == 1.0 { "#bbb" } else { "#e8e8e8" };
            let _ = writeln!(
                s,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\"/>",
                LEFT + PLOT_W
            );
        }
        decade += 1.0;
    }
    let ticks = [
        (0.0, "0"),
        (0.5, "50"),
        (0.9, "90"),
        (0.99, "99"),
        (0.999, "99.9"),
        (0.9999, "99.99"),
    ];
    for (p, _) in ticks {
        let x = x_of(p);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            TOP + PLOT_H
        );
    }
    s.push_str("</g>\n");
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{PLOT_W}\" height=\"{PLOT_H}\" fill=\"none\" \
         stroke=\"#333\"/>"
    );
    let _ = writeln!(s, "<g fill=\"#333\">");
    for (p, label) in ticks {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x_of(p),
            TOP + PLOT_H + 18.0
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let ms = 10f64.powf(decade);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            y_of(ms) + 4.0,
            ms_label(ms)
        );
        decade += 1.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        LEFT + PLOT_W / 2.0,
        TOP + PLOT_H + 40.0
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">\
         ms to authenticated</text>",
        TOP + PLOT_H / 2.0
    );
    s.push_str("</g>\n");

    // One curve per run, and its legend entry.
    let shared_method = |i: usize| {
        reports
            .iter()
            .enumerate()
            .any(|(j, r)| j != i && r.method == reports[i].method)
    };
    let legend_x = LEFT + PLOT_W + 24.0;
    for (i, r) in reports.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let label = if shared_method(i) {
            format!("{} (run {})", r.method, i + 1)
        } else {
            r.method.to_string()
        };
        let v = samples(r);
        let _ = write!(
            s,
            "<polyline data-run=\"{}\" data-method=\"{}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"2\" stroke-linejoin=\"round\" points=\"",
            i + 1,
            r.method
        );
        if !v.is_empty() {
            // Up to the percentile the samples can tell: 1 - 1/n.
            let last = (v.len() as f64).log10().min(DECADES);
            let n = (last * STEPS).ceil() as usize;
            for k in 0..=n {
                let d = (k as f64 / STEPS).min(last);
                let p = 1.0 - 10f64.powf(-d);
                let _ = write!(s, "{:.1},{:.1} ", x_of(p), y_of(at(v, p) / 1e3));
            }
        }
        let _ = writeln!(s, "\"><title>{}</title></polyline>", escape(&label));
        let y = TOP + 10.0 + 44.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{legend_x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
             stroke=\"{colour}\" stroke-width=\"3\"/>",
            legend_x + 24.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            legend_x + 32.0,
            y + 4.0,
            escape(&label)
        );
        let detail = if v.is_empty() {
            "no connection authenticated".to_owned()
        } else {
            format!(
                "n={} p50 {} p99 {} max {} ms",
                v.len(),
                ms_label_fine(at(v, 0.5) / 1e3),
                ms_label_fine(at(v, 0.99) / 1e3),
                ms_label_fine(f64::from(v[v.len() - 1]) / 1e3)
            )
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\" font-size=\"11\">{detail}; c={}</text>",
            legend_x + 32.0,
            y + 20.0,
            r.concurrency
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `ms` with three significant digits: `0.123`, `4.56`, `78.9`, `1234`.
fn ms_label_fine(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

/// The same plot in a minimal HTML page (for `--plot FILE.html`).
pub fn html(reports: &[Report]) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>wsgate bench</title>\
         </head><body>\n{}</body></html>\n",
        svg(reports)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(method: super::super::BenchMethod, us: Vec<u32>) -> Report {
        Report {
            url: "ws://h/?a&b".into(),
            method,
            mode: "round_trip",
            concurrency: 4,
            attempted: us.len() as u64,
            ok: us.len() as u64,
            failed: 0,
            elapsed_s: 1.0,
            rate_per_s: 1.0,
            held_to_end: None,
            phases: vec![],
            errors: Default::default(),
            server: None,
            samples_us: vec![(PHASE, us)],
        }
    }

    #[test]
    fn percentiles_spread_the_tail_and_curves_stop_where_the_samples_do() {
        assert_eq!(x_of(0.0), LEFT);
        assert!((x_of(0.99) - (LEFT + PLOT_W / 2.0)).abs() < 1e-6);
        assert_eq!(x_of(0.9999), LEFT + PLOT_W);
        // 100 samples tell up to p99: the curve ends mid-axis.
        let r = report(
            super::super::BenchMethod::Header,
            (1..=100).map(|i| i * 100).collect(),
        );
        let svg = svg(&[r]);
        let points = svg.split("points=\"").nth(1).unwrap();
        let points = &points[..points.find('"').unwrap()];
        let last_x: f64 = points
            .split_whitespace()
            .last()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((last_x - x_of(0.99)).abs() < 0.1, "{last_x}");
        // The URL's `&` is escaped.
        assert!(svg.contains("ws://h/?a&amp;b"));
        assert!(!svg.contains("?a&b"));
    }

    #[test]
    fn two_runs_of_one_method_are_told_apart() {
        let m = super::super::BenchMethod::Cookie;
        let svg = svg(&[report(m, vec![500; 10]), report(m, vec![900; 10])]);
        assert!(svg.contains("<title>cookie (run 1)</title>"), "{svg}");
        assert!(svg.contains("<title>cookie (run 2)</title>"), "{svg}");
    }
}
