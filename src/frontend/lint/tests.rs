//! One positive and one negative case per rule, with BuildKit's messages and lines, plus the
//! configuration: the directive, per-instruction comments, the build argument and which stages
//! are dispatched.

use super::*;
use crate::frontend::stage::{BaseImage, ResolveOptions};
use std::collections::BTreeMap;

/// The findings for `source` with `options`, every stage dispatched, as `(rule, message,
/// line)`.
fn findings_with(
    source: &str,
    options: &ResolveOptions,
    ignore: Option<&Dockerignore>,
) -> Vec<(String, String, usize)> {
    let df = crate::frontend::parse(source.as_bytes()).expect("parses");
    let config = config(&df, &options.build_args).expect("config");
    let report = lint(
        &LintInput {
            dockerfile: &df,
            options,
            dispatch_until: None,
            dispatched: None,
            reachable: None,
            dockerignore: ignore,
        },
        &config,
    );
    report
        .findings
        .iter()
        .map(|f| {
            (
                f.rule.name.to_string(),
                f.message.clone(),
                f.span.start.line,
            )
        })
        .collect()
}

fn findings(source: &str) -> Vec<(String, String, usize)> {
    findings_with(source, &ResolveOptions::default(), None)
}

/// The findings of one rule, as `(message, line)`.
fn of(rule: &str, source: &str) -> Vec<(String, usize)> {
    findings(source)
        .into_iter()
        .filter(|(r, ..)| r == rule)
        .map(|(_, m, l)| (m, l))
        .collect()
}

fn one(message: &str, line: usize) -> Vec<(String, usize)> {
    vec![(message.to_string(), line)]
}

#[test]
fn stage_name_casing() {
    assert_eq!(
        of("StageNameCasing", "FROM scratch AS Build\n"),
        one("Stage name 'Build' should be lowercase", 1)
    );
    assert!(of("StageNameCasing", "FROM scratch AS build\n").is_empty());
}

#[test]
fn from_as_casing() {
    assert_eq!(
        of("FromAsCasing", "FROM scratch as build\n"),
        one("'as' and 'FROM' keywords' casing do not match", 1)
    );
    assert_eq!(
        of("FromAsCasing", "from scratch AS build\n"),
        one("'AS' and 'from' keywords' casing do not match", 1)
    );
    assert!(of("FromAsCasing", "FROM scratch AS build\nfrom scratch as b\n").is_empty());
    // A mixed-case FROM is ConsistentInstructionCasing's to report.
    assert!(of("FromAsCasing", "From scratch as build\n").is_empty());
}

#[test]
fn no_empty_continuation() {
    assert_eq!(
        of("NoEmptyContinuation", "FROM scratch\nRUN echo \\\n\n  hi\n"),
        one("Empty continuation line", 4)
    );
    assert!(of("NoEmptyContinuation", "FROM scratch\nRUN echo \\\n  hi\n").is_empty());
}

#[test]
fn consistent_instruction_casing() {
    assert_eq!(
        of(
            "ConsistentInstructionCasing",
            "FROM scratch\nrun true\nCOPY a b\n"
        ),
        one(
            "Command 'run' should match the case of the command majority (uppercase)",
            2
        )
    );
    assert_eq!(
        of(
            "ConsistentInstructionCasing",
            "from scratch\nRun true\ncopy a b\n"
        ),
        one(
            "Command 'Run' should match the case of the command majority (lowercase)",
            2
        )
    );
    // Meta args are not counted nor checked.
    assert!(
        of(
            "ConsistentInstructionCasing",
            "arg A=1\nFROM scratch\nCOPY a b\n"
        )
        .is_empty()
    );
}

#[test]
fn duplicate_and_reserved_stage_names() {
    let source = "FROM scratch AS a\nFROM scratch AS A\nFROM scratch AS context\n";
    assert_eq!(
        of("DuplicateStageName", source),
        one(
            "Duplicate stage name \"a\", stage names should be unique",
            2
        )
    );
    assert_eq!(
        of("ReservedStageName", source),
        one(
            "Stage name should not use the same name as reserved stage \"context\"",
            3
        )
    );
    assert!(
        of(
            "DuplicateStageName",
            "FROM scratch AS a\nFROM scratch AS b\n"
        )
        .is_empty()
    );
}

