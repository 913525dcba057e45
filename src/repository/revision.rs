//! How revisions are made: the whole scheme, and every piece of SQL that
//! depends on it, built from [`PG_REVISION_SHIFT`].
//!
//! SQLite has one writer at a time, so revisions come from a counter row
//! updated inside each write transaction: counter order is commit order.
//!
//! PostgreSQL writers run concurrently. A transaction's revisions are its
//! transaction id shifted left by [`PG_REVISION_SHIFT`], plus the row's
//! position within the transaction. Readers only see change rows below the
//! oldest transaction still running (`pg_snapshot_xmin`, see
//! [`pg_horizon_sql`]): every transaction with a smaller id has finished by
//! then, so a reader that has seen revision N never later finds a
//! committed change below N. Revisions are therefore monotonic in the order
//! readers see them, but sparse.
//!
//! A revision is a positive `bigint`, so the transaction id must fit in the
//! bits left above the position: below [`XID_LIMIT`]. A write beyond it
//! fails instead of recording a revision out of order.

use std::sync::OnceLock;

use super::Revision;

/// Low bits of a PostgreSQL revision: the row's position within its
/// transaction. The bits above are the transaction id.
pub(in crate::repository) const PG_REVISION_SHIFT: u32 = 20;

/// The position bits of a revision.
const POSITION_MASK: i64 = (1 << PG_REVISION_SHIFT) - 1;

/// The most change-log rows one PostgreSQL transaction may record.
pub(in crate::repository) const MAX_CHANGES_PER_TRANSACTION: u64 = 1 << PG_REVISION_SHIFT;

/// Transaction ids below this have a positive revision base: the bits a
/// bigint has for a positive value, less the position's.
pub(in crate::repository) const XID_LIMIT: i64 = 1 << (i64::BITS - 1 - PG_REVISION_SHIFT);

/// The first revision of the transaction `xid`, if it has one: `None` from
/// [`XID_LIMIT`] on.
pub(in crate::repository) fn pg_base(xid: i64) -> Option<Revision> {
    xid.checked_shl(PG_REVISION_SHIFT)
        .filter(|r| r >> PG_REVISION_SHIFT == xid)
}

/// The position of a PostgreSQL revision within its transaction.
pub(in crate::repository) fn pg_position(revision: Revision) -> i64 {
    revision & POSITION_MASK
}

/// The revision after `last` in the same PostgreSQL transaction; `None`
/// once the transaction recorded [`MAX_CHANGES_PER_TRANSACTION`] changes.
pub(in crate::repository) fn pg_next(last: Revision) -> Option<Revision> {
    let next = last.checked_add(1)?;
    (next >> PG_REVISION_SHIFT == last >> PG_REVISION_SHIFT).then_some(next)
}

/// SQL: the current transaction's first revision, NULL from [`XID_LIMIT`]
/// on (as [`pg_base`] is `None`); the change row's NOT NULL check then
/// refuses the write. Name it with `AS`.
pub(in crate::repository) fn pg_base_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "CASE WHEN pg_current_xact_id()::text::bigint < {XID_LIMIT} \
             THEN pg_current_xact_id()::text::bigint << {PG_REVISION_SHIFT} END"
        )
    })
}

/// SQL: the readers' horizon on PostgreSQL; change rows below it are final.
/// Evaluated inside the reading statement, so it uses that statement's
/// snapshot.
pub(in crate::repository) fn pg_horizon_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!("(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {PG_REVISION_SHIFT})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xid_limit_is_where_the_base_stops_being_a_positive_bigint() {
        assert_eq!(XID_LIMIT, 1 << 43);
        // The last transaction with revisions can use every position, and
        // its last revision is the largest bigint.
        assert_eq!(
            pg_base(XID_LIMIT - 1),
            Some((XID_LIMIT - 1) << PG_REVISION_SHIFT)
        );
        assert_eq!(pg_base(XID_LIMIT - 1).unwrap() | POSITION_MASK, i64::MAX);
        assert_eq!(
            pg_base(XID_LIMIT),
            None,
            "would wrap to a negative revision"
        );
        assert_eq!(pg_base(i64::MAX), None);
    }

    #[test]
    fn a_revision_splits_back_into_transaction_and_position() {
        for xid in [1, 2, 741, 1 << 32, XID_LIMIT - 1] {
            let base = pg_base(xid).unwrap();
            assert!(base > 0);
            for position in [0, 1, 31, POSITION_MASK] {
                let revision = base + position;
                assert_eq!(revision >> PG_REVISION_SHIFT, xid);
                assert_eq!(pg_position(revision), position);
            }
        }
    }

    #[test]
    fn revisions_follow_transaction_order_then_position() {
        let last_of_first = pg_base(7).unwrap() + POSITION_MASK;
        assert!(pg_base(8).unwrap() > last_of_first);
    }

    #[test]
    fn a_transaction_records_at_most_its_positions() {
        let base = pg_base(5).unwrap();
        assert_eq!(pg_next(base), Some(base + 1));
        let last = base + POSITION_MASK;
        assert_eq!(pg_next(last - 1), Some(last));
        assert_eq!(
            pg_next(last),
            None,
            "the next would be another transaction's"
        );
        assert_eq!(pg_next(i64::MAX), None);
        assert_eq!(MAX_CHANGES_PER_TRANSACTION, POSITION_MASK as u64 + 1);
    }

    #[test]
    fn the_sql_uses_the_same_shift_and_limit() {
        assert_eq!(
            pg_base_sql(),
            "CASE WHEN pg_current_xact_id()::text::bigint < 8796093022208 \
             THEN pg_current_xact_id()::text::bigint << 20 END"
        );
        assert_eq!(
            pg_horizon_sql(),
            "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)"
        );
    }
}
