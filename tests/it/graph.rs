//! The build graph: pruning to a target, parallel groups, cycles, stage references.

use crate::stages::resolve_with;
use kiln::frontend::dag::{DagError, StageDag};
use kiln::frontend::diagnostic::Located;

const DIAMOND: &str = "FROM alpine AS base\n\
FROM base AS build-a\n\
FROM base AS build-b\n\
FROM golang AS unused\n\
FROM scratch AS final\n\
COPY --from=build-a /a /a\n\
COPY --from=build-b /b /b\n";

#[test]
fn default_target_is_the_last_stage_and_prunes() {
    let r = resolve_with(DIAMOND, &[]).unwrap();
    let g = StageDag::new(&r, None).unwrap();
    assert_eq!(g.target(), 4);
    assert_eq!(g.order(), [0, 1, 2, 4]);
    assert_eq!(g.groups(), [vec![0], vec![1, 2], vec![4]]);
    assert_eq!(g.dependencies(4), [1, 2]);
    assert_eq!(g.dependencies(1), [0]);
    assert_eq!(g.images(), ["alpine"]);
    assert!(g.stage(3).is_none(), "unused stage is pruned");
    assert_eq!(g.stage(4).unwrap().name.as_deref(), Some("final"));
}

/// (target, order, groups, images)
type TargetCase = (
    &'static str,
    &'static [usize],
    &'static [&'static [usize]],
    &'static [&'static str],
);

#[test]
fn target_picks_the_subset() {
    let r = resolve_with(DIAMOND, &[]).unwrap();
    let cases: &[TargetCase] = &[
        ("build-a", &[0, 1], &[&[0], &[1]], &["alpine"]),
        ("BUILD-B", &[0, 2], &[&[0], &[2]], &["alpine"]),
        ("unused", &[3], &[&[3]], &["golang"]),
        ("base", &[0], &[&[0]], &["alpine"]),
        ("final", &[0, 1, 2, 4], &[&[0], &[1, 2], &[4]], &["alpine"]),
    ];
    for (target, order, groups, images) in cases {
        let g = StageDag::new(&r, Some(target)).unwrap();
        assert_eq!(g.order(), *order, "{target}");
        let got: Vec<&[usize]> = g.groups().iter().map(Vec::as_slice).collect();
        assert_eq!(got, *groups, "{target}");
        assert_eq!(g.images(), *images, "{target}");
    }
}

#[test]
fn independent_stages_share_a_group() {
    let r = resolve_with(
        "FROM a AS x\nFROM b AS y\nFROM c AS z\nCOPY --from=y / /\n\
         FROM scratch\nCOPY --from=x / /\nCOPY --from=z / /\n\
         RUN --mount=from=w,target=/w true\nCOPY --from=nginx:1 / /\n",
        &[],
    )
    .unwrap();
    let g = StageDag::new(&r, None).unwrap();
    assert_eq!(g.groups(), [vec![0, 1], vec![2], vec![3]]);
    assert_eq!(g.images(), ["a", "b", "c", "nginx:1", "w"]);
}

#[test]
fn copy_from_index() {
    let r = resolve_with("FROM a\nFROM b\nFROM c\nCOPY --from=0 / /\n", &[]).unwrap();
    let g = StageDag::new(&r, None).unwrap();
    assert_eq!(g.order(), [0, 2]);
    assert_eq!(g.dependencies(2), [0]);
}

#[test]
fn mount_from_adds_an_edge() {
    let r = resolve_with(
        "FROM a AS deps\nFROM b\nRUN --mount=from=deps,target=/d true\n",
        &[],
    )
    .unwrap();
    let g = StageDag::new(&r, None).unwrap();
    assert_eq!(g.order(), [0, 1]);
}

#[test]
fn cycles_name_their_stages() {
    let cases: &[(&str, Option<&str>, &[&str])] = &[
        (
            "FROM alpine AS a\nCOPY --from=b /b /b\nFROM alpine AS b\nCOPY --from=a /a /a\n",
            None,
            &["a", "b", "a"],
        ),
        (
            "FROM alpine AS self\nCOPY --from=self / /\n",
            None,
            &["self", "self"],
        ),
        (
            "FROM x AS a\nRUN --mount=from=c,target=/c true\nFROM a AS b\nFROM b AS c\n",
            None,
            &["a", "c", "b", "a"],
        ),
        // Like BuildKit, a cycle is an error even when the target does not need it.
        (
            "FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\nCOPY --from=a / /\nFROM scratch AS out\n",
            Some("out"),
            &["a", "b", "a"],
        ),
    ];
    for (text, target, want) in cases {
        let r = resolve_with(text, &[]).unwrap();
        match StageDag::new(&r, *target) {
            Err(DagError::Cycle { stages, span }) => {
                assert_eq!(stages, *want, "{text}");
                assert!(span.start.line > 1, "{text}: span {span:?}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn forward_references_fail_only_when_needed() {
    let text = "FROM alpine AS app\nCOPY --from=assets /x /x\nFROM alpine AS assets\n";
    let r = resolve_with(text, &[]).unwrap();
    // The default target (assets) does not need app.
    assert_eq!(StageDag::new(&r, None).unwrap().order(), [1]);
    let err = StageDag::new(&r, Some("app")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stage \"app\" reads stage \"assets\", which is defined after it"
    );
    assert_eq!(err.span().unwrap().start.line, 2);
    // By index too.
    let r = resolve_with("FROM a\nCOPY --from=1 / /\nFROM b\n", &[]).unwrap();
    assert!(matches!(
        StageDag::new(&r, Some("stage-0")),
        Err(DagError::UnknownTarget { .. })
    ));
}

#[test]
fn unknown_target_lists_the_stages() {
    let r = resolve_with(DIAMOND, &[]).unwrap();
    let err = StageDag::new(&r, Some("nope")).unwrap_err();
    assert_eq!(err.to_string(), "target stage \"nope\" could not be found");
    assert_eq!(
        err.help().unwrap(),
        "the stages are: base, build-a, build-b, unused, final"
    );
}

/// Every real Dockerfile of the conformance set resolves and builds a graph for its last stage.
/// The few that need a build arg to name their base image get it; the one template (not a
/// Dockerfile until rendered) must fail on its `{{` line.
#[test]
fn real_dockerfiles_resolve() {
    let Some(dir) = crate::support::conformance_dir() else {
        return;
    };
    let dir = dir.join("parser/real-dockerfiles");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.ends_with(".result") && name != "MANIFEST.tsv"
        })
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    let mut stages = 0;
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let result = resolve_with(
            &text,
            &[("BASE", "busybox"), ("CROSS_BASE_IMAGE", "ubuntu")],
        );
        if name == "docker-library_mysql___root__Dockerfile.oracle" {
            match result {
                Err(e) if e.to_string() == "unknown instruction \"{{\"" => {}
                other => failures.push(format!("{name}: want the template error, got {other:?}")),
            }
            continue;
        }
        let resolved = match result {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        stages += resolved.stages.len();
        if let Err(e) = StageDag::new(&resolved, None) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(paths.len(), 160);
    assert!(stages >= 160, "{stages}");
}
