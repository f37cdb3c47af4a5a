//! A small strict JSON (RFC 8259) parser.
//!
//! `serde_json::Value` silently keeps the last of duplicate keys, which lets a message mean
//! one thing to the policy engine and another to a differently-implemented upstream. This
//! parser rejects duplicates at every depth, bounds nesting, rejects lone surrogates and
//! out-of-range numbers, and can report the byte spans of object members and array elements
//! so that responses can be rewritten by splicing the original bytes.

use serde_json::{Map, Number, Value};

use crate::McpError;

/// Parse one complete JSON text (optionally surrounded by whitespace) strictly.
pub(crate) fn parse_document(bytes: &[u8], max_depth: usize) -> Result<Value, McpError> {
    let src = std::str::from_utf8(bytes).map_err(|e| McpError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut p = Parser::new(src, 0, max_depth);
    p.skip_ws();
    if p.at_end() {
        return Err(McpError::NotJson {
            offset: p.pos,
            reason: "empty body",
        });
    }
    let value = p.value()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(McpError::TrailingData { offset: p.pos });
    }
    Ok(value)
}

/// A recursive-descent parser over already-validated UTF-8.
pub(crate) struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
}

/// Byte span `[start, end)` of a value inside the parsed text.
pub(crate) type Span = (usize, usize);

impl<'a> Parser<'a> {
    /// A parser over `src` positioned at `pos`.
    pub(crate) fn new(src: &'a str, pos: usize, max_depth: usize) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos,
            depth: 0,
            max_depth,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn err(&self, reason: &'static str) -> McpError {
        McpError::NotJson {
            offset: self.pos,
            reason,
        }
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), McpError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    /// Parse one value at the current position (no leading whitespace skipped).
    pub(crate) fn value(&mut self) -> Result<Value, McpError> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn enter(&mut self) -> Result<(), McpError> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(McpError::TooDeep {
                limit: self.max_depth,
            });
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Value, McpError> {
        self.enter()?;
        self.pos += 1; // '{'
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':', "expected ':'")?;
            self.skip_ws();
            let value = self.value()?;
            if map.contains_key(&key) {
                return Err(McpError::duplicate_key(&key));
            }
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
        self.depth -= 1;
        Ok(Value::Object(map))
    }

