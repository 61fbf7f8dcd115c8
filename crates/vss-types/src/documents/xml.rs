//! The XML layer shared by both documents: a bounded reader that turns text
//! into a small element tree (checking limits on the raw event stream, before
//! anything is decoded), typed attribute accessors, and an escaping writer.
//!
//! Every failure here is `VSS_E_INVALID_XML_DOCUMENT` with a message saying
//! what was wrong; nothing panics on any input.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::error::{VssError, VssResult};
use crate::guid::Guid;

/// Documents longer than this (in bytes of UTF-8) are refused unread.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest element nesting accepted; the schema itself needs 4.
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted in one document; bounds the memory a hostile
/// document can make the reader allocate.
pub const MAX_ELEMENTS: usize = 100_000;
/// Most attributes accepted on one element (the schema uses at most 9).
/// quick-xml's own duplicate check is quadratic, so it is off and this bound
/// keeps ours cheap.
pub const MAX_ATTRIBUTES: usize = 64;
/// The format version written, `MAJOR.MINOR`. Readers refuse other majors;
/// a newer minor may add attributes and elements, which are then ignored.
pub const FORMAT_VERSION: &str = "1.0";
pub const FORMAT_MAJOR: u32 = 1;
pub const FORMAT_MINOR: u32 = 0;

pub(crate) fn invalid(detail: impl std::fmt::Display) -> VssError {
    VssError::invalid_xml(detail)
}

/// A word-valued enumeration of the documents (see `enums.rs`).
pub(crate) trait XmlEnum: Sized + Copy {
    fn parse_word(w: &str) -> Option<Self>;
    fn word_list() -> String;
}

/// A bit mask of the documents, written as a decimal number.
pub(crate) trait XmlMask: Sized + Copy {
    fn parse_bits(bits: u32) -> Option<Self>;
}

/// One element: name, attributes in document order, child elements and the
/// concatenated character data directly inside it.
#[derive(Debug)]
pub(crate) struct Node {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    pub text: String,
}

/// How strictly to read: documents of a newer minor version may carry
/// attributes and elements this version does not know, which are skipped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cx {
    pub strict: bool,
}

/// Characters XML 1.0 allows at all (`Char` production). Everything else is
/// refused before parsing.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn is_xml_space(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Parses `input` into its root element, which must be `root` in the
/// default namespace `namespace` with a supported `version`. The `xmlns` and
/// `version` attributes are checked here and removed from the tree.
pub(crate) fn parse(input: &str, root: &str, namespace: &str) -> VssResult<(Node, Cx)> {
    if input.len() > MAX_DOCUMENT_BYTES {
        return Err(invalid(format!(
            "the document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
            input.len()
        )));
    }
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    if let Some((at, c)) = input.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        return Err(invalid(format!(
            "character U+{:04X} at byte {at} is not allowed in XML",
            c as u32
        )));
    }

    let mut reader = Reader::from_str(input);
    {
        let config = reader.config_mut();
        config.trim_text(false);
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
    }

    let mut stack: Vec<Node> = Vec::new();
    let mut done: Option<Node> = None;
    let mut elements = 0usize;
    let mut seen_markup = false;

    loop {
        let pos = reader.buffer_position();
        let event = reader.read_event().map_err(|e| {
            invalid(format!(
                "malformed XML at byte {}: {e}",
                reader.error_position().max(pos)
            ))
        })?;
        match event {
            Event::Decl(_) => {
                if seen_markup {
                    return Err(invalid(
                        "the XML declaration may only come first in the document",
                    ));
                }
            }
            Event::DocType(_) => {
                return Err(invalid(
                    "DOCTYPE declarations are not allowed (no DTDs, no entity definitions)",
                ))
            }
            Event::PI(_) => {
                return Err(invalid("processing instructions are not allowed"));
            }
            Event::Comment(_) => {}
            Event::Start(e) => {
                open_element(&e, &mut stack, &done, &mut elements, namespace, root)?;
            }
            Event::Empty(e) => {
                open_element(&e, &mut stack, &done, &mut elements, namespace, root)?;
                close_element(&mut stack, &mut done);
            }
            Event::End(_) => {
                // quick-xml has already matched the end tag to its start tag.
                close_element(&mut stack, &mut done);
            }
            Event::Text(t) => match stack.last_mut() {
                Some(top) => {
                    let text = t.unescape().map_err(|e| {
                        invalid(format!("bad character data in <{}>: {e}", top.name))
                    })?;
                    top.text.push_str(&text);
                }
                None => {
                    let raw = std::str::from_utf8(&t)
                        .map_err(|_| invalid("text outside the root element is not UTF-8"))?;
                    if !is_xml_space(raw) {
                        return Err(invalid("text outside the root element"));
                    }
                }
            },
            Event::CData(t) => match stack.last_mut() {
                Some(top) => {
                    let raw = std::str::from_utf8(&t)
                        .map_err(|_| invalid(format!("CDATA in <{}> is not UTF-8", top.name)))?;
                    top.text.push_str(raw);
                }
                None => return Err(invalid("CDATA outside the root element")),
            },
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(invalid(format!(
                        "the document ends inside <{}> (truncated?)",
                        open.name
                    )));
                }
                break;
            }
        }
        seen_markup = true;
    }

    let mut node = done.ok_or_else(|| invalid("the document has no root element"))?;
    match node.take_attr("xmlns") {
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            return Err(invalid(format!(
                "<{root}> has namespace \"{ns}\", expected \"{namespace}\""
            )))
        }
        None => return Err(invalid(format!("<{root}> lacks xmlns=\"{namespace}\""))),
    }
    let version = node
        .take_attr("version")
        .ok_or_else(|| invalid(format!("<{root}> lacks the version attribute")))?;
    let (major, minor) = parse_version(&version).ok_or_else(|| {
        invalid(format!(
            "version \"{version}\" is not of the form MAJOR.MINOR"
        ))
    })?;
    if major != FORMAT_MAJOR {
        return Err(invalid(format!(
            "document version {version} is not supported (this implementation reads version {FORMAT_MAJOR}.x)"
        )));
    }
    // FORMAT_MINOR is 0 today, which clippy finds absurd; it will grow.
    #[allow(clippy::absurd_extreme_comparisons)]
    let strict = minor <= FORMAT_MINOR;
    Ok((node, Cx { strict }))
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((parse_decimal(a)?, parse_decimal(b)?))
}

