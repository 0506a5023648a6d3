//! Docker's views of stored images: `docker image inspect`'s document, `docker history`'s rows,
//! and the human-readable sizes and ages docker prints (go-units `HumanSizeWithPrecision` and
//! `HumanDuration`).

use crate::oci::Digest;
use crate::oci::timestamp;
use crate::store::{ImageName, StoredImage};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// Why a view cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ViewError {
    #[error(
        "image {id}: its history lists more non-empty layers than its {layers} layers (as docker \
         says: too many non-empty layers in History section)"
    )]
    HistoryLayers { id: Digest, layers: usize },
}

/// A size as docker prints it: SI units and `precision` significant digits, Go's `%.*g`
/// (`HumanSizeWithPrecision`; `docker images` uses 3, `docker system df` 4): `4.27MB`, `0B`.
pub fn human_size(bytes: u64, precision: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    // go-units divides the float by 1000 until it is below 1000.
    #[allow(clippy::cast_precision_loss)] // sizes print to a few significant digits
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", go_format_g(size, precision), UNITS[unit])
}

/// Go's `strconv.FormatFloat(value, 'g', precision, 64)` for non-negative finite values:
/// `precision` significant digits, scientific notation (`1e+03`) when the exponent is below -4
/// or at least the precision, trailing zeros dropped.
fn go_format_g(value: f64, precision: usize) -> String {
    let precision = precision.max(1);
    if value == 0.0 {
        return "0".to_string();
    }
    let scientific = format!("{value:.*e}", precision - 1);
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let precision_i = i64::try_from(precision).unwrap_or(i64::MAX);
    if exponent < -4 || exponent >= precision_i {
        let mantissa = trim_fraction(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let decimals = usize::try_from(precision_i - 1 - exponent).unwrap_or(0);
    trim_fraction(&format!("{value:.decimals$}")).to_string()
}

/// `4.20` → `4.2`, `4.00` → `4`, `400` → `400`.
fn trim_fraction(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

/// go-units `HumanDuration` of a number of seconds: `Less than a second`, `About a minute`,
/// `3 hours`, `2 weeks`, ...
pub fn human_duration(seconds: i64) -> String {
    if seconds < 1 {
        return "Less than a second".to_string();
    }
    if seconds == 1 {
        return "1 second".to_string();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".to_string();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go rounds the duration to the nearest hour here (halfway rounds away from zero).
    let hours = (seconds + 1800) / 3600;
    if hours == 1 {
        return "About an hour".to_string();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", seconds / 3600 / 24 / 365)
}

/// `2 hours ago` for a creation time (Unix seconds) seen at `now`.
pub fn created_since(created: i64, now: i64) -> String {
    format!("{} ago", human_duration(now.saturating_sub(created)))
}

/// docker's `Ellipsis`: `text` cut to `max` characters, the last one replaced by `…` when cut.
/// (Every character counts as one column; docker counts East Asian wide ones as two.)
pub fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    match max {
        0 => String::new(),
        1 => text.chars().take(1).collect(),
        _ => {
            let mut cut: String = text.chars().take(max - 1).collect();
            cut.push('…');
            cut
        }
    }
}

/// `repo@sha256:...` for each repository the image is tagged in (docker's containerd store
/// lists the manifest digest this way; the classic store only for pulled images).
pub fn repo_digests(names: &[ImageName], manifest: &Digest) -> Vec<String> {
    names
        .iter()
        .map(ImageName::familiar_repository)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|repo| format!("{repo}@{manifest}"))
        .collect()
}

/// `docker image inspect`'s document for one image, fields in docker's order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    #[serde(rename = "Id")]
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// The config's `config`, with docker's keys in docker's order (empty ones left out).
    pub config: Option<OrderedObject>,
    pub architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    pub os: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    pub size: u64,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    pub metadata: Metadata,
    /// The manifest's OCI descriptor (docker's containerd store shows it).
    pub descriptor: oci_spec::image::Descriptor,
}

/// `RootFS` of [`Inspect`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

/// `Metadata` of [`Inspect`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    /// When a tag last moved here, or Go's zero time as docker prints it.
    pub last_tag_time: String,
}

/// The keys of docker's image `Config` (the OCI config's, then docker's extensions), in order.
const CONFIG_KEYS: [&str; 13] = [
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// Builds the inspect document of `image`.
pub fn inspect(image: &StoredImage) -> Inspect {
    let raw: Value = serde_json::from_slice(&image.config_bytes).unwrap_or(Value::Null);
    let text = |key: &str| {
        raw.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let config = raw.get("config").and_then(Value::as_object).map(|config| {
        OrderedObject(
            CONFIG_KEYS
                .iter()
                .filter_map(|key| {
                    let value = config.get(*key).filter(|v| !is_go_empty(v))?;
                    Some((key.to_string(), value.clone()))
                })
                .collect(),
        )
    });
    Inspect {
        id: image.id.to_string(),
        repo_tags: image.names.iter().map(ImageName::familiar).collect(),
        // What a registry resolves the name to: a multi-platform image's index.
        repo_digests: repo_digests(
            &image.names,
            image.index.as_ref().unwrap_or(&image.manifest_digest),
        ),
        comment: text("comment"),
        created: text("created"),
        author: text("author"),
        config,
        architecture: text("architecture"),
        variant: text("variant"),
        os: text("os"),
        os_version: text("os.version"),
        size: image.size(),
        root_fs: RootFs {
            kind: "layers".to_string(),
            layers: image.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        },
        metadata: Metadata {
            last_tag_time: image
                .tagged_at
                .clone()
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()),
        },
        descriptor: image.manifest_descriptor.clone(),
    }
}

/// A JSON object that serialises its keys in the order given (serde_json's `Map` sorts them).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedObject(pub Vec<(String, Value)>);

impl Serialize for OrderedObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Go's `omitempty`: null, false, 0, "" and empty arrays and objects are left out.
fn is_go_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// One row of `docker history`, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The image ID on the top row; `None` (docker's `<missing>`) below it.
    pub id: Option<Digest>,
    /// When the step ran (Unix seconds), if recorded.
    pub created: Option<i64>,
    pub created_by: String,
    /// The size of the layer the step made (0 for steps without a layer).
    pub size: u64,
    pub comment: String,
}

/// The rows of `docker history IMAGE`: the config's history, newest first, each step that made
/// a layer paired with that layer's size.
pub fn history(image: &StoredImage) -> Result<Vec<HistoryRow>, ViewError> {
    let mut rows = Vec::new();
    let mut layers = image.layers.iter();
    for step in image.config.history().iter().flatten() {
        let size = if step.empty_layer().unwrap_or(false) {
            0
        } else {
            let layer = layers.next().ok_or_else(|| ViewError::HistoryLayers {
                id: image.id.clone(),
                layers: image.layers.len(),
            })?;
            layer.size
        };
        rows.push(HistoryRow {
            id: None,
            created: step.created().as_deref().and_then(timestamp::parse_rfc3339),
            created_by: step.created_by().clone().unwrap_or_default(),
            size,
            comment: step.comment().clone().unwrap_or_default(),
        });
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top.id = Some(image.id.clone());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_go_units() {
        let cases: &[(u64, usize, &str)] = &[
            (0, 3, "0B"),
            (1, 3, "1B"),
            (999, 3, "999B"),
            (1000, 3, "1kB"),
            (1024, 3, "1.02kB"),
            (4_270_000, 3, "4.27MB"),
            (4_275_000, 3, "4.28MB"),
            (7_800_000, 3, "7.8MB"),
            (999_999, 3, "1e+03kB"),
            (123_456_789, 3, "123MB"),
            (1_234_567_890, 4, "1.235GB"),
            (13_256, 4, "13.26kB"),
            (5_000_000_000_000_000_000, 3, "5EB"),
            (u64::MAX, 3, "18.4EB"),
        ];
        for (bytes, precision, want) in cases {
            assert_eq!(human_size(*bytes, *precision), *want, "{bytes}");
        }
    }

    #[test]
    fn durations_print_like_go_units() {
        let minute = 60;
        let hour = 60 * minute;
        let day = 24 * hour;
        let week = 7 * day;
        let month = 30 * day;
        let year = 365 * day;
        // go-units' own test table.
        let cases: &[(i64, &str)] = &[
            (0, "Less than a second"),
            (1, "1 second"),
            (45, "45 seconds"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (3 * minute, "3 minutes"),
            (35 * minute + 40, "35 minutes"),
            (59 * minute, "59 minutes"),
            (hour, "About an hour"),
            (hour + 29 * minute, "About an hour"),
            (hour + 31 * minute, "2 hours"),
            (3 * hour + 29 * minute, "3 hours"),
            (3 * hour + 31 * minute, "4 hours"),
            (day, "24 hours"),
            (day + 12 * hour, "36 hours"),
            (2 * day, "2 days"),
            (13 * day + 5 * hour, "13 days"),
            (2 * week, "2 weeks"),
            (4 * week + 3 * day, "4 weeks"),
            (month, "4 weeks"),
            (month + 2 * week, "6 weeks"),
            (2 * month, "2 months"),
            (5 * month + 2 * week, "5 months"),
            (24 * month, "24 months"),
            (24 * month + 2 * week, "2 years"),
            (3 * year + 2 * month, "3 years"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human_duration(*seconds), *want, "{seconds}");
        }
        assert_eq!(created_since(100, 100 + 2 * hour), "2 hours ago");
        assert_eq!(created_since(200, 100), "Less than a second ago");
    }

    #[test]
    fn ellipsis_cuts_with_a_marker() {
        assert_eq!(ellipsis("short", 45), "short");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("ééééé", 3), "éé…");
        assert_eq!(ellipsis("abc", 1), "a");
        assert_eq!(ellipsis("abc", 0), "");
    }

    #[test]
    fn go_empty_values() {
        for empty in ["null", "false", "0", "\"\"", "[]", "{}"] {
            assert!(
                is_go_empty(&serde_json::from_str(empty).unwrap()),
                "{empty}"
            );
        }
        for full in ["true", "1", "\"x\"", "[1]", "{\"a\":1}"] {
            assert!(!is_go_empty(&serde_json::from_str(full).unwrap()), "{full}");
        }
    }
}
