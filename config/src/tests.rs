use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_run_embedded_with_no_file() {
    let s = Settings::load(None, env(&[])).expect("defaults are valid");
    assert_eq!(s.http.addr, "127.0.0.1:8080");
    assert_eq!(s.store.data_dir, PathBuf::from("./data"));
    assert_eq!(s.http.body_limit_bytes, 65_536);
    assert!(s.sandbox.enabled);
}

#[test]
fn env_overrides_by_path_and_alias() {
    let s = Settings::load(
        None,
        env(&[
            ("KASSA_HTTP_ADDR", "127.0.0.1:9090"),
            ("KASSA_DATA_DIR", "/tmp/kassa-x"),
            ("KASSA_ADMIN_TOKEN", "0123456789abcdef-token"),
            ("KASSA_CHANNELS_CARD_REQUEST_TIMEOUT_MS", "750"),
            ("KASSA_SANDBOX_ENABLED", "true"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.http.addr, "127.0.0.1:9090");
    assert_eq!(s.store.data_dir, PathBuf::from("/tmp/kassa-x"));
    assert_eq!(s.admin.token, "0123456789abcdef-token");
    assert_eq!(s.channels.card.request_timeout_ms, 750);
}

#[test]
fn bad_env_value_names_the_key() {
    let err = Settings::load(None, env(&[("KASSA_HTTP_BODY_LIMIT_BYTES", "lots")])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("http.body_limit_bytes"), "{text}");
    assert!(text.contains("KASSA_HTTP_BODY_LIMIT_BYTES"), "{text}");
}

#[test]
fn file_then_env() {
    let dir = std::env::temp_dir().join(format!("kassa-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kassa.toml");
    std::fs::write(
        &path,
        "[http]\naddr = \"127.0.0.1:7000\"\n[payments]\nwait_ms_default = 100\n",
    )
    .unwrap();
    let s = Settings::load(Some(&path), env(&[("KASSA_HTTP_ADDR", "127.0.0.1:7001")])).unwrap();
    assert_eq!(s.http.addr, "127.0.0.1:7001");
    assert_eq!(s.payments.wait_ms_default, 100);

    std::fs::write(&path, "[http]\nadress = \"x\"\n").unwrap();
    let err = Settings::load(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.adress"), "{err}");

    std::fs::write(&path, "[store]\ngroup_commit_batch_max = \"many\"\n").unwrap();
    let err = Settings::load(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("group_commit_batch_max"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn public_address_needs_admin_token() {
    let err = Settings::load(None, env(&[("KASSA_HTTP_ADDR", "0.0.0.0:8080")])).unwrap_err();
    assert!(err.to_string().contains("admin.token"), "{err}");
    Settings::load(
        None,
        env(&[
            ("KASSA_HTTP_ADDR", "0.0.0.0:8080"),
            ("KASSA_ADMIN_TOKEN", "a-long-enough-admin-token"),
        ]),
    )
    .expect("a token makes a public address fine");
}

#[test]
fn invalid_values_name_their_key() {
    for (var, value, key) in [
        ("KASSA_HTTP_ADDR", "localhost", "http.addr"),
        (
            "KASSA_PAYMENTS_WAIT_MS_DEFAULT",
            "999999",
            "payments.wait_ms_default",
        ),
        (
            "KASSA_IDEMPOTENCY_RETENTION_H",
            "1",
            "idempotency.retention_h",
        ),
        ("KASSA_STORE_READERS", "0", "store.readers"),
    ] {
        let err = Settings::load(None, env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{var}={value}: {err}");
    }
}

#[test]
fn lists_override_as_comma_separated_numbers() {
    let s = Settings::load(
        None,
        env(&[("KASSA_ORDERS_REDRIVE_SCHEDULE_MS", "500, 2000")]),
    )
    .unwrap();
    assert_eq!(s.orders.redrive_schedule_ms, [500, 2_000]);
    let err =
        Settings::load(None, env(&[("KASSA_ORDERS_REDRIVE_SCHEDULE_MS", "soon")])).unwrap_err();
    assert!(
        err.to_string().contains("orders.redrive_schedule_ms"),
        "{err}"
    );
    let err = Settings::load(None, env(&[("KASSA_ORDERS_REDRIVE_SCHEDULE_MS", "0")])).unwrap_err();
    assert!(
        err.to_string().contains("orders.redrive_schedule_ms"),
        "{err}"
    );
}

#[test]
fn lists_of_names_override_as_comma_separated_names() {
    let s = Settings::load(
        None,
        env(&[(
            "KASSA_SANDBOX_CHAOS_CHANNELS",
            "card, qr_wallet,bank_transfer",
        )]),
    )
    .unwrap();
    assert_eq!(
        s.sandbox.chaos_channels,
        ["card", "qr_wallet", "bank_transfer"]
    );
    let err =
        Settings::load(None, env(&[("KASSA_SANDBOX_CHAOS_CHANNELS", "card,telex")])).unwrap_err();
    assert!(err.to_string().contains("sandbox.chaos_channels"), "{err}");
}

#[test]
fn every_channel_has_its_own_settings() {
    let s = Settings::load(
        None,
        env(&[
            ("KASSA_CHANNELS_QR_WALLET_RATE_PER_S", "7"),
            ("KASSA_CHANNELS_BANK_TRANSFER_ENABLED", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(s.channels.qr_wallet.rate_per_s, 7);
    assert_eq!(s.channels.card.rate_per_s, 1_000);
    assert!(!s.channels.bank_transfer.enabled);
    let err = Settings::load(
        None,
        env(&[("KASSA_CHANNELS_APP_WALLET_INFLIGHT_MAX", "0")]),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("channels.app_wallet.inflight_max"),
        "{err}"
    );
}

#[test]
fn notifications_default_to_fifteen_attempts_over_three_days() {
    let s = Settings::load(None, env(&[])).unwrap();
    let n = &s.notifications;
    assert_eq!(n.schedule_ms.len(), 15);
    assert_eq!(n.schedule_ms[0], 0);
    let total_ms: u64 = n.schedule_ms.iter().sum();
    assert!((72..=80).contains(&(total_ms / 3_600_000)), "{total_ms}");
    assert_eq!(n.jitter_percent, 10);
    assert_eq!(n.webhook_timeout_ms, 10_000);
    assert_eq!(n.endpoint_inflight_max, 4);
    assert_eq!(n.inflight_max, 256);
    assert_eq!(n.poll_interval_ms, 1_000);
    assert_eq!(n.batch_max, 200);
}

#[test]
fn notifications_override_from_env_and_name_bad_keys() {
    let s = Settings::load(
        None,
        env(&[
            ("KASSA_NOTIFICATIONS_SCHEDULE_MS", "0,200,400,800"),
            ("KASSA_NOTIFICATIONS_JITTER_PERCENT", "0"),
            ("KASSA_NOTIFICATIONS_WEBHOOK_TIMEOUT_MS", "500"),
        ]),
    )
    .unwrap();
    assert_eq!(s.notifications.schedule_ms, [0, 200, 400, 800]);
    assert_eq!(s.notifications.jitter_percent, 0);
    assert_eq!(s.notifications.webhook_timeout_ms, 500);
    for (var, value, key) in [
        (
            "KASSA_NOTIFICATIONS_SCHEDULE_MS",
            "100,200",
            "notifications.schedule_ms",
        ),
        (
            "KASSA_NOTIFICATIONS_SCHEDULE_MS",
            "soon",
            "notifications.schedule_ms",
        ),
        (
            "KASSA_NOTIFICATIONS_JITTER_PERCENT",
            "150",
            "notifications.jitter_percent",
        ),
        (
            "KASSA_NOTIFICATIONS_WEBHOOK_TIMEOUT_MS",
            "0",
            "notifications.webhook_timeout_ms",
        ),
        (
            "KASSA_NOTIFICATIONS_INFLIGHT_MAX",
            "2",
            "notifications.endpoint_inflight_max",
        ),
        (
            "KASSA_NOTIFICATIONS_ENDPOINT_INFLIGHT_MAX",
            "0",
            "notifications.endpoint_inflight_max",
        ),
        (
            "KASSA_NOTIFICATIONS_POLL_INTERVAL_MS",
            "0",
            "notifications.poll_interval_ms",
        ),
        (
            "KASSA_NOTIFICATIONS_BATCH_MAX",
            "0",
            "notifications.batch_max",
        ),
    ] {
        let err = Settings::load(None, env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{var}={value}: {err}");
    }
}

#[test]
fn the_rabbitmq_transport_is_chosen_by_env_and_its_url_never_printed() {
    let s = Settings::load(
        None,
        env(&[
            ("KASSA_NOTIFICATIONS_TRANSPORT", "rabbitmq"),
            ("KASSA_AMQP_URL", "amqp://kassa:hunter2@10.0.0.5:5672/%2f"),
            ("KASSA_NOTIFICATIONS_RABBITMQ_PREFIX", "kassa-test-1"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.notifications.transport, NotificationTransport::Rabbitmq);
    assert_eq!(s.notifications.rabbitmq.prefix, "kassa-test-1");
    assert_eq!(
        s.notifications.rabbitmq.url,
        "amqp://kassa:hunter2@10.0.0.5:5672/%2f"
    );
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("amqp://kassa:***@10.0.0.5:5672/%2f"),
        "{shown}"
    );

    let bad = Settings::load(None, env(&[("KASSA_NOTIFICATIONS_TRANSPORT", "kafka")]));
    assert!(bad.is_err());
    let bad = Settings::load(
        None,
        env(&[("KASSA_NOTIFICATIONS_RABBITMQ_PREFIX", "has space")]),
    );
    let error = bad.expect_err("a prefix with a space").to_string();
    assert!(error.contains("notifications.rabbitmq.prefix"), "{error}");
}

#[test]
fn cluster_mode_needs_postgres_and_the_broker_transport() {
    let s = Settings::load(
        None,
        env(&[
            ("KASSA_MODE", "cluster"),
            (
                "KASSA_POSTGRES_URL",
                "postgres://kassa:s3cret@10.0.0.7:5432/payments",
            ),
            ("KASSA_NOTIFICATIONS_TRANSPORT", "rabbitmq"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.mode, Mode::Cluster);
    assert_eq!(
        s.postgres.url,
        "postgres://kassa:s3cret@10.0.0.7:5432/payments"
    );
    assert!(!format!("{s:?}").contains("s3cret"));

    let embedded_transport = Settings::load(None, env(&[("KASSA_MODE", "cluster")]));
    let error = embedded_transport
        .expect_err("embedded transport in a cluster")
        .to_string();
    assert!(error.contains("notifications.transport"), "{error}");
    let bad_schema = Settings::load(
        None,
        env(&[
            ("KASSA_MODE", "cluster"),
            ("KASSA_NOTIFICATIONS_TRANSPORT", "rabbitmq"),
            ("KASSA_POSTGRES_SCHEMA", "Robert'); DROP"),
        ]),
    );
    let error = bad_schema
        .expect_err("a schema that is no identifier")
        .to_string();
    assert!(error.contains("postgres.schema"), "{error}");
    // Embedded mode ignores the postgres section.
    assert!(Settings::load(None, env(&[("KASSA_POSTGRES_URL", "nonsense")])).is_ok());
}

/// The environment of a valid cluster, plus `extra`.
fn cluster_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("KASSA_MODE", "cluster"),
        ("KASSA_NOTIFICATIONS_TRANSPORT", "rabbitmq"),
    ];
    pairs.extend_from_slice(extra);
    env(&pairs)
}

#[test]
fn redis_defaults_are_local_with_bounds_in_their_units() {
    let s = Settings::load(None, cluster_env(&[])).expect("the defaults make a valid cluster");
    let r = &s.redis;
    assert_eq!(r.url, "redis://127.0.0.1:6379");
    assert_eq!(r.key_prefix, "kassa");
    assert_eq!(r.command_timeout_ms, 250);
    assert_eq!(r.connect_timeout_ms, 1_000);
    assert_eq!(r.reconnect_ms_max, 2_000);
    assert_eq!(r.idempotency_cache_ttl_ms, 3_600_000);
    assert_eq!(r.inflight_lock_ms, 5_000);
}

#[test]
fn redis_overrides_from_env_and_its_url_is_never_printed() {
    let s = Settings::load(
        None,
        cluster_env(&[
            ("KASSA_REDIS_URL", "redis://kassa:hunter2@10.0.0.9:6380/2"),
            ("KASSA_REDIS_KEY_PREFIX", "kassa-test-7"),
            ("KASSA_REDIS_COMMAND_TIMEOUT_MS", "80"),
            ("KASSA_REDIS_IDEMPOTENCY_CACHE_TTL_MS", "60000"),
            ("KASSA_REDIS_INFLIGHT_LOCK_MS", "90000"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.redis.url, "redis://kassa:hunter2@10.0.0.9:6380/2");
    assert_eq!(s.redis.key_prefix, "kassa-test-7");
    assert_eq!(s.redis.command_timeout_ms, 80);
    assert_eq!(s.redis.idempotency_cache_ttl_ms, 60_000);
    assert_eq!(s.redis.inflight_lock_ms, 90_000);
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("redis://kassa:***@10.0.0.9:6380/2"),
        "{shown}"
    );
    // Redis' own habit: a password with no user name.
    let s = Settings::load(
        None,
        cluster_env(&[("KASSA_REDIS_URL", "redis://:hunter2@10.0.0.9")]),
    )
    .expect("valid");
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn cluster_mode_needs_a_redis_url_and_sane_redis_bounds() {
    for (var, value, key) in [
        ("KASSA_REDIS_URL", "http://127.0.0.1:6379", "redis.url"),
        ("KASSA_REDIS_URL", "", "redis.url"),
        ("KASSA_REDIS_KEY_PREFIX", "has space", "redis.key_prefix"),
        ("KASSA_REDIS_KEY_PREFIX", "", "redis.key_prefix"),
        (
            "KASSA_REDIS_COMMAND_TIMEOUT_MS",
            "0",
            "redis.command_timeout_ms",
        ),
        (
            "KASSA_REDIS_CONNECT_TIMEOUT_MS",
            "0",
            "redis.connect_timeout_ms",
        ),
        (
            "KASSA_REDIS_RECONNECT_MS_MAX",
            "0",
            "redis.reconnect_ms_max",
        ),
        (
            "KASSA_REDIS_IDEMPOTENCY_CACHE_TTL_MS",
            "0",
            "redis.idempotency_cache_ttl_ms",
        ),
        (
            // Longer than the 24 h the store keeps a key.
            "KASSA_REDIS_IDEMPOTENCY_CACHE_TTL_MS",
            "86400001",
            "redis.idempotency_cache_ttl_ms",
        ),
        (
            // Shorter than three command timeouts (250 ms by default): renewals could not land.
            "KASSA_REDIS_INFLIGHT_LOCK_MS",
            "700",
            "redis.inflight_lock_ms",
        ),
    ] {
        let err = Settings::load(None, cluster_env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{var}={value}: {err}");
    }
    // A shorter command timeout allows a shorter lock.
    Settings::load(
        None,
        cluster_env(&[
            ("KASSA_REDIS_COMMAND_TIMEOUT_MS", "100"),
            ("KASSA_REDIS_INFLIGHT_LOCK_MS", "300"),
        ]),
    )
    .expect("a lock of three command timeouts");
    // Embedded mode never connects to Redis and ignores its section.
    assert!(Settings::load(None, env(&[("KASSA_REDIS_URL", "nonsense")])).is_ok());
}

#[test]
fn front_door_rate_limits_default_generous_override_from_env_and_zero_turns_them_off() {
    let s = Settings::load(None, env(&[])).expect("defaults are valid");
    assert_eq!(
        (s.http.merchant_requests_per_s, s.http.merchant_burst),
        (5_000, 10_000)
    );
    assert_eq!(
        (s.http.ip_requests_per_s, s.http.ip_burst),
        (20_000, 40_000)
    );
    let s = Settings::load(
        None,
        env(&[
            ("KASSA_HTTP_MERCHANT_REQUESTS_PER_S", "2"),
            ("KASSA_HTTP_MERCHANT_BURST", "3"),
            ("KASSA_HTTP_IP_REQUESTS_PER_S", "0"),
            ("KASSA_HTTP_IP_BURST", "0"),
        ]),
    )
    .expect("valid: an ip rate of 0 is off, and then its burst does not matter");
    assert_eq!(
        (s.http.merchant_requests_per_s, s.http.merchant_burst),
        (2, 3)
    );
    assert_eq!((s.http.ip_requests_per_s, s.http.ip_burst), (0, 0));
    for (var, key) in [
        ("KASSA_HTTP_MERCHANT_BURST", "http.merchant_burst"),
        ("KASSA_HTTP_IP_BURST", "http.ip_burst"),
    ] {
        let err = Settings::load(None, env(&[(var, "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{var}=0: {err}");
    }
    let err = Settings::load(None, env(&[("KASSA_HTTP_IP_REQUESTS_PER_S", "-1")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.ip_requests_per_s"), "{err}");
}
