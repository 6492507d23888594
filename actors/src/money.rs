//! Money: a `rust_decimal` amount with its ISO 4217 currency inside.
//!
//! Amounts enter Kassa as decimal strings in major units (`"12.34"`) and are
//! parsed strictly: no sign, no exponent, no more decimals than the currency's
//! minor-unit exponent, never zero, never absurdly large. Arithmetic is checked
//! and refuses to mix currencies. A `Money` always holds its amount at the
//! currency's scale, so it prints as `"10.00"`, `"500"` or `"1.250"`.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Digits allowed before the decimal point: 10^15 major units is beyond any real payment,
/// and keeps every amount's minor units inside an `i64`.
pub const INTEGER_DIGITS_MAX: usize = 15;

/// ISO 4217 code and minor-unit exponent of each currency Kassa accepts.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MOP", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// Looks a code up exactly (ISO codes are upper case; `usd` is not a currency code).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| MoneyError::CurrencyUnsupported(code.chars().take(8).collect()))
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimals of the minor unit (USD 2, JPY 0, KWD 3).
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .map(|&(code, exponent)| Currency { code, exponent })
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        let code = String::deserialize(d)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error(
        "amount must be a decimal string of digits like \"12.34\" (no sign, exponent or spaces)"
    )]
    AmountInvalid,
    #[error("{currency} allows at most {exponent} decimal places")]
    AmountTooPrecise {
        currency: &'static str,
        exponent: u32,
    },
    #[error("amount must be greater than zero")]
    AmountNotPositive,
    #[error("amount is too large (at most {INTEGER_DIGITS_MAX} digits before the decimal point)")]
    AmountTooLarge,
    #[error("currency `{0}` is not supported (use an upper-case ISO 4217 code like USD)")]
    CurrencyUnsupported(String),
    #[error("currency {got} does not match {expected}")]
    CurrencyMismatch {
        expected: &'static str,
        got: &'static str,
    },
    #[error("amount arithmetic overflowed")]
    Overflow,
}

impl MoneyError {
    /// The API error code (DESIGN.md §4).
    pub fn code(&self) -> &'static str {
        match self {
            MoneyError::AmountInvalid => "amount_invalid",
            MoneyError::AmountTooPrecise { .. } => "amount_too_precise",
            MoneyError::AmountNotPositive => "amount_not_positive",
            MoneyError::AmountTooLarge | MoneyError::Overflow => "amount_too_large",
            MoneyError::CurrencyUnsupported(_) => "currency_unsupported",
            MoneyError::CurrencyMismatch { .. } => "currency_mismatch",
        }
    }
}

/// An amount of one currency, held at the currency's scale.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Parses a positive amount in major units (`"12.34"`).
    pub fn parse_positive(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let money = Money::parse(text, currency)?;
        if money.is_zero() {
            return Err(MoneyError::AmountNotPositive);
        }
        Ok(money)
    }

    /// Parses a non-negative amount in major units; zero is allowed.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (digits, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
            return Err(MoneyError::AmountInvalid);
        }
        let significant = int_part.trim_start_matches('0');
        if significant.len() > INTEGER_DIGITS_MAX {
            return Err(MoneyError::AmountTooLarge);
        }
        let frac = frac_part.unwrap_or("");
        if negative {
            // "-0.00" is not a payment either; the sign alone decides the answer.
            return Err(MoneyError::AmountNotPositive);
        }
        if frac.len() as u32 > currency.exponent {
            return Err(MoneyError::AmountTooPrecise {
                currency: currency.code,
                exponent: currency.exponent,
            });
        }
        // At most 15 + 3 digits: always fits an i64 of minor units.
        let mut minor: i64 = 0;
        for b in significant.bytes().chain(frac.bytes()) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or(MoneyError::AmountTooLarge)?;
        }
        for _ in frac.len() as u32..currency.exponent {
            minor = minor.checked_mul(10).ok_or(MoneyError::AmountTooLarge)?;
        }
        Money::from_minor(minor, currency)
    }

    /// From minor units (cents); negative amounts are refused.
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::AmountNotPositive);
        }
        Ok(Money {
            amount: Decimal::new(minor, currency.exponent),
            currency,
        })
    }

    pub fn zero(currency: Currency) -> Money {
        Money {
            amount: Decimal::new(0, currency.exponent),
            currency,
        }
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// The amount in minor units. Exact: the amount is held at the currency's scale.
    pub fn minor_units(&self) -> i64 {
        let mut rescaled = self.amount;
        rescaled.rescale(self.currency.exponent);
        // Amounts are bounded by INTEGER_DIGITS_MAX + 3 digits, far inside i64.
        i64::try_from(rescaled.mantissa()).unwrap_or(i64::MAX)
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                expected: self.currency.code,
                got: other.currency.code,
            });
        }
        Ok(())
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            amount,
            currency: self.currency,
        })
    }

    /// `self - other`; a negative result is refused.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::AmountNotPositive);
        }
        Ok(Money {
            amount,
            currency: self.currency,
        })
    }

    /// Compares amounts of the same currency.
    pub fn checked_cmp(&self, other: &Money) -> Result<std::cmp::Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.amount.cmp(&other.amount))
    }
}

