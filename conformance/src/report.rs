//! Case results and the human-readable summary.

use std::fmt::Write as _;

pub(crate) const PULL: &str = "Pull";
pub(crate) const PUSH: &str = "Push";
pub(crate) const CONTENT_DISCOVERY: &str = "Content Discovery";
pub(crate) const CONTENT_MANAGEMENT: &str = "Content Management";
/// Pseudo-workflow for problems that prevent any workflow from running.
pub(crate) const SETUP: &str = "Setup";

/// What happened to one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// What was expected and what the registry answered instead.
    Failed(String),
    /// Why the case was not evaluated (an optional feature the registry
    /// signalled it does not support, or a disabled workflow).
    Skipped(String),
}

/// The result of one named case of one workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub workflow: &'static str,
    pub name: String,
    pub outcome: Outcome,
}

/// All case results of a run, in execution order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub results: Vec<CaseResult>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
        }
    }

    fn of<'a>(results: impl IntoIterator<Item = &'a CaseResult>) -> Counts {
        let mut counts = Counts::default();
        for result in results {
            counts.add(&result.outcome);
        }
        counts
    }
}

impl Report {
    pub fn passed(&self) -> usize {
        Counts::of(&self.results).passed
    }

    pub fn failed(&self) -> usize {
        Counts::of(&self.results).failed
    }

    pub fn skipped(&self) -> usize {
        Counts::of(&self.results).skipped
    }

    /// One line per case (PASS/FAIL/SKIP, with the reason indented below
    /// failures and skips), then a table of counts per workflow and totals.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let workflows = self.workflows();

        for workflow in &workflows {
            let _ = writeln!(out, "== {workflow} ==");
            for result in self.results.iter().filter(|r| r.workflow == *workflow) {
                let (label, reason) = match &result.outcome {
                    Outcome::Passed => ("PASS", None),
                    Outcome::Failed(reason) => ("FAIL", Some(reason)),
                    Outcome::Skipped(reason) => ("SKIP", Some(reason)),
                };
                let _ = writeln!(out, "  {label}  {}", result.name);
                if let Some(reason) = reason {
                    for line in reason.lines() {
                        let _ = writeln!(out, "          {line}");
                    }
                }
            }
            out.push('\n');
        }

        let width = workflows
            .iter()
            .map(|w| w.len())
            .chain(["Workflow".len(), "Total".len()])
            .max()
            .unwrap_or(8);
        let _ = writeln!(
            out,
            "{:<width$}  {:>6}  {:>6}  {:>6}",
            "Workflow", "Passed", "Failed", "Skipped"
        );
        let row = |out: &mut String, name: &str, c: Counts| {
            let _ = writeln!(
                out,
                "{name:<width$}  {:>6}  {:>6}  {:>7}",
                c.passed, c.failed, c.skipped
            );
        };
        for workflow in &workflows {
            let counts = Counts::of(self.results.iter().filter(|r| r.workflow == *workflow));
            row(&mut out, workflow, counts);
        }
        row(&mut out, "Total", Counts::of(&self.results));
        out
    }

    /// Workflow names in first-seen order.
    fn workflows(&self) -> Vec<&'static str> {
        let mut seen: Vec<&'static str> = Vec::new();
        for result in &self.results {
            if !seen.contains(&result.workflow) {
                seen.push(result.workflow);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(workflow: &'static str, name: &str, outcome: Outcome) -> CaseResult {
        CaseResult {
            workflow,
            name: name.to_owned(),
            outcome,
        }
    }

    #[test]
    fn counts_and_summary() {
        let report = Report {
            results: vec![
                case(PULL, "a", Outcome::Passed),
                case(PULL, "b", Outcome::Failed("expected 200\ngot 404".into())),
                case(PUSH, "c", Outcome::Skipped("optional".into())),
            ],
        };
        assert_eq!(
            (report.passed(), report.failed(), report.skipped()),
            (1, 1, 1)
        );
        let summary = report.summary();
        assert!(summary.contains("  PASS  a"));
        assert!(summary.contains("  FAIL  b\n          expected 200\n          got 404"));
        assert!(summary.contains("  SKIP  c\n          optional"));
        assert!(summary.contains("Total"));
        let pull_row = summary.lines().find(|l| l.starts_with("Pull ")).unwrap();
        assert_eq!(
            pull_row.split_whitespace().collect::<Vec<_>>(),
            ["Pull", "1", "1", "0"]
        );
    }
}
