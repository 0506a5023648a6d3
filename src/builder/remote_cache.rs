//! The builder's side of the shared cache and of reproducible images: records converted to and
//! from the cache graph, which records an export writes (`mode=min|max`), which cache mounts
//! its RUN steps use (their content travels too, `crate::cache::remote::cache_mounts`), and the image's
//! times derived from the records instead of the clock, so a machine that rebuilds from the
//! cache writes the same image, digest for digest.

use super::compile::{BuildOp, HistoryEntry, RunMount};
use super::worker::{BuildWorker, Snapshot, SnapshotLayer};
use crate::cache::remote::{CacheGraph, ExportMode, GraphLayer, GraphRecord};
use crate::oci::Digest;
use crate::oci::timestamp::now_seconds;
use crate::solver::{Graph, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// The builder's record of a step from a shared cache's record.
pub(super) fn snapshot_of(record: GraphRecord) -> Snapshot {
    Snapshot {
        layers: record
            .layers
            .into_iter()
            .map(|layer| SnapshotLayer {
                digest: layer.digest,
                size: layer.size,
                media_type: layer.media_type,
                diff_id: layer.diff_id,
            })
            .collect(),
        added: record.added,
        created: record.created,
        base_created: record.base_created,
    }
}

/// A shared cache's record of a builder's record. Times that do not match the steps (a record
/// of an older kiln extended by a newer one) are left out.
fn record_of(snapshot: &Snapshot) -> GraphRecord {
    let times_match = snapshot.created.len() == snapshot.added.len();
    GraphRecord {
        layers: snapshot
            .layers
            .iter()
            .map(|layer| GraphLayer {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
                diff_id: layer.diff_id.clone(),
            })
            .collect(),
        added: snapshot.added.clone(),
        created: if times_match {
            snapshot.created.clone()
        } else {
            Vec::new()
        },
        base_created: snapshot.base_created,
    }
}

/// The records an export writes: with [`ExportMode::Min`] the steps of each target's chain
/// (each step and the one it builds on, down to its `FROM`; one target per platform built),
/// with [`ExportMode::Max`] every step of the build. A step is left out when it has no record whose layers the store holds,
/// knows the origin of, or an imported cache lists.
pub(super) fn cache_graph(
    worker: &BuildWorker,
    graph: &Graph<BuildOp>,
    keys: &BTreeMap<NodeId, Digest>,
    targets: &[NodeId],
    mode: ExportMode,
) -> CacheGraph {
    let is_source = |node: NodeId| {
        matches!(
            graph.op(node),
            None | Some(BuildOp::Scratch { .. } | BuildOp::Image { .. })
        )
    };
    let nodes: Vec<NodeId> = match mode {
        ExportMode::Max => keys.keys().copied().filter(|&n| !is_source(n)).collect(),
        ExportMode::Min => {
            let mut chain = Vec::new();
            for &target in targets {
                let mut node = Some(target);
                while let Some(current) = node.filter(|&n| !is_source(n) && !chain.contains(&n)) {
                    chain.push(current);
                    node = graph.inputs(current).first().copied();
                }
            }
            chain
        }
    };
    let available = |snapshot: &Snapshot| {
        snapshot.layers.iter().all(|layer| {
            worker.store.has_or_knows(&layer.digest) || worker.imported.lists(&layer.digest)
        })
    };
    let mut records = BTreeMap::new();
    for node in nodes {
        let Some(key) = keys.get(&node) else {
            continue;
        };
        let local = worker
            .records
            .get::<Snapshot>(key)
            .ok()
            .flatten()
            .filter(|s| available(s));
        let record = local.map(|s| record_of(&s)).or_else(|| {
            worker
                .imported
                .lookup(key, &worker.store)
                .filter(|r| available(&snapshot_of(r.clone())))
        });
        if let Some(record) = record {
            records.insert(key.clone(), record);
        }
    }
    CacheGraph {
        records,
        cache_mounts: Vec::new(),
    }
}

/// The cache ids the RUN steps of the solved nodes mount (`--mount=type=cache`), whether they
/// ran or came from the cache: a cached step used the cache mount when its record was made, and
/// an export that left the mount out would drop it from the shared cache.
pub(super) fn cache_mount_ids(
    graph: &Graph<BuildOp>,
    keys: &BTreeMap<NodeId, Digest>,
) -> BTreeSet<String> {
    keys.keys()
        .filter_map(|&node| match graph.op(node) {
            Some(BuildOp::Run(op)) => Some(op),
            _ => None,
        })
        .flat_map(|op| &op.mounts)
        .filter_map(|mount| match mount {
            RunMount::Cache { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// The times of an image: its `created` and one per entry of its history (`None` for an entry
/// copied from the base image, which keeps its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ImageTimes {
    pub created: i64,
    pub history: Vec<Option<i64>>,
}

/// The image's times, from when its steps' records were made: a filesystem step's history
/// entry has the time its snapshot was made; a metadata instruction's has the time of the step
/// before it (the base image's, or the Unix epoch for scratch, when none is); the image's
/// `created` is the newest of its steps' times (its base's when it has none). The same records
/// give the same times, so a rebuild from the cache writes the same image. With
/// `source_date_epoch` (`SOURCE_DATE_EPOCH`) every one of those times is that instead, as in
/// BuildKit. Records of older kiln versions have no times: their image gets the current time.
pub(super) fn image_times(
    snapshot: &Snapshot,
    history: &[HistoryEntry],
    source_date_epoch: Option<i64>,
) -> ImageTimes {
    let recorded = snapshot.created.len() == snapshot.added.len();
    let base = snapshot.base_created.unwrap_or(0);
    let newest = snapshot.created.iter().copied().max().unwrap_or(base);
    let (created, fallback) = match source_date_epoch {
        Some(epoch) => (epoch, Some(epoch)),
        None if recorded => (newest, None),
        None => {
            let now = now_seconds();
            (now, Some(now))
        }
    };
    let mut steps = snapshot.created.iter().copied();
    let mut last = base;
    let history = history
        .iter()
        .map(|entry| match entry {
            HistoryEntry::Base(_) => None,
            HistoryEntry::Metadata(_) => Some(fallback.unwrap_or(last)),
            HistoryEntry::Layer(_) => {
                last = steps.next().unwrap_or(last);
                Some(fallback.unwrap_or(last))
            }
        })
        .collect();
    ImageTimes { created, history }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(created: &[i64], base_created: Option<i64>) -> Snapshot {
        Snapshot {
            layers: Vec::new(),
            added: vec![false; created.len()],
            created: created.to_vec(),
            base_created,
        }
    }

    #[test]
    fn image_times_come_from_the_records() {
        let history = vec![
            HistoryEntry::Base(json!({"created_by": "base"})),
            HistoryEntry::Metadata("ENV A=1".into()),
            HistoryEntry::Layer("COPY a /".into()),
            HistoryEntry::Metadata("CMD sh".into()),
            HistoryEntry::Layer("RUN x".into()),
            HistoryEntry::Metadata("USER app".into()),
        ];
        let cases: Vec<(&str, Snapshot, Option<i64>, ImageTimes)> = vec![
            (
                "image base",
                snapshot(&[200, 300], Some(100)),
                None,
                ImageTimes {
                    created: 300,
                    history: vec![None, Some(100), Some(200), Some(200), Some(300), Some(300)],
                },
            ),
            (
                "scratch base",
                snapshot(&[200, 300], None),
                None,
                ImageTimes {
                    created: 300,
                    history: vec![None, Some(0), Some(200), Some(200), Some(300), Some(300)],
                },
            ),
            (
                "steps out of order keep the newest as created",
                snapshot(&[400, 300], Some(100)),
                None,
                ImageTimes {
                    created: 400,
                    history: vec![None, Some(100), Some(400), Some(400), Some(300), Some(300)],
                },
            ),
            (
                "SOURCE_DATE_EPOCH",
                snapshot(&[200, 300], Some(100)),
                Some(7),
                ImageTimes {
                    created: 7,
                    history: vec![None, Some(7), Some(7), Some(7), Some(7), Some(7)],
                },
            ),
        ];
        let mut failures = Vec::new();
        for (name, snapshot, epoch, expected) in &cases {
            let got = image_times(snapshot, &history, *epoch);
            if &got != expected {
                failures.push(format!("{name}: {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 4);

        let no_steps = image_times(
            &snapshot(&[], Some(100)),
            &[HistoryEntry::Metadata("CMD sh".into())],
            None,
        );
        assert_eq!(
            no_steps,
            ImageTimes {
                created: 100,
                history: vec![Some(100)]
            },
            "a stage without filesystem steps takes its base's time"
        );
        let old_record = Snapshot {
            added: vec![true],
            ..snapshot(&[], None)
        };
        let before = now_seconds();
        let times = image_times(&old_record, &history, None);
        assert!(
            times.created >= before,
            "an old record gets the current time"
        );
    }

    #[test]
    fn records_convert_both_ways() {
        let snapshot = Snapshot {
            layers: vec![SnapshotLayer {
                digest: Digest::of(b"blob"),
                size: 4,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                diff_id: Digest::of(b"tar"),
            }],
            added: vec![true, false],
            created: vec![1, 2],
            base_created: Some(0),
        };
        assert_eq!(snapshot_of(record_of(&snapshot)), snapshot);
        let mismatched = Snapshot {
            created: vec![1],
            ..snapshot.clone()
        };
        assert!(record_of(&mismatched).created.is_empty());
        let old: Snapshot = serde_json::from_str(r#"{"layers":[],"added":[true]}"#).unwrap();
        assert!(old.created.is_empty() && old.base_created.is_none());
    }
}
