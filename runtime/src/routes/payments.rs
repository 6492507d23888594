//! `/v1/payments`: create, retrieve, list, capture, cancel, confirm, and the card
//! pre-authorisation commands complete_revert and reverse.
//!
//! A payment names its `method` (card, qr_wallet, app_wallet, bank_transfer, wallet); the
//! method's terms (`methods.rs`: channel, per-currency minimum and maximum) are checked before
//! anything exists, and so is room at the method's channel (429/503 with `Retry-After`).

use http::StatusCode;
use kassa_actors::channel_port::Instrument;
use kassa_actors::money::{Currency, Money};
use kassa_actors::payment::{
    BankAccountSummary, CaptureMode, CardSummary, Method, NewPayment, Payment, PaymentStatus,
};
use kassa_actors::payment_order::{
    Cancel, Capture, Confirm, Create, Get, OrderError, OrderReply, PaymentOrder, Undo, UndoKind,
};
use kassa_actors::views::payment_json;
use kassa_channels::card::CardData;
use kassa_channels::error::{CardDataError, ChannelError};
use kassa_store::{ListQuery, MethodRecord};

use crate::app::App;
use crate::crypto::{derived_id, random_id};
use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::merchants::Merchant;
use crate::routes::{Answer, list_body};

pub const MERCHANT_ORDER_ID_CHARS_MAX: usize = 128;
pub const DESCRIPTION_CHARS_MAX: usize = 1_000;
/// A bank account number (IBAN-like): letters and digits, this many at most (IBAN's maximum).
pub const BANK_ACCOUNT_CHARS_MAX: usize = 34;
pub const BANK_ACCOUNT_CHARS_MIN: usize = 8;
pub const HOLDER_NAME_CHARS_MAX: usize = 140;
pub const WALLET_ID_CHARS_MAX: usize = 64;

/// A `POST /v1/payments` body, parsed and checked: what the route hands to the order.
pub struct CreateRequest {
    pub new: NewPayment,
    pub instrument: Instrument,
    pub is_async: bool,
    pub wait_ms: u64,
}

/// What checking a create body needs from the node: the method's terms, the clock and the
/// bound on `wait_ms`. `App` in service; a fixed stand-in lets `fuzz/` run the same parser.
pub trait CreateContext {
    fn terms(&self, method: &str, currency: &str) -> Option<MethodRecord>;
    fn now_ms(&self) -> i64;
    fn wait_ms(&self, asked: Option<u64>) -> Result<u64, ApiError>;
}

impl CreateContext for App {
    fn terms(&self, method: &str, currency: &str) -> Option<MethodRecord> {
        self.methods.terms(method, currency)
    }

    fn now_ms(&self) -> i64 {
        App::now_ms(self)
    }

    fn wait_ms(&self, asked: Option<u64>) -> Result<u64, ApiError> {
        App::wait_ms(self, asked)
    }
}

/// The payer's details a method needs, parsed and checked.
struct Payer {
    instrument: Instrument,
    card: Option<CardSummary>,
    bank_account: Option<BankAccountSummary>,
    wallet_id: Option<String>,
}

fn unexpected(field: &str, method: Method) -> ApiError {
    ApiError::unprocessable(
        "parameter_unexpected",
        format!("{field} does not apply to {} payments", method.as_str()),
    )
    .with_param(field)
}

fn missing(field: &str, method: Method) -> ApiError {
    ApiError::bad_request(
        "missing_field",
        format!("{field} is required for {} payments", method.as_str()),
    )
    .with_param(field)
}

