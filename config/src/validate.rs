//! Validation: every failure names the key and says what is wrong.

use std::net::SocketAddr;

use crate::{ConfigError, Settings};

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        source_name: "settings".into(),
        reason: reason.into(),
    }
}

pub(crate) fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("`{value}` is not an address like 127.0.0.1:8080"),
        )
    })
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// `http.tls`: the certificate and the key come together (the files themselves are read, and
/// their errors reported, when the server starts).
fn check_tls(s: &Settings) -> Result<(), ConfigError> {
    let tls = &s.http.tls;
    match (tls.cert_path.is_empty(), tls.key_path.is_empty()) {
        (true, false) => Err(invalid(
            "http.tls.cert_path",
            "must be set with http.tls.key_path (KASSA_HTTP_TLS_CERT_PATH)",
        )),
        (false, true) => Err(invalid(
            "http.tls.key_path",
            "must be set with http.tls.cert_path (KASSA_HTTP_TLS_KEY_PATH)",
        )),
        _ => Ok(()),
    }
}

fn check_cluster(s: &Settings) -> Result<(), ConfigError> {
    if s.mode != crate::Mode::Cluster {
        return Ok(());
    }
    let p = &s.postgres;
    if !(p.url.starts_with("postgres://") || p.url.starts_with("postgresql://")) {
        return Err(invalid(
            "postgres.url",
            "must be a postgres:// URL in cluster mode (KASSA_POSTGRES_URL)",
        ));
    }
    let identifier = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if p.schema.is_empty()
        || p.schema.len() > 63
        || p.schema.starts_with(|c: char| c.is_ascii_digit())
        || !p.schema.chars().all(identifier)
    {
        return Err(invalid(
            "postgres.schema",
            "must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 bytes)",
        ));
    }
    positive("postgres.pool_size_max", p.pool_size_max as u64)?;
    positive("postgres.statement_timeout_ms", p.statement_timeout_ms)?;
    positive("postgres.connect_timeout_ms", p.connect_timeout_ms)?;
    if s.notifications.transport != crate::NotificationTransport::Rabbitmq {
        return Err(invalid(
            "notifications.transport",
            "must be rabbitmq in cluster mode (KASSA_NOTIFICATIONS_TRANSPORT=rabbitmq): \
             with the embedded transport every node would scan and send the same outbox",
        ));
    }
    check_redis(s)
}

/// Redis is checked in cluster mode only (embedded mode never connects to it).
fn check_redis(s: &Settings) -> Result<(), ConfigError> {
    let r = &s.redis;
    if !r.url.starts_with("redis://") {
        return Err(invalid(
            "redis.url",
            "must be a redis:// URL in cluster mode (KASSA_REDIS_URL)",
        ));
    }
    let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if r.key_prefix.is_empty() || r.key_prefix.len() > 100 || !r.key_prefix.chars().all(name_ok) {
        return Err(invalid(
            "redis.key_prefix",
            "must be 1 to 100 letters, digits, '-', '_' or '.'",
        ));
    }
    positive("redis.command_timeout_ms", r.command_timeout_ms)?;
    positive("redis.connect_timeout_ms", r.connect_timeout_ms)?;
    positive("redis.reconnect_ms_max", r.reconnect_ms_max)?;
    positive("redis.idempotency_cache_ttl_ms", r.idempotency_cache_ttl_ms)?;
    let retention_ms = s.idempotency.retention_h.saturating_mul(3_600_000);
    if r.idempotency_cache_ttl_ms > retention_ms {
        return Err(invalid(
            "redis.idempotency_cache_ttl_ms",
            "must not exceed idempotency.retention_h (a cached response must not outlive its record)",
        ));
    }
    if r.inflight_lock_ms < r.command_timeout_ms.saturating_mul(3) {
        return Err(invalid(
            "redis.inflight_lock_ms",
            "must be at least 3 × redis.command_timeout_ms (the lock is renewed every third of \
             its lifetime, and a renewal may take a whole command timeout)",
        ));
    }
    Ok(())
}

