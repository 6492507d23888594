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

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;

use crate::payment_order::{OrderDeps, OrderError, OrderStopped, Passivate, PaymentOrder};

/// Cheap to clone; usable from any thread or runtime.
#[derive(Clone)]
pub struct OrderDirectory {
    shards: Arc<Vec<Addr<OrderShard>>>,
}

impl OrderDirectory {
    /// Starts `shard_count` arbiters with one shard each, together keeping at most about
    /// `orders_live_max` live orders. Must run inside an actix `System`.
    pub fn start(
        deps: Arc<OrderDeps>,
        shard_count: usize,
        orders_live_max: usize,
    ) -> (OrderDirectory, Vec<Arbiter>) {
        let live_max = orders_live_max.div_ceil(shard_count.max(1)).max(1);
        let mut arbiters = Vec::with_capacity(shard_count.max(1));
        let mut shards = Vec::with_capacity(shard_count.max(1));
        for index in 0..shard_count.max(1) {
            let arbiter = Arbiter::new();
            let deps = deps.clone();
            shards.push(OrderShard::start_in_arbiter(&arbiter.handle(), move |_| {
                OrderShard {
                    index,
                    deps,
                    live_max,
                    orders: Lru {
                        tick: 0,
                        live: HashMap::new(),
                        queue: VecDeque::new(),
                    },
                    evicting: HashSet::new(),
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

/// Live orders of one shard, least recently used first.
///
/// `queue` holds (id, tick) in access order; an entry whose tick is older than the map's is
/// stale and skipped. It is compacted when it outgrows the map, so it stays O(live orders).
struct Lru {
    tick: u64,
    live: HashMap<String, LiveOrder>,
    queue: VecDeque<(String, u64)>,
}

impl Lru {
    fn touch(&mut self, id: &str, order: LiveOrder) {
        self.tick += 1;
        self.live.insert(
            id.to_string(),
            LiveOrder {
                tick: self.tick,
                ..order
            },
        );
        self.queue.push_back((id.to_string(), self.tick));
        if self.queue.len() > 2 * self.live.len() + LRU_SLACK {
            let live = &self.live;
            self.queue
                .retain(|(id, tick)| live.get(id).is_some_and(|o| o.tick == *tick));
        }
    }

    /// The least recently used live order, taken out of the queue.
    fn pop_oldest(&mut self) -> Option<(String, Addr<PaymentOrder>)> {
        while let Some((id, tick)) = self.queue.pop_front() {
            if let Some(order) = self.live.get(&id)
                && order.tick == tick
            {
                return Some((id, order.addr.clone()));
            }
        }
        None
    }
}

#[derive(Clone)]
struct LiveOrder {
    addr: Addr<PaymentOrder>,
    /// Messages announced to the order (see `PaymentOrder::announced`).
    announced: Arc<AtomicUsize>,
    tick: u64,
}

/// Stale queue entries tolerated before compaction.
const LRU_SLACK: usize = 1_024;

struct OrderShard {
    index: usize,
    deps: Arc<OrderDeps>,
    /// Live orders this shard keeps before passivating the least recently used.
    live_max: usize,
    orders: Lru,
    /// Asked to passivate, not stopped yet.
    evicting: HashSet<String>,
}

impl OrderShard {
    /// Asks the least recently used orders to passivate until the shard is within `live_max`.
    /// An order with work in flight passivates as soon as it is idle.
    fn evict(&mut self) {
        while self.orders.live.len().saturating_sub(self.evicting.len()) > self.live_max {
            let Some((id, addr)) = self.orders.pop_oldest() else {
                break;
            };
            if self.evicting.insert(id) {
                addr.do_send(Passivate);
            }
        }
    }
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
        let live = self
            .orders
            .live
            .get(&msg.id)
            .filter(|o| o.addr.connected())
            .cloned();
        let order = match live {
            Some(order) => order,
            None => {
                let on_stop = ctx.address().recipient();
                let actor = PaymentOrder::new(msg.id.clone(), self.deps.clone(), Some(on_stop));
                let announced = actor.announced();
                LiveOrder {
                    addr: actor.start(),
                    announced,
                    tick: 0,
                }
            }
        };
        // Counted here, on the order's own thread, before the caller can send: the order
        // cannot passivate between this answer and the caller's message.
        order.announced.fetch_add(1, Ordering::AcqRel);
        self.evicting.remove(&msg.id);
        let addr = order.addr.clone();
        self.orders.touch(&msg.id, order);
        self.evict();
        MessageResult(addr)
    }
}

impl Handler<OrderStopped> for OrderShard {
    type Result = ();

    fn handle(&mut self, msg: OrderStopped, _ctx: &mut Context<Self>) {
        // A newer actor for the same id may already be registered; keep that one.
        if self
            .orders
            .live
            .get(&msg.id)
            .is_some_and(|o| !o.addr.connected())
        {
            self.orders.live.remove(&msg.id);
            self.evicting.remove(&msg.id);
        }
    }
}

impl Handler<LiveOrders> for OrderShard {
    type Result = usize;

    fn handle(&mut self, _msg: LiveOrders, _ctx: &mut Context<Self>) -> usize {
        self.orders.live.len()
    }
}
