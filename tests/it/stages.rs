//! Typed instructions and stages: flag validation, ARG/ENV scoping, expansion, stage references.

use kiln::frontend::ast::Dockerfile;
use kiln::frontend::diagnostic::Located;
use kiln::frontend::instruction::{Health, Instruction, MountType};
use kiln::frontend::stage::{
    Base, BaseImage, DEFAULT_PATH, DependencyKind, ImageKey, ResolveOptions, Resolved, Source,
    StageError, base_image_names, resolve,
};
use kiln::oci::Platform;
use std::collections::BTreeMap;

/// Parses Dockerfile text, failing the test on a syntax error.
pub fn parse(text: &str) -> Dockerfile {
    kiln::frontend::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Resolves Dockerfile text with these build args.
pub fn resolve_with(text: &str, build_args: &[(&str, &str)]) -> Result<Resolved, StageError> {
    resolve_on(text, build_args, &[])
}

/// Base images known to the resolver: (FROM name, config Env, config OnBuild).
type Images = &'static [(
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
)];

/// Resolves Dockerfile text with these build args and base images.
fn resolve_on(
    text: &str,
    build_args: &[(&str, &str)],
    images: Images,
) -> Result<Resolved, StageError> {
    let opts = ResolveOptions {
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Platform::parse("linux/arm64/v8").ok(),
        target: None,
        base_images: images
            .iter()
            .map(|(name, env, onbuild)| {
                let image = BaseImage {
                    env: env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    onbuild: onbuild.iter().map(|t| t.to_string()).collect(),
                };
                // The stages these tests resolve are for the target platform.
                (
                    ImageKey::new(name, &Platform::parse("linux/arm64").unwrap()),
                    image,
                )
            })
            .collect(),
        named_images: BTreeMap::new(),
    };
    resolve(&parse(text), &opts)
}

/// Build args of a table case.
type Args = &'static [(&'static str, &'static str)];

/// The value of the last `LABEL key=...` of the last stage, after expansion.
fn last_label(resolved: &Resolved, key: &str) -> Option<String> {
    resolved
        .stages
        .last()?
        .instructions
        .iter()
        .rev()
        .find_map(|i| match i {
            Instruction::Label(l) => l.pairs.iter().find(|p| p.key == key),
            _ => None,
        })
        .map(|p| p.value.clone())
}