#[test]
fn json_args_recommended() {
    assert_eq!(
        of("JSONArgsRecommended", "FROM scratch\nCMD echo hi\nENTRYPOINT run\n"),
        vec![
            (
                "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals".to_string(),
                2
            ),
            (
                "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals".to_string(),
                3
            ),
        ]
    );
    assert!(of("JSONArgsRecommended", "FROM scratch\nCMD [\"echo\"]\n").is_empty());
    // A SHELL makes the shell form the user's choice, in this stage and those built on it.
    assert!(
        of(
            "JSONArgsRecommended",
            "FROM scratch AS a\nSHELL [\"/bin/bash\", \"-c\"]\nFROM a\nCMD echo hi\n"
        )
        .is_empty()
    );
}

#[test]
fn maintainer_deprecated() {
    assert_eq!(
        of("MaintainerDeprecated", "FROM scratch\nMAINTAINER me\n"),
        one(
            "Maintainer instruction is deprecated in favor of using label",
            2
        )
    );
    assert!(
        of(
            "MaintainerDeprecated",
            "FROM scratch\nLABEL maintainer=me\n"
        )
        .is_empty()
    );
}

#[test]
fn undefined_arg_in_from() {
    assert_eq!(
        of("UndefinedArgInFrom", "ARG VERSION=1\nFROM img:${VERSIO}\n"),
        one(
            "FROM argument 'VERSIO' is not declared (did you mean VERSION?)",
            2
        )
    );
    assert_eq!(
        of("UndefinedArgInFrom", "FROM --platform=$PLATFORM scratch\n"),
        one("FROM argument 'PLATFORM' is not declared", 1)
    );
    // Declared without a value, or predefined: not reported.
    assert!(of("UndefinedArgInFrom", "ARG TAG\nFROM img:${TAG:-1}\n").is_empty());
    assert!(
        of(
            "UndefinedArgInFrom",
            "FROM --platform=$BUILDPLATFORM scratch\n"
        )
        .is_empty()
    );
}

#[test]
fn workdir_relative_path() {
    assert_eq!(
        of(
            "WorkdirRelativePath",
            "FROM scratch\nWORKDIR app\nWORKDIR more\n"
        ),
        one(
            "Relative workdir \"app\" can have unexpected results if the base image changes",
            2
        )
    );
    assert!(
        of(
            "WorkdirRelativePath",
            "FROM scratch\nWORKDIR /app\nWORKDIR more\n"
        )
        .is_empty()
    );
    // An absolute WORKDIR in the stage it is built FROM counts.
    assert!(
        of(
            "WorkdirRelativePath",
            "FROM scratch AS a\nWORKDIR /app\nFROM a\nWORKDIR sub\n"
        )
        .is_empty()
    );
}

#[test]
fn undefined_var() {
    assert_eq!(
        of(
            "UndefinedVar",
            "FROM scratch\nENV PORTS=80\nARG DECLARED\nEXPOSE $PORTS\nCOPY $PORT $DECLARED /\n"
        ),
        one(
            "Usage of undefined variable '$PORT' (did you mean $PORTS?)",
            5
        )
    );
    // A variable the base image sets, a proxy-free default, ENV of the parent stage: defined.
    let mut options = ResolveOptions::default();
    options.base_images.insert(
        crate::frontend::stage::ImageKey::new("golang", &options.target()),
        BaseImage {
            env: vec![("GOPATH".into(), "/go".into())],
            onbuild: Vec::new(),
        },
    );
    let source = "FROM golang AS a\nENV A=$GOPATH\nFROM a\nWORKDIR $A/$PATH\n";
    assert!(
        findings_with(source, &options, None)
            .iter()
            .all(|(r, ..)| r != "UndefinedVar")
    );
    // RUN is expanded by the shell, not checked.
    assert!(of("UndefinedVar", "FROM scratch\nRUN echo $NOPE\n").is_empty());
    // An image whose config is unknown may define anything: not checked.
    assert!(of("UndefinedVar", "FROM golang\nENV A=$GOPATH\n").is_empty());
}

#[test]
fn multiple_instructions_disallowed() {
    assert_eq!(
        of(
            "MultipleInstructionsDisallowed",
            "FROM scratch\nCMD [\"a\"]\nHEALTHCHECK NONE\nCMD [\"b\"]\nHEALTHCHECK NONE\n"
        ),
        vec![
            (
                "Multiple CMD instructions should not be used in the same stage because only the last one will be used".to_string(),
                2
            ),
            (
                "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used".to_string(),
                3
            ),
        ]
    );
    assert!(
        of(
            "MultipleInstructionsDisallowed",
            "FROM scratch AS a\nCMD [\"a\"]\nFROM a\nCMD [\"b\"]\n"
        )
        .is_empty()
    );
}

