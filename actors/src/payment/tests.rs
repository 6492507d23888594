//! Property tests: no sequence of commands breaks the order's invariants.

use proptest::prelude::*;

use super::*;

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap()
}

fn new_payment(capture: CaptureMode) -> NewPayment {
    NewPayment {
        id: "pay_test".into(),
        merchant_id: "mch_test".into(),
        merchant_order_id: "order-1".into(),
        amount: usd(1_000),
        method: Method::Card,
        capture,
        card: CardSummary {
            brand: "visa".into(),
            bin: "424242".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
        },
        description: None,
        metadata: BTreeMap::new(),
        fingerprint: "fp".into(),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Charge(u8),
    Capture(Option<i64>),
    CaptureOutcome(bool),
    Cancel,
    CancelOutcome(bool),
    Refund(Option<i64>),
    RefundOutcome(usize, bool),
    Recreate(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5).prop_map(Op::Charge),
        proptest::option::of(1i64..1_200).prop_map(Op::Capture),
        any::<bool>().prop_map(Op::CaptureOutcome),
        Just(Op::Cancel),
        any::<bool>().prop_map(Op::CancelOutcome),
        proptest::option::of(1i64..1_200).prop_map(Op::Refund),
        (0usize..8, any::<bool>()).prop_map(|(i, ok)| Op::RefundOutcome(i, ok)),
        any::<bool>().prop_map(Op::Recreate),
    ]
}

