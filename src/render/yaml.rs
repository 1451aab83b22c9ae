//! Deterministic YAML emitter for [`serde_json::Value`].
//!
//! kiln renders cloud-init user-data, MicroK8s launch configurations and Helm values from
//! structured data, and emits the YAML itself instead of string-templating it or delegating to
//! serde_yaml (deprecated, and its output style is not ours to pin down):
//!
//! - Quoting is decided in one place, conservatively. Quoting bugs are a classic source of broken
//!   configs: `yes`, `on`, `0644`, `1:20`, `1e3`, `2001-12-14`, `=` or a stray `: ` / ` #` all
//!   change meaning depending on the parser. A string is written plain only when YAML 1.1 (PyYAML,
//!   used by cloud-init; go-yaml v2/v3, used by Helm) and YAML 1.2 all read it back as that same
//!   string; everything else is double-quoted.
//! - Output is byte-stable: maps keep insertion order, indentation is always 2 spaces and every
//!   kind of value has exactly one style, so rendered artifacts can be hashed and diffed.

use serde_json::{Map, Number, Value};

/// Spaces per nesting level.
const INDENT_WIDTH: usize = 2;

/// Longest rendered key written as an implicit `key: value`. YAML caps implicit keys at 1024
/// characters (libyaml and PyYAML enforce it); longer keys use the explicit `? key` form. Measured
/// in bytes, which is never less than characters, and with some margin, to stay on the safe side.
const MAX_IMPLICIT_KEY_BYTES: usize = 1000;

/// Characters that act as (or are reserved as) indicators when they start a plain scalar.
const LEADING_INDICATORS: &[char] = &[
    '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`',
];

/// Characters that end a plain scalar inside a flow collection such as `[a, b]`: the flow
/// indicators, plus '?' for PyYAML. Block context tolerates them, but quoting them keeps
/// [`scalar`] output safe to place inside a flow collection as well.
const FLOW_UNSAFE: &[char] = &[',', '[', ']', '{', '}', '?'];

/// A whole YAML document in block style, ending in a single "\n". Maps keep their insertion order.
///
/// The one exception to the single trailing newline: a multi-line string that ends in more than
/// one "\n" is written as a keep-chomped (`|+`) literal block, and if it is the last thing in the
/// document its trailing empty lines are part of its content and so end the document.
pub fn to_document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        // Indent a top-level literal block like a nested one, so none of its lines can sit at
        // column 0 and be mistaken for a `---` / `...` document marker.
        _ => write_inline(&mut out, value, INDENT_WIDTH),
    }
    out
}

/// The text to put right after `key:` in a template line whose key sits at column `indent`.
///
/// Scalars and empty collections: " value" on the same line (note the leading space); a
/// multi-line string becomes " |" plus its literal block lines, indented by `indent` + 2.
/// Non-empty maps/sequences: "\n" followed by the block, indented by `indent` + 2 spaces, WITHOUT
/// a trailing newline (the template line supplies it).
pub fn after_key(value: &Value, indent: usize) -> String {
    let mut out = String::new();
    write_after_key(&mut out, value, indent);
    // Every writer ends its last line with "\n"; the template provides that one.
    if out.ends_with('\n') {
        out.pop();
    }
    out
}

/// A scalar as a YAML flow scalar (plain when safe, else double-quoted with JSON-style escapes).
///
/// Never spans lines: multi-line strings are double-quoted with `\n` escapes. Numbers are written
/// as serde_json prints them, except that floats in exponent form always get a `.` and a signed
/// exponent (`1e300` becomes `1.0e+300`) because YAML 1.1 does not read `1e300` as a number.
/// Collections, which are not scalars, are written as flow collections (`[]`, `{}`,
/// `["a", 1]`) with every string double-quoted, so the result is still one valid YAML value.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(boolean) => boolean.to_string(),
        Value::Number(number) => format_number(number),
        Value::String(text) => string_scalar(text),
        Value::Array(_) | Value::Object(_) => flow_value(value),
    }
}

/// Writes the rest of a `key:` line (the key sits at column `indent`) and any lines below it.
fn write_after_key(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + INDENT_WIDTH, false);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, indent + INDENT_WIDTH, false);
        }
        _ => {
            out.push(' ');
            write_inline(out, value, indent + INDENT_WIDTH);
        }
    }
}

