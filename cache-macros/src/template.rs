//! Key templates: `"user:{id}"`, `"page:{query:?}:{page}"`, `"tenant:{self.tenant}:{id}"`.
//!
//! A template is text with holes. A hole names an argument (or `self`), optionally followed by
//! fields (`{user.id}`, `{pair.0}`) and a format spec as in `format!` (`{id:?}`, `{n:08}`);
//! `{{` and `}}` are literal braces. The expansion is one `format!` call with the holes as its
//! arguments, so a key costs what the hand-written `format!` costs.

/// The longest key the key rule allows, namespace included.
const MAX_KEY_LEN: usize = 250;

/// One part of a template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Literal text, braces unescaped.
    Text(String),
    /// A value: the argument (or `self`), fields, and the spec after `:` (empty for Display).
    Hole {
        /// `id`, `self`.
        root: String,
        /// Field names or tuple indices after the root.
        fields: Vec<String>,
        /// What follows `:`, without it; empty for `{id}`.
        spec: String,
    },
}

/// The pieces of `template`, or what is wrong with it.
pub(crate) fn parse(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|&(_, next)| next == '{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().is_some_and(|&(_, next)| next == '}') => {
                chars.next();
                text.push('}');
            }
            '}' => {
                return Err(format!(
                    "unmatched `}}` at byte {at} of the key template: write `}}}}` for a literal brace"
                ));
            }
            '{' => {
                let mut inside = String::new();
                loop {
                    match chars.next() {
                        Some((_, '}')) => break,
                        Some((_, '{')) | None => {
                            return Err(format!(
                                "unmatched `{{` at byte {at} of the key template: close the hole with `}}`, \
                                 or write `{{{{` for a literal brace"
                            ));
                        }
                        Some((_, c)) => inside.push(c),
                    }
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(hole(&inside)?);
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    if pieces.is_empty() {
        return Err("the key template is empty: keys are never empty".into());
    }
    let text_len: usize = pieces
        .iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.len(),
            Piece::Hole { .. } => 0,
        })
        .sum();
    if text_len > MAX_KEY_LEN {
        return Err(format!(
            "the key template's text alone takes {text_len} bytes: keys take at most {MAX_KEY_LEN}, \
             namespace included"
        ));
    }
    for piece in &pieces {
        if let Piece::Text(text) = piece {
            if let Some(bad) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "the key template holds {bad:?}: keys never hold whitespace or control characters \
                     (every call would be refused as an invalid key)"
                ));
            }
        }
    }
    Ok(pieces)
}

/// A hole's content: `name`, `name.field.0`, `name:spec`.
fn hole(inside: &str) -> Result<Piece, String> {
    let (path, spec) = match inside.split_once(':') {
        Some((path, spec)) => (path, spec),
        None => (inside, ""),
    };
    let path = path.trim();
    if path.is_empty() {
        return Err(format!(
            "`{{{inside}}}` names no argument: write the argument's name, as in `{{id}}` or `{{id:?}}`"
        ));
    }
    let mut segments = path.split('.');
    let root = segments.next().unwrap_or_default().to_string();
    if root.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{{{inside}}}` is positional: name the argument instead, as in `{{id}}`"
        ));
    }
    if !is_identifier(&root) {
        return Err(format!("`{{{inside}}}`: `{root}` is not an argument name"));
    }
    let fields = segments
        .map(|field| {
            if is_identifier(field)
                || (!field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()))
            {
                Ok(field.to_string())
            } else {
                Err(format!(
                    "`{{{inside}}}`: `{field}` is not a field name or a tuple index"
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Piece::Hole {
        root,
        fields,
        spec: spec.to_string(),
    })
}

/// Whether `name` is an identifier (raw ones included), as `syn` reads one; `self` too.
fn is_identifier(name: &str) -> bool {
    name == "self" || syn::parse_str::<syn::Ident>(name).is_ok()
}

/// The `format!` string for `pieces`: text with its braces escaped, and one `{}` (or
/// `{:spec}`) per hole.
pub(crate) fn format_string(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => {
                for c in text.chars() {
                    match c {
                        '{' => out.push_str("{{"),
                        '}' => out.push_str("}}"),
                        c => out.push(c),
                    }
                }
            }
            Piece::Hole { spec, .. } if spec.is_empty() => out.push_str("{}"),
            Piece::Hole { spec, .. } => {
                out.push_str("{:");
                out.push_str(spec);
                out.push('}');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Piece, format_string, parse};

    fn hole(root: &str, fields: &[&str], spec: &str) -> Piece {
        Piece::Hole {
            root: root.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            spec: spec.into(),
        }
    }

    #[test]
    fn holes_text_and_escapes() {
        let pieces =
            parse("user:{id}:{name:?}:{{x}}:{self.tenant}:{pair.0:>3}").unwrap_or_default();
        assert_eq!(
            pieces,
            vec![
                Piece::Text("user:".into()),
                hole("id", &[], ""),
                Piece::Text(":".into()),
                hole("name", &[], "?"),
                Piece::Text(":{x}:".into()),
                hole("self", &["tenant"], ""),
                Piece::Text(":".into()),
                hole("pair", &["0"], ">3"),
            ]
        );
        assert_eq!(format_string(&pieces), "user:{}:{:?}:{{x}}:{}:{:>3}");
        assert_eq!(parse("config"), Ok(vec![Piece::Text("config".into())]));
        assert_eq!(parse("{r#type}"), Ok(vec![hole("r#type", &[], "")]));
    }

    #[test]
    fn refusals_say_why() {
        for (template, says) in [
            ("", "empty"),
            ("user:{}", "names no argument"),
            ("user:{:?}", "names no argument"),
            ("user:{0}", "positional"),
            ("user:{id", "unmatched `{`"),
            ("user:{a{b}", "unmatched `{`"),
            ("user:id}", "unmatched `}`"),
            ("user:{a-b}", "not an argument name"),
            ("user:{a.}", "not a field name"),
            ("user {id}", "whitespace"),
            ("user:\t{id}", "whitespace"),
        ] {
            let error = parse(template).expect_err(template);
            assert!(error.contains(says), "{template:?}: {error}");
        }
    }
}
