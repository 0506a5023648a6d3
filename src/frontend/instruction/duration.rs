//! Go's `time.ParseDuration`, which HEALTHCHECK's `--interval` and friends use: a sequence of
//! decimal numbers with units (`1h30m`, `1.5s`, `300ms`), an optional sign, or a bare `0`.

/// Parses a Go duration into nanoseconds (negative durations are allowed, as in Go).
pub(super) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("invalid duration \"{text}\"");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration \"{text}\"")),
            _ => return Err(format!("unknown unit \"{unit}\" in duration \"{text}\"")),
        };
        let value: f64 = number.parse().map_err(|_| invalid())?;
        total += value * scale;
        rest = next;
    }
    // Go rejects durations that overflow an int64 of nanoseconds.
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let nanos = total.round() as i128;
    Ok(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Result<i128, ()>)] = &[
            ("0", Ok(0)),
            ("30s", Ok(30_000_000_000)),
            ("1h30m", Ok(5_400_000_000_000)),
            ("1.5s", Ok(1_500_000_000)),
            ("300ms", Ok(300_000_000)),
            ("2us", Ok(2_000)),
            ("-1s", Ok(-1_000_000_000)),
            ("", Err(())),
            ("10", Err(())),
            ("s", Err(())),
            ("1x", Err(())),
            ("1..2s", Err(())),
            ("99999999999h", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_go_duration(input).map_err(|_| ());
            assert_eq!(&got, want, "{input}");
        }
    }
}
