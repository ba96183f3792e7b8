//! PNG charts of a simulation, and of how a cycle's cost scales with the book, drawn with
//! plotters (fonts embedded, no system fonts needed).

use std::error::Error;
use std::path::Path;
use std::sync::Once;

use capacity_auction::{Mark, PriceReport, Simulation, Summary};
use plotters::coord::Shift;
use plotters::prelude::*;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];
const MARKS: [RGBColor; 2] = [RGBColor(255, 224, 160), RGBColor(200, 220, 255)];

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Averages over a trailing window so per-cycle noise does not hide the trend.
fn smooth(values: &[f64], window: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut sum = 0.0;
    for (i, v) in values.iter().enumerate() {
        sum += v;
        if i >= window {
            sum -= values[i - window];
        }
        out.push(sum / (i + 1).min(window) as f64);
    }
    out
}

/// The series' names in a box at the upper left.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
) -> Result {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// One panel of lines over cycles, with the marked stretches shaded behind them.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    y_label: &str,
    cycles: u64,
    series: &[(String, Vec<f64>)],
    marks: &[Mark],
) -> Result {
    let top = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(1f64..cycles as f64 + 1.0, 0f64..top)?;
    chart.configure_mesh().x_desc("cycle").y_desc(y_label).light_line_style(WHITE.mix(0.0)).draw()?;
    for (k, mark) in marks.iter().enumerate() {
        let color = MARKS[k % MARKS.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(mark.from as f64, 0.0), (mark.to as f64, top)],
                color.mix(0.6).filled(),
            )))?
            .label(mark.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.filled()));
    }
    for (k, (name, values)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(c, &v)| (c as f64, v)),
                color.stroke_width(1),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    legend(&mut chart)?;
    Ok(())
}

fn per_resource(sim: &Simulation, value: impl Fn(&PriceReport) -> f64) -> Vec<(String, Vec<f64>)> {
    sim.config
        .market
        .resources
        .iter()
        .enumerate()
        .map(|(r, name)| (name.clone(), sim.reports.iter().map(|c| value(&c.prices[r])).collect()))
        .collect()
}

/// `prices.png`: the price index and the utilization of every resource over the run.
pub(crate) fn prices(sim: &Simulation, path: &Path) -> Result {
    fonts();
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let cycles = sim.config.cycles;
    let index = per_resource(sim, |p| p.index.micros() as f64 / 1e6);
    panel(&top, "price index (credits per capacity-slot)", "index", cycles, &index, &sim.marks)?;
    let window = (cycles as usize / 100).max(1);
    let utilization: Vec<(String, Vec<f64>)> = per_resource(sim, |p| p.utilization * 100.0)
        .into_iter()
        .map(|(n, v)| (n, smooth(&v, window)))
        .collect();
    let title = format!("utilization of the current slot (%, {window}-cycle mean)");
    panel(&bottom, &title, "% sold", cycles, &utilization, &sim.marks)?;
    root.present()?;
    Ok(())
}

/// `welfare.png`: welfare per cycle and envy per cycle over the run.
pub(crate) fn welfare(sim: &Simulation, path: &Path) -> Result {
    fonts();
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let cycles = sim.config.cycles;
    let window = (cycles as usize / 100).max(1);
    let welfare: Vec<f64> = sim.reports.iter().map(|c| c.welfare.micros() as f64 / 1e6).collect();
    let revenue: Vec<f64> = sim.reports.iter().map(|c| c.revenue.micros() as f64 / 1e6).collect();
    let series = vec![
        ("welfare (winners' limits)".to_owned(), smooth(&welfare, window)),
        ("revenue (payments)".to_owned(), smooth(&revenue, window)),
    ];
    panel(
        &top,
        &format!("welfare and revenue per cycle ({window}-cycle mean)"),
        "credits",
        cycles,
        &series,
        &sim.marks,
    )?;
    let envy: Vec<f64> = sim.reports.iter().map(|c| c.envy * 100.0).collect();
    let ir: Vec<f64> = sim.reports.iter().map(|c| (1.0 - c.ir) * 100.0).collect();
    let series = vec![
        ("envy: losers who could afford a start".to_owned(), smooth(&envy, window)),
        ("winners priced above their limit (1 - IR)".to_owned(), smooth(&ir, window)),
    ];
    panel(
        &bottom,
        &format!("price quality per cycle (%, {window}-cycle mean)"),
        "% of bids",
        cycles,
        &series,
        &sim.marks,
    )?;
    root.present()?;
    Ok(())
}

/// Reads one figure off a run's summary.
type Figure = fn(&Summary) -> f64;

/// `compare.png`: revenue, welfare, envy and mean overpayment under each pricing rule.
pub(crate) fn compare(rows: &[(String, Summary)], path: &Path) -> Result {
    fonts();
    let root = BitMapBackend::new(path, (1400, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 4));
    let figures: [(&str, Figure); 4] = [
        ("revenue", |s| s.revenue.micros() as f64 / 1e6),
        ("welfare", |s| s.welfare.micros() as f64 / 1e6),
        ("envy (%)", |s| s.envy * 100.0),
        ("mean overpayment", Summary::mean_overpayment),
    ];
    for (area, (title, figure)) in panels.iter().zip(figures) {
        let values: Vec<f64> = rows.iter().map(|(_, s)| figure(s)).collect();
        let top = values.iter().copied().fold(0.0f64, f64::max).max(1e-9) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((0..rows.len().saturating_sub(1)).into_segmented(), 0f64..top)?;
        let names: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
            let color = PALETTE[i % PALETTE.len()];
            Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), v)],
                color.mix(0.8).filled(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

/// How a cycle's cost per bid scales with the book: one line per phase over book sizes, both
/// axes logarithmic (a flat line is linear cost, a rising one worse).
pub(crate) fn scaling(rows: &[crate::bench::Scaling], what: &str, path: &Path) -> Result {
    fonts();
    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    // A phase too quick to measure (zero) has no place on a log axis: it is left out.
    let us = |ns: f64| (ns > 0.0).then_some(ns / 1e3);
    let values = rows.iter().flat_map(|r| r.phases.iter().filter_map(|&(_, ns)| us(ns)));
    let (low, high) = values.fold((f64::MAX, 0f64), |(l, h), v| (l.min(v), h.max(v)));
    let (low, high) = if high > 0.0 { (low, high) } else { (1.0, 1.0) };
    let (first, last) = (rows[0].bids as f64, rows[rows.len() - 1].bids as f64);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Clearing cost per bid by book size ({what})"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((first * 0.5..last * 2.0).log_scale(), (low * 0.5..high * 10.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("bids in the book")
        .y_desc("microseconds per bid")
        .x_labels(8)
        .x_label_formatter(&|&x| match x {
            x if x >= 1e6 => format!("{}M", x / 1e6),
            x if x >= 1e3 => format!("{}k", x / 1e3),
            x => format!("{x:.0}"),
        })
        .light_line_style(WHITE.mix(0.0))
        .y_label_formatter(&|y| if *y >= 1.0 { format!("{y:.0}") } else { format!("{y:.2}") })
        .draw()?;
    for (k, &(phase, _)) in rows[0].phases.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| {
                let &(_, ns) = r.phases.iter().find(|(p, _)| *p == phase)?;
                Some((r.bids as f64, us(ns)?))
            })
            .collect();
        let width = if k == 0 { 3 } else { 2 };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(width)))?
            .label(phase)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}
