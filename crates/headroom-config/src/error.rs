//! Config errors that tell the user the file, line, key, what was wrong and what to do.

use std::fmt;

/// One problem in a config file, located by line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The key the problem is about, when known (`replicas`, `route[2].service`).
    pub key: Option<String>,
    pub message: String,
    /// The offending source line, shown under the message.
    pub snippet: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n    {:>4} | {}", self.line, snippet)?;
        }
        Ok(())
    }
}

/// Every problem found in one config file. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Maps byte offsets in a source text to lines and columns, and collects errors.
pub(crate) struct Reporter<'a> {
    file: &'a str,
    text: &'a str,
    pub errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Reporter {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Records an error at byte offset `at` (0 when unknown: line 1).
    pub fn error(&mut self, at: usize, key: Option<String>, message: impl Into<String>) {
        let at = at.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let snippet = self.text[line_start..]
            .lines()
            .next()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty() && at > 0);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key,
            message: message.into(),
            snippet,
        });
    }

    /// The key written at the start of the line holding byte offset `at`, if any (`rise = "x"` gives `rise`).
    pub fn key_at(&self, at: usize) -> Option<String> {
        let at = at.min(self.text.len());
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_string())
    }
}

/// The closest candidate to `word`, if close enough to be a likely typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_close_names_only() {
        let names = ["catalog", "orders", "monolith"];
        assert_eq!(did_you_mean("catalgo", names), Some("catalog"));
        assert_eq!(did_you_mean("zzz", names), None);
    }

    #[test]
    fn errors_are_located_by_line_and_column() {
        let text = "a = 1\nbb = 2\n";
        let mut r = Reporter::new("x.toml", text);
        r.error(8, None, "bad");
        let e = &r.errors[0];
        assert_eq!((e.line, e.column), (2, 3));
        assert_eq!(e.snippet.as_deref(), Some("bb = 2"));
        assert_eq!(r.key_at(8).as_deref(), Some("bb"));
    }
}
