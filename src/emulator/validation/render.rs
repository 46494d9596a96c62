//! Prints values the way kube-apiserver's Go code prints them inside field errors, so that messages
//! match what `kubectl` users and client libraries already see from a real cluster.

use serde_json::{Number, Value};

/// How `field.Error` prints a bad value: numbers and booleans bare (Go `%v`), strings quoted (Go `%q`),
/// and anything else (null, lists, maps) as Go's `encoding/json` output.
pub(super) fn bad_value(value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => go_quote(s),
        Value::Null | Value::Array(_) | Value::Object(_) => go_json(value),
    }
}

/// A JSON number as Go prints it with `%v` after decoding it into `interface{}`: integers that fit
/// an int64 stay integers, everything else became a float64.
pub(super) fn go_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else {
        go_float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Go's `strconv.Quote`: double quotes, backslash escapes for quotes, backslashes and control
/// characters, and `\u` escapes for characters Go does not consider printable.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint`: control characters, format characters, separators
/// other than the ASCII space, and private-use characters are not printable.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() {
        return false;
    }
    !matches!(c as u32,
        0x00A0 | 0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x1680 | 0x180E
        | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x2064 | 0x2066..=0x206F | 0x3000
        | 0xE000..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB | 0xF0000..=0x10FFFF)
}

/// The shortest decimal digits that round-trip `f` (no sign, no leading zeros) and the decimal
/// point position: the value is `0.DIGITS × 10^point`. `f` must be finite and non-zero.
fn shortest_digits(f: f64) -> (String, i32) {
    // Rust's `{:e}` prints the shortest round-trip representation, e.g. `-1.2345e-5`.
    let formatted = format!("{:e}", f.abs());
    let (mantissa, exponent) = formatted
        .split_once('e')
        .unwrap_or((formatted.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    (digits, exponent + 1)
}

/// Writes `digits` with the decimal point at `point`, as Go's `%f` with the shortest precision.
fn fixed_notation(digits: &str, point: i32) -> String {
    let len = digits.len() as i32;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= len {
        format!("{digits}{}", "0".repeat((point - len) as usize))
    } else {
        let (int_part, frac_part) = digits.split_at(point as usize);
        format!("{int_part}.{frac_part}")
    }
}

/// Writes `digits` in Go's `%e` form with the shortest precision (`1.5e+06`), with at least
/// `min_exp_digits` exponent digits.
fn exponent_notation(digits: &str, point: i32, min_exp_digits: usize) -> String {
    let exp = point - 1;
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let mantissa = if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first}.{rest}")
    };
    let sign = if exp < 0 { '-' } else { '+' };
    format!(
        "{mantissa}e{sign}{:0width$}",
        exp.unsigned_abs(),
        width = min_exp_digits
    )
}

/// Go's `%v` for a float64 (shortest `%g`: exponent form below 1e-4 and from 1e+06 up).
pub(super) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    let (digits, point) = shortest_digits(f);
    let exp = point - 1;
    let body = if !(-4..6).contains(&exp) {
        exponent_notation(&digits, point, 2)
    } else {
        fixed_notation(&digits, point)
    };
    format!("{sign}{body}")
}

/// Go's `encoding/json` for a float64: fixed notation except below 1e-6 and from 1e21 up, where the
/// exponent has no padding (`1e-07` becomes `1e-7`).
fn go_json_float(f: f64) -> String {
    if !f.is_finite() {
        // JSON has no such values; Go would fail to marshal. Print something readable instead.
        return go_float(f);
    }
    let sign = if f.is_sign_negative() && f != 0.0 {
        "-"
    } else {
        ""
    };
    if f == 0.0 {
        return "0".to_string();
    }
    let abs = f.abs();
    let (digits, point) = shortest_digits(f);
    let body = if !(1e-6..1e21).contains(&abs) {
        exponent_notation(&digits, point, 1)
    } else {
        fixed_notation(&digits, point)
    };
    format!("{sign}{body}")
}

/// Go's `encoding/json` output for a value that was decoded into `interface{}`: map keys sorted,
/// `<`, `>` and `&` escaped, integral numbers without a fraction.
pub(super) fn go_json(value: &Value) -> String {
    let mut out = String::new();
    write_go_json(value, &mut out);
    out
}

fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            None => out.push_str(&go_json_float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => write_go_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json_string(key, out);
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_go_json(v, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_go_percent_v() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (2.5e-300, "2.5e-300"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float(*f), *want, "go_float({f})");
        }
    }

    #[test]
    fn json_prints_like_go_encoding_json() {
        let cases = [
            (json!(null), "null"),
            (
                json!({"b": 1, "a": [true, "x"]}),
                r#"{"a":[true,"x"],"b":1}"#,
            ),
            (json!(1.0), "1"),
            (json!(1.5), "1.5"),
            (json!(1e21), "1e+21"),
            (json!(0.0000001), "1e-7"),
            (json!(123456789.0), "123456789"),
            (json!("<a & b>"), r#""\u003ca \u0026 b\u003e""#),
            (json!("tab\tnl\n\u{1}"), r#""tab\tnl\n\u0001""#),
            (json!(u64::MAX), "18446744073709552000"),
        ];
        for (value, want) in cases {
            assert_eq!(go_json(&value), want, "go_json({value})");
        }
    }

    #[test]
    fn strings_quote_like_go_strconv_quote() {
        let cases = [
            ("plain", r#""plain""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("back\\slash", r#""back\\slash""#),
            ("line\nbreak", r#""line\nbreak""#),
            ("\u{1b}[0m", r#""\x1b[0m""#),
            ("héllo 世界", "\"héllo 世界\""),
            ("nbsp\u{a0}", r#""nbsp\u00a0""#),
            ("bom\u{feff}", r#""bom\ufeff""#),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), want, "go_quote({input:?})");
        }
    }

    #[test]
    fn bad_values_print_like_field_error_body() {
        let cases = [
            (json!(-1), "-1"),
            (json!(2.5), "2.5"),
            (json!(true), "true"),
            (json!("Foo"), r#""Foo""#),
            (json!(null), "null"),
            (json!({"name": "a"}), r#"{"name":"a"}"#),
            (json!(["a", 1]), r#"["a",1]"#),
            (json!(u64::MAX), "1.8446744073709552e+19"),
        ];
        for (value, want) in cases {
            assert_eq!(bad_value(&value), want, "bad_value({value})");
        }
    }
}
