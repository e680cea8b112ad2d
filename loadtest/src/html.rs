//! The HTML report: the summary and three plots (throughput over time, latency percentiles over
//! time, the latency distribution), drawn by plotters as inline SVG, so that the file stands
//! alone and no system fonts are needed.

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::{self, Report};

const SIZE: (u32, u32) = (960, 380);

/// The whole page.
pub fn render(r: &Report<'_>) -> anyhow::Result<String> {
    let json = report::json(r);
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>provisioning load test</title>\
         <style>body{font-family:sans-serif;margin:2em;max-width:1000px}td,th{padding:2px 10px;text-align:left}\
         pre{background:#f4f4f4;padding:1em;overflow:auto}</style></head><body><h1>Provisioning load test</h1>",
    );
    page.push_str("<table>");
    let row = |k: &str, v: String| format!("<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    page.push_str(&row("target", r.target.clone()));
    page.push_str(&row("machine", json["machine"].to_string()));
    page.push_str(&row("elapsed", format!("{:.2} s", r.elapsed.as_secs_f64())));
    page.push_str(&row(
        "requests",
        format!(
            "{} ({} succeeded, {} failed)",
            r.stats.completed(),
            r.stats.succeeded,
            r.stats.failed()
        ),
    ));
    page.push_str(&row(
        "throughput",
        format!("{:.0} provisions/s", r.throughput()),
    ));
    page.push_str(&row(
        "latency",
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            r.ms(0.5),
            r.ms(0.9),
            r.ms(0.99),
            r.ms(0.999),
            r.stats.latency.max() as f64 / 1000.0
        ),
    ));
    if let Some(v) = r.verification {
        page.push_str(&row(
            "verified",
            format!(
                "{} of {} ({} missing, {} differ)",
                v.verified, v.checked, v.missing, v.differ
            ),
        ));
    }
    for (reason, n) in &r.stats.errors {
        page.push_str(&row("error", format!("{n} × {reason}")));
    }
    page.push_str("</table>");
    page.push_str(&throughput_plot(r)?);
    page.push_str(&latency_over_time_plot(r)?);
    page.push_str(&distribution_plot(r)?);
    page.push_str("<h2>JSON report</h2><pre>");
    page.push_str(&escape(&serde_json::to_string_pretty(&json)?));
    page.push_str("</pre></body></html>\n");
    Ok(page)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}

/// One line chart: its axes and its series (a label, a colour and the points; an empty label
/// draws no legend entry).
struct LineChart<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_max: f64,
    /// The y axis reaches at least this high, so that an empty chart still has a scale.
    y_floor: f64,
    /// Labels for the x axis (5 of them), where plain numbers would mislead.
    x_labels: Option<&'a dyn Fn(&f64) -> String>,
    series: Vec<Series<'a>>,
}

/// A line: its legend label, colour and points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn line_chart(c: LineChart<'_>) -> anyhow::Result<String> {
    let ymax = c
        .series
        .iter()
        .flat_map(|(_, _, points)| points)
        .map(|p| p.1)
        .fold(c.y_floor, f64::max)
        * 1.1;
    let legend = c.series.iter().any(|(label, _, _)| !label.is_empty());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..c.x_max, 0f64..ymax)
            .map_err(err)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(c.x_desc).y_desc(c.y_desc);
        if let Some(format) = c.x_labels {
            mesh.x_labels(5).x_label_formatter(format);
        }
        mesh.draw().map_err(err)?;
        for (label, color, points) in c.series {
            let drawn = chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?;
            if !label.is_empty() {
                drawn
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn throughput_plot(r: &Report<'_>) -> anyhow::Result<String> {
    let t = &r.stats.timeline;
    let per_second = |count: fn(&crate::stats::Second) -> u64| -> Vec<(f64, f64)> {
        t.iter()
            .enumerate()
            .map(|(i, s)| (i as f64, count(s) as f64))
            .collect()
    };
    line_chart(LineChart {
        caption: "Throughput over time",
        x_desc: "second of the run",
        y_desc: "completed per second",
        x_max: t.len().max(1) as f64,
        y_floor: 1.0,
        x_labels: None,
        series: vec![
            ("succeeded", BLUE, per_second(|s| s.succeeded)),
            ("errors", RED, per_second(|s| s.errors)),
        ],
    })
}

fn latency_over_time_plot(r: &Report<'_>) -> anyhow::Result<String> {
    let t = &r.stats.timeline;
    let series = |q: f64| -> Vec<(f64, f64)> {
        t.iter()
            .enumerate()
            .filter(|(_, s)| !s.latency.is_empty())
            .map(|(i, s)| (i as f64, s.latency.value_at_quantile(q) as f64 / 1000.0))
            .collect()
    };
    line_chart(LineChart {
        caption: "Latency percentiles over time",
        x_desc: "second of the run",
        y_desc: "latency (ms)",
        x_max: t.len().max(1) as f64,
        y_floor: 0.001,
        x_labels: None,
        series: vec![
            ("p50", GREEN, series(0.5)),
            ("p90", BLUE, series(0.9)),
            ("p99", RED, series(0.99)),
        ],
    })
}

/// Latency by percentile on a "nines" axis (90%, 99%, 99.9%, ...), as HdrHistogram plots it.
fn distribution_plot(r: &Report<'_>) -> anyhow::Result<String> {
    let h = &r.stats.latency;
    let points: Vec<(f64, f64)> = (0..=400)
        .map(|k| {
            let nines = f64::from(k) / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    let nines_label = |n: &f64| -> String {
        match n.round() as i32 {
            0 => "0%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            3 => "99.9%".into(),
            _ => "99.99%".into(),
        }
    };
    line_chart(LineChart {
        caption: "Latency distribution",
        x_desc: "percentile",
        y_desc: "latency (ms)",
        x_max: 4.0,
        y_floor: 0.001,
        x_labels: Some(&nines_label),
        series: vec![("", BLUE, points)],
    })
}
