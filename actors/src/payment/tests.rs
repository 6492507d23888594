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
        card: Some(CardSummary {
            brand: "visa".into(),
            bin: "424242".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
        }),
        bank_account: None,
        wallet_id: None,
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
    Uncapture,
    UncaptureOutcome(bool),
    Reverse,
    ReverseOutcome(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Charge),
        Just(Op::Uncapture),
        any::<bool>().prop_map(Op::UncaptureOutcome),
        Just(Op::Reverse),
        any::<bool>().prop_map(Op::ReverseOutcome),
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
        Op::Charge(4) => Command::ChargeOutcome(ChargeOutcome::NeverCharged),
        Op::Charge(_) => Command::ChargeOutcome(ChargeOutcome::Submitted {
            provider_ref: "tr".into(),
        }),
        Op::Uncapture => Command::Uncapture,
        Op::UncaptureOutcome(ok) => {
            Command::UncaptureOutcome(if *ok { Ok(()) } else { Err(failure()) })
        }
        Op::Reverse => Command::Reverse,
        Op::ReverseOutcome(ok) => {
            Command::ReverseOutcome(if *ok { Ok(()) } else { Err(failure()) })
        }
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
            Command::Create(Box::new(again))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_breaks_the_invariants(manual in any::<bool>(), ops in proptest::collection::vec(op(), 0..60)) {
        let capture = if manual { CaptureMode::Manual } else { CaptureMode::Automatic };
        let mut journal = decide(None, &Command::Create(Box::new(new_payment(capture)))).unwrap();
        let mut state = apply(None, &journal[0], 1, 0).unwrap();
        for (n, op) in ops.iter().enumerate() {
            let before = state.clone();
            let Ok(events) = decide(Some(&state), &command(op, &state, n)) else { continue };
            let undone = events.iter().any(|e| matches!(e, Event::Uncaptured | Event::Reversed));
            for event in events {
                let seq = state.seq + 1;
                state = apply(Some(state), &event, seq, n as i64 + 1)
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                journal.push(event);
            }
            // Never leave a terminal status, never skip one; a success is left only by an
            // explicit complete_revert or reversal.
            if before.status == PaymentStatus::Succeeded && state.status != before.status {
                prop_assert!(undone, "succeeded left without a revert or reversal");
            }
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
    let created = decide(
        None,
        &Command::Create(Box::new(new_payment(CaptureMode::Automatic))),
    )
    .unwrap();
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
    let created = decide(
        None,
        &Command::Create(Box::new(new_payment(CaptureMode::Manual))),
    )
    .unwrap();
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

/// A refund of `minor` cents under the id `re_1`.
fn refund_of(minor: i64) -> Command {
    Command::Refund(NewRefund {
        id: "re_1".into(),
        amount: Some(usd(minor)),
        reason: None,
        metadata: BTreeMap::new(),
        fingerprint: String::new(),
    })
}

fn step(p: Payment, command: Command) -> Result<Payment, Rejection> {
    let mut p = p;
    for event in decide(Some(&p), &command)? {
        let seq = p.seq + 1;
        p = apply(Some(p), &event, seq, seq as i64).unwrap();
    }
    Ok(p)
}

fn preauthorized() -> Payment {
    let created = decide(
        None,
        &Command::Create(Box::new(new_payment(CaptureMode::Manual))),
    )
    .unwrap();
    let p = apply(None, &created[0], 1, 0).unwrap();
    step(
        p,
        Command::ChargeOutcome(ChargeOutcome::Authorized {
            provider_ref: "a".into(),
        }),
    )
    .unwrap()
}

fn completed(amount: i64) -> Payment {
    let p = step(
        preauthorized(),
        Command::Capture {
            amount: Some(usd(amount)),
        },
    )
    .unwrap();
    step(p, Command::CaptureOutcome(Ok("cap".into()))).unwrap()
}

#[test]
fn complete_revert_returns_to_authorized_and_completes_again_under_a_new_key() {
    let p = completed(600);
    assert_eq!(p.status, PaymentStatus::Succeeded);
    assert_eq!(p.capture_key(), "pay_test.capture");
    let p = step(p, Command::Uncapture).unwrap();
    assert_eq!(p.pending, Some(PendingOp::Uncapture));
    assert_eq!(p.uncapture_key(), "pay_test.uncapture.1");
    // Nothing else while the revert is in flight.
    assert!(matches!(
        step(p.clone(), Command::Reverse),
        Err(Rejection::InProgress { .. })
    ));
    let p = step(p, Command::UncaptureOutcome(Ok(()))).unwrap();
    assert_eq!(p.status, PaymentStatus::Authorized);
    assert!(p.amount_captured.is_zero());
    let p = step(
        p,
        Command::Capture {
            amount: Some(usd(1_000)),
        },
    )
    .unwrap();
    assert_eq!(p.capture_key(), "pay_test.capture.2");
    let p = step(p, Command::CaptureOutcome(Ok("cap2".into()))).unwrap();
    assert_eq!(p.amount_captured, usd(1_000));
}

#[test]
fn complete_revert_is_refused_where_it_does_not_apply() {
    // Not completed yet.
    assert!(matches!(
        step(preauthorized(), Command::Uncapture),
        Err(Rejection::UnexpectedState { .. })
    ));
    // An automatic capture is not a pre-authorisation.
    assert!(matches!(
        step(succeeded(), Command::Uncapture),
        Err(Rejection::NotPreauth { .. })
    ));
    // After a refund.
    let p = step(completed(600), refund_of(100)).unwrap();
    assert!(matches!(
        step(p.clone(), Command::Uncapture),
        Err(Rejection::HasRefunds { .. })
    ));
    // A failed revert leaves the completion in place.
    let p = step(completed(600), Command::Uncapture).unwrap();
    let p = step(
        p,
        Command::UncaptureOutcome(Err(Failure::new("charge_not_revertible", "late"))),
    )
    .unwrap();
    assert_eq!(p.status, PaymentStatus::Succeeded);
    assert_eq!(p.amount_captured, usd(600));
}

#[test]
fn reversal_undoes_an_authorisation_a_capture_or_an_unknown_charge() {
    let p = step(preauthorized(), Command::Reverse).unwrap();
    let p = step(p, Command::ReverseOutcome(Ok(()))).unwrap();
    assert_eq!((p.status, p.reversed), (PaymentStatus::Canceled, true));

    let p = step(succeeded(), Command::Reverse).unwrap();
    let p = step(p, Command::ReverseOutcome(Ok(()))).unwrap();
    assert_eq!(p.status, PaymentStatus::Canceled);
    assert!(p.amount_captured.is_zero());

    // Outcome unknown: the charge's answer may arrive first; the reversal still goes ahead.
    let created = decide(
        None,
        &Command::Create(Box::new(new_payment(CaptureMode::Automatic))),
    )
    .unwrap();
    let p = apply(None, &created[0], 1, 0).unwrap();
    let p = step(p, Command::Reverse).unwrap();
    let p = step(
        p,
        Command::ChargeOutcome(ChargeOutcome::Succeeded {
            provider_ref: "ch".into(),
        }),
    )
    .unwrap();
    assert_eq!(p.pending, Some(PendingOp::Reverse));
    let p = step(p, Command::ReverseOutcome(Ok(()))).unwrap();
    assert_eq!(p.status, PaymentStatus::Canceled);
}

#[test]
fn reversal_is_refused_after_refunds_and_on_final_states() {
    let p = step(succeeded(), refund_of(100)).unwrap();
    assert!(matches!(
        step(p, Command::Reverse),
        Err(Rejection::HasRefunds { .. })
    ));
    let p = step(preauthorized(), Command::Cancel).unwrap();
    let p = step(p, Command::CancelOutcome(Ok(()))).unwrap();
    assert!(matches!(
        step(p, Command::Reverse),
        Err(Rejection::UnexpectedState { .. })
    ));
}

#[test]
fn a_keyed_command_applied_once_is_answered_not_refused_when_retried() {
    let keyed = |command: Command| Command::Keyed {
        request: "req_capture".into(),
        command: Box::new(command),
    };
    let capture = keyed(Command::Capture {
        amount: Some(usd(500)),
    });
    let p = step(preauthorized(), capture.clone()).unwrap();
    assert_eq!(p.pending, Some(PendingOp::Capture { amount: usd(500) }));
    assert_eq!(p.applied_requests, ["req_capture"]);
    let p = step(p, Command::CaptureOutcome(Ok("cap".into()))).unwrap();
    // The retry finds its request applied: refused as such (callers answer the state), where
    // the bare command would be refused for the payment's status.
    assert_eq!(decide(Some(&p), &capture), Err(Rejection::AlreadyApplied));
    assert!(matches!(
        decide(
            Some(&p),
            &Command::Capture {
                amount: Some(usd(500))
            }
        ),
        Err(Rejection::UnexpectedState { .. })
    ));
    // A command that changes nothing records no request.
    let late = keyed(Command::CaptureOutcome(Ok("cap".into())));
    assert_eq!(
        decide(Some(&p), &Command::CaptureOutcome(Ok("cap".into()))),
        Ok(vec![])
    );
    assert_eq!(decide(Some(&p), &late).unwrap_or_default().len(), 0);
}

#[test]
fn an_order_remembers_a_bounded_number_of_keyed_requests() {
    let mut p = preauthorized();
    for i in 0..APPLIED_REQUESTS_MAX + 5 {
        let event = Event::RequestApplied {
            request: format!("req_{i}"),
        };
        p = apply(Some(p.clone()), &event, p.seq + 1, 0).unwrap();
    }
    assert_eq!(p.applied_requests.len(), APPLIED_REQUESTS_MAX);
    assert_eq!(
        p.applied_requests[0], "req_5",
        "the oldest are forgotten first"
    );
}

/// Seeds one run of [`crashes_between_append_and_reply_never_apply_a_command_twice`] tries.
const CRASH_SEEDS: u64 = 400;
/// Commands per seeded sequence, at most.
const CRASH_OPS_MAX: usize = 60;

/// Where a simulated crash lands around one command.
#[derive(Clone, Copy, Debug)]
enum Crash {
    None,
    /// The events were decided but never appended: recovery replays the journal without them
    /// and the merchant's retry decides again.
    BeforeAppend,
    /// The append was durable but the reply never left: recovery replays the journal with
    /// them and the retry must find the command applied.
    AfterAppend,
}

/// A merchant command carries its request key (`Command::Keyed`), as the order actor sends it;
/// channel outcomes are bare.
fn as_sent(op: &Op, p: &Payment, n: usize) -> Command {
    let command = command(op, p, n);
    match op {
        Op::Capture(_) | Op::Cancel | Op::Refund(_) | Op::Uncapture | Op::Reverse => {
            Command::Keyed {
                request: format!("req_{n}"),
                command: Box::new(command),
            }
        }
        _ => command,
    }
}

/// The journal as the store keeps it: each event serialised, with its time.
#[derive(Default)]
struct Journal(Vec<(String, i64)>);

impl Journal {
    fn append(&mut self, state: Option<Payment>, events: &[Event], at_ms: i64) -> Payment {
        let mut state = state;
        for event in events {
            self.0.push((
                serde_json::to_string(event).expect("events serialise"),
                at_ms,
            ));
            let seq = self.0.len() as u64;
            state = Some(apply(state, event, seq, at_ms).expect("a decided event applies"));
        }
        state.expect("at least the created event")
    }

    /// Recovery: the order rebuilt from the journal alone.
    fn replay(&self) -> Payment {
        let mut state = None;
        for (i, (json, at_ms)) in self.0.iter().enumerate() {
            let event: Event = serde_json::from_str(json).expect("journaled events parse");
            state = Some(apply(state, &event, i as u64 + 1, *at_ms).expect("replay applies"));
        }
        state.expect("a journal starts with created")
    }
}

/// One seeded sequence of commands with crashes around them; panics on a broken invariant.
fn crash_run(seed: u64) {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let manual = any::<bool>().new_tree(&mut runner).unwrap().current();
    let ops = proptest::collection::vec((op(), 0u8..3), 0..CRASH_OPS_MAX)
        .new_tree(&mut runner)
        .unwrap()
        .current();

    let capture = if manual {
        CaptureMode::Manual
    } else {
        CaptureMode::Automatic
    };
    let mut journal = Journal::default();
    let created = decide(None, &Command::Create(Box::new(new_payment(capture)))).unwrap();
    let mut state = journal.append(None, &created, 0);
    for (n, (op, crash)) in ops.iter().enumerate() {
        let crash = [Crash::None, Crash::BeforeAppend, Crash::AfterAppend][usize::from(*crash)];
        let at_ms = n as i64 + 1;
        let sent = as_sent(op, &state, n);
        let Ok(events) = decide(Some(&state), &sent) else {
            continue;
        };
        let before = state.clone();
        state = match crash {
            Crash::None => journal.append(Some(state), &events, at_ms),
            Crash::BeforeAppend => {
                let recovered = journal.replay();
                assert_eq!(
                    recovered, before,
                    "seed {seed}, {op:?}: recovery before the append"
                );
                let again = decide(Some(&recovered), &sent);
                assert_eq!(
                    again.as_ref(),
                    Ok(&events),
                    "seed {seed}, {op:?}: the retry decides alike"
                );
                journal.append(Some(recovered), &events, at_ms)
            }
            Crash::AfterAppend => {
                let live = journal.append(Some(state), &events, at_ms);
                let recovered = journal.replay();
                assert_eq!(
                    recovered, live,
                    "seed {seed}, {op:?}: replay rebuilds the order"
                );
                // The retry of an applied command changes nothing: a keyed one is answered
                // as applied, a repeated outcome is ignored or refused.
                match decide(Some(&recovered), &sent) {
                    Ok(more) if !more.is_empty() && !events.is_empty() => panic!(
                        "seed {seed}, {op:?}: the retry after a crash applied again: {more:?}"
                    ),
                    _ => {}
                }
                recovered
            }
        };
        check_invariants(&state).unwrap_or_else(|e| panic!("seed {seed}, {op:?}: {e}"));
        assert!(
            state.amount_refunded.minor_units() <= state.amount_captured.minor_units(),
            "seed {seed}: refunded more than captured"
        );
    }
    assert_eq!(journal.replay(), state, "seed {seed}: the final replay");
}

/// Seeded random command sequences with crashes before and after the journal append. A
/// failing seed is printed; `KASSA_SEED=<seed>` replays exactly that sequence.
#[test]
fn crashes_between_append_and_reply_never_apply_a_command_twice() {
    let seeds = match std::env::var("KASSA_SEED") {
        Ok(seed) => {
            let seed = seed.parse().expect("KASSA_SEED is a u64");
            seed..seed + 1
        }
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            base..base.wrapping_add(CRASH_SEEDS)
        }
    };
    for seed in seeds {
        if let Err(panic) = std::panic::catch_unwind(|| crash_run(seed)) {
            eprintln!(
                "failing seed {seed}; replay with: KASSA_SEED={seed} cargo test -p kassa-actors \
                 crashes_between_append_and_reply"
            );
            std::panic::resume_unwind(panic);
        }
    }
}