/// Writes a block mapping whose keys sit at column `indent`. With `continues_line` the cursor is
/// already at that column (after a sequence's "- "), so the first key is not indented again.
fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize, continues_line: bool) {
    for (position, (key, value)) in map.iter().enumerate() {
        if position > 0 || !continues_line {
            push_spaces(out, indent);
        }
        let key_text = string_scalar(key);
        if key_text.len() > MAX_IMPLICIT_KEY_BYTES {
            out.push_str("? ");
            out.push_str(&key_text);
            out.push('\n');
            push_spaces(out, indent);
        } else {
            out.push_str(&key_text);
        }
        out.push(':');
        write_after_key(out, value, indent);
    }
}

/// Writes a block sequence whose dashes sit at column `indent`; `continues_line` as in
/// [`write_map`]. Maps and sequences inside a sequence start on the dash's line (`- key: v`,
/// `- - a`), which is the compact form people write by hand.
fn write_sequence(out: &mut String, items: &[Value], indent: usize, continues_line: bool) {
    for (position, item) in items.iter().enumerate() {
        if position > 0 || !continues_line {
            push_spaces(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => {
                write_map(out, map, indent + INDENT_WIDTH, true);
            }
            Value::Array(nested) if !nested.is_empty() => {
                write_sequence(out, nested, indent + INDENT_WIDTH, true);
            }
            _ => write_inline(out, item, indent + INDENT_WIDTH),
        }
    }
}

/// Writes a value that fits on the current line (a scalar or an empty collection), or the header
/// of a literal block followed by its lines at `content_indent`. Always ends with "\n".
fn write_inline(out: &mut String, value: &Value, content_indent: usize) {
    if let Value::String(text) = value {
        if let Some(block) = LiteralBlock::new(text) {
            block.write(out, content_indent);
            return;
        }
    }
    out.push_str(&scalar(value));
    out.push('\n');
}

fn push_spaces(out: &mut String, count: usize) {
    out.extend(std::iter::repeat_n(' ', count));
}

/// A multi-line string that can be written as a literal (`|`) block and read back unchanged.
struct LiteralBlock<'text> {
    /// The string without its trailing newlines.
    body: &'text str,
    trailing_newlines: usize,
}

impl<'text> LiteralBlock<'text> {
    /// Returns `None` when a literal block could not represent `text` exactly, in which case it
    /// is double-quoted instead.
    fn new(text: &'text str) -> Option<Self> {
        if !text.contains('\n') {
            return None;
        }
        // Literal blocks cannot escape anything. Tabs and carriage returns are also excluded:
        // they are easy to mangle (editors, CRLF normalisation) and invisible in review.
        if text
            .chars()
            .any(|character| character != '\n' && needs_escape(character))
        {
            return None;
        }
        let body = text.trim_end_matches('\n');
        // A block of nothing but line breaks reads back as "" under the default chomping.
        if body.is_empty() {
            return None;
        }
        // Trailing whitespace is invisible and routinely stripped by editors; keep it escaped.
        if body
            .split('\n')
            .any(|line| line.ends_with(char::is_whitespace))
        {
            return None;
        }
        // Parsers detect the block's indentation from its first non-empty line, so leading spaces
        // there would be taken as indentation and lost.
        let first_content_line = body.split('\n').find(|line| !line.is_empty());
        if first_content_line.is_some_and(|line| line.starts_with(char::is_whitespace)) {
            return None;
        }
        Some(Self {
            body,
            trailing_newlines: text.len() - body.len(),
        })
    }

    fn write(&self, out: &mut String, content_indent: usize) {
        // Chomping indicator: strip (`-`) for no final newline, clip (default) for exactly one,
        // keep (`+`) for more, in which case the extra newlines follow as empty lines.
        out.push_str(match self.trailing_newlines {
            0 => "|-\n",
            1 => "|\n",
            _ => "|+\n",
        });
        for line in self.body.split('\n') {
            // Empty lines stay empty: indentation-only lines would be trailing whitespace.
            if !line.is_empty() {
                push_spaces(out, content_indent);
                out.push_str(line);
            }
            out.push('\n');
        }
        for _ in 1..self.trailing_newlines {
            out.push('\n');
        }
    }
}

/// A string as a single-line scalar: plain when every targeted parser agrees it is this string,
/// double-quoted otherwise.
fn string_scalar(text: &str) -> String {
    if can_be_plain(text) {
        text.to_owned()
    } else {
        double_quoted(text)
    }
}

