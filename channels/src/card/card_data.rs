//! Card details as they travel from the merchant's request to the acquirer, and nowhere else.
//!
//! [`CardData`] keeps the number and the CVC in [`Secret`]s; its `Debug` shows only the BIN,
//! the last four digits and the brand, which is all Kassa ever stores or prints.

use std::fmt;

use crate::error::CardDataError;
use crate::secret::Secret;

/// The shortest and longest card numbers (ISO/IEC 7812 allows 8–19; real PANs are 12–19).
const PAN_DIGITS_MIN: usize = 12;
const PAN_DIGITS_MAX: usize = 19;
const BIN_DIGITS: usize = 6;
const LAST_DIGITS: usize = 4;

/// A card number, its expiry and its security code.
#[derive(Clone)]
pub struct CardData {
    number: Secret<String>,
    exp_month: u8,
    exp_year: u16,
    cvc: Secret<String>,
}

impl CardData {
    /// Checks the shape of the card details: 12–19 digits (spaces and dashes are dropped),
    /// month 1–12, a four-digit year, a 3–4 digit CVC.
    ///
    /// The Luhn check is left to the caller ([`luhn_valid`], [`CardData::is_luhn_valid`]) so it
    /// can answer with its own error code; the provider refuses non-Luhn numbers too.
    pub fn new(
        number: &str,
        exp_month: u8,
        exp_year: u16,
        cvc: &str,
    ) -> Result<Self, CardDataError> {
        let number: String = number.chars().filter(|c| *c != ' ' && *c != '-').collect();
        let digits_ok = number.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok || !(PAN_DIGITS_MIN..=PAN_DIGITS_MAX).contains(&number.len()) {
            return Err(CardDataError::InvalidNumber);
        }
        if !(1..=12).contains(&exp_month) || !(1000..=9999).contains(&exp_year) {
            return Err(CardDataError::InvalidExpiry);
        }
        if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardDataError::InvalidCvc);
        }
        Ok(Self {
            number: Secret::new(number),
            exp_month,
            exp_year,
            cvc: Secret::new(cvc.to_owned()),
        })
    }

    /// The full card number. Only the channel request body may use it.
    pub fn number(&self) -> &Secret<String> {
        &self.number
    }

    /// The security code. Only the channel request body may use it; it is never stored.
    pub fn cvc(&self) -> &Secret<String> {
        &self.cvc
    }

    /// The expiry month, 1–12.
    pub fn exp_month(&self) -> u8 {
        self.exp_month
    }

    /// The four-digit expiry year.
    pub fn exp_year(&self) -> u16 {
        self.exp_year
    }

    /// The first six digits (the issuer identification number).
    pub fn bin(&self) -> &str {
        // `new` guarantees at least 12 ASCII digits, so the slice is in bounds and on a char
        // boundary.
        &self.number.expose()[..BIN_DIGITS]
    }

    /// The last four digits.
    pub fn last4(&self) -> &str {
        let number = self.number.expose();
        // As in `bin`: at least 12 ASCII digits.
        &number[number.len() - LAST_DIGITS..]
    }

    /// The card brand from the number's prefix: `visa`, `mastercard`, `amex`, `discover`,
    /// `jcb`, `unionpay` or `unknown`.
    pub fn brand(&self) -> &'static str {
        brand(self.number.expose())
    }

    /// Whether the number passes the Luhn check.
    pub fn is_luhn_valid(&self) -> bool {
        luhn_valid(self.number.expose())
    }

    /// `424242******4242`: what may be shown or logged in place of the number.
    pub fn masked_number(&self) -> String {
        let hidden = self.number.expose().len() - BIN_DIGITS - LAST_DIGITS;
        format!("{}{}{}", self.bin(), "*".repeat(hidden), self.last4())
    }
}

impl fmt::Debug for CardData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardData")
            .field("number", &self.masked_number())
            .field("brand", &self.brand())
            .field("exp", &"**/****")
            .field("cvc", &self.cvc)
            .finish()
    }
}

/// The Luhn (mod 10) check over a string of ASCII digits; anything else, or fewer than two
/// digits, is not valid.
pub fn luhn_valid(number: &str) -> bool {
    if number.len() < 2 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(position, byte)| {
            let digit = u32::from(byte - b'0');
            if position % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The brand of a card number from its prefix (see [`CardData::brand`]).
pub fn brand(number: &str) -> &'static str {
    let prefix = |len: usize| number.get(..len).and_then(|p| p.parse::<u32>().ok());
    let two = prefix(2);
    let four = prefix(4);
    if number.starts_with('4') {
        "visa"
    } else if matches!(two, Some(51..=55)) || matches!(four, Some(2221..=2720)) {
        "mastercard"
    } else if matches!(two, Some(34 | 37)) {
        "amex"
    } else if four == Some(6011) || two == Some(65) {
        "discover"
    } else if matches!(four, Some(3528..=3589)) {
        "jcb"
    } else if two == Some(62) {
        "unionpay"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_rejects_typos() {
        assert!(luhn_valid("4242424242424242"));
        assert!(luhn_valid("4000000000000002"));
        assert!(luhn_valid("4000000000009995"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("42424242424242a2"));
        assert!(!luhn_valid("0"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn brands_follow_the_prefix_table() {
        let cases = [
            ("4242424242424242", "visa"),
            ("5105105105105100", "mastercard"),
            ("2221000000000009", "mastercard"),
            ("2720990000000007", "mastercard"),
            ("378282246310005", "amex"),
            ("341111111111111", "amex"),
            ("6011111111111117", "discover"),
            ("6500000000000002", "discover"),
            ("3530111333300000", "jcb"),
            ("6200000000000005", "unionpay"),
            ("9999999999999995", "unknown"),
            ("2720999999999999", "mastercard"),
            ("2721000000000000", "unknown"),
        ];
        for (number, expected) in cases {
            assert_eq!(brand(number), expected, "{number}");
        }
    }

    #[test]
    fn card_data_checks_shape_and_masks() {
        let card = CardData::new("4242 4242 4242 4242", 12, 2030, "123").expect("valid card");
        assert_eq!(card.bin(), "424242");
        assert_eq!(card.last4(), "4242");
        assert_eq!(card.brand(), "visa");
        assert_eq!(card.masked_number(), "424242******4242");
        assert!(card.is_luhn_valid());
        assert_eq!(
            CardData::new("4242", 12, 2030, "123").err(),
            Some(CardDataError::InvalidNumber)
        );
        assert_eq!(
            CardData::new("4242424242424242", 13, 2030, "123").err(),
            Some(CardDataError::InvalidExpiry)
        );
        assert_eq!(
            CardData::new("4242424242424242", 1, 2030, "12a").err(),
            Some(CardDataError::InvalidCvc)
        );
    }
}
