//! ResolveSubscribers' answer, written from the index straight into its
//! protobuf encoding.
//!
//! Built the usual way, an answer of ten targets is some seventy strings
//! copied out of the index, a message that owns them, its encoding, and
//! seventy frees: on the hottest call of the service, for bytes the index
//! already holds. Here each target's fields are encoded from the index's
//! own strings while the tenant's index is read-locked, into one buffer,
//! and the server's generated code (see `build.rs`) sends that buffer as the
//! response message. Clients see the ordinary `ResolveSubscribersResponse`:
//! the bytes are what prost writes for it, field by field.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};

use crate::resolve::Match;

/// `ResolveSubscribersResponse` fields.
const TARGETS: u32 = 1;
const REVISION: u32 = 2;
const NEXT_PAGE_TOKEN: u32 = 3;

/// `ResolveSubscribersResponse.Target` fields.
const SUBSCRIPTION_ID: u32 = 1;
const ENDPOINT_ID: u32 = 2;
const NAME: u32 = 3;
const URL: u32 = 4;
const MATCHED_PATTERN: u32 = 5;
const SIGNING_SECRETS: u32 = 6;

/// An encoded `ResolveSubscribersResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedResolve(Vec<u8>);

impl EncodedResolve {
    /// The answer listing `matches` in order, as of `revision`, with the
    /// token of the page after it (empty: none).
    pub fn new(matches: &[Match<'_>], revision: i64, next_page_token: &str) -> Self {
        let mut buf = Vec::with_capacity(matches.len() * 256 + 16);
        for m in matches {
            let len = string_len(SUBSCRIPTION_ID, m.subscription_id())
                + string_len(ENDPOINT_ID, m.endpoint_id())
                + string_len(NAME, m.name())
                + string_len(URL, m.url())
                + string_len(MATCHED_PATTERN, m.matched_pattern())
                + m.signing_secrets()
                    .map(|s| element_len(SIGNING_SECRETS, s))
                    .sum::<usize>();
            encode_key(TARGETS, WireType::LengthDelimited, &mut buf);
            encode_varint(len as u64, &mut buf);
            string(SUBSCRIPTION_ID, m.subscription_id(), &mut buf);
            string(ENDPOINT_ID, m.endpoint_id(), &mut buf);
            string(NAME, m.name(), &mut buf);
            string(URL, m.url(), &mut buf);
            string(MATCHED_PATTERN, m.matched_pattern(), &mut buf);
            for secret in m.signing_secrets() {
                element(SIGNING_SECRETS, secret, &mut buf);
            }
        }
        if revision != 0 {
            encode_key(REVISION, WireType::Varint, &mut buf);
            // int64 is encoded as its two's-complement u64, as prost does.
            encode_varint(revision as u64, &mut buf);
        }
        string(NEXT_PAGE_TOKEN, next_page_token, &mut buf);
        EncodedResolve(buf)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A proto3 string field: left out when empty.
fn string(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        element(tag, value, buf);
    }
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        element_len(tag, value)
    }
}

/// One element of a repeated string field: written even when empty.
fn element(tag: u32, value: &str, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value.as_bytes());
}

fn element_len(tag: u32, value: &str) -> usize {
    key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
}

/// The generated message's target, for callers that hold owned targets
/// (the tests and the micro-benchmarks compare against this form).
impl From<crate::resolve::Target> for crate::proto::resolve_subscribers_response::Target {
    fn from(t: crate::resolve::Target) -> Self {
        Self {
            subscription_id: t.subscription_id,
            endpoint_id: t.endpoint_id,
            name: t.name,
            url: t.url,
            matched_pattern: t.matched_pattern,
            signing_secrets: t.signing_secrets,
        }
    }
}