/// (year, month) of a unix time, UTC (Howard Hinnant's civil-from-days).
fn year_month(unix_s: i64) -> (i64, i64) {
    let days = unix_s.div_euclid(86_400) + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

fn card_error(e: CardDataError) -> ApiError {
    match e {
        CardDataError::InvalidNumber => {
            ApiError::unprocessable("card_number_invalid", "the card number is not valid")
                .with_param("card.number")
        }
        CardDataError::InvalidExpiry => ApiError::unprocessable(
            "card_expiry_invalid",
            "exp_month must be 1-12 and exp_year four digits",
        )
        .with_param("card.exp_month"),
        CardDataError::InvalidCvc => {
            ApiError::unprocessable("card_cvc_invalid", "the CVC must be 3 or 4 digits")
                .with_param("card.cvc")
        }
    }
}

/// Parses and checks a `POST /v1/payments` body for `merchant_id`: every 400/422 a create can
/// answer before any order exists, except the wallet's and the channel's (which need I/O).
pub fn parse_create_payment(
    app: &impl CreateContext,
    merchant_id: &str,
    body: &[u8],
    key: Option<&str>,
) -> Result<CreateRequest, ApiError> {
    let Some(mut f) = Fields::parse(body, false)? else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    };
    let amount = f.amount("amount", true)?.unwrap_or_default();
    let currency = f.required_string("currency")?;
    let merchant_order_id = f
        .bounded_string("merchant_order_id", MERCHANT_ORDER_ID_CHARS_MAX, true)?
        .unwrap_or_default();
    let method = f.string("method")?;
    let capture = f.string("capture")?;
    let card = f.object("card")?;
    let bank_account = f.object("bank_account")?;
    let wallet_id = f.bounded_string("wallet_id", WALLET_ID_CHARS_MAX, false)?;
    let is_async = f.boolean("async")?.unwrap_or(false);
    let wait_ms = f.unsigned("wait_ms")?;
    let description = f.bounded_string("description", DESCRIPTION_CHARS_MAX, false)?;
    let metadata = f.metadata()?;
    f.finish()?;

    let currency =
        Currency::from_code(&currency).map_err(|e| ApiError::from(e).with_param("currency"))?;
    let amount = Money::parse_positive(&amount, currency)?;
    let method_name = method.as_deref().unwrap_or("card");
    let shown: String = method_name.chars().take(32).collect();
    let terms = app.terms(method_name, currency.code()).ok_or_else(|| {
        ApiError::unprocessable(
            "method_unsupported",
            format!("method '{shown}' is not available for {currency}"),
        )
        .with_param("method")
    })?;
    let method = Method::parse(method_name).ok_or_else(|| {
        ApiError::unprocessable(
            "method_unsupported",
            format!("method '{shown}' is not supported"),
        )
        .with_param("method")
    })?;
    let limit = |minor: i64| {
        Money::from_minor(minor, currency)
            .map(|m| m.to_string())
            .unwrap_or_default()
    };
    if amount.minor_units() < terms.min_minor {
        return Err(ApiError::unprocessable(
            "amount_under_limit",
            format!(
                "{shown} payments in {currency} start at {}",
                limit(terms.min_minor)
            ),
        )
        .with_param("amount"));
    }
    if amount.minor_units() > terms.max_minor {
        return Err(ApiError::unprocessable(
            "amount_over_limit",
            format!(
                "{shown} payments in {currency} are limited to {}",
                limit(terms.max_minor)
            ),
        )
        .with_param("amount"));
    }
    let capture = match capture.as_deref() {
        None | Some("automatic") => CaptureMode::Automatic,
        Some("manual") if method.supports_manual_capture() => CaptureMode::Manual,
        Some("manual") => {
            return Err(ApiError::unprocessable(
                "capture_unsupported",
                format!(
                    "{} payments cannot be authorised for a later capture",
                    method.as_str()
                ),
            )
            .with_param("capture"));
        }
        Some(_) => {
            return Err(ApiError::unprocessable(
                "value_invalid",
                "capture must be 'automatic' or 'manual'",
            )
            .with_param("capture"));
        }
    };
    let wait_ms = app.wait_ms(wait_ms)?;
    // Only the details the method uses, and all of them.
    let given = [
        ("card", card.is_some(), Method::Card),
        ("bank_account", bank_account.is_some(), Method::BankTransfer),
        ("wallet_id", wallet_id.is_some(), Method::Wallet),
    ];
    for (field, present, owner) in given {
        if present && owner != method {
            return Err(unexpected(field, method));
        }
    }
    let payer = match method {
        Method::Card => {
            let card = card.ok_or_else(|| missing("card", method))?;
            card_payer(app, card)?
        }
        Method::BankTransfer => {
            let account = bank_account.ok_or_else(|| missing("bank_account", method))?;
            bank_payer(account)?
        }
        Method::Wallet => {
            let wallet_id = wallet_id.ok_or_else(|| missing("wallet_id", method))?;
            Payer {
                instrument: Instrument::Nothing,
                card: None,
                bank_account: None,
                wallet_id: Some(wallet_id),
            }
        }
        Method::QrWallet | Method::AppWallet => Payer {
            instrument: Instrument::Nothing,
            card: None,
            bank_account: None,
            wallet_id: None,
        },
    };
    let id = match key {
        Some(key) => derived_id("pay_", &["payment", merchant_id, key]),
        None => random_id("pay_").map_err(|_| ApiError::internal())?,
    };
    let new = NewPayment {
        id,
        merchant_id: merchant_id.to_owned(),
        merchant_order_id,
        amount,
        method,
        capture,
        card: payer.card,
        bank_account: payer.bank_account,
        wallet_id: payer.wallet_id,
        description,
        metadata,
        fingerprint: crate::crypto::sha256_hex(&[body]),
    };
    Ok(CreateRequest {
        new,
        instrument: payer.instrument,
        is_async,
        wait_ms,
    })
}

