//! Diagnostics: messages a person can act on.
//!
//! A diagnostic names what is wrong, where (`file:line:col`, the source line and a caret),
//! and, when kiln can tell, how to fix it. The layout follows just's and rustc's: users of
//! those tools read it without thinking. Nothing here ever prints a secret value: callers pass
//! positions, never resolved secrets.

use std::fmt::{self, Write as _};

use crate::profile::source::Origin;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; does not stop anything.
    Warning,
    /// Stops the command.
    Error,
}

/// A secondary position with a short note, e.g. "first used here".
#[derive(Clone, Debug)]
pub struct Note {
    /// Where.
    pub origin: Origin,
    /// What about it.
    pub message: String,
}

/// One finding.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable identifier, e.g. `unknown-key`.
    pub code: &'static str,
    /// One line saying what is wrong.
    pub message: String,
    /// Where it is, if it has a place.
    pub origin: Option<Origin>,
    /// Other places that explain it.
    pub notes: Vec<Note>,
    /// How to fix it.
    pub hint: Option<String>,
    /// What of the source may not be shown, because it holds a secret.
    pub redaction: Redaction,
}

/// Parts of the source a diagnostic must not print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Redaction {
    /// Show the source line.
    #[default]
    None,
    /// The span is a secret: show the line with the span replaced by `<secret>`.
    Span,
    /// The whole file holds secrets (a secrets file): show only the position.
    Line,
}

impl Diagnostic {
    /// An error with a stable code and message.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            origin: None,
            notes: Vec::new(),
            hint: None,
            redaction: Redaction::None,
        }
    }

    /// Never print the source at the primary position (or, with `Line`, any source line).
    pub fn redact(mut self, redaction: Redaction) -> Self {
        self.redaction = redaction;
        self
    }

    /// Place the diagnostic at `origin`.
    pub fn at(mut self, origin: &Origin) -> Self {
        self.origin = Some(origin.clone());
        self
    }

    /// Add a hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Add a secondary position.
    pub fn note(mut self, origin: &Origin, message: impl Into<String>) -> Self {
        self.notes.push(Note {
            origin: origin.clone(),
            message: message.into(),
        });
        self
    }
}

fn write_snippet(out: &mut String, origin: &Origin, label: &str, redaction: Redaction) {
    let Origin::File { file, span } = origin else {
        let _ = writeln!(out, "  --> {origin}");
        return;
    };
    let (line, column) = file.line_col(span.start);
    let (mut end_line, mut end_column) = file.line_col(span.end.max(span.start));
    let redacted;
    let text = match redaction {
        Redaction::None => file.line_text(line),
        Redaction::Line => {
            let _ = writeln!(
                out,
                "{}--> {}:{line}:{column}",
                " ".repeat(line.to_string().len()),
                file.display
            );
            return;
        }
        Redaction::Span => {
            const MASK: &str = "<secret>";
            let original = file.line_text(line);
            let start = original
                .char_indices()
                .nth(column - 1)
                .map(|(index, _)| index)
                .unwrap_or(original.len());
            let rest = if end_line == line {
                let end = original
                    .char_indices()
                    .nth(end_column - 1)
                    .map(|(index, _)| index)
                    .unwrap_or(original.len());
                &original[end..]
            } else {
                ""
            };
            redacted = format!("{}{MASK}{rest}", &original[..start]);
            end_line = line;
            end_column = column + MASK.len();
            &redacted
        }
    };
    let width = line.to_string().len();
    let gutter = " ".repeat(width);
    let caret_len = if end_line == line {
        end_column.saturating_sub(column).max(1)
    } else {
        text.chars().count().saturating_sub(column - 1).max(1)
    };
    let _ = writeln!(out, "{gutter}--> {}:{line}:{column}", file.display);
    let _ = writeln!(out, "{gutter} |");
    let _ = writeln!(out, "{line} | {text}");
    let pad: String = text
        .chars()
        .take(column - 1)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let label = if label.is_empty() {
        String::new()
    } else {
        format!(" {label}")
    };
    let _ = writeln!(out, "{gutter} | {pad}{}{label}", "^".repeat(caret_len));
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{severity}[{}]: {}", self.code, self.message);
        if let Some(origin) = &self.origin {
            write_snippet(&mut out, origin, "", self.redaction);
        }
        let note_redaction = match self.redaction {
            Redaction::Line => Redaction::Line,
            _ => Redaction::None,
        };
        for note in &self.notes {
            let _ = writeln!(out, "note: {}", note.message);
            write_snippet(&mut out, &note.origin, "", note_redaction);
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
        formatter.write_str(out.trim_end())
    }
}

/// Diagnostics that stop a command: what `validate` and `render` return on failure.
#[derive(Debug, Default)]
pub struct Findings(pub Vec<Diagnostic>);

impl Findings {
    /// True when any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for Findings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
                writeln!(formatter)?;
            }
            write!(formatter, "{diagnostic}")?;
        }
        let errors = self
            .0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        if errors > 0 {
            write!(
                formatter,
                "\n\n{} error{} found",
                errors,
                if errors == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Findings {}

impl From<Diagnostic> for Findings {
    fn from(diagnostic: Diagnostic) -> Self {
        Findings(vec![diagnostic])
    }
}

/// The closest candidate to `input`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(input, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}
