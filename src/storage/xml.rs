//! Just enough XML for the stores' flat documents: S3 and Azure error
//! bodies, and their list answers (`<CommonPrefixes><Prefix>`,
//! `<BlobPrefix><Name>`). They never nest an element in one of the same
//! name and escape text with the five predefined entities, which is all
//! this reads. A leaf module.

/// The text of the first `<name>…</name>`, unescaped, whitespace folded;
/// `None` when absent or empty.
pub fn element(body: &str, name: &str) -> Option<String> {
    elements(body, name).into_iter().next().and_then(|t| {
        let folded = t.split_whitespace().collect::<Vec<_>>().join(" ");
        (!folded.is_empty()).then_some(folded)
    })
}

/// The text of every `<name>…</name>` in order, unescaped, untrimmed
/// (a listed name may have spaces). The opening tag may carry attributes
/// (`<ListBucketResult xmlns="…">`); `<name/>` counts as empty text.
pub fn elements(body: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        let tag = &rest[i + open.len()..];
        let Some(gt) = tag.find('>') else {
            break;
        };
        let attributes = &tag[..gt];
        // `<NameX>` is another element.
        if !(attributes.is_empty()
            || attributes.starts_with(char::is_whitespace)
            || attributes == "/")
        {
            rest = tag;
            continue;
        }
        let after = &tag[gt + 1..];
        if attributes.ends_with('/') {
            out.push(String::new());
            rest = after;
            continue;
        }
        let Some(len) = after.find(&close) else {
            break;
        };
        out.push(unescape(&after[..len]));
        rest = &after[len + close.len()..];
    }
    out
}

/// The five predefined entities and numeric character references.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..end];
        let ch = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_documents() {
        let body =
            "<Error><Code>AccessDenied</Code><Message>a &amp; b\n  &lt;c&gt;</Message></Error>";
        assert_eq!(element(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(element(body, "Message").as_deref(), Some("a & b <c>"));
        assert_eq!(element(body, "Nope"), None);
        assert_eq!(element("<Code>  </Code>", "Code"), None);
        let list = "<R><CommonPrefixes><Prefix>p/0.1.0/</Prefix></CommonPrefixes>\
                    <CommonPrefixes><Prefix>p/a&amp;b /</Prefix></CommonPrefixes><Prefix>x</R>";
        assert_eq!(elements(list, "Prefix"), ["p/0.1.0/", "p/a&b /"]);
        // Attributes, self-closing tags, and longer names that share a start.
        let ns = r#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Prefixes>x</Prefixes><Prefix/><Prefix>a</Prefix></ListBucketResult>"#;
        assert_eq!(elements(ns, "ListBucketResult").len(), 1);
        assert_eq!(elements(ns, "Prefix"), ["", "a"]);
        assert_eq!(unescape("&#65;&#x42;&bogus;&"), "AB&bogus;&");
    }
}
