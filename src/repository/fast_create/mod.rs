//! The fast ways to CreateSubscription, and the parent rule every way
//! shares.
//!
//! A create must see its tenant live, ACTIVE and still at the etag the
//! caller built the subscription from, and its endpoint live (see
//! [`parent`]); take one from the tenant's quota; record the request nonce;
//! insert the row and its change-log row; and, with a request id, store the
//! response to replay. The transaction in `sea` does all that in six round
//! trips and names every error. Creates are the hottest write, so the
//! plain ones try a shorter way first, and a create that way refuses runs
//! the transaction, which writes it or names its error:
//!
//! PostgreSQL:
//! 1. **Batch over held connections** ([`create_batch`], statement from
//!    [`one_statement::create_subscriptions`]): concurrent plain creates
//!    (no request id, no verification) share one statement and one commit,
//!    on a connection held out of the pool (`postgres::HeldConnections`).
//!    All rows or none: any refused create sends every create of the batch
//!    on to 2.
//! 2. **One-statement create** ([`one_statement::create_subscription`]):
//!    one data-modifying `WITH` statement, its own transaction, for a
//!    create with a request id or one the batch sent on.
//! 3. **The transaction**: a create with a verification (its confirmation
//!    goes to the outbox in the same transaction), and any create 1 or 2
//!    refused.
//!
//! SQLite:
//! 1. **Batch text in the group commit** ([`create_batch`], text from
//!    [`one_statement::create_subscriptions_sqlite`]): plain creates run as
//!    one text of statements on the writer's thread inside the open
//!    group-commit batch (`sqlite::group_commit`), each create checked on
//!    its own, so a single hand-off to the writer thread carries many.
//! 2. **The transaction**: creates with a request id or a verification,
//!    and any create the batch refused.
//!
//! Why each exists: a commit, its round trip and its WAL flush cost more
//! than the rows a create writes (PostgreSQL batches); the transaction's
//! round trips cost more than its work (the one-statement create); on
//! SQLite the hand-offs to the one writer thread, not the disk, bound the
//! create rate (the batch text). The measured gains are in BENCHMARKS.md.

pub(in crate::repository) mod create_batch;
pub(in crate::repository) mod one_statement;
pub(in crate::repository) mod parent;
