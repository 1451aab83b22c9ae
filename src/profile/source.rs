//! Source files and positions.
//!
//! Every value kiln reads from a profile remembers where it came from, so that errors,
//! `kiln eval --explain` and (later) lint findings can point at `file:line:col`. This module
//! owns the loaded text of each file and turns byte offsets into lines and columns.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One loaded profile file: its path as the user should see it, and its text.
#[derive(Debug)]
pub struct SourceFile {
    /// Path shown in messages (relative to the working directory when possible).
    pub display: String,
    /// Path on disk.
    pub path: PathBuf,
    /// Full text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wrap text read from `path`.
    pub fn new(path: &Path, text: String) -> Arc<Self> {
        let display = display_path(path);
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(index, _)| index + 1));
        Arc::new(SourceFile {
            display,
            path: path.to_path_buf(),
            text,
            line_starts,
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next - 1,
        };
        let start = self.line_starts[line];
        let column = self.text[start..offset].chars().count() + 1;
        (line + 1, column)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map(|next| next - 1)
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches('\r')
    }
}

/// Shorten an absolute path to one relative to the working directory when it lies below it.
pub fn display_path(path: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(relative) = path.strip_prefix(&cwd) {
            return relative.display().to_string();
        }
    }
    path.display().to_string()
}

/// Where a value was written: a byte range in a source file, or kiln's own default.
#[derive(Clone, Debug)]
pub enum Origin {
    /// Written in a profile file.
    File {
        /// The file.
        file: Arc<SourceFile>,
        /// Byte range of the value (or key) in the file.
        span: Range<usize>,
    },
    /// Not written anywhere: kiln's built-in default.
    Default,
}

impl Origin {
    /// An origin inside `file`.
    pub fn file(file: &Arc<SourceFile>, span: Range<usize>) -> Self {
        Origin::File {
            file: Arc::clone(file),
            span,
        }
    }

    /// `path:line:col`, or `kiln's default`.
    pub fn location(&self) -> String {
        match self {
            Origin::File { file, span } => {
                let (line, column) = file.line_col(span.start);
                format!("{}:{line}:{column}", file.display)
            }
            Origin::Default => "kiln's default".to_string(),
        }
    }

    /// The file this origin lies in, if any.
    pub fn source_file(&self) -> Option<&Arc<SourceFile>> {
        match self {
            Origin::File { file, .. } => Some(file),
            Origin::Default => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.location())
    }
}
