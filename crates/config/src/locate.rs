//! Key path -> (line, column) index of a YAML document.
//!
//! serde gives locations only for its own errors; semantic errors found later in
//! `validate()` are located through this index, built from a YAML event scan
//! (`saphyr-parser`). It is best effort: a path not in the index resolves to its
//! nearest indexed ancestor, and ultimately to the start of the document.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// Where each key path (`routes[1].credential`) starts in the source text.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    map: HashMap<String, (usize, usize)>,
    /// Keys seen more than once in the same mapping (path, position of the repeat).
    duplicates: Vec<(String, (usize, usize))>,
}

enum Frame {
    /// A mapping; `value_path` is `Some` while its next node is a value.
    Map {
        path: String,
        value_path: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A complex (non-scalar) mapping key being skipped; counts nested containers.
    SkipKey {
        depth: usize,
    },
}

/// Join a parent path and a map key.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Join a parent path and a sequence index.
pub(crate) fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

impl Locations {
    /// Scan `yaml`. Parse errors stop the scan; whatever was indexed so far is kept
    /// (serde reports the syntax error itself).
    pub(crate) fn scan(yaml: &str) -> Locations {
        let mut map: HashMap<String, (usize, usize)> = HashMap::new();
        let mut duplicates = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(yaml);
        // Only the first document is indexed (serde rejects multi-document input).
        let mut documents = 0usize;
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = (span.start.line(), span.start.col() + 1);
            let is_start = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
            match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        break;
                    }
                    continue;
                }
                Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {
                    continue
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    match stack.last_mut() {
                        Some(Frame::SkipKey { depth }) if *depth > 1 => {
                            *depth -= 1;
                            continue;
                        }
                        _ => {}
                    }
                    let popped = stack.pop();
                    if let Some(Frame::SkipKey { .. }) = popped {
                        // The complex key is done; its value follows.
                        if let Some(Frame::Map { path, value_path }) = stack.last_mut() {
                            *value_path = Some(join_key(path, "?"));
                        }
                    } else {
                        value_done(&mut stack);
                    }
                    continue;
                }
                Event::Scalar(..)
                | Event::Alias(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..) => {}
            }
            // A node starts here. Work out its path from the enclosing frame.
            let node_path = match stack.last_mut() {
                None => String::new(),
                Some(Frame::SkipKey { depth }) => {
                    if is_start {
                        *depth += 1;
                    }
                    continue;
                }
                Some(Frame::Seq { path, next }) => {
                    let p = join_index(path, *next);
                    *next += 1;
                    map.entry(p.clone()).or_insert(pos);
                    p
                }
                Some(Frame::Map { path, value_path }) => match value_path.take() {
                    Some(p) => p,
                    None => {
                        // This node is a key.
                        match &event {
                            Event::Scalar(text, ..) => {
                                let p = join_key(path, text);
                                if map.contains_key(&p) {
                                    duplicates.push((p.clone(), pos));
                                } else {
                                    map.insert(p.clone(), pos);
                                }
                                *value_path = Some(p);
                            }
                            Event::Alias(..) => *value_path = Some(join_key(path, "?")),
                            _ => stack.push(Frame::SkipKey { depth: 1 }),
                        }
                        continue;
                    }
                },
            };
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map {
                    path: node_path,
                    value_path: None,
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    path: node_path,
                    next: 0,
                }),
                _ => {}
            }
        }
        Locations { map, duplicates }
    }

    /// The first repeated mapping key, if any.
    pub(crate) fn first_duplicate(&self) -> Option<(&str, (usize, usize))> {
        self.duplicates.first().map(|(p, pos)| (p.as_str(), *pos))
    }

    /// Location of `path`, or of its nearest indexed ancestor, or `(1, 1)`.
    pub(crate) fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (1, 1),
            }
        }
    }
}

/// A value node finished (scalar, or the end of a container value): the enclosing
/// mapping, if any, now expects a key again.
fn value_done(stack: &mut [Frame]) {
    if let Some(Frame::Map { value_path, .. }) = stack.last_mut() {
        *value_path = None;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_paths() {
        let y = "a: 1\nroutes:\n  - name: x\n    labels: {k: v, n: [1, 2]}\n  - name: y\ncreds:\n  c1: {provider: jwt,\n       ttl: 5m}\n";
        let l = Locations::scan(y);
        assert_eq!(l.locate("a"), (1, 1));
        assert_eq!(l.locate("routes"), (2, 1));
        assert_eq!(l.locate("routes[0]"), (3, 5));
        assert_eq!(l.locate("routes[0].name"), (3, 5));
        assert_eq!(l.locate("routes[0].labels.k"), (4, 14));
        assert_eq!(l.locate("routes[0].labels.n[1]"), (4, 27));
        assert_eq!(l.locate("routes[1].name"), (5, 5));
        assert_eq!(l.locate("creds.c1.ttl"), (8, 8));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(l.locate("routes[1].nope.deeper"), (5, 5));
        assert_eq!(l.locate("zzz"), (1, 1));
        assert!(l.first_duplicate().is_none());
    }

    #[test]
    fn duplicate_keys_are_recorded() {
        let l = Locations::scan("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n");
        assert_eq!(l.first_duplicate(), Some(("b.c", (4, 3))));
    }

    #[test]
    fn complex_keys_and_aliases_do_not_derail_the_scan() {
        let y = "? [a, b]\n: {x: 1}\nbase: &b {k: 1}\nother: *b\nlast: {q: 2}\n";
        let l = Locations::scan(y);
        assert_eq!(l.locate("base.k"), (3, 11));
        assert_eq!(l.locate("other"), (4, 1));
        assert_eq!(l.locate("last.q"), (5, 8));
    }

    #[test]
    fn broken_yaml_keeps_what_was_indexed() {
        let l = Locations::scan("a: 1\nb: [\n");
        assert_eq!(l.locate("a"), (1, 1));
        assert_eq!(l.locate("b"), (2, 1));
    }
}