#[test]
fn legacy_key_value_format() {
    assert_eq!(
        of("LegacyKeyValueFormat", "FROM scratch\nENV A 1\nLABEL b 2\n"),
        vec![
            (
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                    .to_string(),
                2
            ),
            (
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
                    .to_string(),
                3
            ),
        ]
    );
    assert!(of("LegacyKeyValueFormat", "FROM scratch\nENV A=1 B=2\n").is_empty());
}

#[test]
fn redundant_target_platform() {
    assert_eq!(
        of(
            "RedundantTargetPlatform",
            "FROM --platform=${TARGETPLATFORM} scratch\n"
        ),
        one(
            "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior",
            1
        )
    );
    assert!(
        of(
            "RedundantTargetPlatform",
            "FROM --platform=$BUILDPLATFORM scratch\n"
        )
        .is_empty()
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    assert_eq!(
        of(
            "SecretsUsedInArgOrEnv",
            "FROM scratch\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x PUBLIC_KEY=y MONKEY=z\n"
        ),
        vec![
            (
                "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"
                    .to_string(),
                2
            ),
            (
                "Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")"
                    .to_string(),
                3
            ),
        ]
    );
    assert!(
        of(
            "SecretsUsedInArgOrEnv",
            "FROM scratch\nARG KEY_FILE\nENV AUTHOR=me\n"
        )
        .is_empty()
    );
}

#[test]
fn invalid_default_arg_in_from() {
    assert_eq!(
        of("InvalidDefaultArgInFrom", "ARG TAG\nFROM busybox:${TAG}\n"),
        one(
            "Default value for ARG busybox:${TAG} results in empty or invalid base image name",
            2
        )
    );
    assert!(
        of(
            "InvalidDefaultArgInFrom",
            "ARG TAG=1\nFROM busybox:${TAG}\n"
        )
        .is_empty()
    );
    // A build argument does not hide a default that would not work.
    let options = ResolveOptions {
        build_args: BTreeMap::from([("TAG".to_string(), "1".to_string())]),
        ..ResolveOptions::default()
    };
    let found = findings_with("ARG TAG\nFROM busybox:${TAG}\n", &options, None);
    assert!(
        found.iter().any(|(r, ..)| r == "InvalidDefaultArgInFrom"),
        "{found:?}"
    );
}

#[test]
fn from_platform_flag_const_disallowed() {
    assert_eq!(
        of(
            "FromPlatformFlagConstDisallowed",
            "FROM --platform=linux/amd64 scratch AS build\n"
        ),
        one(
            "FROM --platform flag should not use constant value \"linux/amd64\"",
            1
        )
    );
    // The stage's name says why the platform is fixed.
    assert!(
        of(
            "FromPlatformFlagConstDisallowed",
            "FROM --platform=linux/amd64 scratch AS build-amd64\n"
        )
        .is_empty()
    );
}

#[test]
fn copy_ignored_file() {
    let ignore = Dockerignore::parse("secret.txt\nbuild/\n").expect("ignore");
    let source = "FROM scratch\nCOPY secret.txt app.txt /\nADD build/out https://example.com/x /\nCOPY --from=other secret.txt /\nCOPY . /\n";
    let found: Vec<(String, usize)> =
        findings_with(source, &ResolveOptions::default(), Some(&ignore))
            .into_iter()
            .filter(|(r, ..)| r == "CopyIgnoredFile")
            .map(|(_, m, l)| (m, l))
            .collect();
    assert_eq!(
        found,
        vec![
            (
                "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore"
                    .to_string(),
                2
            ),
            (
                "Attempting to Add file \"build/out\" that is excluded by .dockerignore"
                    .to_string(),
                3
            ),
        ]
    );
    // An exception in the ignore file turns the rule off; `*` reports the context root.
    let exceptions = Dockerignore::parse("secret.txt\n!keep\n").expect("ignore");
    assert!(findings_with(source, &ResolveOptions::default(), Some(&exceptions)).is_empty());
    let all = Dockerignore::parse("*\n").expect("ignore");
    let found = findings_with(
        "FROM scratch\nCOPY . /\n",
        &ResolveOptions::default(),
        Some(&all),
    );
    assert_eq!(found.len(), 1, "{found:?}");
}

