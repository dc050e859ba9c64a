//! Figures per round, ratios between variants measured in the same round,
//! and the markdown tables.
//!
//! This machine kind's speed drifts by ±20 % over tens of seconds, so an
//! absolute figure from one moment means little next to one from another
//! moment. Every ratio is therefore taken round by round between variants
//! measured side by side (one after the other, within seconds), and shown
//! as the median with the min–max across rounds.

use std::collections::BTreeMap;

/// Every figure, by (figure, variant), one value per round (NaN when that
/// round's measurement failed).
#[derive(Default)]
pub struct Figures {
    values: BTreeMap<(String, String), Vec<f64>>,
}

impl Figures {
    /// Records `value` for `figure` of `variant` in `round`.
    pub fn put(&mut self, figure: &str, variant: &str, round: usize, value: f64) {
        let v = self
            .values
            .entry((figure.to_string(), variant.to_string()))
            .or_default();
        if v.len() <= round {
            v.resize(round + 1, f64::NAN);
        }
        v[round] = value;
    }

    /// The values of `figure` for `variant`, by round.
    pub fn get(&self, figure: &str, variant: &str) -> Vec<f64> {
        self.values
            .get(&(figure.to_string(), variant.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether anything was recorded for `variant` (under any figure).
    pub fn has(&self, figure: &str, variant: &str) -> bool {
        self.get(figure, variant).iter().any(|v| v.is_finite())
    }

    /// `figure` of `a` divided by `figure` of `b`, round by round.
    pub fn ratio(&self, figure: &str, a: &str, b: &str) -> Vec<f64> {
        let (x, y) = (self.get(figure, a), self.get(figure, b));
        x.iter().zip(&y).map(|(x, y)| x / y).collect()
    }

    /// `figure_a` of `variant` divided by `figure_b` of it, round by round.
    pub fn ratio_of(&self, variant: &str, figure_a: &str, figure_b: &str) -> Vec<f64> {
        let (x, y) = (self.get(figure_a, variant), self.get(figure_b, variant));
        x.iter().zip(&y).map(|(x, y)| x / y).collect()
    }

    /// `figure_a` of `variant` minus `figure_b` of it, round by round.
    pub fn minus_of(&self, variant: &str, figure_a: &str, figure_b: &str) -> Vec<f64> {
        let (x, y) = (self.get(figure_a, variant), self.get(figure_b, variant));
        x.iter().zip(&y).map(|(x, y)| x - y).collect()
    }
}

/// Median, min and max of the finite values; `None` when there is none.
pub fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

/// `median (min–max)` with `decimals`; one value alone; `–` for none.
pub fn show(values: &[f64], decimals: usize) -> String {
    match spread(values) {
        None => "–".into(),
        Some((m, lo, hi)) if lo == hi => format!("{m:.decimals$}"),
        Some((m, lo, hi)) => format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})"),
    }
}

/// A markdown table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The markdown text, columns padded for reading in a terminal.
    pub fn markdown(&self) -> String {
        let cols = self.header.len();
        let width = |c: usize| {
            std::iter::once(&self.header[c])
                .chain(self.rows.iter().filter_map(|r| r.get(c)))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..cols).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (c, w) in widths.iter().enumerate() {
                let cell = cells.get(c).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(cell.chars().count());
                s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.header);
        out.push('|');
        for w in &widths {
            out.push_str(&format!("{}|", "-".repeat(w + 2)));
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_taken_round_by_round() {
        let mut f = Figures::default();
        for (round, (a, b)) in [(2.0, 1.0), (3.0, 2.0), (4.0, 2.0)].into_iter().enumerate() {
            f.put("cpu", "a", round, a);
            f.put("cpu", "b", round, b);
        }
        assert_eq!(f.ratio("cpu", "a", "b"), vec![2.0, 1.5, 2.0]);
        assert_eq!(show(&f.ratio("cpu", "a", "b"), 2), "2.00 (1.50–2.00)");
        assert_eq!(show(&[1.0], 1), "1.0");
        assert_eq!(show(&[f64::NAN], 1), "–");
        assert_eq!(spread(&[3.0, 1.0, 2.0, 10.0]), Some((2.5, 1.0, 10.0)));
    }

    #[test]
    fn markdown_table() {
        let mut t = Table::new(&["a", "bb"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.markdown(), "| a   | bb |\n|-----|----|\n| xyz | 1  |\n");
    }
}
