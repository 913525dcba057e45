//! How long a subscription lives before it expires on its own.

use super::InvalidValue;

/// Ten years. Longer values are almost certainly mistakes (e.g. milliseconds
/// sent as seconds) and would overflow some timestamp arithmetic.
pub const MAX_TTL_SECONDS_CAP: i64 = 315_360_000;

const DEFAULT_FIELD: &str = "default_ttl_seconds";
const MAX_FIELD: &str = "max_ttl_seconds";

fn check_range(seconds: i64) -> Result<(), InvalidValue> {
    if seconds < 0 {
        Err(InvalidValue::new("must not be negative"))
    } else if seconds > MAX_TTL_SECONDS_CAP {
        Err(InvalidValue::new(format!(
            "must be at most {MAX_TTL_SECONDS_CAP} seconds (10 years)"
        )))
    } else {
        Ok(())
    }
}

/// The lifetime in seconds for a new subscription; `None` means it never
/// expires.
///
/// `requested` is what the client sent, 0 meaning "not set". An explicit
/// value is checked against the ceiling and the tenant's maximum (0 = no
/// maximum) and refused if too long. An unset value takes the tenant's
/// default, clamped to the tenant's maximum, and so never fails: the client
/// is not blamed for the tenant's settings. A tenant with a maximum but no
/// default therefore gets its maximum rather than an unbounded lifetime.
pub fn resolve_ttl(
    requested: i64,
    tenant_default: i64,
    tenant_max: i64,
) -> Result<Option<i64>, InvalidValue> {
    check_range(requested)?;
    let max = (tenant_max > 0).then_some(tenant_max.min(MAX_TTL_SECONDS_CAP));
    if requested > 0 {
        return match max {
            Some(max) if requested > max => Err(InvalidValue::new(format!(
                "must be at most {max} seconds, the tenant's maximum"
            ))),
            _ => Ok(Some(requested)),
        };
    }
    let default = (tenant_default > 0).then_some(tenant_default.min(MAX_TTL_SECONDS_CAP));
    Ok(match (default, max) {
        (Some(default), Some(max)) => Some(default.min(max)),
        (Some(default), None) => Some(default),
        (None, max) => max,
    })
}

/// Checks a tenant's TTL settings (0 = never expires / no maximum); on
/// failure, names the field at fault.
pub fn validate_tenant_ttls(default: i64, max: i64) -> Result<(), (&'static str, InvalidValue)> {
    check_range(default).map_err(|e| (DEFAULT_FIELD, e))?;
    check_range(max).map_err(|e| (MAX_FIELD, e))?;
    if max > 0 && default > max {
        return Err((
            DEFAULT_FIELD,
            InvalidValue::new(format!("must not exceed max_ttl_seconds ({max} seconds)")),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_ttl_is_used() {
        assert_eq!(resolve_ttl(60, 0, 0), Ok(Some(60)));
        assert_eq!(resolve_ttl(60, 3600, 0), Ok(Some(60)));
        assert_eq!(resolve_ttl(3600, 10, 3600), Ok(Some(3600)));
        assert_eq!(
            resolve_ttl(MAX_TTL_SECONDS_CAP, 0, 0),
            Ok(Some(MAX_TTL_SECONDS_CAP))
        );
    }

    #[test]
    fn negative_ttl_is_refused() {
        assert_eq!(
            resolve_ttl(-1, 0, 0),
            Err(InvalidValue::new("must not be negative"))
        );
        assert!(resolve_ttl(i64::MIN, 3600, 0).is_err());
    }

    #[test]
    fn explicit_ttl_above_tenant_max_is_refused() {
        assert_eq!(
            resolve_ttl(3601, 60, 3600),
            Err(InvalidValue::new(
                "must be at most 3600 seconds, the tenant's maximum"
            ))
        );
    }

    #[test]
    fn ceiling_applies_without_tenant_max() {
        assert_eq!(
            resolve_ttl(MAX_TTL_SECONDS_CAP + 1, 0, 0),
            Err(InvalidValue::new(
                "must be at most 315360000 seconds (10 years)"
            ))
        );
        assert!(resolve_ttl(i64::MAX, 0, i64::MAX).is_err());
    }

    #[test]
    fn unset_ttl_takes_tenant_default() {
        assert_eq!(resolve_ttl(0, 3600, 0), Ok(Some(3600)));
        assert_eq!(resolve_ttl(0, 3600, 7200), Ok(Some(3600)));
    }

    #[test]
    fn unset_ttl_without_default_never_expires() {
        assert_eq!(resolve_ttl(0, 0, 0), Ok(None));
    }

    #[test]
    fn unset_ttl_never_exceeds_tenant_max() {
        // No default but a maximum: never-expiring would break the maximum.
        assert_eq!(resolve_ttl(0, 0, 7200), Ok(Some(7200)));
        // Inconsistent stored settings are clamped rather than blamed on the client.
        assert_eq!(resolve_ttl(0, 9000, 7200), Ok(Some(7200)));
        assert_eq!(resolve_ttl(0, i64::MAX, 0), Ok(Some(MAX_TTL_SECONDS_CAP)));
    }

    #[test]
    fn valid_tenant_settings() {
        for (default, max) in [(0, 0), (3600, 0), (0, 3600), (3600, 3600), (60, 3600)] {
            assert_eq!(
                validate_tenant_ttls(default, max),
                Ok(()),
                "{default}/{max}"
            );
        }
        assert_eq!(
            validate_tenant_ttls(MAX_TTL_SECONDS_CAP, MAX_TTL_SECONDS_CAP),
            Ok(())
        );
    }

    #[test]
    fn invalid_tenant_settings_name_the_field() {
        let field = |default, max| validate_tenant_ttls(default, max).unwrap_err().0;
        assert_eq!(field(-1, 0), "default_ttl_seconds");
        assert_eq!(field(0, -1), "max_ttl_seconds");
        assert_eq!(field(MAX_TTL_SECONDS_CAP + 1, 0), "default_ttl_seconds");
        assert_eq!(field(0, MAX_TTL_SECONDS_CAP + 1), "max_ttl_seconds");
        assert_eq!(
            validate_tenant_ttls(7200, 3600),
            Err((
                "default_ttl_seconds",
                InvalidValue::new("must not exceed max_ttl_seconds (3600 seconds)")
            ))
        );
    }
}