#[test]
fn arg_scoping() {
    // (what, Dockerfile, build args, value of LABEL v in the last stage)
    let cases: &[(&str, &str, Args, &str)] = &[
        (
            "meta arg not redeclared is invisible in the stage",
            "ARG V=1\nFROM a\nLABEL v=$V\n",
            &[],
            "",
        ),
        (
            "redeclared without default takes the meta value",
            "ARG V=1\nFROM a\nARG V\nLABEL v=$V\n",
            &[],
            "1",
        ),
        (
            "redeclared with a default keeps its own default",
            "ARG V=1\nFROM a\nARG V=2\nLABEL v=$V\n",
            &[],
            "2",
        ),
        (
            "build arg overrides a stage default",
            "FROM a\nARG V=2\nLABEL v=$V\n",
            &[("V", "9")],
            "9",
        ),
        (
            "build arg overrides the meta value a redeclared ARG takes",
            "ARG V=1\nFROM a\nARG V\nLABEL v=$V\n",
            &[("V", "9")],
            "9",
        ),
        (
            "build arg without any ARG is not visible",
            "FROM a\nLABEL v=$V\n",
            &[("V", "9")],
            "",
        ),
        (
            "ENV after ARG wins",
            "FROM a\nARG V=1\nENV V=2\nLABEL v=$V\n",
            &[],
            "2",
        ),
        (
            "ENV wins over a build arg too",
            "FROM a\nARG V=1\nENV V=2\nLABEL v=$V\n",
            &[("V", "9")],
            "2",
        ),
        (
            "ARG after ENV of the same name replaces it for expansion (BuildKit's AddEnv)",
            "FROM a\nENV V=2\nARG V=1\nLABEL v=$V\n",
            &[],
            "1",
        ),
        (
            "a default can use an earlier ARG",
            "FROM a\nARG A=x\nARG B=${A}-y\nLABEL v=$B\n",
            &[],
            "x-y",
        ),
        (
            "a default sees the build arg of an earlier ARG",
            "FROM a\nARG A=x\nARG B=${A}-y\nLABEL v=$B\n",
            &[("A", "z")],
            "z-y",
        ),
        (
            "meta default can use an earlier meta arg",
            "ARG A=x\nARG B=$A.2\nFROM a\nARG B\nLABEL v=$B\n",
            &[],
            "x.2",
        ),
        (
            "an ARG of another stage is invisible",
            "FROM a AS one\nARG V=1\nFROM b\nLABEL v=$V\n",
            &[],
            "",
        ),
        (
            "ENV of another stage is invisible",
            "FROM a AS one\nENV V=1\nFROM b\nLABEL v=$V\n",
            &[],
            "",
        ),
        (
            "ENV persists into a stage built FROM it",
            "FROM a AS one\nENV V=1\nFROM one\nLABEL v=$V\n",
            &[],
            "1",
        ),
        (
            "ARG persists into a stage built FROM it (BuildKit copies the parent's state)",
            "FROM a AS one\nARG V=1\nFROM one\nLABEL v=$V\n",
            &[],
            "1",
        ),
        (
            "predefined args need an ARG in the stage",
            "FROM a\nLABEL v=$TARGETARCH\n",
            &[],
            "",
        ),
        (
            "predefined args take their value when declared",
            "FROM a\nARG TARGETARCH\nLABEL v=$TARGETARCH\n",
            &[],
            "arm64",
        ),
        (
            "TARGETPLATFORM is normalised, as BuildKit's (arm64/v8 is arm64)",
            "FROM a\nARG TARGETPLATFORM\nLABEL v=$TARGETPLATFORM\n",
            &[],
            "linux/arm64",
        ),
        (
            "BUILDPLATFORM",
            "FROM a\nARG BUILDPLATFORM\nLABEL v=$BUILDPLATFORM\n",
            &[],
            "linux/amd64",
        ),
        (
            "TARGETSTAGE of an unnamed last stage is `default`, as BuildKit's",
            "FROM a AS first\nFROM b\nARG TARGETSTAGE\nLABEL v=$TARGETSTAGE\n",
            &[],
            "default",
        ),
        (
            "TARGETSTAGE is the last stage by default",
            "FROM a AS first\nFROM b AS final\nARG TARGETSTAGE\nLABEL v=$TARGETSTAGE\n",
            &[],
            "final",
        ),
        (
            "one ENV expands all pairs with the scope before it",
            "FROM a\nENV V=1\nENV V=2 W=$V\nLABEL v=$W\n",
            &[],
            "1",
        ),
        (
            "ENV value quotes are removed",
            "FROM a\nENV V=\"a b\"\nLABEL v=$V\n",
            &[],
            "a b",
        ),
        (
            "scratch and images start with BuildKit's default PATH",
            "FROM scratch\nLABEL v=$PATH\n",
            &[],
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, args, want) in cases {
        match resolve_with(text, args) {
            Ok(r) => {
                let got = last_label(&r, "v").unwrap_or_default();
                if got != *want {
                    failures.push(format!("{what}: got {got:?}, want {want:?}"));
                }
            }
            Err(e) => failures.push(format!("{what}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn from_lines_use_the_global_scope() {
    let cases: &[(&str, Args, &str, Option<&str>)] = &[
        ("ARG V=3.18\nFROM alpine:$V\n", &[], "alpine:3.18", None),
        (
            "ARG V=3.18\nFROM alpine:$V\n",
            &[("V", "edge")],
            "alpine:edge",
            None,
        ),
        (
            "FROM --platform=$BUILDPLATFORM golang AS b\n",
            &[],
            "golang",
            Some("linux/amd64"),
        ),
        ("ARG IMG=busybox\nFROM ${IMG}:1\n", &[], "busybox:1", None),
        // A stage ARG is not in the global scope.
        ("FROM a\nARG V=x\nFROM img$V\n", &[], "img", None),
    ];
    for (text, args, image, platform) in cases {
        let r = resolve_with(text, args).unwrap();
        let last = r.stages.last().unwrap();
        assert_eq!(last.base_name, *image, "{text}");
        assert_eq!(last.platform.as_deref(), *platform, "{text}");
    }
}

/// Each stage's platform, as BuildKit's dispatch gives it: FROM `--platform` as parsed, else
/// the target's; a stage FROM another has that one's (its own `--platform` is ignored); FROM
/// scratch is always the target's. The build platform is linux/amd64, the target
/// linux/arm64/v8 (normalised: linux/arm64).
#[test]
fn each_stage_has_the_platform_buildkit_gives_it() {
    let cases: &[(&str, &[&str])] = &[
        ("FROM a\n", &["linux/arm64"]),
        (
            "FROM --platform=$BUILDPLATFORM a AS b\nFROM b\n",
            &["linux/amd64", "linux/amd64"],
        ),
        ("FROM --platform=linux/arm64/v8 a\n", &["linux/arm64/v8"]),
        ("FROM --platform=linux/arm/v7 scratch\n", &["linux/arm64"]),
        (
            "FROM --platform=linux/s390x a AS x\nFROM --platform=linux/ppc64le x\n",
            &["linux/s390x", "linux/s390x"],
        ),
        (
            "ARG P=linux/riscv64\nFROM --platform=$P a\nFROM --platform=$TARGETPLATFORM a\n",
            &["linux/riscv64", "linux/arm64"],
        ),
    ];
    for (text, expected) in cases {
        let resolved = resolve_with(text, &[]).unwrap();
        let platforms: Vec<String> = resolved
            .stages
            .iter()
            .map(|s| s.effective_platform.to_string())
            .collect();
        assert_eq!(&platforms, expected, "{text}");
        assert_eq!(resolved.target_platform.to_string(), "linux/arm64");
    }
    let err = resolve_with("FROM --platform=linux/arm64/v8/x a\n", &[]).unwrap_err();
    assert_eq!(err.to_string(), "failed to parse platform linux/arm64/v8/x");
}

/// BuildKit's CopyCommand/AddCommand.Expand: `--chmod` and `--chown` take build args and env
/// (issue 12, item 5).
#[test]
fn copy_and_add_expand_chmod_and_chown() {
    let r = resolve_with(
        "FROM a\nARG mode=0750\nENV who=1000:1000\nCOPY --chmod=${mode} --chown=${who} f /f\n\
         ADD --chmod=$mode --chown=$who g /g\nCOPY --chmod=${unset:-644} h /h\n",
        &[],
    )
    .unwrap();
    let flags: Vec<(Option<&str>, Option<&str>)> = r.stages[0]
        .instructions
        .iter()
        .filter_map(|i| match i {
            Instruction::Copy(c) => Some((c.chmod.as_deref(), c.chown.as_deref())),
            Instruction::Add(a) => Some((a.chmod.as_deref(), a.chown.as_deref())),
            _ => None,
        })
        .collect();
    assert_eq!(
        flags,
        [
            (Some("0750"), Some("1000:1000")),
            (Some("0750"), Some("1000:1000")),
            (Some("644"), None)
        ]
    );
}

#[test]
fn expansion_per_instruction() {
    let r = resolve_with(
        "FROM a\nARG D=/app\nARG U=1000\nWORKDIR $D\nUSER $U\nCOPY --chown=$U src $D/\n\
         RUN echo $D\nCMD echo $D\nEXPOSE ${P:-80}\nVOLUME $D/data\nSTOPSIGNAL SIG${S:-TERM}\n",
        &[],
    )
    .unwrap();
    let ins = &r.stages[0].instructions;
    let mut seen = 0;
    for i in ins {
        match i {
            Instruction::Workdir(w) => {
                assert_eq!(w.path, "/app");
                seen += 1;
            }
            Instruction::User(u) => {
                assert_eq!(u.user, "1000");
                seen += 1;
            }
            Instruction::Copy(c) => {
                assert_eq!(c.chown.as_deref(), Some("1000"));
                assert_eq!(c.dest, "/app/");
                assert_eq!(c.sources, ["src"]);
                seen += 1;
            }
            Instruction::Run(run) => {
                // The shell expands RUN, not the builder.
                assert_eq!(
                    run.command,
                    kiln::frontend::instruction::Command::Shell("echo $D".into())
                );
                seen += 1;
            }
            Instruction::Cmd(c) => {
                assert_eq!(
                    c.command,
                    kiln::frontend::instruction::Command::Shell("echo $D".into())
                );
                seen += 1;
            }
            Instruction::Expose(e) => {
                assert_eq!(e.ports, ["80"]);
                seen += 1;
            }
            Instruction::Volume(v) => {
                assert_eq!(v.paths, ["/app/data"]);
                seen += 1;
            }
            Instruction::StopSignal(s) => {
                assert_eq!(s.signal, "SIGTERM");
                seen += 1;
            }
            _ => {}
        }
    }
    assert_eq!(seen, 8);
}

#[test]
fn expose_splits_expanded_words() {
    let r = resolve_with("FROM a\nARG P=\"80 443/udp\"\nEXPOSE $P \"${P}\" 22\n", &[]).unwrap();
    let Instruction::Expose(e) = &r.stages[0].instructions[1] else {
        panic!("not an EXPOSE")
    };
    // A quoted expansion stays one word, as in the shell.
    assert_eq!(e.ports, ["80", "443/udp", "80 443/udp", "22"]);
}

#[test]
fn escape_directive_is_used_for_expansion() {
    let r = resolve_with("# escape=`\nFROM a\nENV V=x\nLABEL v=`$V-$V\n", &[]).unwrap();
    assert_eq!(last_label(&r, "v").as_deref(), Some("$V-x"));
}

#[test]
fn mount_values_are_expanded_but_from_is_not() {
    let r = resolve_with(
        "FROM a AS b\nFROM c\nARG C=/cache\nRUN --mount=type=cache,target=$C,uid=${UID:-10} \
         --mount=from=b,target=/b true\n",
        &[],
    )
    .unwrap();
    let Instruction::Run(run) = &r.stages[1].instructions[1] else {
        panic!("not a RUN")
    };
    assert_eq!(run.mounts[0].kind, MountType::Cache);
    assert_eq!(run.mounts[0].target.as_deref(), Some("/cache"));
    assert_eq!(run.mounts[0].uid, Some(10));
    assert_eq!(run.mounts[1].from.as_deref(), Some("b"));
    assert!(
        r.stages[1]
            .dependencies
            .iter()
            .any(|d| d.kind == DependencyKind::MountFrom && d.on == Source::Stage(0))
    );
}

#[test]
fn mount_rules_are_checked_after_expansion() {
    let r = resolve_with(
        "FROM a\nARG T=cache\nRUN --mount=type=$T,target=/c,mode=0700 true\n",
        &[],
    )
    .unwrap();
    let Instruction::Run(run) = &r.stages[0].instructions[1] else {
        panic!("not a RUN")
    };
    assert_eq!(run.mounts[0].kind, MountType::Cache);
    assert_eq!(run.mounts[0].mode, Some(0o700));
    let err = resolve_with(
        "FROM a\nARG T=bind\nRUN --mount=type=$T,target=/c,mode=0700 true\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid --mount: mode is not allowed for type=bind mounts"
    );
}

#[test]
fn stage_bases_and_copy_sources() {
    let r = resolve_with(
        "FROM alpine AS Base\nFROM base\nFROM scratch\nCOPY --from=0 /a /a\n\
         COPY --from=BASE /b /b\nCOPY --from=nginx:1 /c /c\n",
        &[],
    )
    .unwrap();
    assert_eq!(r.stages[0].name.as_deref(), Some("base"));
    assert_eq!(r.stages[0].base, Base::Image("alpine".into()));
    assert_eq!(r.stages[1].base, Base::Stage(0));
    assert_eq!(r.stages[2].base, Base::Scratch);
    let ons: Vec<&Source> = r.stages[2]
        .dependencies
        .iter()
        .filter(|d| d.kind == DependencyKind::CopyFrom)
        .map(|d| &d.on)
        .collect();
    assert_eq!(
        ons,
        [
            &Source::Stage(0),
            &Source::Stage(0),
            &Source::Image("nginx:1".into())
        ]
    );
}

#[test]
fn a_stage_name_used_twice_finds_the_last_stage_of_that_name() {
    // BuildKit warns (DuplicateStageName) and builds: FROM finds the latest earlier stage of the
    // name, `--from` and `--target` the last in the file (its `statesByName` is overwritten).
    let r = resolve_with(
        "FROM alpine AS a\nFROM busybox AS a\nFROM a AS b\nCOPY --from=a /x /x\n\
         FROM scratch AS A\n",
        &[],
    )
    .unwrap();
    assert_eq!(r.stages[2].base, Base::Stage(1));
    let ons: Vec<&Source> = r.stages[2]
        .dependencies
        .iter()
        .filter(|d| d.kind == DependencyKind::CopyFrom)
        .map(|d| &d.on)
        .collect();
    assert_eq!(ons, [&Source::Stage(3)]);
    let last = r.stage_by_name("a").expect("a stage named a");
    assert_eq!(last.base, Base::Scratch);
}

#[test]
fn empty_string_flags_are_not_given() {
    let r = resolve_with(
        "FROM --platform= a\nCOPY --from= --chown= x /x\nHEALTHCHECK --retries= CMD true\n",
        &[],
    )
    .unwrap();
    let stage = &r.stages[0];
    assert_eq!(stage.platform, None);
    // COPY --from= copies from the build context, as BuildKit does.
    let Instruction::Copy(c) = &stage.instructions[0] else {
        panic!("not a COPY")
    };
    assert_eq!((c.from.as_deref(), c.chown.as_deref()), (None, None));
    assert!(
        !stage
            .dependencies
            .iter()
            .any(|d| d.kind == DependencyKind::CopyFrom)
    );
    let Instruction::Healthcheck(h) = &stage.instructions[1] else {
        panic!("not a HEALTHCHECK")
    };
    assert!(matches!(h.health, Health::Check { retries: 0, .. }));
}

#[test]
fn from_names_only_earlier_stages() {
    // BuildKit looks FROM up among the stages defined so far: a later stage's name is an image.
    let r = resolve_with("FROM later AS first\nFROM alpine AS later\n", &[]).unwrap();
    assert_eq!(r.stages[0].base, Base::Image("later".into()));
}

#[test]
fn stage_errors() {
    // (Dockerfile, message, line and column of the span)
    let cases: &[(&str, &str, (usize, usize))] = &[
        ("ARG A\n", "the Dockerfile has no FROM instruction", (1, 1)),
        (
            "ARG A\nRUN true\nFROM a\n",
            "RUN cannot come before the first FROM",
            (2, 1),
        ),
        (
            "FROM a\nFROM b\nCOPY --from=2 /x /x\n",
            "invalid stage index 2: the Dockerfile has 2 stage(s)",
            (3, 6),
        ),
        (
            "FROM a\nCOPY --from=-1 /x /x\n",
            "invalid stage index -1",
            (2, 6),
        ),
        (
            "ARG I\nFROM $I\n",
            "base name ($I) should not be blank",
            (2, 6),
        ),
        (
            "FROM --platform=$NOPE a\n",
            "empty platform value from expression $NOPE",
            (1, 6),
        ),
        (
            "FROM a\nLABEL v=${X:?required}\n",
            "cannot expand LABEL",
            (2, 9),
        ),
        // BuildKit recognises only the exact word `scratch`.
        (
            "FROM SCRATCH\n",
            "invalid image reference \"SCRATCH\"",
            (1, 6),
        ),
        (
            "FROM a\nARG EMPTY\nVOLUME /data $EMPTY\n",
            "VOLUME specified can not be an empty string",
            (3, 1),
        ),
        (
            "FROM a\nVOLUME [\"/data\", \" \"]\n",
            "VOLUME specified can not be an empty string",
            (2, 1),
        ),
        (
            "FROM a\nONBUILD  from b\n",
            "ONBUILD cannot use FROM as a trigger",
            (2, 10),
        ),
        (
            "FROM a\nONBUILD ONBUILD RUN x\n",
            "ONBUILD cannot chain ONBUILD ONBUILD",
            (2, 9),
        ),
    ];
    let mut failures = Vec::new();
    for (text, want, (line, col)) in cases {
        match resolve_with(text, &[]) {
            Ok(_) => failures.push(format!("{text:?}: no error")),
            Err(e) => {
                let span = e.span().unwrap();
                if !e.to_string().contains(want)
                    || (span.start.line, span.start.column) != (*line, *col)
                    || e.help().is_none()
                {
                    failures.push(format!(
                        "{text:?}: got {e} at {}:{}",
                        span.start.line, span.start.column
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unused_build_args_are_reported() {
    let r = resolve_with(
        "ARG USED\nFROM a\nARG ALSO\n",
        &[
            ("USED", "1"),
            ("ALSO", "1"),
            ("UNUSED", "1"),
            ("HTTP_PROXY", "p"),
            ("TARGETOS", "x"),
            ("SOURCE_DATE_EPOCH", "0"),
        ],
    )
    .unwrap();
    let messages: Vec<&str> = r.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        messages,
        ["build arguments were not consumed by any ARG: UNUSED"]
    );
    assert_eq!(r.proxy_env, [("HTTP_PROXY".to_string(), "p".to_string())]);
}

#[test]
fn instruction_flags() {
    // (instruction, Ok or the error message, column of the error)
    let cases: &[(&str, Result<(), &str>, usize)] = &[
        (
            "COPY --from=b --chown=1:1 --chmod=644 --link a b",
            Ok(()),
            0,
        ),
        ("COPY --parents --exclude=*.md --exclude=x a b", Ok(()), 0),
        ("COPY --link=false a b", Ok(()), 0),
        (
            "ADD --checksum=sha256:00 --keep-git-dir --unpack=true a b",
            Ok(()),
            0,
        ),
        ("RUN --network=none --security=insecure true", Ok(()), 0),
        ("HEALTHCHECK --interval=30s --retries=3 CMD true", Ok(()), 0),
        ("HEALTHCHECK --interval=0 CMD true", Ok(()), 0),
        ("FROM --platform=linux/arm64 a AS b", Ok(()), 0),
        ("COPY --form=b a b", Err("unknown flag --form for COPY"), 6),
        (
            "COPY --from a b",
            Err("flag --from of COPY is missing a value"),
            6,
        ),
        // BuildKit reads an empty string flag as not given.
        ("COPY --from= --chown= a b", Ok(()), 0),
        ("ADD --checksum= --chmod= a b", Ok(()), 0),
        ("FROM --platform= a", Ok(()), 0),
        (
            "HEALTHCHECK --interval= --timeout= --start-period= --start-interval= --retries= \
             CMD true",
            Ok(()),
            0,
        ),
        (
            "COPY --from= --from=a x y",
            Err("flag --from is given twice to COPY"),
            14,
        ),
        // Their defaults are not empty, so an empty value is a bad one.
        (
            "RUN --network= true",
            Err("flag --network of RUN has an unsupported value \"\""),
            5,
        ),
        (
            "RUN --security= true",
            Err("flag --security of RUN has an unsupported value \"\""),
            5,
        ),
        (
            "COPY --link=yes a b",
            Err("flag --link of COPY expects true or false, not \"yes\""),
            6,
        ),
        (
            "COPY --link= a b",
            Err("flag --link of COPY is missing a value"),
            6,
        ),
        (
            "COPY --from=a --from=b x y",
            Err("flag --from is given twice to COPY"),
            15,
        ),
        ("ADD --from=a x y", Err("unknown flag --from for ADD"), 5),
        (
            "COPY --checksum=sha256:0 x y",
            Err("unknown flag --checksum for COPY"),
            6,
        ),
        ("WORKDIR --x=1 /a", Err("unknown flag --x for WORKDIR"), 9),
        (
            "RUN --network=bridge true",
            Err("flag --network of RUN has an unsupported value \"bridge\""),
            5,
        ),
        (
            "RUN --security=x true",
            Err("flag --security of RUN has an unsupported value \"x\""),
            5,
        ),
        (
            "RUN --mount=type=nfs,target=/x true",
            Err("invalid --mount: unsupported mount type \"nfs\""),
            5,
        ),
        (
            "RUN --mount=type=bind,from=$X,target=/x true",
            Err("invalid --mount: from= does not support variable expansion"),
            5,
        ),
        (
            "HEALTHCHECK --interval=5 CMD true",
            Err("flag --interval of HEALTHCHECK is not a duration: missing unit in duration \"5\""),
            13,
        ),
        (
            "HEALTHCHECK --timeout=1us CMD true",
            Err("flag --timeout of HEALTHCHECK cannot be less than 1ms"),
            13,
        ),
        (
            "HEALTHCHECK --retries=-1 CMD true",
            Err("flag --retries of HEALTHCHECK cannot be negative (-1)"),
            13,
        ),
        (
            "HEALTHCHECK --start-periods=1s CMD true",
            Err("unknown flag --start-periods for HEALTHCHECK"),
            13,
        ),
    ];
    let mut failures = Vec::new();
    for (line, want, col) in cases {
        let df = parse(&format!("FROM a\n{line}\n"));
        let got = Instruction::from_node(&df.nodes[1]);
        match (got, want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(msg)) => {
                let span = e.span().unwrap();
                if e.to_string() != *msg {
                    failures.push(format!("{line}: message {e}"));
                } else if (span.start.line, span.start.column) != (2, *col) {
                    failures.push(format!(
                        "{line}: span {}:{}, want 2:{col}",
                        span.start.line, span.start.column
                    ));
                }
            }
            (got, want) => failures.push(format!("{line}: got {got:?}, want {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn instruction_arguments() {
    let cases: &[(&str, Result<(), &str>)] = &[
        ("COPY a", Err("COPY requires at least two arguments")),
        ("ADD a", Err("ADD requires at least two arguments")),
        (
            "COPY a 0<<E\"O\"F\nx\nEOF",
            Err("COPY cannot accept a heredoc as a destination"),
        ),
        // BuildKit's parser keeps the rest of the line as the one argument.
        ("WORKDIR /a b", Ok(())),
        (
            "FROM a b",
            Err("FROM requires either one or three arguments"),
        ),
        ("FROM a AS 1x", Err("FROM has an invalid stage name \"1x\"")),
        (
            "FROM a AS b$c",
            Err("FROM has an invalid stage name \"b$c\""),
        ),
        ("SHELL /bin/sh -c", Err("SHELL requires the JSON form")),
        (
            "HEALTHCHECK NONE x",
            Err("HEALTHCHECK NONE takes no arguments"),
        ),
        (
            "HEALTHCHECK TEST x",
            Err("HEALTHCHECK has an unknown type \"TEST\""),
        ),
        (
            "ONBUILD ONBUILD RUN x",
            Err("ONBUILD cannot chain ONBUILD ONBUILD"),
        ),
        (
            "ONBUILD FROM a",
            Err("ONBUILD cannot use FROM as a trigger"),
        ),
        (
            "ONBUILD MAINTAINER a",
            Err("ONBUILD cannot use MAINTAINER as a trigger"),
        ),
        // BuildKit checks only the trigger's keyword; the child build parses the rest.
        ("ONBUILD RUN --mount=type=nope true", Ok(())),
        ("ONBUILD FOO bar", Ok(())),
        ("ONBUILD COPY onlyone", Ok(())),
        ("ONBUILD RUN true", Ok(())),
        ("SHELL [\"/bin/bash\", \"-c\"]", Ok(())),
        ("ENTRYPOINT []", Ok(())),
        ("FROM a AS My.Stage-1_x", Ok(())),
        ("EXPOSE 80/tcp 443", Ok(())),
    ];
    let mut failures = Vec::new();
    for (line, want) in cases {
        let df = parse(&format!("FROM a\n{line}\n"));
        match (Instruction::from_node(&df.nodes[1]), want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(msg)) if e.to_string().starts_with(msg) => {}
            (got, want) => failures.push(format!("{line}: got {got:?}, want {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn typed_values() {
    let df = parse(
        "FROM a\nHEALTHCHECK --interval=1m30s --timeout=500ms --retries=2 CMD [\"curl\", \"-f\"]\n\
         COPY <<EOF /etc/x\nhello\nEOF\nONBUILD RUN echo hi\nARG A B=2\n",
    );
    let ins: Vec<Instruction> = df
        .nodes
        .iter()
        .map(|n| Instruction::from_node(n).unwrap())
        .collect();
    let Instruction::Healthcheck(h) = &ins[1] else {
        panic!()
    };
    let Health::Check {
        interval,
        timeout,
        retries,
        command,
        ..
    } = &h.health
    else {
        panic!()
    };
    assert_eq!(*interval, 90_000_000_000);
    assert_eq!(*timeout, 500_000_000);
    assert_eq!(*retries, 2);
    assert_eq!(
        *command,
        kiln::frontend::instruction::Command::Exec(vec!["curl".into(), "-f".into()])
    );
    let Instruction::Copy(c) = &ins[2] else {
        panic!()
    };
    assert!(c.sources.is_empty());
    assert_eq!(c.inline.len(), 1);
    assert_eq!(c.inline[0].name, "EOF");
    assert_eq!(c.inline[0].content, "hello\n");
    assert_eq!(c.dest, "/etc/x");
    let Instruction::Onbuild(o) = &ins[3] else {
        panic!()
    };
    assert_eq!(o.expression, "RUN echo hi");
    let Instruction::Arg(a) = &ins[4] else {
        panic!()
    };
    assert_eq!(a.args.len(), 2);
    assert_eq!(a.args[1].default.as_deref(), Some("2"));
}

#[test]
fn copy_sources_that_are_heredoc_markers_are_inline_files() {
    // (Dockerfile line, inline file name, body, expanded, context paths)
    let cases: &[(&str, &str, &str, bool, &[&str])] = &[
        ("COPY <<EOF /x/\nbody\nEOF", "EOF", "body\n", true, &[]),
        // Part of the delimiter quoted: one marker, body taken literally.
        ("COPY <<E\"O\"F /x/\nbody\nEOF", "EOF", "body\n", false, &[]),
        // A file descriptor before `<<` is part of BuildKit's marker pattern.
        ("COPY 0<<EOF /x\nbody\nEOF", "EOF", "body\n", true, &[]),
        (
            "COPY <<-EOF a /x\n\tbody\nEOF",
            "EOF",
            "body\n",
            true,
            &["a"],
        ),
    ];
    let mut failures = Vec::new();
    for (line, name, body, expand, paths) in cases {
        let df = parse(&format!("FROM a\n{line}\n"));
        match Instruction::from_node(&df.nodes[1]) {
            Ok(Instruction::Copy(c)) => {
                let inline: Vec<(&str, &str, bool)> = c
                    .inline
                    .iter()
                    .map(|f| (f.name.as_str(), f.content.as_str(), f.expand))
                    .collect();
                if inline != [(*name, *body, *expand)] || c.sources != *paths {
                    failures.push(format!("{line:?}: {inline:?}, sources {:?}", c.sources));
                }
            }
            other => failures.push(format!("{line:?}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn onbuild_expressions_keep_heredoc_bodies() {
    // BuildKit stores the text after ONBUILD, then "\n" + body + name for each heredoc.
    let df = parse(
        "FROM a\n  onbuild \tRUN <<A cat - <<'B'\na1\nA\nb1\nb2\nB\nONBUILD COPY <<EOF /x\nEOF\n",
    );
    let expressions: Vec<String> = df.nodes[1..]
        .iter()
        .map(|n| match Instruction::from_node(n) {
            Ok(Instruction::Onbuild(o)) => o.expression,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        expressions,
        [
            "RUN <<A cat - <<'B'\na1\nA\nb1\nb2\nB",
            "COPY <<EOF /x\nEOF"
        ]
    );
}

#[test]
fn heredoc_bodies_expand_unless_quoted() {
    let r = resolve_with(
        "FROM a\nARG V=x\nCOPY <<EOF <<\"RAW\" /dst/\n\"$V\" ${V}\nEOF\n$V\nRAW\n",
        &[],
    )
    .unwrap();
    let Instruction::Copy(c) = &r.stages[0].instructions[1] else {
        panic!("not a COPY")
    };
    let bodies: Vec<(&str, &str)> = c
        .inline
        .iter()
        .map(|f| (f.name.as_str(), f.content.as_str()))
        .collect();
    // Quotes stay in an expanded body (BuildKit's ExpandRaw skips quote processing).
    assert_eq!(bodies, [("EOF", "\"x\" x\n"), ("RAW", "$V\n")]);
}

/// The image most base-image cases build on: some Env and no triggers.
const IMG: Images = &[("img", &[("FOO", "bar"), ("DIR", "/srv")], &[])];

#[test]
fn base_image_env_and_onbuild_triggers() {
    // (what, Dockerfile, build args, images, the last stage's instructions as shown (with
    // `<default PATH>` for DEFAULT_PATH), how many of them are triggers)
    type Case = (
        &'static str,
        &'static str,
        Args,
        Images,
        &'static [&'static str],
        usize,
    );
    let cases: &[Case] = &[
        (
            "the image's env expands COPY, ENV and WORKDIR",
            "FROM img\nCOPY $FOO /x\nENV A=$FOO\nWORKDIR $DIR/app\n",
            &[],
            IMG,
            &["COPY bar /x", "ENV A=bar", "WORKDIR /srv/app"],
            0,
        ),
        (
            "an image kiln knows nothing of has no env",
            "FROM other\nENV A=${FOO:-unset}\n",
            &[],
            IMG,
            &["ENV A=unset"],
            0,
        ),
        (
            "the image is looked up by its expanded FROM name",
            "ARG BASE=img\nFROM $BASE\nENV A=$FOO\n",
            &[],
            IMG,
            &["ENV A=bar"],
            0,
        ),
        (
            "an image's own PATH replaces the default",
            "FROM img\nENV P=$PATH\n",
            &[],
            &[("img", &[("PATH", "/opt/bin")], &[])],
            &["ENV P=/opt/bin"],
            0,
        ),
        (
            "an image's empty PATH is kept",
            "FROM img\nENV P=${PATH-unset}\n",
            &[],
            &[("img", &[("PATH", "")], &[])],
            &["ENV P=\"\""],
            0,
        ),
        (
            "the last of an image's duplicate keys wins",
            "FROM img\nENV A=$FOO\n",
            &[],
            &[("img", &[("FOO", "1"), ("FOO", "2")], &[])],
            &["ENV A=2"],
            0,
        ),
        (
            "ENV in the stage overrides the image's",
            "FROM img\nENV FOO=mine\nENV A=$FOO\n",
            &[],
            IMG,
            &["ENV FOO=mine", "ENV A=mine"],
            0,
        ),
        (
            "an ARG with no value leaves the image's variable alone",
            "FROM img\nARG FOO\nENV A=$FOO\n",
            &[],
            IMG,
            &["ARG FOO", "ENV A=bar"],
            0,
        ),
        (
            "a build arg for a declared ARG overrides the image's variable",
            "FROM img\nARG FOO\nENV A=$FOO\n",
            &[("FOO", "cli")],
            IMG,
            &["ARG FOO=cli", "ENV A=cli"],
            0,
        ),
        (
            "a stage from a stage inherits the image's env",
            "FROM img AS base\nFROM base\nENV A=$FOO\n",
            &[],
            IMG,
            &["ENV A=bar"],
            0,
        ),
        (
            "triggers run first, in order, and see the image's env",
            "FROM img\nRUN make\n",
            &[],
            &[("img", &[("FOO", "bar")], &["COPY $FOO /t", "RUN echo $FOO"])],
            &["COPY bar /t", "RUN echo $FOO", "RUN make"],
            2,
        ),
        (
            "a trigger's ENV is seen by the stage's instructions",
            "FROM img\nENV Y=$X\n",
            &[],
            &[("img", &[], &["ENV X=1"])],
            &["ENV X=1", "ENV Y=1"],
            1,
        ),
        (
            "a trigger does not see the stage's ARGs, which come after it",
            "FROM img\nARG V=1\n",
            &[],
            &[("img", &[], &["ENV X=${V:-none}"])],
            &["ENV X=none", "ARG V=1"],
            1,
        ),
        (
            "a trigger's ARG takes its build arg",
            "FROM img\n",
            &[("V", "cli")],
            &[("img", &[], &["ARG V=dflt"])],
            &["ARG V=cli"],
            1,
        ),
        (
            "a trigger may be in JSON form or use a heredoc",
            "FROM img\n",
            &[],
            &[(
                "img",
                &[],
                &["RUN [\"echo\", \"hi\"]", "RUN <<EOF\necho $HOME\nEOF"],
            )],
            &["RUN [\"echo\",\"hi\"]", "RUN <<EOF"],
            2,
        ),
        (
            "the image's default PATH is there for triggers",
            "FROM img\n",
            &[],
            &[("img", &[], &["ENV P=$PATH"])],
            &["ENV P=<default PATH>"],
            1,
        ),
        (
            "a stage from a stage runs that stage's ONBUILD, in the child's scope",
            "FROM scratch AS base\nENV F=a\nONBUILD COPY $F /x\nFROM base\nENV F=b\n",
            &[],
            &[],
            &["COPY a /x", "ENV F=b"],
            1,
        ),
        (
            "a stage from a stage does not run again the triggers its parent ran",
            "FROM img AS base\nFROM base\nRUN x\n",
            &[],
            &[("img", &[], &["RUN trigger"])],
            &["RUN x"],
            0,
        ),
        (
            "a grandchild stage does not run its grandparent's ONBUILD",
            "FROM scratch AS a\nONBUILD RUN t\nFROM a AS b\nFROM b\n",
            &[],
            &[],
            &[],
            0,
        ),
        (
            "ONBUILD in the image's own stage is recorded, not run",
            "FROM img\nONBUILD RUN later\n",
            &[],
            &[("img", &[], &["RUN now"])],
            &["RUN now", "ONBUILD RUN later"],
            1,
        ),
        (
            "scratch has the default PATH and no triggers",
            "FROM scratch\nENV P=$PATH\n",
            &[],
            &[("scratch", &[("PATH", "/nope")], &["RUN nope"])],
            &["ENV P=<default PATH>"],
            0,
        ),
    ];
    let mut failures = Vec::new();
    for (what, dockerfile, args, images, want, want_count) in cases {
        let resolved = match resolve_on(dockerfile, args, images) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                continue;
            }
        };
        let Some(stage) = resolved.stages.last() else {
            failures.push(format!("{what}: no stages"));
            continue;
        };
        let got: Vec<String> = stage.instructions.iter().map(|i| i.to_string()).collect();
        let want: Vec<String> = want
            .iter()
            .map(|w| w.replace("<default PATH>", DEFAULT_PATH))
            .collect();
        if got != want || stage.onbuild_count != *want_count {
            failures.push(format!(
                "{what}: got {got:?} ({} triggers), want {want:?} ({want_count} triggers)",
                stage.onbuild_count
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 21);
}

#[test]
fn triggers_point_at_the_from_line_and_add_their_dependencies() {
    let images: Images = &[(
        "img",
        &[("FOO", "bar")],
        &[
            "COPY --from=builder /out /out",
            "COPY <<EOF /greeting\n$FOO\nEOF",
        ],
    )];
    let r = resolve_on(
        "FROM alpine AS builder\n\nFROM img AS app\nRUN x\n",
        &[],
        images,
    )
    .unwrap();
    let stage = &r.stages[1];
    assert_eq!(stage.onbuild_count, 2);
    // Both triggers sit on the FROM line (3), the stage's own RUN on its line.
    let lines: Vec<usize> = stage
        .instructions
        .iter()
        .map(|i| i.span().start.line)
        .collect();
    assert_eq!(lines, [3, 3, 4]);
    let deps: Vec<(Source, DependencyKind, usize)> = stage
        .dependencies
        .iter()
        .map(|d| (d.on.clone(), d.kind, d.span.start.line))
        .collect();
    assert_eq!(
        deps,
        [
            (Source::Image("img".into()), DependencyKind::From, 3),
            (Source::Stage(0), DependencyKind::CopyFrom, 3),
        ]
    );
    let Instruction::Copy(c) = &stage.instructions[1] else {
        panic!("not a COPY: {:?}", stage.instructions[1]);
    };
    assert_eq!(c.inline.len(), 1);
    assert_eq!(c.inline[0].content, "bar\n");
}

#[test]
fn bad_triggers_are_errors_at_the_from_line() {
    // (what, Dockerfile, images, the message, the line it points at)
    let cases: &[(&str, &str, Images, &str, usize)] = &[
        (
            "an unknown instruction",
            "ARG X\nFROM img\n",
            &[("img", &[], &["FROBNICATE x"])],
            "ONBUILD trigger \"FROBNICATE x\" of image img: unknown instruction \"FROBNICATE\"",
            2,
        ),
        (
            "ONBUILD in a trigger",
            "FROM img\n",
            &[("img", &[], &["ONBUILD RUN x"])],
            "ONBUILD trigger \"ONBUILD RUN x\" of image img: chaining ONBUILD via `ONBUILD ONBUILD` \
             isn't allowed",
            1,
        ),
        (
            "FROM in a trigger",
            "FROM img\n",
            &[("img", &[], &["from scratch"])],
            "FROM isn't allowed as an ONBUILD trigger",
            1,
        ),
        (
            "MAINTAINER in a trigger",
            "FROM img\n",
            &[("img", &[], &["MAINTAINER me"])],
            "MAINTAINER isn't allowed as an ONBUILD trigger",
            1,
        ),
        (
            "two instructions in one trigger",
            "FROM img\n",
            &[("img", &[], &["RUN a\nRUN b"])],
            "ONBUILD trigger \"RUN a\\nRUN b\" of image img: a trigger must be exactly one instruction",
            1,
        ),
        (
            "an empty trigger",
            "FROM img\n",
            &[("img", &[], &[""])],
            "a trigger must be exactly one instruction",
            1,
        ),
        (
            "a trigger that does not parse",
            "FROM img\n",
            &[("img", &[], &["RUN <<EOF\nno end"])],
            "ONBUILD trigger \"RUN <<EOF\\nno end\" of image img: ",
            1,
        ),
        (
            "a trigger whose flags are wrong",
            "FROM img\n",
            &[("img", &[], &["COPY --bogus a b"])],
            "of image img: ",
            1,
        ),
        (
            "a trigger that does not expand",
            "FROM img\n",
            &[("img", &[], &["COPY ${X:?X is needed} /x"])],
            "X is needed",
            1,
        ),
        (
            "a stage's ONBUILD that does not expand in the child",
            "FROM scratch AS base\nONBUILD COPY ${X:?X is needed} /x\n\nFROM base\n",
            &[],
            "ONBUILD trigger \"COPY ${X:?X is needed} /x\" of stage base: ",
            4,
        ),
    ];
    let mut failures = Vec::new();
    for (what, dockerfile, images, message, line) in cases {
        match resolve_on(dockerfile, &[], images) {
            Ok(r) => failures.push(format!("{what}: resolved: {:?}", r.stages)),
            Err(e) => {
                let text = e.to_string();
                let at = e.span().map(|s| s.start.line);
                if !matches!(e, StageError::Trigger { .. })
                    || !text.contains(message)
                    || at != Some(*line)
                    || e.help().is_none()
                {
                    failures.push(format!("{what}: {text:?} at line {at:?}: {e:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 10);
}

#[test]
fn base_image_names_are_the_external_from_images() {
    let opts = ResolveOptions {
        build_args: [("V".to_string(), "2".to_string())].into(),
        ..ResolveOptions::default()
    };
    let cases: &[(&str, &[&str])] = &[
        ("FROM alpine\n", &["alpine"]),
        (
            "FROM scratch\nFROM docker.io/library/alpine:3\n",
            &["docker.io/library/alpine:3"],
        ),
        (
            "ARG V=1\nFROM a:$V AS one\nFROM one\nFROM b AS two\nFROM a:$V\nFROM two\n",
            &["a:2", "b"],
        ),
        // A stage named later does not count: BuildKit reads FROM names of earlier stages only.
        ("FROM later\nFROM alpine AS later\n", &["later", "alpine"]),
        // RUN bodies and COPY --from images are not FROM bases.
        (
            "FROM x\nCOPY --from=other / /\nRUN ${NOT:?expanded}\n",
            &["x"],
        ),
    ];
    let mut failures = Vec::new();
    for (dockerfile, want) in cases {
        match base_image_names(&parse(dockerfile), &opts) {
            Ok(got) if got.iter().map(|k| k.name.as_str()).eq(want.iter().copied()) => {}
            other => failures.push(format!("{dockerfile:?}: {other:?}, want {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let bad = base_image_names(&parse("FROM Upper\n"), &opts).unwrap_err();
    assert!(
        matches!(bad, StageError::InvalidReference { .. }),
        "{bad:?}"
    );
}
