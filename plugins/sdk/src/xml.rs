//! A small XML element tree for APIs whose documents are easier to walk
//! than to map onto types (oVirt's engine API: the same element names
//! nest at many levels, most of them optional). [`Element::parse`] reads a
//! document, [`Element::to_xml`] writes one; the lab's oVirt simulator and
//! the oVirt plugin both use it, so the two read and write alike.

use quick_xml::Reader;
use quick_xml::events::Event;

/// An element: its name, attributes, child elements and text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Parse a document; its root element. Comments, processing
    /// instructions and whitespace between elements are dropped.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader::from_reader(bytes);
        let mut stack: Vec<Element> = Vec::new();
        let mut buf = Vec::new();
        loop {
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| format!("malformed XML at {}: {e}", reader.buffer_position()))?;
            match event {
                Event::Start(ref start) | Event::Empty(ref start) => {
                    let empty = matches!(event, Event::Empty(_));
                    let mut element =
                        Element::new(String::from_utf8_lossy(start.name().as_ref()).into_owned());
                    for attr in start.attributes() {
                        let attr = attr.map_err(|e| format!("malformed attribute: {e}"))?;
                        let value = attr
                            .unescape_value()
                            .map_err(|e| format!("malformed attribute value: {e}"))?;
                        element.attrs.push((
                            String::from_utf8_lossy(attr.key.as_ref()).into_owned(),
                            value.into_owned(),
                        ));
                    }
                    if empty {
                        match stack.last_mut() {
                            Some(parent) => parent.children.push(element),
                            None => return Ok(element),
                        }
                    } else {
                        stack.push(element);
                    }
                }
                Event::End(_) => {
                    let done = stack.pop().ok_or("an end tag without a start")?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(done),
                    }
                }
                Event::Text(text) => {
                    if let Some(current) = stack.last_mut() {
                        let text = text.decode().map_err(|e| format!("malformed text: {e}"))?;
                        current.text.push_str(&unescape(&text));
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(current) = stack.last_mut() {
                        let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                        current.text.push_str(&unescape(&format!("&{name};")));
                    }
                }
                Event::CData(data) => {
                    if let Some(current) = stack.last_mut() {
                        current.text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                Event::Eof => return Err("the document has no root element".into()),
                _ => {}
            }
            buf.clear();
        }
    }

    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child called `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at a path of child names (`["cpu", "topology"]`).
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, name| e.child(name))
    }

    /// The trimmed text of the element at `path`, if it has any.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path)
            .map(|e| e.text.trim())
            .filter(|t| !t.is_empty())
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `id` attribute of the element at `path`.
    pub fn id_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path).and_then(|e| e.attr("id"))
    }

    /// Builder: add an attribute.
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.push((name.to_owned(), value.into()));
        self
    }

    /// Builder: add a child element.
    pub fn with(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    /// Builder: add a child holding only text.
    pub fn with_text(self, name: &str, text: impl ToString) -> Self {
        let mut child = Element::new(name);
        child.text = text.to_string();
        self.with(child)
    }

    /// The element as a document (no XML declaration).
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        out.push_str(&escape(&self.text));
        for child in &self.children {
            child.write(out);
        }
        out.push_str(&format!("</{}>", self.name));
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips() {
        let doc = Element::new("vm")
            .with_attr("id", "1")
            .with_text("name", "web & db <1>")
            .with(Element::new("cpu").with(Element::new("topology").with_text("sockets", 2)))
            .with(Element::new("cluster").with_attr("id", "c\"1"));
        let parsed = Element::parse(doc.to_xml().as_bytes()).expect("parse");
        assert_eq!(parsed, doc);
        assert_eq!(parsed.text_at(&["name"]), Some("web & db <1>"));
        assert_eq!(parsed.text_at(&["cpu", "topology", "sockets"]), Some("2"));
        assert_eq!(parsed.id_at(&["cluster"]), Some("c\"1"));
        assert_eq!(parsed.text_at(&["memory"]), None);
    }

    #[test]
    fn declarations_whitespace_and_entities_are_read() {
        let doc = b"<?xml version='1.0' encoding='UTF-8'?>\n<snapshot>\n  \
            <description>a &amp; b</description>\n  <vm id=\"v\"/>\n</snapshot>";
        let parsed = Element::parse(doc).expect("parse");
        assert_eq!(parsed.text_at(&["description"]), Some("a & b"));
        assert_eq!(parsed.id_at(&["vm"]), Some("v"));
        assert!(Element::parse(b"<a><b></a>").is_err());
        assert!(Element::parse(b"").is_err());
    }
}