fn card_payer(app: &impl CreateContext, mut card: Fields) -> Result<Payer, ApiError> {
    let number = card.required_string("number")?;
    let exp_month = card.unsigned("exp_month")?;
    let exp_year = card.unsigned("exp_year")?;
    let cvc = card.required_string("cvc")?;
    card.finish()?;
    let (Some(exp_month), Some(exp_year)) = (exp_month, exp_year) else {
        return Err(ApiError::bad_request(
            "missing_field",
            "card.exp_month and card.exp_year are required",
        )
        .with_param("card.exp_month"));
    };
    let exp_month = u8::try_from(exp_month).unwrap_or(u8::MAX);
    let exp_year = u16::try_from(exp_year).unwrap_or(u16::MAX);
    let card = CardData::new(&number, exp_month, exp_year, &cvc).map_err(card_error)?;
    if !card.is_luhn_valid() {
        return Err(card_error(CardDataError::InvalidNumber));
    }
    let (year, month) = year_month(app.now_ms().div_euclid(1_000));
    if (i64::from(exp_year), i64::from(exp_month)) < (year, month) {
        return Err(
            ApiError::unprocessable("card_expired", "the card has expired")
                .with_param("card.exp_year"),
        );
    }
    Ok(Payer {
        card: Some(CardSummary {
            brand: card.brand().to_string(),
            bin: card.bin().to_string(),
            last4: card.last4().to_string(),
            exp_month,
            exp_year,
        }),
        bank_account: None,
        wallet_id: None,
        instrument: Instrument::Card(card),
    })
}

fn bank_payer(mut account: Fields) -> Result<Payer, ApiError> {
    let number = account.required_string("number")?;
    let holder_name = account
        .bounded_string("holder_name", HOLDER_NAME_CHARS_MAX, true)?
        .unwrap_or_default();
    account.finish()?;
    let number: String = number.chars().filter(|c| !c.is_whitespace()).collect();
    let plain = number.chars().all(|c| c.is_ascii_alphanumeric());
    let length = number.chars().count();
    if !plain || !(BANK_ACCOUNT_CHARS_MIN..=BANK_ACCOUNT_CHARS_MAX).contains(&length) {
        return Err(ApiError::unprocessable(
            "bank_account_invalid",
            format!(
                "the account number must be {BANK_ACCOUNT_CHARS_MIN} to {BANK_ACCOUNT_CHARS_MAX} letters and digits"
            ),
        )
        .with_param("bank_account.number"));
    }
    if holder_name.trim().is_empty() {
        return Err(
            ApiError::bad_request("missing_field", "bank_account.holder_name is required")
                .with_param("bank_account.holder_name"),
        );
    }
    let number = number.to_ascii_uppercase();
    let last4 = number[number.len() - 4..].to_string();
    Ok(Payer {
        card: None,
        bank_account: Some(BankAccountSummary {
            last4,
            holder_name: holder_name.clone(),
        }),
        wallet_id: None,
        instrument: Instrument::BankAccount {
            number: number.into(),
            holder_name,
        },
    })
}

fn payment_answer(payment: &Payment, done: bool, done_status: StatusCode) -> Answer {
    let status = if done {
        done_status
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, payment_json(payment).into()))
}

pub async fn create(app: &App, merchant: &Merchant, body: &[u8], key: Option<&str>) -> Answer {
    let request = parse_create_payment(app, &merchant.id, body, key)?;
    let method = request.new.method;
    if method == Method::Wallet {
        check_wallet(app, merchant, &request.new).await?;
    }
    // Room at the channel first: a busy or broken channel is refused here, before any order
    // exists (429/503 with Retry-After), rather than by an order that can only wait.
    if !app.channels.is_configured(method) {
        return Err(ApiError::unavailable(
            "channel_unavailable",
            format!(
                "no {} channel is configured here; nothing was created",
                method.as_str()
            ),
        ));
    }
    let name = method.as_str();
    let admission = app
        .channels
        .admit(method, &merchant.id)
        .await
        .map_err(|e| match e {
            ChannelError::CircuitOpen { retry_after_ms } => ApiError::retry_later(
                true,
                "channel_unavailable",
                format!("the {name} channel is failing; nothing was created, retry later"),
                retry_after_ms,
            ),
            ChannelError::RateLimitedLocally { retry_after_ms } => ApiError::retry_later(
                false,
                "rate_limited",
                format!(
                    "the {name} channel is at its rate limit; nothing was created, retry later"
                ),
                retry_after_ms,
            ),
            other => {
                tracing::warn!(error = %other, channel = name, "channel admission failed");
                ApiError::unavailable("overloaded", "Kassa is busy; retry shortly")
            }
        })?;
    let id = request.new.id.clone();
    let settle = !request.is_async;
    let create = Create {
        new: request.new,
        instrument: request.instrument,
        settle,
        admission,
    };
    let reply = app.ask(&id, create).await?;
    let payment = if request.is_async {
        reply.payment
    } else {
        app.settle(reply, request.wait_ms).await
    };
    let done = payment.status != PaymentStatus::Processing;
    payment_answer(&payment, done && !request.is_async, StatusCode::CREATED)
}