impl fmt::Display for Money {
    /// Major units at the currency's scale, without the code: `10.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.amount;
        shown.rescale(self.currency.exponent);
        write!(f, "{shown}")
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self, self.currency.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    #[test]
    fn at_least_thirty_currencies_with_their_exponents() {
        assert!(Currency::all().count() >= 30);
        assert_eq!(Currency::from_code("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::from_code("KWD").unwrap().exponent(), 3);
        assert_eq!(Currency::from_code("CNY").unwrap().exponent(), 2);
        assert!(Currency::from_code("usd").is_err());
        assert!(Currency::from_code("XYZ").is_err());
    }

    #[test]
    fn parses_and_prints_at_currency_scale() {
        assert_eq!(
            Money::parse_positive("10", usd()).unwrap().to_string(),
            "10.00"
        );
        assert_eq!(
            Money::parse_positive("12.3", usd()).unwrap().to_string(),
            "12.30"
        );
        let kwd = Currency::from_code("KWD").unwrap();
        assert_eq!(
            Money::parse_positive("1.25", kwd).unwrap().to_string(),
            "1.250"
        );
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(
            Money::parse_positive("500", jpy).unwrap().to_string(),
            "500"
        );
        assert_eq!(
            Money::parse_positive("12.34", usd()).unwrap().minor_units(),
            1234
        );
    }

    #[test]
    fn refuses_what_a_merchant_must_fix() {
        let jpy = Currency::from_code("JPY").unwrap();
        let cases = [
            ("10.001", usd(), "amount_too_precise"),
            ("1.5", jpy, "amount_too_precise"),
            ("0", usd(), "amount_not_positive"),
            ("0.00", usd(), "amount_not_positive"),
            ("-1.00", usd(), "amount_not_positive"),
            ("1e3", usd(), "amount_invalid"),
            ("abc", usd(), "amount_invalid"),
            ("", usd(), "amount_invalid"),
            (" 1.00", usd(), "amount_invalid"),
            ("+1.00", usd(), "amount_invalid"),
            (".5", usd(), "amount_invalid"),
            ("5.", usd(), "amount_invalid"),
            ("1,00", usd(), "amount_invalid"),
            ("1000000000000000000000", usd(), "amount_too_large"),
        ];
        for (text, currency, code) in cases {
            let err = Money::parse_positive(text, currency).unwrap_err();
            assert_eq!(err.code(), code, "{text:?}");
        }
        assert!(Money::parse_positive("999999999999999.99", usd()).is_ok());
    }

    #[test]
    fn arithmetic_is_checked_and_single_currency() {
        let a = Money::parse_positive("10.00", usd()).unwrap();
        let b = Money::parse_positive("3.50", usd()).unwrap();
        assert_eq!(a.checked_sub(&b).unwrap().to_string(), "6.50");
        assert_eq!(a.checked_add(&b).unwrap().to_string(), "13.50");
        assert!(b.checked_sub(&a).is_err());
        let eur = Money::parse_positive("1.00", Currency::from_code("EUR").unwrap()).unwrap();
        assert_eq!(a.checked_add(&eur).unwrap_err().code(), "currency_mismatch");
    }

    #[test]
    fn serde_round_trip_keeps_amount_as_string() {
        let a = Money::parse_positive("10.50", usd()).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"amount":"10.50","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), a);
    }
}
