//! Health-check schedule of an issuer (product.md §5).

use std::time::Duration;

use super::{format_go_duration, parse_go_duration, ConfigError};
use crate::api::HealthCheck;

/// No interval below this is accepted, from the spec or the controller flag.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// When an issuer is checked again after a healthy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSchedule {
    /// Re-check periodically.
    Every(Duration),
    /// Check on spec changes only.
    Disabled,
}

/// Works out the schedule from the spec block and the controller default.
pub fn health_schedule(
    spec: Option<&HealthCheck>,
    default: Duration,
) -> Result<HealthSchedule, ConfigError> {
    let Some(hc) = spec else {
        return Ok(HealthSchedule::Every(default));
    };
    if !hc.enabled {
        return Ok(HealthSchedule::Disabled);
    }
    let Some(raw) = hc.interval.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(HealthSchedule::Every(default));
    };
    let d = parse_go_duration(raw).map_err(|e| ConfigError::IntervalSyntax(raw.to_string(), e))?;
    if d < MIN_HEALTH_INTERVAL {
        return Err(ConfigError::IntervalTooShort(format_go_duration(d)));
    }
    Ok(HealthSchedule::Every(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(enabled: bool, interval: Option<&str>) -> HealthCheck {
        HealthCheck {
            enabled,
            interval: interval.map(str::to_string),
        }
    }

    #[test]
    fn table_of_product_section_5() {
        let d = Duration::from_secs(600);
        assert_eq!(health_schedule(None, d), Ok(HealthSchedule::Every(d)));
        assert_eq!(
            health_schedule(Some(&hc(true, None)), d),
            Ok(HealthSchedule::Every(d))
        );
        assert_eq!(
            health_schedule(Some(&hc(true, Some("30s"))), d),
            Ok(HealthSchedule::Every(Duration::from_secs(30)))
        );
        assert_eq!(
            health_schedule(Some(&hc(true, Some("2m"))), d),
            Ok(HealthSchedule::Every(Duration::from_secs(120)))
        );
        assert_eq!(
            health_schedule(Some(&hc(false, Some("2m"))), d),
            Ok(HealthSchedule::Disabled)
        );
        assert_eq!(
            health_schedule(Some(&hc(true, Some("29s"))), d)
                .unwrap_err()
                .to_string(),
            "interval 29s is invalid, must be greater than or equal to '30s'"
        );
    }
}