pub async fn retrieve(app: &App, merchant: &Merchant, id: &str) -> Answer {
    match app.store.get_payment(id).await? {
        Some(row) if row.merchant_id == merchant.id => Ok((StatusCode::OK, row.body.into())),
        Some(_) | None => Err(ApiError::not_found("payment", id)),
    }
}

pub fn list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery {
        limit: 10,
        starting_after: None,
        ending_before: None,
    };
    let bad = |message: String| ApiError::bad_request("invalid_query", message);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                out.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad("limit must be a whole number from 1 to 100".into()))?
            }
            "starting_after" if !value.is_empty() => out.starting_after = Some(value.to_string()),
            "ending_before" if !value.is_empty() => out.ending_before = Some(value.to_string()),
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(bad(format!("unknown or empty query parameter '{shown}'")));
            }
        }
    }
    Ok(out)
}

pub async fn list(app: &App, merchant: &Merchant, query: Option<&str>) -> Answer {
    let page = app
        .store
        .list_payments(&merchant.id, list_query(query)?)
        .await?;
    Ok((
        StatusCode::OK,
        list_body(page.rows.into_iter().map(|row| row.body), page.has_more),
    ))
}

/// The payment as the order actor holds it (404 for another merchant's).
async fn current(app: &App, merchant: &Merchant, id: &str) -> Result<Payment, ApiError> {
    app.ask(
        id,
        Get {
            merchant_id: Some(merchant.id.clone()),
        },
    )
    .await
    .map_err(|e| {
        if e.code == "resource_missing" {
            ApiError::not_found("payment", id)
        } else {
            e
        }
    })
}

fn settled_ops(payment: &Payment) -> bool {
    payment.pending.is_none()
}

/// A wallet payment's wallet must be the merchant's and hold the payment's currency; checked
/// before the order exists, so a wrong wallet creates nothing.
async fn check_wallet(app: &App, merchant: &Merchant, new: &NewPayment) -> Result<(), ApiError> {
    let wallet_id = new.wallet_id.as_deref().unwrap_or_default();
    let wallet = app.store.get_wallet(&merchant.id, wallet_id).await?;
    let Some(wallet) = wallet else {
        return Err(
            ApiError::unprocessable("wallet_not_found", "no such wallet").with_param("wallet_id"),
        );
    };
    if wallet.currency != new.amount.currency().code() {
        return Err(ApiError::unprocessable(
            "currency_mismatch",
            format!("the wallet holds {}", wallet.currency),
        )
        .with_param("currency"));
    }
    Ok(())
}

/// `POST /v1/payments/{id}/complete_revert` and `/reverse`: the card pre-authorisation
/// commands that undo. 200 with the outcome, 202 if the channel has not answered in `wait_ms`.
pub async fn undo(
    app: &App,
    merchant: &Merchant,
    id: &str,
    kind: UndoKind,
    body: &[u8],
    key: Option<&str>,
) -> Answer {
    let action = match kind {
        UndoKind::CompleteRevert => "complete_revert",
        UndoKind::Reversal => "reverse",
    };
    let undo = Undo {
        merchant_id: merchant.id.clone(),
        kind,
        settle: true,
        request: keyed_request(merchant, id, action, key),
    };
    run_command(app, merchant, id, body, undo).await
}

/// A command with no fields but `wait_ms` (cancel, complete_revert, reverse): sent to the
/// order, answered 200 with the outcome, or 202 if the channel has not answered in `wait_ms`.
async fn run_command<M>(app: &App, merchant: &Merchant, id: &str, body: &[u8], command: M) -> Answer
where
    M: actix::Message<Result = Result<OrderReply, OrderError>> + Send + 'static,
    PaymentOrder: actix::Handler<M>,
    <PaymentOrder as actix::Actor>::Context: actix::dev::ToEnvelope<PaymentOrder, M>,
{
    current(app, merchant, id).await?;
    let wait_ms = optional_wait_ms(body)?;
    let wait_ms = app.wait_ms(wait_ms)?;
    let reply = app.ask(id, command).await?;
    let payment = app.settle(reply, wait_ms).await;
    payment_answer(&payment, settled_ops(&payment), StatusCode::OK)
}

