//! The command template's placeholders: `{port}`, `{index}`, `{service}`.

/// The values a replica's command and environment are templated with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vars<'a> {
    pub port: u16,
    pub index: u32,
    pub service: &'a str,
}

impl Vars<'_> {
    /// `text` with every `{port}`, `{index}` and `{service}` replaced, in one pass (a
    /// service named `{port}` stays that name). Other braces are kept as they are, so
    /// `sh -c 'echo ${HOME}'` survives.
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 8);
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            let (value, len) = if after.starts_with("{port}") {
                (self.port.to_string(), "{port}".len())
            } else if after.starts_with("{index}") {
                (self.index.to_string(), "{index}".len())
            } else if after.starts_with("{service}") {
                (self.service.to_owned(), "{service}".len())
            } else {
                ("{".to_owned(), 1)
            };
            out.push_str(&value);
            rest = &after[len..];
        }
        out.push_str(rest);
        out
    }
}