#[test]
fn invalid_definition_description_is_experimental() {
    let source = "FROM scratch\n# the version\nARG VERSION=1\n# VERSION2 is used\nARG VERSION2=1\n";
    assert!(of("InvalidDefinitionDescription", source).is_empty());
    let enabled = format!("# check=experimental=InvalidDefinitionDescription\n{source}");
    assert_eq!(
        of("InvalidDefinitionDescription", &enabled),
        one(
            "Comment for ARG should follow the format: `# VERSION <description>`",
            4
        )
    );
}

#[test]
fn expose_rules() {
    assert_eq!(
        findings("FROM scratch\nEXPOSE 80/TCP 127.0.0.1:8080:80 90:90/udp 22\n"),
        vec![
            (
                "ExposeProtoCasing".to_string(),
                "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase".to_string(),
                2
            ),
            (
                "ExposeInvalidFormat".to_string(),
                "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:8080:80'".to_string(),
                2
            ),
            (
                "ExposeInvalidFormat".to_string(),
                "EXPOSE instruction should not define an IP address or host-port mapping, found '90:90/udp'".to_string(),
                2
            ),
        ]
    );
}

#[test]
fn check_directive_skips_rules_and_sets_error() {
    let source = "# check=skip=JSONArgsRecommended,MaintainerDeprecated;error=true\nFROM scratch\nMAINTAINER me\nCMD x\nWORKDIR rel\n";
    let rules: Vec<String> = findings(source).into_iter().map(|(r, ..)| r).collect();
    assert_eq!(rules, ["WorkdirRelativePath"]);
    let df = crate::frontend::parse(source.as_bytes()).expect("parses");
    assert!(config(&df, &BTreeMap::new()).expect("config").error);
    assert!(findings("# check=skip=all\nFROM scratch\nMAINTAINER me\n").is_empty());
}

#[test]
fn build_arg_replaces_the_directive() {
    let source = "# check=skip=all\nFROM scratch\nMAINTAINER me\nCMD x\n";
    let options = ResolveOptions {
        build_args: BTreeMap::from([(
            CHECK_BUILD_ARG.to_string(),
            "skip=JSONArgsRecommended".to_string(),
        )]),
        ..ResolveOptions::default()
    };
    let rules: Vec<String> = findings_with(source, &options, None)
        .into_iter()
        .map(|(r, ..)| r)
        .collect();
    assert_eq!(rules, ["MaintainerDeprecated"]);
}

#[test]
fn a_check_comment_above_an_instruction_skips_its_rules_there_only() {
    let source = "FROM scratch\n# check=skip=JSONArgsRecommended\nCMD a\nENTRYPOINT b\n# check=skip=all\nFROM scratch AS Other\n";
    let found: Vec<(String, usize)> = findings(source)
        .into_iter()
        .map(|(r, _, l)| (r, l))
        .collect();
    assert_eq!(found, [("JSONArgsRecommended".to_string(), 4)]);
}

#[test]
fn bad_configuration_is_an_error_naming_the_option() {
    let cases = [
        ("skip", "invalid check option \"skip\""),
        ("skip=a;x=1", "invalid check option \"x\""),
        (
            "error=maybe",
            "failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax",
        ),
    ];
    for (value, message) in cases {
        assert_eq!(
            LintConfig::parse(value).map_err(|e| e.to_string()),
            Err(message.to_string()),
            "{value}"
        );
    }
    assert_eq!(
        LintConfig::parse(" skip = A , B ; experimental=all"),
        Ok(LintConfig {
            skip: vec!["A".into(), "B".into()],
            experimental_all: true,
            ..LintConfig::default()
        })
    );
}

#[test]
fn only_dispatched_stages_get_the_dispatch_rules() {
    let source = "FROM scratch AS unused\nCMD a\nMAINTAINER me\nFROM scratch\nCMD b\n";
    let df = crate::frontend::parse(source.as_bytes()).expect("parses");
    let options = ResolveOptions::default();
    let report = lint(
        &LintInput {
            dockerfile: &df,
            options: &options,
            dispatch_until: None,
            dispatched: Some(&[1]),
            reachable: Some(&[1]),
            dockerignore: None,
        },
        &LintConfig::default(),
    );
    let found: Vec<(&str, usize)> = report
        .findings
        .iter()
        .map(|f| (f.rule.name, f.span.start.line))
        .collect();
    // MAINTAINER is checked as it is parsed, in every stage; CMD only where dispatched.
    assert_eq!(
        found,
        [("MaintainerDeprecated", 3), ("JSONArgsRecommended", 5)]
    );
}

