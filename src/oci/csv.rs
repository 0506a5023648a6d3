//! Docker's option values (`--mount`, `--secret`, `--ssh`, `--cache-to` ...): one record of
//! comma-separated fields, read by Go's `encoding/csv` as BuildKit and buildx read them.

/// Splits one CSV record by Go's `encoding/csv` rules, which BuildKit's and buildx's option values follow: fields are
/// separated by commas, a field that starts with `"` is quoted and `""` inside it is a quote; a
/// quote anywhere else is an error (Go's `LazyQuotes` is off).
pub fn split_record(record: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = record.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quote is not closed".to_string()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err("a character follows a closing quote".to_string()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote in an unquoted field".to_string()),
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it, as BuildKit and buildx read every boolean
/// option (`1`, `t`, `T`, `true`, `TRUE`, `True` and their false counterparts).
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_go_bool, split_record};

    #[test]
    fn booleans_read_as_gos_parse_bool() {
        for yes in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(no), Some(false), "{no}");
        }
        for neither in ["", "yes", "tRUE", "2"] {
            assert_eq!(parse_go_bool(neither), None, "{neither}");
        }
    }

    #[test]
    fn records_split_as_go_reads_them() {
        assert_eq!(
            split_record(r#"type=image,"name=a,b","x=""q""",y="#).unwrap(),
            ["type=image", "name=a,b", r#"x="q""#, "y="]
        );
        assert_eq!(split_record("").unwrap(), [""]);
        assert_eq!(split_record("a,").unwrap(), ["a", ""]);
        assert!(split_record(r#""a"b"#).is_err());
        assert_eq!(split_record("a=1,b=2").unwrap(), ["a=1", "b=2"]);
        assert_eq!(
            split_record("\"src=a,b\",id=x").unwrap(),
            ["src=a,b", "id=x"]
        );
        assert_eq!(split_record("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(split_record("").unwrap(), [""]);
        assert!(split_record("\"open").is_err());
        assert!(split_record("\"a\"b").is_err());
        assert!(split_record("a\"b").is_err());
    }
}