/// Whether `text` reads back as exactly this string when written as a plain scalar, under YAML
/// 1.1 and 1.2 alike. Errs on the side of quoting.
fn can_be_plain(text: &str) -> bool {
    let (Some(first), Some(last)) = (text.chars().next(), text.chars().next_back()) else {
        // The empty plain scalar is null.
        return false;
    };
    !(first.is_whitespace()
        || last.is_whitespace()
        || LEADING_INDICATORS.contains(&first)
        || text.contains(FLOW_UNSAFE)
        || text.chars().any(needs_escape)
        // ": " starts a mapping value and " #" a comment; a final ':' acts like ": ".
        || text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        // "..." at the start of a line ends the document.
        || text.starts_with("...")
        || is_reserved_word(text)
        || looks_numeric(text)
        || looks_like_timestamp(text))
}

/// Characters that never appear raw in output: C0/C1 controls and DEL are outside YAML's
/// printable set (PyYAML rejects them), NEL and U+2028/U+2029 are line breaks in YAML 1.1 (a parser
/// would fold them), U+FEFF is a byte order mark, and U+FFFE/U+FFFF are not printable either.
fn needs_escape(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
        )
}

/// A YAML double-quoted scalar using only JSON-style escapes, which every YAML version reads.
///
/// Not simply `serde_json::to_string`: JSON leaves DEL, the C1 controls and U+2028/U+2029 raw,
/// which YAML 1.1 parsers reject or treat as line breaks.
fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Every character needing an escape is in the Basic Multilingual Plane, so four hex
            // digits always suffice.
            other if needs_escape(other) => {
                out.push_str(&format!("\\u{:04X}", u32::from(other)));
            }
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// Words that YAML 1.1 or 1.2 resolve to null or bool, plus `<<` (merge key) and `=` (YAML 1.1
/// "value" type, which PyYAML's safe loader refuses to load at all). Compared case-insensitively:
/// no targeted parser needs that, but quoting `yEs` costs nothing.
fn is_reserved_word(text: &str) -> bool {
    const WORDS: [&str; 12] = [
        "~", "null", "y", "n", "yes", "no", "true", "false", "on", "off", "<<", "=",
    ];
    WORDS.iter().any(|word| word.eq_ignore_ascii_case(text))
}

/// Whether any targeted parser could read `text` as an int or float: the union of YAML 1.1
/// (underscores, legacy octal `0123`, binary, sexagesimal `1:20`), YAML 1.2 core (`0o17`, `1e3`)
/// and go-yaml (which strips underscores and hands the rest to Go's `strconv`, so also `0X1F`,
/// `0O17`, `09`). Deliberately broader than each of them.
fn looks_numeric(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if unsigned.eq_ignore_ascii_case(".inf") || unsigned.eq_ignore_ascii_case(".nan") {
        return true;
    }

    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        // `get` rather than indexing: the prefix length may not be a char boundary of `unsigned`.
        let prefix_matches = unsigned
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix));
        if prefix_matches {
            let digits = &unsigned[prefix.len()..];
            if !digits.is_empty()
                && digits
                    .chars()
                    .all(|character| character == '_' || character.is_digit(radix))
            {
                return true;
            }
        }
    }

    let mut characters = unsigned.chars();
    let starts_like_number = match characters.next() {
        Some(character) if character.is_ascii_digit() => true,
        Some('.') => characters
            .next()
            .is_some_and(|character| character.is_ascii_digit()),
        _ => false,
    };
    if !starts_like_number {
        return false;
    }
    // Sexagesimal (base 60) ints and floats, such as 1:20 or 190:20:30.15.
    if unsigned.contains(':') {
        return unsigned
            .chars()
            .all(|character| character.is_ascii_digit() || matches!(character, '_' | ':' | '.'));
    }
    // Decimal ints and floats: digits and underscores, at most one '.', optional exponent.
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        // 'e' is ASCII, so `position + 1` is a char boundary.
        Some(position) => (&unsigned[..position], Some(&unsigned[position + 1..])),
        None => (unsigned, None),
    };
    let mantissa_is_numeric = mantissa.matches('.').count() <= 1
        && mantissa
            .chars()
            .all(|character| character.is_ascii_digit() || matches!(character, '_' | '.'));
    let exponent_is_numeric = exponent.is_none_or(|exponent| {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        !digits.is_empty()
            && digits
                .chars()
                .all(|character| character.is_ascii_digit() || character == '_')
    });
    mantissa_is_numeric && exponent_is_numeric
}