#[test]
fn violation_names_each_rule_once() {
    let report = Report {
        findings: findings_report("FROM scratch\nCMD a\nCMD b\n"),
        config: LintConfig {
            error: true,
            ..LintConfig::default()
        },
    };
    assert_eq!(
        report.violation().as_deref(),
        Some("lint violation found for rules: JSONArgsRecommended, MultipleInstructionsDisallowed")
    );
    assert_eq!(Report::default().violation(), None);
}

fn findings_report(source: &str) -> Vec<Finding> {
    let df = crate::frontend::parse(source.as_bytes()).expect("parses");
    let options = ResolveOptions::default();
    lint(
        &LintInput {
            dockerfile: &df,
            options: &options,
            dispatch_until: None,
            dispatched: None,
            reachable: None,
            dockerignore: None,
        },
        &LintConfig::default(),
    )
    .findings
}

#[test]
fn json_is_buildkits_lint_results() {
    let source = "FROM scratch\nMAINTAINER <me>\n";
    let report = Report {
        findings: findings_report(source),
        config: LintConfig::default(),
    };
    let text = json::render(&report, "Dockerfile", source.as_bytes(), None);
    let expected = r#"{
  "warnings": [
    {
      "ruleName": "MaintainerDeprecated",
      "description": "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
      "url": "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
      "detail": "Maintainer instruction is deprecated in favor of using label",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 2
            },
            "end": {
              "line": 2
            }
          }
        ]
      }
    }
  ],
  "sources": [
    {
      "filename": "Dockerfile",
      "data": "RlJPTSBzY3JhdGNoCk1BSU5UQUlORVIgPG1lPgo=",
      "language": "Dockerfile"
    }
  ]
}
"#;
    assert_eq!(text, expected);
    let none = json::render(
        &Report::default(),
        "D",
        b"",
        Some(&json::CheckError {
            message: "a <b> & c".into(),
            lines: Some((3, 4)),
        }),
    );
    assert!(none.starts_with("{\n  \"warnings\": null,\n"), "{none}");
    assert!(
        none.contains("\"message\": \"a \\u003cb\\u003e \\u0026 c\""),
        "{none}"
    );
}

#[test]
fn json_escapes_what_go_escapes_and_every_control_character() {
    let report = Report::default();
    let error = json::CheckError {
        message: "a\u{1b}[31m\u{9b}\u{7f}<&>\u{2028}é".into(),
        lines: None,
    };
    let text = json::render(&report, "D", b"", Some(&error));
    assert!(
        text.contains(r#""message": "a\u001b[31m\u009b\u007f\u003c\u0026\u003e\u2028é""#),
        "{text}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(parsed["buildError"]["message"], error.message.as_str());
}

#[test]
fn nothing_after_an_instruction_that_does_not_parse_is_checked() {
    let found = findings("FROM scratch\nMAINTAINER a\nFORM x\nMAINTAINER b\ncmd x\n");
    assert_eq!(
        found,
        [(
            "MaintainerDeprecated".to_string(),
            "Maintainer instruction is deprecated in favor of using label".to_string(),
            2
        )]
    );
}

#[test]
fn onbuild_triggers_are_checked_at_the_from_of_the_stages_the_target_needs() {
    let source = "FROM scratch AS a\nONBUILD COPY $X /\nFROM a AS unneeded\nFROM a AS target\n";
    let df = crate::frontend::parse(source.as_bytes()).expect("parses");
    let options = ResolveOptions::default();
    let report = lint(
        &LintInput {
            dockerfile: &df,
            options: &options,
            dispatch_until: None,
            dispatched: None,
            reachable: Some(&[0, 2]),
            dockerignore: None,
        },
        &LintConfig::default(),
    );
    let found: Vec<(&str, &str, usize)> = report
        .findings
        .iter()
        .map(|f| (f.rule.name, f.message.as_str(), f.span.start.line))
        .collect();
    assert_eq!(
        found,
        [("UndefinedVar", "Usage of undefined variable '$X'", 4)]
    );
}
