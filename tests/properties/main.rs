//! Property tests of the parsers that take caller input: patterns, URLs,
//! page tokens and signature metadata. The properties live in `checks.rs`,
//! shared with the cargo-fuzz targets in `fuzz/`.

mod checks;

use proptest::prelude::*;

/// Text that is mostly well formed for the parser, sometimes not.
fn near(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![4 => valid, 1 => any::<String>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn patterns(
        text in near("(\\*|[a-c]{1,2})(\\.(\\*|[a-c]{1,2})){0,4}"),
        event in near("[a-c]{0,2}(\\.[a-c]{0,2}){0,5}"),
    ) {
        checks::pattern(&text, &event);
    }

    #[test]
    fn urls(text in near("(https?|ftp)://([a-z]{1,5}\\.)?[a-z0-9.:\\[\\]-]{1,20}(:[0-9]{1,5})?(/[a-z%#?@=]{0,6}){0,3}")) {
        checks::url(&text);
    }

    #[test]
    fn urls_with_addresses(a in any::<[u8; 4]>(), v6 in any::<[u16; 8]>(), port in any::<u16>()) {
        let v4 = std::net::Ipv4Addr::from(a);
        let v6 = std::net::Ipv6Addr::from(v6);
        checks::url(&format!("https://{v4}:{port}/hook"));
        checks::url(&format!("http://[{v6}]/hook"));
        checks::url(&format!("https://[::{v4}]/hook"));
        checks::url(&format!("https://[::ffff:{v4}]/hook"));
        // IPv4-compatible IPv6 (::/96) is internal whatever the IPv4 part.
        let deny = hookplane::domain::UrlPolicy { https_only: false, allow_private: false };
        let compatible = format!("https://[::{v4}]/hook");
        prop_assert!(
            hookplane::domain::CallbackUrl::parse(&compatible, deny).is_err(),
            "{} is refused", compatible
        );
    }

    #[test]
    fn page_tokens(scope in ".{0,20}", time in any::<i64>(), key in ".{0,40}", garbage in near("[A-Za-z0-9_-]{0,80}")) {
        checks::page_token(&scope, time, &key, &garbage);
    }

    #[test]
    fn signature_metadata(
        api_id in near("ak_test|[ -~]{0,130}"),
        timestamp in near("1800000[0-9]{3}|-?[0-9]{1,20}"),
        nonce in near("[A-Za-z0-9_-]{14,130}"),
        signature in near("[0-9a-f]{64}|[0-9a-fA-F]{0,70}"),
    ) {
        checks::signature_metadata(&api_id, &timestamp, &nonce, &signature);
    }
}