pub(crate) fn check(s: &Settings) -> Result<(), ConfigError> {
    check_cluster(s)?;
    let http = socket_addr("http.addr", &s.http.addr)?;
    socket_addr("sandbox.addr", &s.sandbox.addr)?;
    check_tls(s)?;
    if !http.ip().is_loopback() && s.admin.token.is_empty() {
        return Err(invalid(
            "admin.token",
            format!(
                "must be set (KASSA_ADMIN_TOKEN) when http.addr ({http}) is not a loopback address"
            ),
        ));
    }
    if !s.admin.token.is_empty() && s.admin.token.len() < 16 {
        return Err(invalid("admin.token", "must be at least 16 characters"));
    }
    positive("http.body_limit_bytes", s.http.body_limit_bytes as u64)?;
    positive("http.header_read_timeout_ms", s.http.header_read_timeout_ms)?;
    positive("http.body_read_timeout_ms", s.http.body_read_timeout_ms)?;
    positive("http.request_timeout_ms", s.http.request_timeout_ms)?;
    positive("http.connections_max", s.http.connections_max as u64)?;
    positive("http.accept_backlog", u64::from(s.http.accept_backlog))?;
    positive(
        "http.requests_inflight_max",
        s.http.requests_inflight_max as u64,
    )?;
    check_rate(
        "http.merchant_requests_per_s",
        s.http.merchant_requests_per_s,
        "http.merchant_burst",
        s.http.merchant_burst,
    )?;
    check_rate(
        "http.ip_requests_per_s",
        s.http.ip_requests_per_s,
        "http.ip_burst",
        s.http.ip_burst,
    )?;
    if !(1..=3_600).contains(&s.http.signature_window_s) {
        return Err(invalid(
            "http.signature_window_s",
            "must be between 1 and 3600",
        ));
    }
    positive(
        "store.group_commit_batch_max",
        s.store.group_commit_batch_max as u64,
    )?;
    positive("store.write_queue_max", s.store.write_queue_max as u64)?;
    positive("store.readers", s.store.readers as u64)?;
    if s.store.data_dir.as_os_str().is_empty() {
        return Err(invalid("store.data_dir", "must not be empty"));
    }
    positive("payments.wait_ms_max", s.payments.wait_ms_max)?;
    if s.payments.wait_ms_default > s.payments.wait_ms_max {
        return Err(invalid(
            "payments.wait_ms_default",
            "must not exceed payments.wait_ms_max",
        ));
    }
    if s.idempotency.retention_h < 24 {
        return Err(invalid(
            "idempotency.retention_h",
            "must be at least 24 (keys are kept 24 h)",
        ));
    }
    positive(
        "idempotency.purge_interval_s",
        s.idempotency.purge_interval_s,
    )?;
    positive("orders.mailbox_capacity", s.orders.mailbox_capacity as u64)?;
    positive("orders.command_timeout_ms", s.orders.command_timeout_ms)?;
    positive(
        "orders.recovery_batch_max",
        u64::from(s.orders.recovery_batch_max),
    )?;
    positive("orders.order_idle_ms", s.orders.order_idle_ms)?;
    positive("orders.orders_live_max", s.orders.orders_live_max as u64)?;
    positive("orders.janitor_interval_ms", s.orders.janitor_interval_ms)?;
    positive(
        "orders.redrive_attempts_max",
        u64::from(s.orders.redrive_attempts_max),
    )?;
    if s.orders.redrive_schedule_ms.is_empty() || s.orders.redrive_schedule_ms.contains(&0) {
        return Err(invalid(
            "orders.redrive_schedule_ms",
            "must list at least one delay, each above 0",
        ));
    }
    for name in &s.sandbox.chaos_channels {
        if !s.channels.all().iter().any(|(known, _)| known == name) {
            return Err(invalid(
                "sandbox.chaos_channels",
                "each must be one of card, qr_wallet, app_wallet, bank_transfer",
            ));
        }
    }
    if s.sandbox.bank_callback_rate_percent > 100 {
        return Err(invalid(
            "sandbox.bank_callback_rate_percent",
            "must be at most 100",
        ));
    }
    for (name, channel) in s.channels.all() {
        check_channel(s, name, channel)?;
    }
    if s.sandbox.api_secret.is_empty() {
        return Err(invalid("sandbox.api_secret", "must not be empty"));
    }
    check_notifications(&s.notifications)
}

/// A front-door rate (0: off) and its burst, which must hold at least one request when the
/// rate is on.
fn check_rate(rate_key: &str, rate: u32, burst_key: &str, burst: u32) -> Result<(), ConfigError> {
    if rate > 0 && burst == 0 {
        return Err(invalid(
            burst_key,
            format!("must be at least 1 while {rate_key} is on (0 turns the limit off)"),
        ));
    }
    Ok(())
}

/// The most attempts one round of a delivery may make.
const NOTIFICATION_ATTEMPTS_MAX: usize = 100;
/// The longest one delay of the schedule (a week).
const NOTIFICATION_DELAY_MS_MAX: u64 = 7 * 24 * 3_600_000;

