//! `cargo xtask bench report`: SVG plots (plotters) and a Markdown table of the newest recorded
//! benchmark results, into `docs/bench/`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;

/// One plotted quantity: file name, title, y-axis label, and how to read it from a result.
struct Chart {
    file: &'static str,
    title: &'static str,
    y_label: &'static str,
    value: fn(&Value) -> Option<f64>,
}

const ARENA_CHARTS: [Chart; 3] = [
    Chart {
        file: "arena-cpu.svg",
        title: "Server CPU per client",
        y_label: "ms of CPU per client-second",
        value: |r| r["server_cpu_ms_per_client_s"].as_f64(),
    },
    Chart {
        file: "arena-bytes.svg",
        title: "Bytes received per client",
        y_label: "bytes per client per second",
        value: |r| r["rx_payload_bytes_per_client_s"].as_f64(),
    },
    Chart {
        file: "arena-latency.svg",
        title: "Input-to-state latency, p99",
        y_label: "milliseconds",
        value: |r| r["latency_ms"]["p99"].as_f64(),
    },
];

const WHITEBOARD_CHARTS: [Chart; 2] = [
    Chart {
        file: "whiteboard-convergence.svg",
        title: "Whiteboard: last op to every client converged",
        y_label: "milliseconds",
        value: |r| r["convergence_ms"].as_f64(),
    },
    Chart {
        file: "whiteboard-bytes.svg",
        title: "Whiteboard: bytes the server sent per client",
        y_label: "bytes per client",
        value: |r| r["server_bytes_sent_per_client"].as_f64(),
    },
];

pub fn render(root: &Path) -> Result<()> {
    let out = root.join("docs").join("bench");
    std::fs::create_dir_all(&out)?;
    let arena = newest(root, "arena", "n")?;
    for chart in &ARENA_CHARTS {
        plot(&out.join(chart.file), chart, &arena, "players in the room (N)")?;
    }
    std::fs::write(out.join("arena.md"), table(&arena))?;
    let whiteboard = newest(root, "whiteboard", "w")?;
    if !whiteboard.is_empty() {
        for chart in &WHITEBOARD_CHARTS {
            plot(&out.join(chart.file), chart, &whiteboard, "writers (W), with as many readers")?;
        }
    }
    println!("wrote the charts and arena.md into {}", out.display());
    Ok(())
}

/// The newest successful result per (configuration, size) of one workload: later lines win.
fn newest(root: &Path, workload: &str, size: &str) -> Result<BTreeMap<(String, u64), Value>> {
    let results = root.join("bench").join("results").join(format!("{workload}.jsonl"));
    let mut newest = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(&results) else { return Ok(newest) };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).with_context(|| format!("bad line in {}", results.display()))?;
        if row["ok"].as_bool() == Some(true) {
            let config = row["config"].as_str().unwrap_or(workload).to_owned();
            newest.insert((config, row[size].as_u64().unwrap_or(0)), row);
        }
    }
    Ok(newest)
}

fn plot(path: &Path, chart: &Chart, rows: &BTreeMap<(String, u64), Value>, x_label: &str) -> Result<()> {
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for ((config, n), row) in rows {
        if let Some(y) = (chart.value)(row) {
            series.entry(config.as_str()).or_default().push((*n as f64, y));
        }
    }
    let x_max = series.values().flatten().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = series.values().flatten().map(|p| p.1).fold(0.0, f64::max).max(f64::EPSILON) * 1.15;
    let area = SVGBackend::new(path, (720, 420)).into_drawing_area();
    area.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut plot = ChartBuilder::on(&area)
        .caption(chart.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    plot.configure_mesh().x_desc(x_label).y_desc(chart.y_label).draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // Enough distinct colours that no two configurations share one.
    let colors = [
        RGBColor(0x3b, 0x6e, 0xd8),
        RGBColor(0xe0, 0x6c, 0x1f),
        RGBColor(0x2a, 0x9d, 0x5c),
        RGBColor(0x9b, 0x3b, 0xb5),
        RGBColor(0xc8, 0x2a, 0x3c),
        RGBColor(0x6b, 0x6b, 0x6b),
    ];
    for ((config, points), color) in series.iter().zip(colors.iter().cycle()) {
        let color = *color;
        plot.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(*config)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        plot.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    area.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

fn table(rows: &BTreeMap<(String, u64), Value>) -> String {
    let mut out = String::from(
        "<!-- Generated by `cargo xtask bench report` from bench/results/arena.jsonl. -->\n\
         | config | N | server CPU cores | ms CPU / client·s | RSS MB | B/s per client | latency p50 / p99 / max ms | snapshots/s min | tick p99 ms | fan-out p99 ms | missed ticks | date | commit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((config, n), r) in rows {
        let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
        out.push_str(&format!(
            "| {config} | {n} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} | {} |\n",
            f(&r["server_cpu_cores"]),
            f(&r["server_cpu_ms_per_client_s"]),
            f(&r["server_rss_peak_mb"]),
            f(&r["rx_payload_bytes_per_client_s"]),
            f(&r["latency_ms"]["p50"]),
            f(&r["latency_ms"]["p99"]),
            f(&r["latency_ms"]["max"]),
            f(&r["snapshots_per_s_per_client"]["min"]),
            f(&r["tick_ms"]["p99"]),
            f(&r["fanout_ms"]["p99"]),
            r["missed_ticks"],
            r["date"].as_str().unwrap_or("?"),
            r["commit"].as_str().unwrap_or("?"),
        ));
    }
    if let Some(machine) = rows.values().next().and_then(|r| r["machine"].as_str()) {
        out.push_str(&format!("\nMachine: {machine}.\n"));
    }
    out
}