fn command(op: &Op, p: &Payment, n: usize) -> Command {
    let failure = || Failure::new("channel_error", "refused");
    match op {
        Op::Charge(0) => Command::ChargeOutcome(ChargeOutcome::Succeeded {
            provider_ref: "ch".into(),
        }),
        Op::Charge(1) => Command::ChargeOutcome(ChargeOutcome::Authorized {
            provider_ref: "ch".into(),
        }),
        Op::Charge(2) => Command::ChargeOutcome(ChargeOutcome::Declined(failure())),
        Op::Charge(3) => Command::ChargeOutcome(ChargeOutcome::RequiresAction {
            provider_ref: "ch".into(),
            redirect_url: "https://issuer.example/challenge".into(),
        }),
        Op::Charge(_) => Command::ChargeOutcome(ChargeOutcome::NeverCharged),
        Op::Capture(amount) => Command::Capture {
            amount: amount.map(usd),
        },
        Op::CaptureOutcome(ok) => Command::CaptureOutcome(if *ok {
            Ok("cap".into())
        } else {
            Err(failure())
        }),
        Op::Cancel => Command::Cancel,
        Op::CancelOutcome(ok) => Command::CancelOutcome(if *ok { Ok(()) } else { Err(failure()) }),
        Op::Refund(amount) => Command::Refund(NewRefund {
            id: format!("re_{n}"),
            amount: amount.map(usd),
            reason: None,
            metadata: BTreeMap::new(),
            fingerprint: format!("fp{n}"),
        }),
        Op::RefundOutcome(i, ok) => Command::RefundOutcome {
            refund_id: p
                .refunds
                .get(*i)
                .map(|r| r.id.clone())
                .unwrap_or_else(|| "re_none".into()),
            result: if *ok { Ok("rf".into()) } else { Err(failure()) },
        },
        Op::Recreate(same) => {
            let mut again = new_payment(p.capture);
            if !same {
                again.fingerprint = "other".into();
            }
            Command::Create(again)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_breaks_the_invariants(manual in any::<bool>(), ops in proptest::collection::vec(op(), 0..60)) {
        let capture = if manual { CaptureMode::Manual } else { CaptureMode::Automatic };
        let mut journal = decide(None, &Command::Create(new_payment(capture))).unwrap();
        let mut state = apply(None, &journal[0], 1, 0).unwrap();
        for (n, op) in ops.iter().enumerate() {
            let before = state.clone();
            let Ok(events) = decide(Some(&state), &command(op, &state, n)) else { continue };
            for event in events {
                let seq = state.seq + 1;
                state = apply(Some(state), &event, seq, n as i64 + 1)
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                journal.push(event);
            }
            // Never leave a terminal status, never skip one.
            if before.status.is_terminal() {
                prop_assert_eq!(state.status, before.status);
            } else if state.status != before.status {
                prop_assert!(before.status.can_become(state.status),
                    "{:?} -> {:?}", before.status, state.status);
            }
            prop_assert!(check_invariants(&state).is_ok());
            prop_assert!(state.amount_refunded.minor_units() <= state.amount_captured.minor_units());
        }
        // Replaying the journal rebuilds exactly the same order.
        let mut replayed = None;
        for (i, event) in journal.iter().enumerate() {
            let at = if i == 0 { 0 } else { i as i64 };
            replayed = Some(apply(replayed, event, i as u64 + 1, at).unwrap());
        }
        let replayed = replayed.unwrap();
        prop_assert_eq!(replayed.status, state.status);
        prop_assert_eq!(replayed.amount_refunded, state.amount_refunded);
        prop_assert_eq!(replayed.refunds.len(), state.refunds.len());
    }
}

fn succeeded() -> Payment {
    let created = decide(None, &Command::Create(new_payment(CaptureMode::Automatic))).unwrap();
    let p = apply(None, &created[0], 1, 0).unwrap();
    let ok = ChargeOutcome::Succeeded {
        provider_ref: "ch".into(),
    };
    let events = decide(Some(&p), &Command::ChargeOutcome(ok)).unwrap();
    apply(Some(p), &events[0], 2, 1).unwrap()
}

#[test]
fn ten_refunds_of_one_exhaust_ten() {
    let mut p = succeeded();
    let mut accepted = 0;
    for n in 0..50 {
        let cmd = Command::Refund(NewRefund {
            id: format!("re_{n}"),
            amount: Some(usd(100)),
            reason: None,
            metadata: BTreeMap::new(),
            fingerprint: String::new(),
        });
        match decide(Some(&p), &cmd) {
            Ok(events) => {
                accepted += 1;
                let seq = p.seq + 1;
                p = apply(Some(p), &events[0], seq, 2).unwrap();
            }
            Err(Rejection::RefundExceedsCaptured { refundable }) => assert!(refundable.is_zero()),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(accepted, 10, "pending refunds reserve their amount");
}

#[test]
fn duplicate_outcomes_change_nothing() {
    let p = succeeded();
    let again = ChargeOutcome::Declined(Failure::new("card_declined", "late"));
    assert_eq!(
        decide(Some(&p), &Command::ChargeOutcome(again)).unwrap(),
        vec![]
    );
}

#[test]
fn replay_refuses_an_event_that_does_not_fit() {
    let p = succeeded();
    let err = apply(
        Some(p),
        &Event::Authorized {
            provider_ref: "x".into(),
        },
        3,
        2,
    )
    .unwrap_err();
    assert!(err.0.contains("cannot become"), "{err}");
}

#[test]
fn capture_more_than_authorized_is_refused() {
    let created = decide(None, &Command::Create(new_payment(CaptureMode::Manual))).unwrap();
    let p = apply(None, &created[0], 1, 0).unwrap();
    let auth = decide(
        Some(&p),
        &Command::ChargeOutcome(ChargeOutcome::Authorized {
            provider_ref: "a".into(),
        }),
    )
    .unwrap();
    let p = apply(Some(p), &auth[0], 2, 1).unwrap();
    let err = decide(
        Some(&p),
        &Command::Capture {
            amount: Some(usd(1_001)),
        },
    )
    .unwrap_err();
    assert!(matches!(err, Rejection::CaptureExceedsAuthorized { .. }));
    assert_eq!(
        decide(
            Some(&p),
            &Command::Capture {
                amount: Some(usd(600))
            }
        )
        .unwrap()
        .len(),
        1
    );
}