/// Whether `text` could be a YAML 1.1 timestamp (PyYAML and go-yaml turn those into dates). Every
/// timestamp form starts with a four-digit year and '-', so anything starting that way is quoted.
fn looks_like_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// A number as serde_json prints it, except that floats in exponent form get a '.' in the mantissa
/// and a sign in the exponent (`1e300` becomes `1.0e+300`): YAML 1.1 (PyYAML) requires both and
/// would otherwise read the number back as a string.
fn format_number(number: &Number) -> String {
    let text = number.to_string();
    if !number.is_f64() {
        return text;
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        // 'e' is ASCII, so `position + 1` is a char boundary.
        Some(position) => (&text[..position], Some(&text[position + 1..])),
        None => (text.as_str(), None),
    };
    let mut out = mantissa.to_owned();
    // A float printed without '.' would read back as an int.
    if !mantissa.contains('.') {
        out.push_str(".0");
    }
    if let Some(exponent) = exponent {
        out.push('e');
        if !exponent.starts_with(['+', '-']) {
            out.push('+');
        }
        out.push_str(exponent);
    }
    out
}

/// A value in flow style. Strings are always double-quoted here: plain scalars inside flow
/// collections have extra restrictions that older parsers disagree on.
fn flow_value(value: &Value) -> String {
    match value {
        Value::String(text) => double_quoted(text),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flow_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}: {}", double_quoted(key), flow_value(value)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => scalar(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    /// Strings that are easy to get wrong, one per category the quoting rules care about.
    const TRICKY_STRINGS: &[&str] = &[
        // Null and bool words of YAML 1.1 and 1.2, and case variants.
        "",
        "~",
        "null",
        "Null",
        "NULL",
        "nULL",
        "y",
        "Y",
        "yes",
        "Yes",
        "YES",
        "yEs",
        "n",
        "N",
        "no",
        "No",
        "NO",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        // Ints: decimal, signed, legacy octal, 0o, hex, binary, underscores, sexagesimal.
        "0",
        "1",
        "-1",
        "+1",
        "123",
        "0123",
        "09",
        "0o17",
        "0O17",
        "0x1F",
        "0X1f",
        "-0x1F",
        "+0x_ff",
        "0b1010",
        "-0b1",
        "1_000",
        "0_1",
        "1__",
        "1:20",
        "-1:20:30",
        "190:20:30.15",
        // Floats.
        "1.0",
        "-1.5",
        ".5",
        "1.",
        "1e3",
        "1E3",
        "1e+3",
        "1.0e-3",
        "1_000.5",
        "6.8523015e+5",
        "685.230_15e+03",
        ".inf",
        "-.inf",
        "+.INF",
        ".Inf",
        ".nan",
        ".NaN",
        ".NAN",
        "-.nan",
        // Timestamps.
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "2001-12-14 21:59:43.10 -5",
        "2001-12-15T02:59:43.1Z",
        "2002-1-2",
        // Indicators and structure.
        "-",
        "--",
        "---",
        "- a",
        "-a",
        "?",
        "? a",
        "?a",
        ":",
        ":a",
        "a:",
        "a: b",
        "a:b",
        "a #b",
        "a#b",
        "#a",
        ",a",
        "a,b",
        "[a]",
        "{a}",
        "]",
        "}",
        "&a",
        "*a",
        "!a",
        "!!str",
        "|",
        "|-",
        ">",
        ">-",
        "'a'",
        "\"a\"",
        "it's",
        "say \"hi\"",
        "%a",
        "@a",
        "`a`",
        "<<",
        "=",
        "==",
        "<",
        "...",
        "... a",
        "a...",
        ".",
        "..",
        "+",
        "_1",
        "\\",
        "a\\nb",
        // Whitespace.
        " ",
        " a",
        "a ",
        "\t",
        "a\tb",
        "a  b",
        "\u{a0}a",
        "a\u{a0}",
        "\u{3000}",
        // Controls and characters YAML 1.1 treats specially.
        "\u{0}",
        "\u{1b}[0m",
        "\u{7f}",
        "\u{80}",
        "\u{85}",
        "\u{9f}",
        "a\u{2028}b",
        "a\u{2029}b",
        "\u{feff}a",
        "\u{fffe}",
        "\u{ffff}",
        "a\rb",
        // Unicode.
        "héllo",
        "日本語",
        "emoji 🚀",
        "Ωmega",
        "0é",
        "1é",
        "𝔘𝔫𝔦",
        // Everyday values that should stay readable.
        "/etc/hosts",
        ".bashrc",
        "./x",
        "http://example.com:8080/path?q=1#frag",
        "1.28/stable",
        "10.0.0.1",
        "192.168.0.0/16",
        "v1.28.3",
        "1.2.3",
        "8Gi",
        "100m",
        "0.5Gi",
        "1e3Gi",
        "ubuntu@host",
        "a=b",
        "key=value,other=x",
        "--flag=value",
    ];

    const MULTILINE_STRINGS: &[&str] = &[
        "a\nb",
        "a\nb\n",
        "a\nb\n\n",
        "a\n\n\n",
        "a\n\nb\n",
        "\na\n",
        "\n\na",
        "\n",
        "\n\n",
        "a\n",
        "a \nb",
        "a\nb ",
        "a\n b",
        "a\n  b\n    c\n",
        " a\nb",
        "  a\nb",
        "\n  a\n",
        "a\tb\nc",
        "a\r\nb\r\n",
        "a\n\u{85}b",
        "a\n\u{2028}",
        "#!/bin/bash\nset -eu\necho \"hi: there\" # comment\n",
        "- a\n- b\n",
        "key: value\n",
        "---\n...\n",
        "yes\nno\n",
        "日本\n語\n",
        "{\n  \"json\": [1, 2]\n}\n",
    ];

    /// Parses with serde_yaml (YAML 1.2 style), checking every mapping key is a string: a plain
    /// key like `1` would otherwise be silently stringified on the way into serde_json.
    fn parse_with_serde_yaml(text: &str) -> Value {
        let raw: serde_yaml::Value = serde_yaml::from_str(text)
            .unwrap_or_else(|error| panic!("serde_yaml rejected:\n{text}\nerror: {error}"));
        assert_string_keys(&raw, text);
        serde_yaml::from_str(text).expect("already parsed once")
    }

    fn assert_string_keys(value: &serde_yaml::Value, text: &str) {
        match value {
            serde_yaml::Value::Mapping(mapping) => {
                for (key, nested) in mapping {
                    assert!(key.is_string(), "non-string key {key:?} in:\n{text}");
                    assert_string_keys(nested, text);
                }
            }
            serde_yaml::Value::Sequence(items) => {
                items.iter().for_each(|item| assert_string_keys(item, text));
            }
            _ => {}
        }
    }

    /// Loads every document in `text` with PyYAML's safe loader (the YAML 1.1 parser cloud-init
    /// uses), also insisting that mapping keys are strings.
    fn parse_all_with_pyyaml(text: &str) -> Vec<Value> {
        const SCRIPT: &str = r#"
import sys, yaml, json
def check(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                sys.exit("non-string key %r" % (key,))
            check(value)
    elif isinstance(node, list):
        for item in node:
            check(item)
documents = list(yaml.safe_load_all(sys.stdin))
for document in documents:
    check(document)
print(json.dumps(documents))
"#;
        let stdout = run_python(SCRIPT, text);
        serde_json::from_str(&stdout).expect("python printed JSON")
    }

    fn run_python(script: &str, input: &str) -> String {
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 with PyYAML (python3-yaml) is needed for these tests");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("write to python");
        let output = child.wait_with_output().expect("python3 ran");
        assert!(
            output.status.success(),
            "PyYAML failed on:\n{input}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("python printed UTF-8")
    }

    /// Round-trips `value` through both parsers.
    fn assert_round_trip(value: &Value) {
        let document = to_document(value);
        assert_eq!(
            parse_with_serde_yaml(&document),
            *value,
            "serde_yaml, document:\n{document}"
        );
        assert_eq!(
            parse_all_with_pyyaml(&document),
            vec![value.clone()],
            "PyYAML, document:\n{document}"
        );
    }

    fn all_strings() -> impl Iterator<Item = &'static str> {
        TRICKY_STRINGS.iter().chain(MULTILINE_STRINGS).copied()
    }

    /// Puts `text` in every position: map value, key, sequence item, map in sequence,
    /// sequence in map in sequence.
    fn every_position(text: &str) -> Value {
        json!({
            "value": text,
            text: text,
            "items": [text, {text: text}, [text, [text]]],
            "nested": [{"first": text, text: [text, {"deep": {text: text}}]}],
        })
    }

    #[test]
    fn tricky_strings_round_trip_in_every_position() {
        let mut cases = Map::new();
        for (number, text) in all_strings().enumerate() {
            cases.insert(format!("case {number}"), every_position(text));
        }
        assert_round_trip(&Value::Object(cases));
    }

    #[test]
    fn tricky_strings_round_trip_as_top_level_documents() {
        let values: Vec<Value> = all_strings().map(Value::from).collect();
        let mut stream = String::new();
        for value in &values {
            let document = to_document(value);
            assert_eq!(parse_with_serde_yaml(&document), *value, "{document}");
            stream.push_str("---\n");
            stream.push_str(&document);
        }
        assert_eq!(parse_all_with_pyyaml(&stream), values, "{stream}");
    }

    #[test]
    fn ambiguous_strings_are_quoted_and_everyday_ones_are_not() {
        for quoted in [
            "yes",
            "On",
            "n",
            "~",
            "0644",
            "09",
            "1:20",
            "1e3",
            ".5",
            "-.inf",
            "2001-12-14",
            "=",
            "<<",
            "a: b",
            "a #b",
            "a:",
            "-a",
            "...",
            "a,b",
            "x?y",
            "",
            " a",
            "\u{7f}",
        ] {
            assert!(
                scalar(&json!(quoted)).starts_with('"'),
                "{quoted:?} should be quoted"
            );
        }
        for plain in [
            "hello world",
            "/etc/hosts",
            ".bashrc",
            "http://x.io:80/a#b",
            "1.28/stable",
            "10.0.0.1",
            "v1.2",
            "8Gi",
            "100m",
            "a=b",
            "it's",
            "日本語",
            "a#b",
            "a:b",
            "a\"b",
        ] {
            assert_eq!(scalar(&json!(plain)), plain);
        }
    }

    #[test]
    fn double_quoted_escapes() {
        assert_eq!(scalar(&json!("\"a\\b")), r#""\"a\\b""#);
        // A quote or backslash only matters at the start.
        assert_eq!(scalar(&json!("a\"b\\c")), "a\"b\\c");
        assert_eq!(scalar(&json!("a\nb\tc\r")), r#""a\nb\tc\r""#);
        assert_eq!(
            scalar(&json!("\u{0}\u{7f}\u{85}\u{2028}\u{feff}")),
            r#""\u0000\u007F\u0085\u2028\uFEFF""#
        );
        // Non-ASCII text stays readable, quoted or not.
        assert_eq!(scalar(&json!("🚀 é")), "🚀 é");
        assert_eq!(scalar(&json!(" 🚀")), "\" 🚀\"");
    }

    #[test]
    fn numbers_round_trip_and_keep_their_type() {
        let numbers = json!([
            0,
            -1,
            42,
            u64::MAX,
            i64::MIN,
            0.0,
            -0.0,
            1.0,
            0.1,
            -2.5,
            123456789.125,
            1e300,
            1.5e300,
            1e-7,
            2.5e-300,
            1e16,
            f64::MAX,
            f64::MIN_POSITIVE,
        ]);
        assert_round_trip(&numbers);
        assert_eq!(scalar(&json!(1e300)), "1.0e+300");
        assert_eq!(scalar(&json!(1.5e-7)), "1.5e-7");
        assert_eq!(scalar(&json!(1.0)), "1.0");
        assert_eq!(scalar(&json!(-7)), "-7");
        assert_eq!(scalar(&json!(null)), "null");
        assert_eq!(scalar(&json!(false)), "false");
    }

    #[test]
    fn multiline_strings_use_literal_blocks_when_exact() {
        assert_eq!(to_document(&json!({"a": "x\ny\n"})), "a: |\n  x\n  y\n");
        assert_eq!(to_document(&json!({"a": "x\ny"})), "a: |-\n  x\n  y\n");
        assert_eq!(
            to_document(&json!({"a": "x\n\ny\n\n", "b": 1})),
            "a: |+\n  x\n\n  y\n\nb: 1\n"
        );
        assert_eq!(to_document(&json!(["x\n  y"])), "- |-\n  x\n    y\n");
        assert_eq!(to_document(&json!("x\ny\n")), "|\n  x\n  y\n");
        // Cases a literal block cannot represent exactly fall back to double quotes.
        assert_eq!(to_document(&json!({"a": "x \ny"})), "a: \"x \\ny\"\n");
        assert_eq!(to_document(&json!({"a": " x\ny"})), "a: \" x\\ny\"\n");
        assert_eq!(to_document(&json!({"a": "\n x"})), "a: \"\\n x\"\n");
        assert_eq!(to_document(&json!({"a": "x\ty\nz"})), "a: \"x\\ty\\nz\"\n");
        assert_eq!(to_document(&json!({"a": "x\r\ny"})), "a: \"x\\r\\ny\"\n");
        assert_eq!(to_document(&json!({"a": "\n\n"})), "a: \"\\n\\n\"\n");
    }

    #[test]
    fn cloud_init_document_exact_output() {
        let value = json!({
            "package_update": true,
            "packages": ["curl", "yes", "nvidia-driver-550"],
            "write_files": [
                {
                    "path": "/etc/modprobe.d/blacklist-nouveau.conf",
                    "permissions": "0644",
                    "content": "blacklist nouveau\noptions nouveau modeset=0\n",
                },
            ],
            "runcmd": [["sh", "-c", "echo hi: there"], "microk8s status --wait-ready"],
            "bootcmd": [],
            "users": [{"name": "kiln", "ssh_authorized_keys": ["ssh-ed25519 AAAA kiln@host"]}],
            "swap": {},
            "timezone": null,
        });
        let expected = "\
package_update: true
packages:
  - curl
  - \"yes\"
  - nvidia-driver-550
write_files:
  - path: /etc/modprobe.d/blacklist-nouveau.conf
    permissions: \"0644\"
    content: |
      blacklist nouveau
      options nouveau modeset=0
runcmd:
  - - sh
    - \"-c\"
    - \"echo hi: there\"
  - microk8s status --wait-ready
bootcmd: []
users:
  - name: kiln
    ssh_authorized_keys:
      - ssh-ed25519 AAAA kiln@host
swap: {}
timezone: null
";
        assert_eq!(to_document(&value), expected);
        assert_round_trip(&value);
    }

    #[test]
    fn helm_values_exact_output() {
        let value = json!({
            "gpu-operator": {
                "driver": {"enabled": false, "version": "550.54.15"},
                "toolkit": {
                    "env": [
                        {"name": "CONTAINERD_CONFIG", "value": "/var/snap/microk8s/current/args/containerd-template.toml"},
                        {"name": "CONTAINERD_SET_AS_DEFAULT", "value": "1"},
                    ],
                },
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "resources": {"limits": {"memory": "8Gi", "cpu": 2.5}},
            },
            "1.28": "key that looks like a float",
        });
        let expected = "\
gpu-operator:
  driver:
    enabled: false
    version: 550.54.15
  toolkit:
    env:
      - name: CONTAINERD_CONFIG
        value: /var/snap/microk8s/current/args/containerd-template.toml
      - name: CONTAINERD_SET_AS_DEFAULT
        value: \"1\"
  nodeSelector:
    nvidia.com/gpu.present: \"true\"
  resources:
    limits:
      memory: 8Gi
      cpu: 2.5
\"1.28\": key that looks like a float
";
        assert_eq!(to_document(&value), expected);
        assert_round_trip(&value);
    }

    #[test]
    fn nested_sequences_and_empty_collections_exact_output() {
        let value = json!([[["a"], []], {}, [], [{"k": [{"x": 1, "y": [2, [3]]}]}], null]);
        let expected = "\
- - - a
  - []
- {}
- []
- - k:
      - x: 1
        \"y\":
          - 2
          - - 3
- null
";
        assert_eq!(to_document(&value), expected);
        assert_round_trip(&value);
        assert_eq!(to_document(&json!({})), "{}\n");
        assert_eq!(to_document(&json!([])), "[]\n");
        assert_eq!(to_document(&json!(null)), "null\n");
        assert_eq!(to_document(&json!("yes")), "\"yes\"\n");
    }

    #[test]
    fn deep_nesting_round_trips() {
        let mut value = json!({"leaf": "yes\nno\n", "n": 1});
        for depth in 0..40 {
            value = match depth % 4 {
                0 => json!([value]),
                1 => json!({"level": value, "sibling": "1:20"}),
                2 => json!([[value], "x"]),
                _ => json!({format!("{depth}"): [{"m": value}]}),
            };
        }
        assert_round_trip(&value);
    }

    #[test]
    fn sequences_of_maps_of_sequences_round_trip() {
        let value = json!([
            {"a": [1, 2], "b": [{"c": ["d", ["e", {"f": []}]]}], "g": {}},
            [{"h": [[{}], [[]]]}],
            {"multi": "one\ntwo\n", "list": ["three\nfour", "five\n\n"]},
        ]);
        assert_round_trip(&value);
    }

    #[test]
    fn long_keys_use_explicit_key_form() {
        for length in [999, 1000, 1001, 1022, 1025, 3000] {
            let key = "k".repeat(length);
            let quoted_key = "yes".repeat(length / 3 + 1);
            let value = json!({
                key.clone(): {key.clone(): [1, {key.clone(): "x\ny"}]},
                quoted_key: "v",
                "list": [{key.clone(): 1, "after": 2}],
            });
            assert_round_trip(&value);
        }
        let long = "k".repeat(MAX_IMPLICIT_KEY_BYTES + 1);
        assert_eq!(
            to_document(&json!({long.clone(): 1})),
            format!("? {long}\n: 1\n")
        );
    }

    #[test]
    fn pyyaml_reads_tricky_document_back() {
        // Exactly how cloud-init's parser sees it: yaml.safe_load on the whole document.
        let mut tricky = Map::new();
        for text in all_strings() {
            tricky.insert(text.to_owned(), json!([text, {"k": text}]));
        }
        let value = json!({"tricky": tricky, "numbers": [1, -2.5, 1e300, 1e-7, 0.1]});
        let document = to_document(&value);
        let output = run_python(
            "import sys,yaml,json; print(json.dumps(yaml.safe_load(sys.stdin)))",
            &document,
        );
        let parsed: Value = serde_json::from_str(&output).expect("python printed JSON");
        assert_eq!(parsed, value, "document:\n{document}");
    }

    #[test]
    fn after_key_at_column_zero_matches_to_document() {
        let samples = [
            json!("plain"),
            json!("yes"),
            json!(1.5),
            json!(null),
            json!({}),
            json!([]),
            json!("multi\nline\n"),
            json!("keep\n\n"),
            json!({"a": 1, "b": [1, {"c": "d"}]}),
            json!([[1], {"x": "y\nz"}]),
        ];
        for value in samples {
            let rendered = format!("key:{}\n", after_key(&value, 0));
            assert_eq!(rendered, to_document(&json!({"key": value})));
            assert_eq!(parse_with_serde_yaml(&rendered), json!({"key": value}));
        }
        assert_eq!(after_key(&json!("yes"), 0), " \"yes\"");
        assert_eq!(after_key(&json!([1, 2]), 0), "\n  - 1\n  - 2");
        assert_eq!(after_key(&json!("a\nb\n"), 4), " |\n      a\n      b");
    }

    #[test]
    fn after_key_inside_a_parent_map_at_indent_four() {
        let samples = [
            json!("0644"),
            json!({"nested": {"deep": ["a", "on"]}, "other": "x: y"}),
            json!([{"name": "a", "args": ["-c", "echo"]}, ["b"]]),
            json!("#!/bin/sh\necho hi\n"),
            json!("tail\n\n\n"),
            json!({}),
        ];
        for value in &samples {
            let template = format!(
                "metadata:\n  labels:\n    app:{}\n    after: 1\n  name: kiln\n",
                after_key(value, 4)
            );
            let expected = json!({
                "metadata": {"labels": {"app": value, "after": 1}, "name": "kiln"},
            });
            assert_eq!(parse_with_serde_yaml(&template), expected, "{template}");
            assert_eq!(
                parse_all_with_pyyaml(&template),
                vec![expected],
                "{template}"
            );
        }
    }

    #[test]
    fn scalars_are_safe_inside_flow_collections() {
        let items: Vec<Value> = TRICKY_STRINGS.iter().map(|text| json!(text)).collect();
        let flow = format!(
            "list: [{}]\n",
            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
        );
        let expected = json!({"list": items});
        assert_eq!(parse_with_serde_yaml(&flow), expected, "{flow}");
        assert_eq!(parse_all_with_pyyaml(&flow), vec![expected], "{flow}");
    }

    #[test]
    fn scalar_of_collections_is_flow_style() {
        assert_eq!(scalar(&json!([])), "[]");
        assert_eq!(scalar(&json!({})), "{}");
        let value = json!({"a": [1, "yes", null], "b": {"c": "d\ne"}});
        let text = scalar(&value);
        assert_eq!(text, r#"{"a": [1, "yes", null], "b": {"c": "d\ne"}}"#);
        assert_eq!(parse_with_serde_yaml(&text), value);
        assert_eq!(parse_all_with_pyyaml(&text), vec![value]);
    }

    #[test]
    fn output_is_deterministic_and_keeps_insertion_order() {
        let value = json!({"zebra": 1, "apple": {"z": 1, "a": 2}, "mango": [3]});
        let first = to_document(&value);
        assert_eq!(first, to_document(&value.clone()));
        assert_eq!(first, "zebra: 1\napple:\n  z: 1\n  a: 2\nmango:\n  - 3\n");
    }
}
