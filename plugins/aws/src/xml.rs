//! A tiny XML tree for AWS replies: elements with text and children, found
//! by local name (namespaces ignored). AWS's query and REST-XML replies are
//! small, so a tree is simpler than typed deserialisation of dozens of
//! shapes of which each call reads a few fields.

use quick_xml::events::Event;

use rebound_plugin_sdk::ProviderError;

#[derive(Debug, Default, Clone)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn parse(xml: &str) -> Result<Node, ProviderError> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut stack = vec![Node::default()];
        loop {
            let event = reader
                .read_event()
                .map_err(|e| ProviderError::ProviderFailed(format!("malformed XML reply: {e}")))?;
            match event {
                Event::Start(e) => stack.push(Node {
                    name: local(e.name().as_ref()),
                    ..Node::default()
                }),
                Event::Empty(e) => {
                    let node = Node {
                        name: local(e.name().as_ref()),
                        ..Node::default()
                    };
                    if let Some(top) = stack.last_mut() {
                        top.children.push(node);
                    }
                }
                Event::End(_) => {
                    if stack.len() > 1
                        && let Some(done) = stack.pop()
                        && let Some(top) = stack.last_mut()
                    {
                        top.children.push(done);
                    }
                }
                Event::Text(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&t.decode().unwrap_or_default());
                    }
                }
                Event::CData(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&String::from_utf8_lossy(&t));
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(top) = stack.last_mut() {
                        let name = String::from_utf8_lossy(&r).into_owned();
                        top.text.push_str(&entity(&name));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        let mut root = stack.into_iter().next().unwrap_or_default();
        Ok(if root.children.len() == 1 {
            root.children.remove(0)
        } else {
            root
        })
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the child at `path` (`"instanceState/name"`), or "".
    pub fn text(&self, path: &str) -> &str {
        self.at(path).map_or("", |n| n.text.trim())
    }

    pub fn at(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .try_fold(self, |node, name| node.child(name))
    }

    /// The `item`s (or other children) of the list at `path`.
    pub fn items(&self, path: &str) -> impl Iterator<Item = &Node> {
        self.at(path).into_iter().flat_map(|n| n.children.iter())
    }

    /// Every descendant named `name`, depth first.
    pub fn all<'a>(&'a self, name: &str, out: &mut Vec<&'a Node>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.all(name, out);
        }
    }

    /// An EC2 `tagSet` as pairs.
    pub fn tags(&self) -> Vec<(String, String)> {
        self.items("tagSet")
            .map(|t| (t.text("key").to_owned(), t.text("value").to_owned()))
            .collect()
    }

    pub fn tag(&self, key: &str) -> Option<String> {
        self.items("tagSet")
            .find(|t| t.text("key") == key)
            .map(|t| t.text("value").to_owned())
    }
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    name.rsplit(':').next().unwrap_or_default().to_owned()
}

fn entity(name: &str) -> String {
    match name {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        _ => {
            let code = name
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()));
            code.and_then(char::from_u32)
                .map_or_else(|| format!("&{name};"), String::from)
        }
    }
}

/// Escape text for an XML body.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_into_a_tree() {
        let xml = r#"<?xml version="1.0"?><R xmlns="x"><a><item><key>Name</key><value>a &amp; b</value></item></a>
            <tagSet><item><key>k</key><value>v</value></item></tagSet><empty/></R>"#;
        let root = Node::parse(xml).expect("xml");
        assert_eq!(root.name, "R");
        assert_eq!(
            root.items("a").next().map(|i| i.text("value")),
            Some("a & b")
        );
        assert_eq!(root.tag("k").as_deref(), Some("v"));
        assert!(root.child("empty").is_some());
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
