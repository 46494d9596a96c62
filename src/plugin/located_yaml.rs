//! YAML documents that remember the line of every node, so `lint` can point at `file:line`. Parsed
//! with serde-saphyr's spans; converted to JSON for schema and type checks.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A YAML node and the line it starts on (1-based).
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    /// Line of the node in its file.
    pub line: u64,
    /// The node.
    pub node: Node,
}

/// A YAML node's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// A sequence.
    Seq(Vec<Located>),
    /// A mapping, keys in document order.
    Map(Vec<(String, Located)>),
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<Node>::deserialize(deserializer)?;
        Ok(Located {
            line: spanned.referenced.line(),
            node: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Number::from_f64(v).map_or(Node::String(v.to_string()), Node::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Located>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            entries.push((key.0, map.next_value::<Located>()?));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key: any scalar, as text (`80: x` has the key `"80"`).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".into()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// Why a file is not YAML, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Line of the problem (1-based; 1 when the parser gives none).
    pub line: u64,
    /// The parser's message, one line.
    pub message: String,
}

/// Parses every document of a YAML stream; empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Located>, SyntaxError> {
    match serde_saphyr::from_multiple::<Option<Located>>(text) {
        Ok(docs) => Ok(docs
            .into_iter()
            .flatten()
            .filter(|d| d.node != Node::Null)
            .collect()),
        Err(e) => {
            let line = e.location().map_or(1, |l| l.line().max(1));
            // The parser adds its own "error: line N column M:" and a source excerpt; file:line
            // already says where.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let message = match first.split_once(": ") {
                Some((place, rest)) if place.starts_with("line ") => rest.to_string(),
                _ => first.to_string(),
            };
            Err(SyntaxError { line, message })
        }
    }
}

impl Located {
    /// The node as JSON.
    pub fn to_json(&self) -> Value {
        match &self.node {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(Located::to_json).collect()),
            Node::Map(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k.clone(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// The child at `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Located> {
        match &self.node {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string at `key` of a mapping.
    pub fn str_at(&self, key: &str) -> Option<&str> {
        match &self.get(key)?.node {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// The line of the node at a field path such as `spec.steps[2].setWeight`, or of the deepest
    /// node on the way that exists (a missing field is reported where its parent is).
    pub fn line_of(&self, path: &str) -> u64 {
        let mut node = self;
        for segment in path_segments(path) {
            let next = match (&node.node, segment) {
                (Node::Map(_), Segment::Key(key)) => node.get(&key),
                (Node::Seq(items), Segment::Index(i)) => items.get(i),
                // A list-map entry named by its key, as `[name]`.
                (Node::Seq(items), Segment::Key(key)) => items
                    .iter()
                    .find(|item| item.str_at("name") == Some(key.as_str())),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.line
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

fn path_segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let key = &rest[..open];
            if !key.is_empty() {
                out.push(Segment::Key(key.to_string()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                let inner = stripped[..close].trim_matches(['"', '\'']);
                out.push(match inner.parse() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key(inner.to_string()),
                });
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Segment::Key(rest.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = "a: 1\n---\n# comment\nkind: Rollout\nspec:\n  steps:\n    - setWeight: 10\n    - pause:\n        duration: 5x\n";

    #[test]
    fn every_node_knows_its_line() {
        let docs = parse_documents(TWO_DOCS).unwrap();
        assert_eq!(docs.len(), 2);
        let ro = &docs[1];
        assert_eq!(ro.str_at("kind"), Some("Rollout"));
        assert_eq!(ro.line_of("spec.steps[0].setWeight"), 7);
        assert_eq!(ro.line_of("spec.steps[1].pause.duration"), 9);
        // A missing field is reported at the closest ancestor that exists.
        assert_eq!(ro.line_of("spec.steps[1].pause.missing"), 9);
        assert_eq!(
            ro.to_json(),
            serde_json::json!({"kind": "Rollout", "spec": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5x"}}]}})
        );
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }
}