/// A plain decimal `u32`: digits only (no sign, no spaces).
pub(crate) fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn open_element(
    e: &BytesStart<'_>,
    stack: &mut Vec<Node>,
    done: &Option<Node>,
    elements: &mut usize,
    namespace: &str,
    root: &str,
) -> VssResult<()> {
    let name = std::str::from_utf8(e.name().as_ref())
        .map_err(|_| invalid("an element name is not UTF-8"))?
        .to_owned();
    if stack.is_empty() && done.is_some() {
        return Err(invalid(format!(
            "<{name}> follows the root element; a document has one root"
        )));
    }
    // Checked at once, so the wrong document type is named as such.
    if stack.is_empty() && name != root {
        return Err(invalid(format!(
            "the root element is <{name}>, expected <{root}>"
        )));
    }
    *elements += 1;
    if *elements > MAX_ELEMENTS {
        return Err(invalid(format!(
            "the document has more than {MAX_ELEMENTS} elements"
        )));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(invalid(format!(
            "elements are nested more than {MAX_DEPTH} deep"
        )));
    }
    if name.contains(':') {
        return Err(invalid(format!(
            "<{name}>: namespace prefixes are not used in these documents"
        )));
    }
    let is_root = stack.is_empty();
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut seen = 0usize;
    let mut iter = e.attributes();
    iter.with_checks(false);
    for a in iter {
        let a = a.map_err(|err| invalid(format!("bad attribute in <{name}>: {err}")))?;
        seen += 1;
        if seen > MAX_ATTRIBUTES {
            return Err(invalid(format!(
                "<{name}> has more than {MAX_ATTRIBUTES} attributes"
            )));
        }
        let key = std::str::from_utf8(a.key.as_ref())
            .map_err(|_| invalid(format!("an attribute name in <{name}> is not UTF-8")))?
            .to_owned();
        if attrs.iter().any(|(k, _)| *k == key) {
            return Err(invalid(format!("<{name}> has the attribute {key} twice")));
        }
        if key.contains(':') {
            return Err(invalid(format!(
                "<{name} {key}=…>: namespace prefixes are not used in these documents"
            )));
        }
        let value = a
            .unescape_value()
            .map_err(|err| invalid(format!("bad value of {key} in <{name}>: {err}")))?
            .into_owned();
        attrs.push((key, value));
    }
    if !is_root {
        // Inner elements may repeat the default namespace, nothing else.
        if let Some(i) = attrs.iter().position(|(k, _)| k == "xmlns") {
            let (_, value) = attrs.remove(i);
            if value != namespace {
                return Err(invalid(format!(
                    "<{name}> switches to namespace \"{value}\"; only \"{namespace}\" is used"
                )));
            }
        }
    }
    stack.push(Node {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    });
    Ok(())
}

