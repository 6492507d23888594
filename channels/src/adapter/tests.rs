use super::*;

#[test]
fn full_jitter_stays_within_the_delay() {
    let jitter = Jitter {
        state: AtomicU64::new(7),
    };
    let mut seen_low = false;
    let mut seen_high = false;
    for _ in 0..1_000 {
        let drawn = jitter.full(Duration::from_millis(100));
        assert!(drawn <= Duration::from_millis(100));
        seen_low |= drawn < Duration::from_millis(50);
        seen_high |= drawn >= Duration::from_millis(50);
    }
    assert!(
        seen_low && seen_high,
        "jitter must spread over the whole range"
    );
    assert_eq!(jitter.full(Duration::ZERO), Duration::ZERO);
}

#[test]
fn config_bounds_are_checked() {
    assert_eq!(AdapterConfig::default().validate(), Ok(()));
    let bad = [
        AdapterConfig {
            request_timeout_ms: 0,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            retry_attempts_max: 0,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            retry_attempts_max: 21,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            backoff_ms_min: 2_000,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            inflight_max: 0,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            rate_per_s: 0,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            burst: 0,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            rate_wait_ms_max: RATE_WAIT_MS_LIMIT + 1,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            merchant_rate_per_s: Some(0),
            ..AdapterConfig::default()
        },
        AdapterConfig {
            breaker_min_calls: 51,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            breaker_failure_rate_percent: 0,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            breaker_open_ms: 0,
            ..AdapterConfig::default()
        },
        AdapterConfig {
            breaker_half_open_probes: 0,
            ..AdapterConfig::default()
        },
    ];
    for config in bad {
        assert!(config.validate().is_err(), "{config:?}");
        assert!(ChannelAdapter::new("http://127.0.0.1:9", "s", config).is_err());
    }
    assert_eq!(
        AdapterConfig {
            breaker_window_size: 0,
            ..AdapterConfig::default()
        }
        .validate(),
        Err(AdapterConfigError::InvalidBound {
            name: "breaker_window_size",
            reason: "must be between 1 and 10000",
        })
    );
}

#[test]
fn config_defaults_fill_what_a_file_leaves_out() {
    let config: AdapterConfig =
        serde_json::from_str(r#"{"rate_per_s": 5, "merchant_rate_per_s": 2}"#)
            .expect("a partial config");
    assert_eq!(
        config,
        AdapterConfig {
            rate_per_s: 5,
            merchant_rate_per_s: Some(2),
            ..AdapterConfig::default()
        }
    );
    let defaults = AdapterConfig::default();
    assert_eq!(
        (
            defaults.rate_per_s,
            defaults.burst,
            defaults.rate_wait_ms_max
        ),
        (1_000, 100, 200)
    );
    assert_eq!(
        (
            defaults.breaker_window_size,
            defaults.breaker_min_calls,
            defaults.breaker_failure_rate_percent,
            defaults.breaker_open_ms,
            defaults.breaker_half_open_probes,
        ),
        (50, 20, 50, 5_000, 3)
    );
    assert!(serde_json::from_str::<AdapterConfig>(r#"{"rate_per_second": 5}"#).is_err());
}

#[test]
fn health_starts_quiet_and_serialises_for_operators() {
    let adapter = ChannelAdapter::new("http://127.0.0.1:9", "s", AdapterConfig::default())
        .expect("valid adapter");
    let health = adapter.for_merchant("mch_1").health();
    assert_eq!(health, adapter.health(), "handles share one adapter");
    let json = serde_json::to_value(&health).expect("serialisable");
    assert_eq!(
        json,
        serde_json::json!({
            "inflight": 0,
            "inflight_max": 256,
            "rate_per_s": 1000,
            "burst": 100,
            "merchant_rate_per_s": null,
            "breaker": {
                "state": "closed",
                "failure_rate_percent": 0,
                "calls_in_window": 0,
                "opened_at_ms": null,
                "open_until_ms": null,
                "opens_total": 0,
            },
            "calls_total": 0,
            "failures_total": 0,
            "rejected_open_total": 0,
            "rejected_rate_total": 0,
            "rejected_inflight_total": 0,
        })
    );
}

#[test]
fn answers_are_health_and_only_sickness_is_a_failure() {
    let answered = Ok(WireResponse { body: Bytes::new() });
    assert_eq!(breaker_outcome(&answered), CallOutcome::Success);
    let table = [
        (ChannelError::Timeout, CallOutcome::Failure),
        (
            ChannelError::Connect("refused".into()),
            CallOutcome::Failure,
        ),
        (ChannelError::Server { status: 502 }, CallOutcome::Failure),
        (ChannelError::Unreadable("cut".into()), CallOutcome::Failure),
        (
            ChannelError::Rejected {
                status: 422,
                code: "invalid_amount".into(),
            },
            CallOutcome::Success,
        ),
        (
            ChannelError::RateLimited {
                retry_after_ms: None,
            },
            CallOutcome::Ignored,
        ),
        (ChannelError::Overloaded, CallOutcome::Ignored),
        (
            ChannelError::RateLimitedLocally { retry_after_ms: 1 },
            CallOutcome::Ignored,
        ),
        (
            ChannelError::CircuitOpen { retry_after_ms: 1 },
            CallOutcome::Ignored,
        ),
    ];
    for (error, outcome) in table {
        assert_eq!(breaker_outcome(&Err(error.clone())), outcome, "{error:?}");
    }
}

#[test]
fn base_urls_must_be_http_or_https() {
    assert_eq!(
        checked_base_url("http://127.0.0.1:8080/").as_deref(),
        Ok("http://127.0.0.1:8080")
    );
    assert_eq!(
        checked_base_url("https://acquirer.example").as_deref(),
        Ok("https://acquirer.example")
    );
    for url in [
        "ftp://x:1",
        "127.0.0.1:80",
        "http://x/api",
        "http://x?q=1",
        "not a url",
    ] {
        assert!(checked_base_url(url).is_err(), "{url}");
    }
}

#[test]
fn rate_limits_longer_than_the_ceiling_end_the_retries() {
    let adapter = ChannelAdapter::new("http://127.0.0.1:9", "s", AdapterConfig::default())
        .expect("valid adapter");
    let long = ChannelError::RateLimited {
        retry_after_ms: Some(5_000),
    };
    assert_eq!(
        adapter.next_delay(&long, Some(Duration::from_millis(50))),
        None
    );
    let short = ChannelError::RateLimited {
        retry_after_ms: Some(700),
    };
    let delay = adapter.next_delay(&short, Some(Duration::from_millis(50)));
    assert_eq!(delay, Some(Duration::from_millis(700)));
    assert_eq!(adapter.next_delay(&ChannelError::Timeout, None), None);
}