    fn array(&mut self) -> Result<Value, McpError> {
        self.enter()?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    fn literal(&mut self, word: &'static str, value: Value) -> Result<Value, McpError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Number, McpError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("leading zero in number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("expected digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected digits in exponent"));
            }
        }
        let text = &self.src[start..self.pos];
        if integer {
            if negative {
                // "-0" is the float -0.0, as in serde_json.
                if let Ok(n @ (..=-1 | 1..)) = text.parse::<i64>() {
                    return Ok(Number::from(n));
                }
            } else if let Ok(n) = text.parse::<u64>() {
                return Ok(Number::from(n));
            }
        }
        let f: f64 = text.parse().map_err(|_| McpError::NotJson {
            offset: start,
            reason: "invalid number",
        })?;
        Number::from_f64(f).ok_or(McpError::NotJson {
            offset: start,
            reason: "number out of range",
        })
    }

    fn hex4(&mut self) -> Result<u32, McpError> {
        let end = self.pos + 4;
        let digits = self
            .src
            .get(self.pos..end)
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.err("invalid \\u escape"));
        }
        let v = u32::from_str_radix(digits, 16).map_err(|_| self.err("invalid \\u escape"))?;
        self.pos = end;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, McpError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Stopped on an ASCII byte (or the end), so this is a char boundary.
            out.push_str(&self.src[run_start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("truncated escape"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !self.bytes[self.pos..].starts_with(b"\\u") {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err("lone surrogate in \\u escape"));
                            } else {
                                hi
                            };
                            let c = char::from_u32(code)
                                .ok_or_else(|| self.err("invalid \\u escape"))?;
                            out.push(c);
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    /// At an object: the key and value span of every member, in document order.
    pub(crate) fn object_member_spans(&mut self) -> Result<Vec<(String, Span)>, McpError> {
        self.skip_ws();
        self.expect(b'{', "expected an object")?;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(members);
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':', "expected ':'")?;
            self.skip_ws();
            let start = self.pos;
            self.value()?;
            members.push((key, (start, self.pos)));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(members);
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    /// At an array: the span of every element, in document order.
    pub(crate) fn array_element_spans(&mut self) -> Result<Vec<Span>, McpError> {
        self.skip_ws();
        self.expect(b'[', "expected an array")?;
        let mut elements = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(elements);
        }
        loop {
            self.skip_ws();
            let start = self.pos;
            self.value()?;
            elements.push((start, self.pos));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(elements);
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Value, McpError> {
        parse_document(s.as_bytes(), 64)
    }

    #[test]
    fn agrees_with_serde_json_on_valid_documents() {
        let docs = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e\u00e9\n\"\\\/\b\f\r\t"}}"#,
            r#"  [1, -0, 0.5, -12.5e-3, 1E+2, 18446744073709551615, -9223372036854775808]  "#,
            r#"{"big": 18446744073709551616, "neg": -9223372036854775809}"#,
            r#""\ud83d\ude00 snow ☃""#,
            "{}",
            "[]",
            "0",
        ];
        for d in docs {
            let ours = parse(d).unwrap();
            let theirs: Value = serde_json::from_str(d).unwrap();
            assert_eq!(ours, theirs, "{d}");
        }
    }

    #[test]
    fn rejects_invalid_json() {
        let bad = [
            "",
            "   ",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[01]",
            "[1.]",
            "[1e]",
            "[-]",
            "[+1]",
            "[.5]",
            "[NaN]",
            "[tru]",
            "{'a':1}",
            "{a:1}",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\u12\"",
            "\"tab\there\"",
            "\"unterminated",
            "[1e400]",
        ];
        for b in bad {
            match parse(b) {
                Err(McpError::NotJson { .. }) => {}
                other => panic!("{b:?}: expected NotJson, got {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_data_is_distinct() {
        assert!(matches!(
            parse("{} {}"),
            Err(McpError::TrailingData { offset: 3 })
        ));
        assert!(matches!(parse("{}x"), Err(McpError::TrailingData { .. })));
        assert!(parse("{}\r\n\t ").is_ok());
    }

    #[test]
    fn duplicates_at_any_depth() {
        for d in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":{"b":[{"c":1,"c":1}]}}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            assert!(
                matches!(parse(d), Err(McpError::DuplicateKey { .. })),
                "{d}"
            );
        }
        assert!(parse(r#"[{"a":1},{"a":1}]"#).is_ok());
    }

    #[test]
    fn depth_limit_is_exact() {
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(parse(&deep), Err(McpError::TooDeep { limit: 64 }));
        // Deeply nested garbage must not blow the stack.
        let huge = "[".repeat(1_000_000);
        assert_eq!(parse(&huge), Err(McpError::TooDeep { limit: 64 }));
    }

    #[test]
    fn invalid_utf8_is_distinct() {
        assert_eq!(
            parse_document(b"{\"a\":\"\xff\"}", 64),
            Err(McpError::InvalidUtf8 { offset: 6 })
        );
    }

    #[test]
    fn spans() {
        let src = r#" { "a" : [ 1 , {"b":2} ,"x" ] , "c":null } "#;
        let mut p = Parser::new(src, 0, 64);
        let members = p.object_member_spans().unwrap();
        assert_eq!(members.len(), 2);
        let (k, (s, e)) = &members[0];
        assert_eq!(k, "a");
        assert_eq!(&src[*s..*e], r#"[ 1 , {"b":2} ,"x" ]"#);
        let mut p = Parser::new(src, *s, 64);
        let els: Vec<&str> = p
            .array_element_spans()
            .unwrap()
            .into_iter()
            .map(|(s, e)| &src[s..e])
            .collect();
        assert_eq!(els, vec!["1", r#"{"b":2}"#, r#""x""#]);
    }
}
