//! The order directory: finds an order's actor, starting it on demand.
//!
//! Orders are sharded by a hash of their id over `shards` arbiters (one thread each,
//! one per core by default). Each shard is an actor that owns the map from order id to
//! the live `PaymentOrder` on its arbiter; an order not in memory is started there and
//! rebuilds itself from its journal before it handles its first message.
//!
//! ```text
//!  front-end ──Activate(id)──▶ OrderShard[hash(id) % shards] ──start──▶ PaymentOrder(id)
//!      └──────────────── Create / Capture / Refund / Get ─────────────────▲
//! ```

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use actix::prelude::*;

use crate::payment_order::{OrderDeps, OrderError, OrderStopped, PaymentOrder};

/// Cheap to clone; usable from any thread or runtime.
#[derive(Clone)]
pub struct OrderDirectory {
    shards: Arc<Vec<Addr<OrderShard>>>,
}

impl OrderDirectory {
    /// Starts `shard_count` arbiters with one shard each. Must run inside an actix `System`.
    pub fn start(deps: Arc<OrderDeps>, shard_count: usize) -> (OrderDirectory, Vec<Arbiter>) {
        let mut arbiters = Vec::with_capacity(shard_count.max(1));
        let mut shards = Vec::with_capacity(shard_count.max(1));
        for index in 0..shard_count.max(1) {
            let arbiter = Arbiter::new();
            let deps = deps.clone();
            shards.push(OrderShard::start_in_arbiter(&arbiter.handle(), move |_| {
                OrderShard {
                    index,
                    deps,
                    orders: HashMap::new(),
                }
            }));
            arbiters.push(arbiter);
        }
        (
            OrderDirectory {
                shards: Arc::new(shards),
            },
            arbiters,
        )
    }

    /// The live actor of order `id`, started if needed.
    pub async fn order(&self, id: &str) -> Result<Addr<PaymentOrder>, OrderError> {
        let shard = &self.shards[shard_of(id, self.shards.len())];
        shard
            .send(Activate { id: id.to_string() })
            .await
            .map_err(|_| OrderError::Unavailable("order shard is not running".into()))
    }

    /// Order actors alive right now, per shard.
    pub async fn live_orders(&self) -> Vec<usize> {
        let mut counts = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            counts.push(shard.send(LiveOrders).await.unwrap_or(0));
        }
        counts
    }
}

fn shard_of(id: &str, shards: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    (hasher.finish() % shards.max(1) as u64) as usize
}

struct OrderShard {
    index: usize,
    deps: Arc<OrderDeps>,
    orders: HashMap<String, Addr<PaymentOrder>>,
}

impl Actor for OrderShard {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(shard = self.index, "order shard started");
    }
}

#[derive(Message)]
#[rtype(result = "Addr<PaymentOrder>")]
struct Activate {
    id: String,
}

#[derive(Message)]
#[rtype(result = "usize")]
struct LiveOrders;

impl Handler<Activate> for OrderShard {
    type Result = MessageResult<Activate>;

    fn handle(&mut self, msg: Activate, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.orders.get(&msg.id).filter(|addr| addr.connected()) {
            return MessageResult(addr.clone());
        }
        let on_stop = ctx.address().recipient();
        let addr = PaymentOrder::new(msg.id.clone(), self.deps.clone(), Some(on_stop)).start();
        self.orders.insert(msg.id, addr.clone());
        MessageResult(addr)
    }
}

impl Handler<OrderStopped> for OrderShard {
    type Result = ();

    fn handle(&mut self, msg: OrderStopped, _ctx: &mut Context<Self>) {
        // A newer actor for the same id may already be registered; keep that one.
        if self
            .orders
            .get(&msg.id)
            .is_some_and(|addr| !addr.connected())
        {
            self.orders.remove(&msg.id);
        }
    }
}

impl Handler<LiveOrders> for OrderShard {
    type Result = usize;

    fn handle(&mut self, _msg: LiveOrders, _ctx: &mut Context<Self>) -> usize {
        self.orders.len()
    }
}
