//! Lint reports: a table for people, JSON for scripts, SARIF 2.1.0 for CI code scanning.

use std::fmt::Write as _;

use serde_json::json;

use crate::diag::{Diagnostic, Severity};
use crate::lint::{all_rules, Finding};
use crate::profile::source::Origin;

fn position(origin: &Origin) -> (String, usize, usize) {
    match origin {
        Origin::File { file, span } => {
            let (line, column) = file.line_col(span.start);
            (file.display.clone(), line, column)
        }
        Origin::Default => (String::new(), 0, 0),
    }
}

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// Findings the way `kiln eval` errors look: source line, caret, hint.
pub fn human(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let diagnostic = Diagnostic {
            severity: finding.severity,
            code: finding.rule,
            message: finding.message.clone(),
            origin: Some(finding.origin.clone()),
            notes: Vec::new(),
            hint: Some(finding.hint.clone()),
            redaction: crate::diag::Redaction::None,
        };
        let _ = writeln!(out, "{diagnostic}\n");
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    out
}

/// One line per finding, aligned: `SEVERITY  RULE  FILE:LINE:COL  MESSAGE`.
pub fn table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 4]> = findings
        .iter()
        .map(|finding| {
            let (file, line, column) = position(&finding.origin);
            [
                severity_word(finding.severity).to_string(),
                finding.rule.to_string(),
                format!("{file}:{line}:{column}"),
                finding.message.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..3)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    out
}

/// Findings as JSON.
pub fn json(findings: &[Finding]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = findings
        .iter()
        .map(|finding| {
            let (file, line, column) = position(&finding.origin);
            json!({
                "rule": finding.rule,
                "severity": severity_word(finding.severity),
                "message": finding.message,
                "file": file,
                "line": line,
                "column": column,
                "hint": finding.hint,
            })
        })
        .collect();
    json!({ "findings": items })
}

/// Findings as a SARIF 2.1.0 log (what GitHub code scanning and other CI tools read).
pub fn sarif(findings: &[Finding]) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = all_rules()
        .into_iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "shortDescription": { "text": rule.title },
                "defaultConfiguration": { "level": severity_word(rule.severity) },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|finding| {
            let (file, line, column) = position(&finding.origin);
            let rule_index = all_rules().iter().position(|rule| rule.id == finding.rule);
            json!({
                "ruleId": finding.rule,
                "ruleIndex": rule_index,
                "level": severity_word(finding.severity),
                "message": { "text": format!("{} (hint: {})", finding.message, finding.hint) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": file },
                        "region": { "startLine": line.max(1), "startColumn": column.max(1) },
                    }
                }],
                "properties": { "hint": finding.hint },
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "kiln",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            } },
            "results": results,
        }],
    })
}
