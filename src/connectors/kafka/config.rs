//! Configuration of the `kafka` connector: the broker list and where a
//! reader starts (`scan.startup.mode`, `scan.startup.specific_offsets`), in
//! RisingWave's and Flink's spellings. Parsing only; no network.

use std::collections::BTreeMap;

use crate::connectors::options::invalid;
use crate::error::Result;

/// Where a reader starts in each partition.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum StartAt {
    Earliest,
    Latest,
    /// Offsets by partition; partitions not listed start at the earliest.
    Offsets(BTreeMap<i32, i64>),
}

pub(super) fn parse_brokers(list: &str) -> Result<Vec<String>> {
    let brokers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect();
    if brokers.is_empty() {
        return Err(invalid("properties.bootstrap.server is empty".into()));
    }
    for b in &brokers {
        let port = b.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
        if !matches!(port, Some(Ok(_))) {
            return Err(invalid(format!(
                "Kafka broker \"{b}\" must be host:port, e.g. localhost:9092"
            )));
        }
    }
    Ok(brokers)
}

pub(super) fn parse_start(mode: Option<&str>, offsets: Option<&str>) -> Result<StartAt> {
    let mode = mode.map(|m| m.trim().to_ascii_lowercase().replace('-', "_"));
    let start = match mode.as_deref() {
        None | Some("earliest" | "earliest_offset") => StartAt::Earliest,
        Some("latest" | "latest_offset") => StartAt::Latest,
        Some("specific_offsets") => {
            let Some(offsets) = offsets else {
                return Err(invalid(
                    "scan.startup.mode = 'specific_offsets' needs scan.startup.specific_offsets, \
                     e.g. '0:42,1:300'"
                        .into(),
                ));
            };
            return Ok(StartAt::Offsets(parse_offsets(offsets)?));
        }
        Some(other) => {
            return Err(invalid(format!(
                "scan.startup.mode must be earliest, latest or specific_offsets, not '{other}'"
            )));
        }
    };
    if offsets.is_some() {
        return Err(invalid(
            "scan.startup.specific_offsets needs scan.startup.mode = 'specific_offsets'".into(),
        ));
    }
    Ok(start)
}

/// `'0:42,1:300'`, or Flink's `'partition:0,offset:42;partition:1,offset:300'`.
fn parse_offsets(text: &str) -> Result<BTreeMap<i32, i64>> {
    let bad = || {
        invalid(format!(
            "scan.startup.specific_offsets must look like '0:42,1:300' \
             (or 'partition:0,offset:42;partition:1,offset:300'), not '{text}'"
        ))
    };
    let flink = text.contains("partition");
    let entries: Vec<(&str, &str)> = if flink {
        text.split(';')
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let (p, o) = e.split_once(',').ok_or_else(bad)?;
                let p = p.trim().strip_prefix("partition:").ok_or_else(bad)?;
                let o = o.trim().strip_prefix("offset:").ok_or_else(bad)?;
                Ok((p, o))
            })
            .collect::<Result<_>>()?
    } else {
        text.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.split_once(':').ok_or_else(bad))
            .collect::<Result<_>>()?
    };
    let mut offsets = BTreeMap::new();
    for (p, o) in entries {
        let p: i32 = p.trim().parse().map_err(|_| bad())?;
        let o: i64 = o.trim().parse().map_err(|_| bad())?;
        if p < 0 || o < 0 || offsets.insert(p, o).is_some() {
            return Err(bad());
        }
    }
    if offsets.is_empty() {
        return Err(bad());
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_modes_and_offsets_in_both_spellings() {
        assert_eq!(parse_start(None, None).unwrap(), StartAt::Earliest);
        assert_eq!(
            parse_start(Some("latest-offset"), None).unwrap(),
            StartAt::Latest
        );
        let expected = StartAt::Offsets([(0, 42), (1, 300)].into_iter().collect());
        assert_eq!(
            parse_start(Some("specific_offsets"), Some("0:42, 1:300")).unwrap(),
            expected
        );
        assert_eq!(
            parse_start(
                Some("specific-offsets"),
                Some("partition:0,offset:42;partition:1,offset:300")
            )
            .unwrap(),
            expected
        );
        for (mode, offsets) in [
            (Some("specific_offsets"), None),
            (Some("earliest"), Some("0:1")),
            (Some("group-offsets"), None),
            (Some("specific_offsets"), Some("0:1,0:2")),
            (Some("specific_offsets"), Some("0=1")),
            (Some("specific_offsets"), Some("partition:0;offset:1")),
            (Some("specific_offsets"), Some("0:-1")),
        ] {
            let err = parse_start(mode, offsets).unwrap_err();
            assert_eq!(err.sqlstate(), "22023", "{mode:?} {offsets:?}: {err}");
        }
    }

    #[test]
    fn broker_lists() {
        assert_eq!(
            parse_brokers(" a:9092 ,b:9093,").unwrap(),
            vec!["a:9092".to_string(), "b:9093".to_string()]
        );
        assert!(parse_brokers("localhost").is_err());
        assert!(parse_brokers(" , ").is_err());
    }
}
