//! The order directory and its shards: finding an order's actor, starting it on demand,
//! restarting it when it crashes, passivating it when idle or when a shard holds too many.
//!
//! Orders are sharded by a hash of their id over `orders.shards` arbiters (one thread each,
//! one per core by default). Each shard is a `simple_one_for_one` supervisor (OTP): its
//! order actors are dynamic, *transient* children keyed by order id. A crashed order is
//! restarted and rebuilds itself from the journal; a passivated one (a normal exit) is
//! forgotten until the next message starts it again. Too many crashes inside the shard's
//! intensity window and the shard gives up and escalates to the `orders` supervisor.
//!
//! ```text
//!  orders (one_for_one)
//!   ├── shard-0 (simple_one_for_one) ── pay_…, pay_…   (transient, on arbiter 0)
//!   └── shard-1 (simple_one_for_one) ── pay_…          (transient, on arbiter 1)
//!
//!  front-end ──Activate(id)──▶ shard[hash(id) % shards] ──start──▶ PaymentOrder(id)
//!      └──────────────── Create / Capture / Refund / Get ──────────────▲
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::dev::ArbiterHandle;
use actix::prelude::*;
use kassa_supervision::{
    Backoff, ChildExited, ChildRef, ChildSpec, ChildStart, DynamicChildren, DynamicDecision,
    DynamicSpec, EventBus, EventKind, ExitGuard, ExitReason, GetSnapshot, Intensity, RestartType,
    Shutdown, unix_now_ms,
};
use parking_lot::RwLock;

use crate::payment_order::{InjectPanic, OrderDeps, OrderError, Passivate, PaymentOrder};

/// Cheap to clone; usable from any thread or runtime. The shards' addresses are filled in
/// (and replaced after a shard restart) by the shards themselves.
#[derive(Clone)]
pub struct OrderDirectory {
    shards: Arc<RwLock<Vec<Option<Addr<OrderShard>>>>>,
}

/// How a shard supervises its orders.
#[derive(Clone, Copy, Debug)]
pub struct ShardLimits {
    /// Live orders the shard keeps before passivating the least recently used.
    pub live_max: usize,
    /// Order restarts allowed in the window before the shard gives up (escalates).
    pub intensity: Intensity,
}