/// The name of a command sent under an Idempotency-Key: the order remembers it, so a retry
/// whose first answer was lost (a node died, a deadline passed) is answered, not refused.
fn keyed_request(merchant: &Merchant, id: &str, action: &str, key: Option<&str>) -> Option<String> {
    key.map(|key| derived_id("req_", &[action, &merchant.id, id, key]))
}

pub async fn capture(
    app: &App,
    merchant: &Merchant,
    id: &str,
    body: &[u8],
    key: Option<&str>,
) -> Answer {
    let payment = current(app, merchant, id).await?;
    let (amount, wait_ms) = parse_capture(body, payment.currency())?;
    let wait_ms = app.wait_ms(wait_ms)?;
    let reply = app
        .ask(
            id,
            Capture {
                merchant_id: merchant.id.clone(),
                amount,
                settle: true,
                request: keyed_request(merchant, id, "capture", key),
            },
        )
        .await?;
    let payment = app.settle(reply, wait_ms).await;
    payment_answer(&payment, settled_ops(&payment), StatusCode::OK)
}

pub async fn cancel(
    app: &App,
    merchant: &Merchant,
    id: &str,
    body: &[u8],
    key: Option<&str>,
) -> Answer {
    let cancel = Cancel {
        merchant_id: merchant.id.clone(),
        settle: true,
        request: keyed_request(merchant, id, "cancel", key),
    };
    run_command(app, merchant, id, body, cancel).await
}

/// `POST /v1/payments/{id}/confirm`: the customer finished the 3-D Secure step; Kassa asks
/// the channel for the outcome and answers with it (202 if it is not known within `wait_ms`).
pub async fn confirm(app: &App, merchant: &Merchant, id: &str, body: &[u8]) -> Answer {
    current(app, merchant, id).await?;
    let wait_ms = optional_wait_ms(body)?;
    let wait_ms = app.wait_ms(wait_ms)?;
    let confirm = Confirm {
        merchant_id: merchant.id.clone(),
        settle: true,
    };
    let reply = app.ask(id, confirm).await?;
    // 200 once the channel has answered (whatever it said), 202 if it has not within wait_ms.
    let (payment, done) = match reply.settled {
        None => (reply.payment, true),
        Some(answered) => {
            match tokio::time::timeout(std::time::Duration::from_millis(wait_ms), answered).await {
                Ok(Ok(payment)) => (payment, true),
                Ok(Err(_)) | Err(_) => (reply.payment, false),
            }
        }
    };
    payment_answer(&payment, done, StatusCode::OK)
}

/// A capture body: empty, or an optional partial `amount` (in the payment's `currency`) and
/// `wait_ms`.
pub fn parse_capture(
    body: &[u8],
    currency: Currency,
) -> Result<(Option<Money>, Option<u64>), ApiError> {
    let (amount, wait_ms) = match Fields::parse(body, true)? {
        None => (None, None),
        Some(mut f) => {
            let amount = f.amount("amount", false)?;
            let wait_ms = f.unsigned("wait_ms")?;
            f.finish()?;
            (amount, wait_ms)
        }
    };
    let amount = amount
        .map(|a| Money::parse_positive(&a, currency))
        .transpose()?;
    Ok((amount, wait_ms))
}

/// An empty body, or `{"wait_ms": N}` (cancel, confirm, complete_revert, reverse).
pub fn optional_wait_ms(body: &[u8]) -> Result<Option<u64>, ApiError> {
    match Fields::parse(body, true)? {
        None => Ok(None),
        Some(mut f) => {
            let wait_ms = f.unsigned("wait_ms")?;
            f.finish()?;
            Ok(wait_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(1_795_000_000), (2026, 11));
        assert_eq!(year_month(951_782_400), (2000, 2)); // 2000-02-29
    }

    #[test]
    fn list_query_bounds() {
        assert_eq!(list_query(Some("limit=5")).unwrap().limit, 5);
        assert!(list_query(Some("limit=0")).is_err());
        assert!(list_query(Some("limit=101")).is_err());
        assert!(list_query(Some("colour=red")).is_err());
        assert_eq!(list_query(None).unwrap().limit, 10);
    }
}
