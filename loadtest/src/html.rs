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

fn throughput_plot(r: &Report<'_>) -> anyhow::Result<String> {
    let t = &r.stats.timeline;
    let ok: Vec<(f64, f64)> = t
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, s.succeeded as f64))
        .collect();
    let errors: Vec<(f64, f64)> = t
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, s.errors as f64))
        .collect();
    let ymax = ok.iter().chain(&errors).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput over time", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..(t.len().max(1) as f64), 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("completed per second")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(ok, BLUE.stroke_width(2)))
            .map_err(err)?
            .label("succeeded")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(errors, RED.stroke_width(2)))
            .map_err(err)?
            .label("errors")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
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
    let lines = [(0.5, "p50", GREEN), (0.9, "p90", BLUE), (0.99, "p99", RED)];
    let all: Vec<Vec<(f64, f64)>> = lines.iter().map(|(q, _, _)| series(*q)).collect();
    let ymax = all.iter().flatten().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency percentiles over time", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..(t.len().max(1) as f64), 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("latency (ms)")
            .draw()
            .map_err(err)?;
        for ((_, label, color), points) in lines.iter().zip(all) {
            let color = *color;
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Latency by percentile on a "nines" axis (90%, 99%, 99.9%, ...), as HdrHistogram plots it.
fn distribution_plot(r: &Report<'_>) -> anyhow::Result<String> {
    let h = &r.stats.latency;
    let max_nines = 4.0;
    let points: Vec<(f64, f64)> = (0..=400)
        .map(|k| {
            let nines = f64::from(k) / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    let ymax = points.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency distribution", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_nines, 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(5)
            .x_label_formatter(&|n| match n.round() as i32 {
                0 => "0%".into(),
                1 => "90%".into(),
                2 => "99%".into(),
                3 => "99.9%".into(),
                _ => "99.99%".into(),
            })
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
