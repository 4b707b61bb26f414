//! Durations written with units, read at compile time: `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`.

/// Milliseconds per unit, longest unit name first where one is a prefix of another.
const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// The duration `text` names, in milliseconds: one or more `<whole number><unit>` parts, units
/// `ms`, `s`, `m`, `h`, `d`, added up (`"1h30m"`). Zero is returned as is: the caller decides.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    const FORMS: &str = "write whole numbers with a unit: \"250ms\", \"90s\", \"5m\", \"2h\", \"1d\", or parts such as \"1h30m\"";
    if text.is_empty() {
        return Err(format!("an empty duration; {FORMS}"));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`; {FORMS}"));
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{number}` is too large"))?;
        if after.starts_with('.') {
            return Err(format!(
                "whole numbers only: write \"1500ms\" for 1.5 s; {FORMS}"
            ));
        }
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let Some(&(_, per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("`{number}` has no unit; {FORMS}")
            } else {
                format!("unknown unit `{unit}`: the units are ms, s, m, h and d")
            });
        };
        total = number
            .checked_mul(per_unit)
            .and_then(|millis| total.checked_add(millis))
            .ok_or_else(|| "too long: at most u64::MAX milliseconds".to_string())?;
        rest = after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units_and_sums() {
        assert_eq!(parse("250ms"), Ok(250));
        assert_eq!(parse("90s"), Ok(90_000));
        assert_eq!(parse("5m"), Ok(300_000));
        assert_eq!(parse("2h"), Ok(7_200_000));
        assert_eq!(parse("1d"), Ok(86_400_000));
        assert_eq!(parse("1h30m"), Ok(5_400_000));
        assert_eq!(parse("1m500ms"), Ok(60_500));
        assert_eq!(parse("0s"), Ok(0));
    }

    #[test]
    fn refusals_say_why() {
        for (text, says) in [
            ("", "empty"),
            ("5", "no unit"),
            ("5x", "unknown unit `x`"),
            ("5 m", "`5` has no unit"),
            ("m", "expected a number"),
            ("1.5s", "whole numbers only"),
            ("-1s", "expected a number"),
            ("99999999999999999999s", "too large"),
            ("999999999999999d", "too long"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