fn close_element(stack: &mut Vec<Node>, done: &mut Option<Node>) {
    if let Some(node) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(node),
            None => *done = Some(node),
        }
    }
}

impl Node {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn take_attr(&mut self, key: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(k, _)| k == key)?;
        Some(self.attrs.remove(i).1)
    }

    /// Refuses attributes outside `known` (unless reading a newer minor
    /// version) and non-blank text: this element holds elements only.
    pub fn expect(&self, cx: Cx, known: &[&str]) -> VssResult<()> {
        if cx.strict {
            if let Some((k, _)) = self
                .attrs
                .iter()
                .find(|(k, _)| !known.contains(&k.as_str()))
            {
                return Err(invalid(format!(
                    "<{}> has an unknown attribute {k}",
                    self.name
                )));
            }
        }
        if !is_xml_space(&self.text) {
            return Err(invalid(format!(
                "<{}> holds text; it may only hold elements",
                self.name
            )));
        }
        Ok(())
    }

    /// The text of an element that holds only text.
    pub fn text_only(&self, cx: Cx) -> VssResult<String> {
        if cx.strict {
            if let Some((k, _)) = self.attrs.first() {
                return Err(invalid(format!(
                    "<{}> has an unknown attribute {k}",
                    self.name
                )));
            }
            if let Some(c) = self.children.first() {
                return Err(invalid(format!(
                    "<{}> holds an element <{}>; it may only hold text",
                    self.name, c.name
                )));
            }
        }
        Ok(self.text.clone())
    }

    /// An unknown child: an error, unless reading a newer minor version.
    pub fn unknown_child(&self, cx: Cx, child: &Node) -> VssResult<()> {
        if cx.strict {
            Err(invalid(format!(
                "<{}> may not hold <{}>",
                self.name, child.name
            )))
        } else {
            Ok(())
        }
    }

    pub fn req(&self, key: &str) -> VssResult<String> {
        self.attr(key)
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("<{}> lacks the {key} attribute", self.name)))
    }

    pub fn opt(&self, key: &str) -> Option<String> {
        self.attr(key).map(str::to_owned)
    }

    /// A `yes`/`no` attribute; `default` when absent.
    pub fn yes_no(&self, key: &str, default: bool) -> VssResult<bool> {
        Ok(self.opt_yes_no(key)?.unwrap_or(default))
    }

    pub fn opt_yes_no(&self, key: &str) -> VssResult<Option<bool>> {
        match self.attr(key) {
            None => Ok(None),
            Some("yes") => Ok(Some(true)),
            Some("no") => Ok(Some(false)),
            Some(v) => Err(invalid(format!(
                "{key}=\"{v}\" in <{}>: the value must be yes or no",
                self.name
            ))),
        }
    }

    pub fn guid(&self, key: &str) -> VssResult<Guid> {
        let v = self.req(key)?;
        Guid::parse(&v)
            .map_err(|_| invalid(format!("{key}=\"{v}\" in <{}> is not a GUID", self.name)))
    }

    pub fn u32_or(&self, key: &str, default: u32) -> VssResult<u32> {
        match self.attr(key) {
            None => Ok(default),
            Some(v) => parse_decimal(v).ok_or_else(|| {
                invalid(format!(
                    "{key}=\"{v}\" in <{}> is not a decimal number",
                    self.name
                ))
            }),
        }
    }

    pub fn enum_or<T: XmlEnum>(&self, key: &str, default: T) -> VssResult<T> {
        match self.attr(key) {
            None => Ok(default),
            Some(_) => self.enum_req(key),
        }
    }

    pub fn enum_req<T: XmlEnum>(&self, key: &str) -> VssResult<T> {
        let v = self.req(key)?;
        T::parse_word(&v).ok_or_else(|| {
            invalid(format!(
                "{key}=\"{v}\" in <{}> is not one of {}",
                self.name,
                T::word_list()
            ))
        })
    }

    pub fn mask_or<T: XmlMask>(&self, key: &str, default: T) -> VssResult<T> {
        match self.attr(key) {
            None => Ok(default),
            Some(v) => {
                let bits = self.u32_or(key, 0)?;
                T::parse_bits(bits).ok_or_else(|| {
                    invalid(format!(
                        "{key}=\"{v}\" in <{}> has bits this version does not know",
                        self.name
                    ))
                })
            }
        }
    }
}

