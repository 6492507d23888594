//! The state every request shares, and asking an order actor with a deadline.

use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Handler, Message};
use kassa_actors::clock::Clock;
use kassa_actors::order_directory::OrderDirectory;
use kassa_actors::payment::Payment;
use kassa_actors::payment_order::{OrderError, OrderReply, PaymentOrder};
use kassa_config::Settings;
use kassa_store::Store;

use crate::http::error::ApiError;
use crate::idempotency::Idempotency;
use crate::merchants::Merchants;

pub struct App {
    pub settings: Settings,
    pub metrics: crate::metrics::Metrics,
    /// Present when `admin.faults_enabled`: the store wrapper that can fail appends on request.
    pub faults: Option<Arc<crate::faults::FaultyStore>>,
    /// The channel of each payment method (and, for operators, their adapters).
    pub channels: Arc<kassa_actors::channel_port::ChannelPorts>,
    /// Supervision events (for `/admin/events` and the dashboard).
    pub events: kassa_supervision::EventBus,
    /// Workers of the tree by path (fault drills).
    pub workers: crate::tree::WorkerRegistry,
    /// The multi-threaded runtime that runs HTTP and outbound I/O.
    pub io: tokio::runtime::Handle,
    /// True while no accept loop serves (shutdown, or an http restart): long-lived responses
    /// (the event stream) end, so they never hold up a drain.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// The root supervisor, once the tree has started.
    pub root: std::sync::OnceLock<actix::Addr<kassa_supervision::Supervisor>>,
    pub store: Arc<dyn Store>,
    pub directory: OrderDirectory,
    pub merchants: Merchants,
    pub methods: crate::methods::Methods,
    pub idempotency: Idempotency,
    /// The bound on merchant API requests in progress (`http.requests_inflight_max`).
    pub admission: crate::http::admission::Admission,
    /// The per-IP and per-merchant request limits (`http.*_requests_per_s`).
    pub front_limits: crate::http::rate_limit::FrontLimits,
    /// Cluster mode's Redis (idempotency locks and cache, shared rate limits); `None` in
    /// embedded mode.
    pub redis: Option<Arc<crate::redis::Redis>>,
    pub clock: Arc<dyn Clock>,
    /// Wakes the notifier's dispatcher (new events, a replay, a resend) before its next poll.
    pub notifier_due: Arc<tokio::sync::Notify>,
}

impl App {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Something is due for delivery now: the dispatcher should look before its next poll.
    pub fn notifier_wake(&self) {
        self.notifier_due.notify_one();
    }

    /// Sends `msg` to order `id`'s actor (starting it if needed), within `orders.command_timeout_ms`.
    pub async fn ask<M, R>(&self, id: &str, msg: M) -> Result<R, ApiError>
    where
        M: Message<Result = Result<R, OrderError>> + Send + 'static,
        R: Send + 'static,
        PaymentOrder: Handler<M>,
        <PaymentOrder as Actor>::Context: ToEnvelope<PaymentOrder, M>,
    {
        let addr = self.directory.order(id).await?;
        let deadline = Duration::from_millis(self.settings.orders.command_timeout_ms);
        match tokio::time::timeout(deadline, addr.send(msg)).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(_mailbox)) => Err(ApiError::unavailable(
                "overloaded",
                "the order is busy; retry shortly",
            )),
            Err(_elapsed) => Err(ApiError::unavailable(
                "overloaded",
                "the order did not answer in time; retry",
            )),
        }
    }

    /// The payment once `reply` settles, or as it is when `wait_ms` runs out.
    pub async fn settle(&self, reply: OrderReply, wait_ms: u64) -> Payment {
        match reply.settled {
            Some(rx) => match tokio::time::timeout(Duration::from_millis(wait_ms), rx).await {
                Ok(Ok(settled)) => settled,
                Ok(Err(_)) | Err(_) => reply.payment,
            },
            None => reply.payment,
        }
    }

    /// The `wait_ms` a request asked for, within bounds.
    pub fn wait_ms(&self, asked: Option<u64>) -> Result<u64, ApiError> {
        let max = self.settings.payments.wait_ms_max;
        match asked {
            None => Ok(self.settings.payments.wait_ms_default),
            Some(ms) if ms <= max => Ok(ms),
            Some(_) => Err(ApiError::unprocessable(
                "wait_ms_invalid",
                format!("wait_ms must be at most {max}"),
            )
            .with_param("wait_ms")),
        }
    }
}
