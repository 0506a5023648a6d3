//! The `Field: value` paragraphs of Debian control files (deb822, `dpkg/status`, DEP-5
//! `copyright`) and of Python's core metadata (RFC 822 headers): a line starting with a space or
//! a tab continues the field above it, a blank line ends a paragraph.

/// One paragraph's fields, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Paragraph {
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The first value of the field `name` (case-insensitive, as field names are in both
    /// formats), trimmed; `None` when absent or empty.
    pub fn get<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .find(|value| !value.is_empty())
    }

    /// Every non-empty value of the field `name`, trimmed.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// The paragraphs of `text`. A line that neither continues a field nor has a `:` is skipped (the
/// file came from an image: a malformed line costs only itself).
pub(super) fn paragraphs(text: &str) -> Vec<Paragraph> {
    let mut paragraphs = Vec::new();
    let mut current = Paragraph::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            current
                .fields
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs
}

/// The first paragraph of `text` only: an email-style header block (Python's `METADATA`, whose
/// body after the blank line is the long description).
pub(super) fn headers(text: &str) -> Paragraph {
    let end = text
        .find("\n\n")
        .or_else(|| text.find("\r\n\r\n"))
        .unwrap_or(text.len());
    paragraphs(&text[..end])
        .into_iter()
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_join_the_field_above() {
        let text = "Package: a\nDescription: short\n long one\n .\n\nPackage: b\n";
        let paragraphs = paragraphs(text);
        assert_eq!(paragraphs.len(), 2);
        assert_eq!(paragraphs[0].get("package"), Some("a"));
        assert_eq!(paragraphs[0].get("Description"), Some("short\nlong one\n."));
        assert_eq!(paragraphs[1].get("Package"), Some("b"));
    }

    #[test]
    fn headers_stop_at_the_body() {
        let text = "Name: six\nVersion: 1.16.0\n\nName: not-a-header\n";
        let headers = headers(text);
        assert_eq!(headers.get("name"), Some("six"));
        assert_eq!(headers.all("Name").count(), 1);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let paragraphs = paragraphs(" orphan continuation\nno colon here\nKey: v\n\u{0}\u{1}:\n");
        assert_eq!(paragraphs.len(), 1);
        assert_eq!(paragraphs[0].get("key"), Some("v"));
    }
}
