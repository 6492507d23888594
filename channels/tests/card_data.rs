//! Card data never shows up in debug output.

use kassa_channels::{CardData, ChargeRequest, Secret};

#[test]
fn debug_of_card_data_shows_only_bin_last4_and_brand() {
    let card = CardData::new("4000 0566 5566 5556", 3, 2031, "4821").expect("well-formed card");
    let request = ChargeRequest {
        idempotency_key: "order-1".into(),
        amount_minor: 100,
        currency: "USD".into(),
        card: card.clone(),
        capture: true,
    };
    for printed in [
        format!("{card:?}"),
        format!("{card:#?}"),
        format!("{request:?}"),
    ] {
        assert!(
            !printed.contains("4000056655665556"),
            "full PAN in {printed}"
        );
        assert!(!printed.contains("4821"), "CVC in {printed}");
        assert!(!printed.contains("2031"), "expiry in {printed}");
        assert!(printed.contains("400005"), "bin missing from {printed}");
        assert!(printed.contains("5556"), "last4 missing from {printed}");
    }
    assert_eq!(format!("{:?}", Secret::new("sk_live_x")), "***");
}
