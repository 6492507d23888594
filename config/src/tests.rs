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