fn check_notifications(n: &crate::NotificationSettings) -> Result<(), ConfigError> {
    let schedule = &n.schedule_ms;
    if schedule.is_empty() || schedule.len() > NOTIFICATION_ATTEMPTS_MAX {
        return Err(invalid(
            "notifications.schedule_ms",
            format!("must list 1 to {NOTIFICATION_ATTEMPTS_MAX} delays"),
        ));
    }
    if schedule[0] != 0 {
        return Err(invalid(
            "notifications.schedule_ms",
            "the first delay must be 0 (an event's delivery is due as soon as it is written)",
        ));
    }
    if schedule.iter().any(|&ms| ms > NOTIFICATION_DELAY_MS_MAX) {
        return Err(invalid(
            "notifications.schedule_ms",
            format!("each delay must be at most {NOTIFICATION_DELAY_MS_MAX} ms (a week)"),
        ));
    }
    if n.jitter_percent > 100 {
        return Err(invalid(
            "notifications.jitter_percent",
            "must be at most 100",
        ));
    }
    positive("notifications.webhook_timeout_ms", n.webhook_timeout_ms)?;
    positive(
        "notifications.endpoint_inflight_max",
        n.endpoint_inflight_max as u64,
    )?;
    positive("notifications.inflight_max", n.inflight_max as u64)?;
    if n.inflight_max > usize::from(u16::MAX) {
        // Also the RabbitMQ consumer's prefetch, a 16-bit count.
        return Err(invalid(
            "notifications.inflight_max",
            format!("must be at most {}", u16::MAX),
        ));
    }
    if n.endpoint_inflight_max > n.inflight_max {
        return Err(invalid(
            "notifications.endpoint_inflight_max",
            "must not exceed notifications.inflight_max",
        ));
    }
    positive("notifications.poll_interval_ms", n.poll_interval_ms)?;
    positive("notifications.batch_max", u64::from(n.batch_max))?;
    check_rabbitmq(&n.rabbitmq)
}

fn check_rabbitmq(r: &crate::RabbitMqSettings) -> Result<(), ConfigError> {
    let key = |field: &str| format!("notifications.rabbitmq.{field}");
    if !(r.url.starts_with("amqp://") || r.url.starts_with("amqps://")) {
        return Err(invalid(&key("url"), "must be an amqp:// or amqps:// URL"));
    }
    let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if r.prefix.is_empty() || r.prefix.len() > 100 || !r.prefix.chars().all(name_ok) {
        return Err(invalid(
            &key("prefix"),
            "must be 1 to 100 letters, digits, '-', '_' or '.'",
        ));
    }
    positive(&key("work_queue_length_max"), r.work_queue_length_max)?;
    positive(&key("delay_queue_length_max"), r.delay_queue_length_max)?;
    positive(
        &key("dead_letter_queue_length_max"),
        r.dead_letter_queue_length_max,
    )?;
    positive(&key("endpoint_busy_delay_ms"), r.endpoint_busy_delay_ms)?;
    positive(&key("reconnect_ms_min"), r.reconnect_ms_min)?;
    if r.reconnect_ms_min > r.reconnect_ms_max {
        return Err(invalid(
            &key("reconnect_ms_min"),
            format!("must not exceed {}", key("reconnect_ms_max")),
        ));
    }
    positive(&key("confirm_timeout_ms"), r.confirm_timeout_ms)?;
    Ok(())
}

fn check_channel(s: &Settings, name: &str, c: &crate::AdapterSettings) -> Result<(), ConfigError> {
    let key = |field: &str| format!("channels.{name}.{field}");
    positive(&key("request_timeout_ms"), c.request_timeout_ms)?;
    if c.command_deadline_ms < c.request_timeout_ms {
        return Err(invalid(
            &key("command_deadline_ms"),
            format!("must be at least {}", key("request_timeout_ms")),
        ));
    }
    positive(&key("retry_attempts_max"), u64::from(c.retry_attempts_max))?;
    positive(&key("inflight_max"), c.inflight_max as u64)?;
    if c.backoff_ms_min > c.backoff_ms_max {
        return Err(invalid(
            &key("backoff_ms_min"),
            format!("must not exceed {}", key("backoff_ms_max")),
        ));
    }
    if name == "card" && c.enabled && c.base_url.is_empty() && !s.sandbox.enabled {
        return Err(invalid(
            &key("base_url"),
            "must be set when sandbox.enabled is false (no card channel to call)",
        ));
    }
    Ok(())
}