impl prost::Message for EncodedResolve {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Keeps the answer's fields as they come (the bench and tests decode
    /// with the generated message; this is for completeness).
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            TARGETS | NEXT_PAGE_TOKEN => keep(Field::Bytes, tag, wire_type, buf, ctx, &mut self.0)?,
            REVISION => keep(Field::Int64, tag, wire_type, buf, ctx, &mut self.0)?,
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// `BatchResolveSubscribersResponse` fields.
const ANSWERS: u32 = 1;
const BATCH_REVISION: u32 = 2;

/// An encoded `BatchResolveSubscribersResponse`, written an answer at a
/// time as [`EncodedResolve`] writes one: a batch of a hundred answers
/// would otherwise copy thousands of strings out of the index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedBatchResolve(Vec<u8>);

impl EncodedBatchResolve {
    /// Appends the next answer: `matches` as of `revision`, with the token
    /// of its next page (empty: none).
    pub fn push(&mut self, matches: &[Match<'_>], revision: i64, next_page_token: &str) {
        let answer = EncodedResolve::new(matches, revision, next_page_token);
        encode_key(ANSWERS, WireType::LengthDelimited, &mut self.0);
        encode_varint(answer.0.len() as u64, &mut self.0);
        self.0.extend_from_slice(&answer.0);
    }

    /// The response, its answers all at `revision`.
    pub fn finish(mut self, revision: i64) -> Self {
        if revision != 0 {
            encode_key(BATCH_REVISION, WireType::Varint, &mut self.0);
            encode_varint(revision as u64, &mut self.0);
        }
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl prost::Message for EncodedBatchResolve {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Keeps the fields as they come (for completeness, as for
    /// [`EncodedResolve`]).
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            ANSWERS => keep(Field::Bytes, tag, wire_type, buf, ctx, &mut self.0)?,
            BATCH_REVISION => keep(Field::Int64, tag, wire_type, buf, ctx, &mut self.0)?,
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// How a kept field is encoded.
enum Field {
    /// Length-delimited: a string, bytes or an embedded message.
    Bytes,
    Int64,
}

/// Decodes one field of an encoded answer and writes it back as it came:
/// what both answers' `merge_field` do with a field they know.
fn keep(
    field: Field,
    tag: u32,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
    out: &mut Vec<u8>,
) -> Result<(), prost::DecodeError> {
    match field {
        Field::Bytes => {
            let mut value = Vec::new();
            prost::encoding::bytes::merge(wire_type, &mut value, buf, ctx)?;
            prost::encoding::bytes::encode(tag, &value, out);
        }
        Field::Int64 => {
            let mut value = 0;
            prost::encoding::int64::merge(wire_type, &mut value, buf, ctx)?;
            prost::encoding::int64::encode(tag, &value, out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::ResolveSubscribersResponse;
    use crate::repository::Snapshot;
    use crate::resolve::ResolveIndex;
    use crate::resolve::fixtures::{endpoint, subscription, tenant};

    /// Three subscriptions of "acme" on two endpoints: one URL long enough
    /// for a two-byte length, a name outside ASCII, one without a name.
    fn index() -> ResolveIndex {
        let long_url = format!("https://a.example/{}", "x".repeat(150));
        let mut named = subscription("sub_1", "ep_a", Some("Bestellungen – für Zürich"), 10);
        named.event_types = vec!["invoice.*".into(), "order.created".into()];
        let index = ResolveIndex::default();
        index.set_catalog([("order.created".to_owned(), false)].into_iter().collect());
        let snapshot = Snapshot {
            tenants: vec![tenant()],
            endpoints: vec![
                endpoint("ep_a", &long_url, true),
                endpoint("ep_b", "https://b.example/hook", true),
            ],
            subscriptions: vec![
                named,
                subscription("sub_2", "ep_b", None, 20),
                subscription("sub_3", "ep_a", Some("third"), 30),
            ],
        };
        index.load_tenant("acme", snapshot, 0);
        index
    }

    /// What prost writes for the same answer built as owned targets.
    fn prost_bytes(index: &ResolveIndex, event_type: &str, now: i64, secrets: bool) -> Vec<u8> {
        let (targets, revision) = index.resolve("acme", event_type, now, secrets).unwrap();
        let targets = targets.into_iter().map(Into::into).collect();
        ResolveSubscribersResponse {
            targets,
            revision,
            next_page_token: TOKEN.to_owned(),
        }
        .encode_to_vec()
    }

    /// Every answer here names a next page, so the token's bytes are
    /// checked too.
    const TOKEN: &str = "next-page-token";

    fn encoded(index: &ResolveIndex, event_type: &str, now: i64, secrets: bool) -> Vec<u8> {
        let answer = index.resolve_with("acme", event_type, now, secrets, |m, revision| {
            EncodedResolve::new(m, revision, TOKEN)
        });
        answer.unwrap().as_bytes().to_vec()
    }

    #[test]
    fn the_answer_is_byte_for_byte_what_prost_writes() {
        let index = index();
        index.mark_applied(300);
        // Both secrets, only the current one (the previous expired at
        // 2_000), and none.
        for (now, secrets) in [(1_000, true), (3_000, true), (1_000, false)] {
            assert_eq!(
                encoded(&index, "order.created", now, secrets),
                prost_bytes(&index, "order.created", now, secrets),
                "now {now}, secrets {secrets}"
            );
        }

        let answer = encoded(&index, "order.created", 1_000, true);
        let decoded = ResolveSubscribersResponse::decode(&answer[..]).expect("decodes");
        assert_eq!(decoded.revision, 300);
        let ids: Vec<&str> = decoded
            .targets
            .iter()
            .map(|t| t.subscription_id.as_str())
            .collect();
        assert_eq!(ids, ["sub_1", "sub_2", "sub_3"]);
        let first = &decoded.targets[0];
        assert_eq!(first.name, "Bestellungen – für Zürich");
        assert_eq!(first.matched_pattern, "order.created");
        assert_eq!(first.url.len(), 168);
        assert_eq!(
            first.signing_secrets,
            ["secret-of-ep_a", "old-secret-of-ep_a"]
        );
        assert_eq!(decoded.targets[1].name, "");
        assert_eq!(decoded.targets[1].matched_pattern, "order.*");
    }

    #[test]
    fn an_answer_without_targets_carries_the_revision_and_token_alone() {
        let index = index();
        let empty = index.resolve_with("acme", "order.created.unknown", 1_000, true, |m, r| {
            EncodedResolve::new(m, r, "")
        });
        assert!(empty.unwrap().as_bytes().is_empty());
        index.mark_applied(1 << 40);
        let answer = encoded(&index, "order.created.unknown", 1_000, true);
        assert_eq!(
            answer,
            prost_bytes(&index, "order.created.unknown", 1_000, true)
        );
        let decoded = ResolveSubscribersResponse::decode(&answer[..]).expect("decodes");
        assert_eq!((decoded.targets.len(), decoded.revision), (0, 1 << 40));
    }

    #[test]
    fn a_batch_is_byte_for_byte_what_prost_writes() {
        use crate::proto::BatchResolveSubscribersResponse;
        let index = index();
        index.mark_applied(42);
        let mut batch = EncodedBatchResolve::default();
        let mut answers = Vec::new();
        for (event_type, token) in [
            ("order.created", "more"),
            ("order.created.unknown", ""),
            ("order.created", ""),
        ] {
            index.resolve_with("acme", event_type, 1_000, true, |m, revision| {
                batch.push(m, revision, token)
            });
            let (targets, revision) = index.resolve("acme", event_type, 1_000, true).unwrap();
            answers.push(ResolveSubscribersResponse {
                targets: targets.into_iter().map(Into::into).collect(),
                revision,
                next_page_token: token.to_owned(),
            });
        }
        let want = BatchResolveSubscribersResponse {
            answers,
            revision: 42,
        };
        let batch = batch.finish(42);
        assert_eq!(batch.as_bytes(), want.encode_to_vec());
        let decoded = BatchResolveSubscribersResponse::decode(batch.as_bytes()).expect("decodes");
        assert_eq!(decoded.answers[0].targets.len(), 3);
        assert!(decoded.answers[1].targets.is_empty());
        assert_eq!(decoded.answers[0].next_page_token, "more");
        let kept = EncodedBatchResolve::decode(batch.as_bytes()).expect("decodes");
        assert_eq!(
            kept.as_bytes(),
            batch.as_bytes(),
            "decoding keeps it as it was"
        );
    }

    #[test]
    fn decoding_keeps_the_answer_as_it_was() {
        let index = index();
        index.mark_applied(7);
        let answer = encoded(&index, "order.created", 1_000, true);
        let decoded = EncodedResolve::decode(&answer[..]).expect("decodes");
        assert_eq!(decoded.as_bytes(), answer);
        assert!(
            EncodedResolve::decode(&answer[..answer.len() - 3]).is_err(),
            "cut short"
        );
    }
}