impl OrderDirectory {
    pub fn new(shard_count: usize) -> OrderDirectory {
        OrderDirectory {
            shards: Arc::new(RwLock::new(vec![None; shard_count.max(1)])),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.read().len()
    }

    /// The shard (by index) an order id lives on.
    pub fn shard_of(&self, id: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        (hasher.finish() % self.shard_count() as u64) as usize
    }

    /// The child spec of shard `index`: started on `arbiter`, registered in this directory.
    pub fn shard_spec(
        &self,
        index: usize,
        arbiter: ArbiterHandle,
        deps: Arc<OrderDeps>,
        limits: ShardLimits,
    ) -> ChildSpec {
        let slots = self.shards.clone();
        ChildSpec::dynamic(format!("shard-{index}"), move |start: ChildStart| {
            let deps = deps.clone();
            let slots = slots.clone();
            let addr = OrderShard::start_in_arbiter(&arbiter, move |_| {
                OrderShard::new(index, deps, limits, start)
            });
            if let Some(slot) = slots.write().get_mut(index) {
                *slot = Some(addr.clone());
            }
            Ok(ChildRef::worker(&addr).with_snapshot(addr.clone().recipient()))
        })
    }

    fn shard(&self, index: usize) -> Option<Addr<OrderShard>> {
        self.shards.read().get(index).cloned().flatten()
    }

    /// The live actor of order `id`, started if needed, for a caller that will send it one
    /// message now: the order will not passivate before that message arrives.
    pub async fn order(&self, id: &str) -> Result<Addr<PaymentOrder>, OrderError> {
        self.activate_order(id, true).await
    }

    /// Starts order `id` if it is not live (it then re-drives whatever a channel owes it),
    /// without announcing a message.
    pub async fn wake(&self, id: &str) -> Result<(), OrderError> {
        self.activate_order(id, false).await.map(|_| ())
    }

    async fn activate_order(
        &self,
        id: &str,
        announce: bool,
    ) -> Result<Addr<PaymentOrder>, OrderError> {
        let shard = self
            .shard(self.shard_of(id))
            .ok_or_else(|| OrderError::Unavailable("order shard is not running".into()))?;
        shard
            .send(Activate {
                id: id.to_string(),
                announce,
            })
            .await
            .map_err(|_| OrderError::Unavailable("order shard is restarting".into()))?
    }

    /// Order actors alive right now, per shard.
    pub async fn live_orders(&self) -> Vec<usize> {
        let shards: Vec<_> = self.shards.read().clone();
        let mut counts = Vec::with_capacity(shards.len());
        for shard in shards {
            let count = match shard {
                Some(shard) => shard.send(LiveOrders).await.unwrap_or(0),
                None => 0,
            };
            counts.push(count);
        }
        counts
    }

    /// The supervision node of a live order (`None` if it is not live, e.g. passivated).
    pub async fn order_node(&self, id: &str) -> Option<kassa_supervision::NodeSnapshot> {
        let shard = self.shard(self.shard_of(id))?;
        shard
            .send(OrderNode { id: id.to_string() })
            .await
            .ok()
            .flatten()
    }

    /// Makes shard `index` itself panic (drills; `admin.faults_enabled`).
    pub fn inject_shard_panic(&self, index: usize) -> bool {
        match self.shard(index) {
            Some(shard) => {
                shard.do_send(InjectPanic);
                true
            }
            None => false,
        }
    }
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

#[derive(Clone)]
struct LiveOrder {
    addr: Addr<PaymentOrder>,
    /// Messages announced to the order (see `PaymentOrder::announced`).
    announced: Arc<AtomicUsize>,
    tick: u64,
}

/// Delay before an order restarts after a crash: grows per order, with jitter.
pub const ORDER_RESTART_BACKOFF: Backoff = Backoff::new(20, 5_000, true);

/// Stale queue entries tolerated before compaction.
const LRU_SLACK: usize = 1_024;

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

pub struct OrderShard {
    index: usize,
    path: String,
    name: String,
    deps: Arc<OrderDeps>,
    limits: ShardLimits,
    orders: Lru,
    /// Asked to passivate, not stopped yet.
    evicting: HashSet<String>,
    children: DynamicChildren,
    guard: ExitGuard,
    events: EventBus,
    started: Instant,
}

fn now_ms() -> u64 {
    u64::try_from(unix_now_ms()).unwrap_or(0)
}

impl OrderShard {
    fn new(
        index: usize,
        deps: Arc<OrderDeps>,
        limits: ShardLimits,
        start: ChildStart,
    ) -> OrderShard {
        let spec = DynamicSpec::new(RestartType::Transient)
            .with_intensity(limits.intensity)
            // A crash-looping order backs off (per order) instead of spinning.
            .with_backoff(ORDER_RESTART_BACKOFF)
            // Live orders plus those asked to passivate and not yet gone.
            .with_children_max(limits.live_max.saturating_mul(2).saturating_add(LRU_SLACK));
        let seed = now_ms() ^ (index as u64).rotate_left(32);
        OrderShard {
            index,
            name: format!("shard-{index}"),
            path: start.path,
            deps,
            limits,
            orders: Lru {
                tick: 0,
                live: HashMap::new(),
                queue: VecDeque::new(),
            },
            evicting: HashSet::new(),
            children: DynamicChildren::new(spec, seed),
            guard: start.guard,
            events: start.events,
            started: Instant::now(),
        }
    }

    /// Starts (or restarts) the actor of order `id` as a supervised child.
    fn start_order(&mut self, id: &str, ctx: &mut Context<Self>) -> Result<LiveOrder, OrderError> {
        let registration = self.children.register(id, now_ms()).map_err(|e| {
            OrderError::Unavailable(format!("order shard is full or stopping: {e}"))
        })?;
        let guard = ExitGuard::new(
            ctx.address().recipient(),
            id.to_string(),
            registration.generation,
        );
        let actor = PaymentOrder::new(id.to_string(), self.deps.clone(), Some(guard));
        let announced = actor.announced();
        let order = LiveOrder {
            addr: actor.start(),
            announced,
            tick: 0,
        };
        self.orders.touch(id, order.clone());
        if registration.restarted {
            self.events
                .emit(&format!("{}/{id}", self.path), EventKind::Restarted, None);
        }
        Ok(order)
    }

    /// Asks the least recently used orders to passivate until the shard is within `live_max`.
    /// An order with work in flight passivates as soon as it is idle.
    fn evict(&mut self) {
        while self.orders.live.len().saturating_sub(self.evicting.len()) > self.limits.live_max {
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
#[rtype(result = "Result<Addr<PaymentOrder>, OrderError>")]
struct Activate {
    id: String,
    /// The caller will send one message: count it so the order stays for it.
    announce: bool,
}

#[derive(Message)]
#[rtype(result = "usize")]
struct LiveOrders;

impl Handler<Activate> for OrderShard {
    type Result = Result<Addr<PaymentOrder>, OrderError>;

    fn handle(&mut self, msg: Activate, ctx: &mut Context<Self>) -> Self::Result {
        let live = self
            .orders
            .live
            .get(&msg.id)
            .filter(|o| o.addr.connected())
            .cloned();
        let order = match live {
            Some(order) => order,
            None => self.start_order(&msg.id, ctx)?,
        };
        // Counted here, on the order's own thread, before the caller can send: the order
        // cannot passivate between this answer and the caller's message.
        if msg.announce {
            order.announced.fetch_add(1, Ordering::AcqRel);
        }
        self.evicting.remove(&msg.id);
        let addr = order.addr.clone();
        self.orders.touch(&msg.id, order);
        self.evict();
        Ok(addr)
    }
}

impl Handler<ChildExited> for OrderShard {
    type Result = ();

    fn handle(&mut self, exit: ChildExited, ctx: &mut Context<Self>) {
        let path = format!("{}/{}", self.path, exit.child_id);
        let decision =
            self.children
                .on_exit(&exit.child_id, exit.generation, &exit.reason, now_ms());
        match decision {
            DynamicDecision::Ignore => {}
            DynamicDecision::Remove => {
                // Only forget the entry if it is this (stopped) actor, not a newer one.
                if self
                    .orders
                    .live
                    .get(&exit.child_id)
                    .is_some_and(|o| !o.addr.connected())
                {
                    self.orders.live.remove(&exit.child_id);
                }
                self.evicting.remove(&exit.child_id);
                if exit.reason == ExitReason::Normal {
                    self.events.emit(&path, EventKind::Passivated, None);
                }
            }
            DynamicDecision::Restart { delay_ms } => {
                self.events
                    .emit(&path, EventKind::Crashed, Some(exit.reason.to_string()));
                self.orders.live.remove(&exit.child_id);
                self.evicting.remove(&exit.child_id);
                let id = exit.child_id;
                ctx.run_later(Duration::from_millis(delay_ms), move |shard, ctx| {
                    // Started eagerly: it re-drives whatever the channel still owes.
                    if !shard.orders.live.contains_key(&id)
                        && let Err(e) = shard.start_order(&id, ctx)
                    {
                        tracing::warn!(order_id = %id, error = %e, "order restart refused");
                    }
                });
            }
            DynamicDecision::GiveUp => {
                self.events
                    .emit(&path, EventKind::Crashed, Some(exit.reason.to_string()));
                self.events
                    .emit(&self.path, EventKind::GaveUp, Some(exit.reason.to_string()));
                for (_, order) in self.orders.live.drain() {
                    order.addr.do_send(Shutdown);
                }
                self.guard.set_reason(ExitReason::Escalated(format!(
                    "order crash loop: {}",
                    exit.reason
                )));
                ctx.stop();
            }
        }
    }
}

impl Handler<Shutdown> for OrderShard {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        // Orders hold nothing that is not already in the journal: they just stop.
        for (_, order) in self.orders.live.drain() {
            order.addr.do_send(Shutdown);
        }
        self.guard.set_reason(ExitReason::Shutdown);
        ctx.stop();
    }
}

impl Handler<GetSnapshot> for OrderShard {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, request: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let uptime_ms = self.started.elapsed().as_millis() as u64;
        let mut node =
            self.children
                .node_snapshot(&self.path, &self.name, &request, uptime_ms, now_ms());
        for child in &mut node.children {
            if let Some(order) = self.orders.live.get(&child.name) {
                child.mailbox_depth = Some(order.announced.load(Ordering::Acquire) as u64);
            }
        }
        MessageResult(node)
    }
}

#[derive(Message)]
#[rtype(result = "Option<kassa_supervision::NodeSnapshot>")]
struct OrderNode {
    id: String,
}

impl Handler<OrderNode> for OrderShard {
    type Result = Option<kassa_supervision::NodeSnapshot>;

    fn handle(&mut self, msg: OrderNode, _ctx: &mut Context<Self>) -> Self::Result {
        let order = self.orders.live.get(&msg.id)?;
        let mut node = self
            .children
            .child_snapshot(&self.path, &msg.id, now_ms())?;
        node.mailbox_depth = Some(order.announced.load(Ordering::Acquire) as u64);
        Some(node)
    }
}

impl Handler<LiveOrders> for OrderShard {
    type Result = usize;

    fn handle(&mut self, _msg: LiveOrders, _ctx: &mut Context<Self>) -> usize {
        self.orders.live.len()
    }
}

impl Handler<InjectPanic> for OrderShard {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("injected fault in order shard {}", self.index);
    }
}
