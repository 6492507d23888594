//! The money parser (`kassa_actors::money`): amount strings in major units, per currency.
//!
//! Input: the amount text, parsed for one currency of each exponent (0, 2, 3) and for a
//! currency named by the text itself. Beyond "no panic", checked against an independent
//! model of the grammar (`digits[.digits]`, no sign, at most the exponent's decimals, at most
//! 15 significant integer digits):
//! - accepted ⇔ the model accepts; a refusal carries the code the model predicts;
//! - an accepted amount prints in canonical form (no leading zeros, exactly `exponent`
//!   decimals), and that form parses back to the same `Money`;
//! - never negative; `parse_positive` never accepts zero;
//! - minor units, `from_minor`, serde and checked arithmetic agree with the amount.
#![no_main]

use kassa_actors::money::{Currency, INTEGER_DIGITS_MAX, Money, MoneyError};
use libfuzzer_sys::fuzz_target;

/// What the model expects `Money::parse` to say about `text`.
#[derive(Debug, PartialEq)]
enum Expected {
    /// The canonical printed form.
    Ok(String),
    Err(&'static str),
}

fn model(text: &str, exponent: u32) -> Expected {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !plain(int) || frac.is_some_and(|f| !plain(f)) {
        return Expected::Err("amount_invalid");
    }
    let significant = int.trim_start_matches('0');
    if significant.len() > INTEGER_DIGITS_MAX {
        return Expected::Err("amount_too_large");
    }
    if negative {
        return Expected::Err("amount_not_positive");
    }
    let frac = frac.unwrap_or("");
    if frac.len() > exponent as usize {
        return Expected::Err("amount_too_precise");
    }
    let int = if significant.is_empty() {
        "0"
    } else {
        significant
    };
    if exponent == 0 {
        Expected::Ok(int.to_owned())
    } else {
        let mut padded = frac.to_owned();
        while padded.len() < exponent as usize {
            padded.push('0');
        }
        Expected::Ok(format!("{int}.{padded}"))
    }
}

fn check(text: &str, currency: Currency) {
    let exponent = currency.exponent();
    let parsed = Money::parse(text, currency);
    match (&parsed, model(text, exponent)) {
        (Ok(money), Expected::Ok(canonical)) => {
            let shown = money.to_string();
            assert_eq!(shown, canonical, "{text:?} in {currency}");
            // Round trip: the printed form is a fixed point of parse + print.
            let again = Money::parse(&shown, currency).expect("the printed form parses");
            assert_eq!(again, *money);
            assert_eq!(again.to_string(), shown);
            // Never more decimals than the currency's exponent.
            let decimals = shown.split_once('.').map_or(0, |(_, f)| f.len());
            assert_eq!(decimals, exponent as usize);
            assert_eq!(money.currency(), currency);
            let minor = money.minor_units();
            assert!(minor >= 0, "negative amount accepted: {text:?}");
            assert_eq!(Ok(minor), shown.replace('.', "").parse::<i64>());
            assert_eq!(Money::from_minor(minor, currency).unwrap(), *money);
            assert_eq!(money.is_zero(), minor == 0);
            // Zero is refused by parse_positive, everything else accepted as the same amount.
            match Money::parse_positive(text, currency) {
                Ok(positive) => {
                    assert!(minor > 0);
                    assert_eq!(positive, *money);
                }
                Err(e) => {
                    assert_eq!(minor, 0);
                    assert_eq!(e, MoneyError::AmountNotPositive);
                }
            }
            // Serde keeps the amount a string, at the currency's scale.
            let json = serde_json::to_string(money).unwrap();
            assert_eq!(
                json,
                format!(r#"{{"amount":"{shown}","currency":"{}"}}"#, currency.code())
            );
            assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), *money);
            // Checked arithmetic: (m + m) - m = m, and m - (m + m) is refused unless m is 0.
            let double = money.checked_add(money).unwrap();
            assert_eq!(double.checked_sub(money).unwrap(), *money);
            assert_eq!(money.checked_sub(&double).is_ok(), minor == 0);
        }
        (Err(e), Expected::Err(code)) => {
            assert_eq!(e.code(), code, "{text:?} in {currency}");
            assert!(Money::parse_positive(text, currency).is_err());
        }
        (got, expected) => panic!("{text:?} in {currency}: got {got:?}, model says {expected:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for code in ["JPY", "USD", "KWD"] {
        check(text, Currency::from_code(code).unwrap());
    }
    // Currency lookup never panics, and finds only exact upper-case codes.
    if let Ok(currency) = Currency::from_code(text) {
        assert_eq!(currency.code(), text);
        check("1", currency);
    }
});