/// Whether `s` may be a name, path or caption: no control characters at all
/// (line breaks and tabs included) and only characters XML can carry.
pub(crate) fn check_name(what: &str, s: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control() || !is_xml_char(*c)) {
        Some(c) => Err(format!(
            "{what} contains the control character U+{:04X}",
            c as u32
        )),
        None => Ok(()),
    }
}

/// Whether `s` may be free text (metadata, messages): as names, but tabs and
/// line breaks are allowed.
pub(crate) fn check_text(what: &str, s: &str) -> Result<(), String> {
    match s
        .chars()
        .find(|c| !matches!(c, '\t' | '\n' | '\r') && (c.is_control() || !is_xml_char(*c)))
    {
        Some(c) => Err(format!(
            "{what} contains the control character U+{:04X}",
            c as u32
        )),
        None => Ok(()),
    }
}

/// Attributes of an element being written, in order.
#[derive(Default)]
pub(crate) struct Attrs(Vec<(&'static str, String)>);

impl Attrs {
    pub fn new() -> Self {
        Attrs(Vec::new())
    }

    pub fn s(mut self, key: &'static str, value: &str) -> Self {
        self.0.push((key, value.to_owned()));
        self
    }

    pub fn opt(self, key: &'static str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.s(key, v),
            None => self,
        }
    }

    pub fn yes_no(self, key: &'static str, value: bool) -> Self {
        self.s(key, if value { "yes" } else { "no" })
    }

    pub fn num(mut self, key: &'static str, value: u32) -> Self {
        self.0.push((key, value.to_string()));
        self
    }

    pub fn guid(mut self, key: &'static str, value: Guid) -> Self {
        self.0.push((key, value.to_string()));
        self
    }
}

/// Writes indented XML. Indentation only ever goes between elements, never
/// into an element that holds text, so text round-trips exactly.
pub(crate) struct XmlWriter {
    out: String,
    level: usize,
}

impl XmlWriter {
    pub fn new() -> Self {
        XmlWriter {
            out: String::new(),
            level: 0,
        }
    }

    fn start_tag(&mut self, name: &str, attrs: &Attrs) {
        for _ in 0..self.level {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in &attrs.0 {
            let _ = write!(self.out, " {k}=\"");
            escape_attr(&mut self.out, v);
            self.out.push('"');
        }
    }

    pub fn empty(&mut self, name: &str, attrs: Attrs) {
        self.start_tag(name, &attrs);
        self.out.push_str("/>\n");
    }

    pub fn open(&mut self, name: &str, attrs: Attrs) {
        self.start_tag(name, &attrs);
        self.out.push_str(">\n");
        self.level += 1;
    }

    pub fn close(&mut self, name: &str) {
        self.level = self.level.saturating_sub(1);
        for _ in 0..self.level {
            self.out.push_str("  ");
        }
        let _ = writeln!(self.out, "</{name}>");
    }

    /// `<name>text</name>`, the text escaped.
    pub fn text(&mut self, name: &str, text: &str) {
        self.start_tag(name, &Attrs::new());
        self.out.push('>');
        escape_text(&mut self.out, text);
        let _ = writeln!(self.out, "</{name}>");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes for a double-quoted attribute. Tabs and line breaks become
/// character references, or a reader would normalise them to spaces.
fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// Escapes character data. CR becomes a reference, or a reader would
/// normalise CR LF to LF.
fn escape_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::VssCode;

    const NS: &str = "x-schema:#Test";

    fn err(input: &str) -> String {
        let e = parse(input, "R", NS).unwrap_err();
        assert_eq!(e.code, VssCode::InvalidXmlDocument);
        e.message
    }

    #[test]
    fn reads_a_tree() {
        let (root, cx) = parse(
            "<?xml version=\"1.0\"?>\n<!-- c --><R xmlns=\"x-schema:#Test\" version=\"1.0\" a=\"x&amp;&#10;y\">\
             <C xmlns=\"x-schema:#Test\"> t&lt;<![CDATA[<raw>]]></C><D/></R>\n",
            "R",
            NS,
        )
        .unwrap();
        assert!(cx.strict);
        assert_eq!(root.attr("a"), Some("x&\ny"));
        assert_eq!(root.attr("version"), None);
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.children[0].text, " t<<raw>");
        assert!(root.children[0].attrs.is_empty());
    }

    #[test]
    fn newer_minor_is_lenient() {
        let (_, cx) = parse("<R xmlns=\"x-schema:#Test\" version=\"1.7\"/>", "R", NS).unwrap();
        assert!(!cx.strict);
    }

    #[test]
    fn refusals() {
        assert!(err("<R xmlns=\"x-schema:#Test\" version=\"2.0\"/>").contains("not supported"));
        assert!(err("<R xmlns=\"x-schema:#Test\"/>").contains("version"));
        assert!(err("<R version=\"1.0\"/>").contains("xmlns"));
        assert!(err("<R xmlns=\"other\" version=\"1.0\"/>").contains("namespace"));
        assert!(err("<Q xmlns=\"x-schema:#Test\" version=\"1.0\"/>").contains("root element"));
        assert!(err("<!DOCTYPE R><R/>").contains("DOCTYPE"));
        assert!(err("<R><?pi x?></R>").contains("processing"));
        assert!(err("<R><a></R>").contains("malformed"));
        assert!(err("<R>").contains("truncated"));
        assert!(err("").contains("no root"));
        assert!(err("<R/><R/>").contains("one root"));
        assert!(err("<R/>x").contains("outside"));
        assert!(err("<R a=\"1\" a=\"2\"/>").contains("attribute"));
        assert!(err("<R>&foo;</R>").contains("character data"));
        assert!(err("<R>\u{1}</R>").contains("U+0001"));
        assert!(err("<R><p:a/></R>").contains("prefix"));
        assert!(err("<R p:a=\"1\"/>").contains("prefix"));
        assert!(err("<p:R xmlns:p=\"x\"/>").contains("root element"));
        assert!(err("<R><C xmlns=\"y\"/></R>").contains("namespace"));
        let deep = format!(
            "<R>{}{}</R>",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        );
        assert!(err(&deep).contains("nested"));
        let big = format!("<R>{}</R>", " ".repeat(MAX_DOCUMENT_BYTES));
        assert!(err(&big).contains("limit"));
        let attrs: String = (0..300_000).map(|i| format!(" a{i}=\"\"")).collect();
        let t = std::time::Instant::now();
        assert!(err(&format!("<R{attrs}/>")).contains("attributes"));
        assert!(t.elapsed().as_secs() < 2, "attribute flood must fail fast");
        assert!(
            err("<R><C xmlns=\"x-schema:#Test\" xmlns=\"x-schema:#Test\"/></R>").contains("twice")
        );
        let many = format!("<R>{}</R>", "<a/>".repeat(MAX_ELEMENTS));
        assert!(err(&many).contains("elements"));
    }

    #[test]
    fn escaping() {
        let mut w = XmlWriter::new();
        w.open("R", Attrs::new().s("a", "<&\"'\t\n\r>"));
        w.text("T", "<&>\r\n'\"");
        w.close("R");
        let s = w.finish();
        assert!(
            s.contains("a=\"&lt;&amp;&quot;&apos;&#9;&#10;&#13;&gt;\""),
            "{s}"
        );
        let s = s.replacen("<R", "<R xmlns=\"x-schema:#Test\" version=\"1.0\"", 1);
        let (root, _) = parse(&s, "R", NS).unwrap();
        assert_eq!(root.attr("a"), Some("<&\"'\t\n\r>"));
        assert_eq!(root.children[0].text, "<&>\r\n'\"");
    }

    #[test]
    fn name_and_text_checks() {
        assert!(check_name("n", "a b<>&é😀").is_ok());
        assert!(check_name("n", "a\tb").is_err());
        assert!(check_name("n", "a\u{85}").is_err());
        assert!(check_name("n", "\u{FFFE}").is_err());
        assert!(check_text("t", "a\tb\r\n").is_ok());
        assert!(check_text("t", "a\u{7f}").is_err());
        assert!(check_text("t", "a\u{0}").is_err());
    }
}
