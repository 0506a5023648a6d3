//! BuildKit's lint rules as data (`frontend/dockerfile/linter/ruleset.go`): each rule's name,
//! description and documentation URL exactly as BuildKit v0.32.2 reports them, and the message
//! each one formats.

/// One lint rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// BuildKit's rule name, e.g. `StageNameCasing` (what `# check=skip=` names).
    pub name: &'static str,
    pub description: &'static str,
    /// The rule's documentation (`https://docs.docker.com/go/dockerfile/rule/<kebab-name>/`);
    /// empty for a rule BuildKit documents nowhere.
    pub url: &'static str,
    /// Runs only when `# check=experimental=` names it (or `all`).
    pub experimental: bool,
}

macro_rules! rules {
    ($($ident:ident = $name:literal, $url:literal, $experimental:literal, $description:literal;)*) => {
        $(
            pub static $ident: Rule = Rule {
                name: $name,
                description: $description,
                url: $url,
                experimental: $experimental,
            };
        )*
        /// Every rule, in BuildKit's ruleset order.
        pub static ALL: &[&Rule] = &[$(&$ident),*];
    };
}

rules! {
    STAGE_NAME_CASING = "StageNameCasing",
        "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/", false,
        "Stage names should be lowercase";
    FROM_AS_CASING = "FromAsCasing",
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/", false,
        "The 'as' keyword should match the case of the 'from' keyword";
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation",
        "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/", false,
        "Empty continuation lines will become errors in a future release";
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing",
        "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/", false,
        "All commands within the Dockerfile should use the same casing (either upper or lower)";
    DUPLICATE_STAGE_NAME = "DuplicateStageName",
        "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/", false,
        "Stage names should be unique";
    RESERVED_STAGE_NAME = "ReservedStageName",
        "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/", false,
        "Reserved words should not be used as stage names";
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended",
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/", false,
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals";
    MAINTAINER_DEPRECATED = "MaintainerDeprecated",
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/", false,
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author";
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom",
        "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/", false,
        "FROM command must use declared ARGs";
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath",
        "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/", false,
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes";
    UNDEFINED_VAR = "UndefinedVar",
        "https://docs.docker.com/go/dockerfile/rule/undefined-var/", false,
        "Variables should be defined before their use";
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed",
        "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/", false,
        "Multiple instructions of the same type should not be used in the same stage";
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat",
        "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/", false,
        "Legacy key/value format with whitespace separator should not be used";
    INVALID_BASE_IMAGE_PLATFORM = "InvalidBaseImagePlatform",
        "", false,
        "Base image platform does not match expected target platform";
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform",
        "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/", false,
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior";
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv",
        "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/", false,
        "Sensitive data should not be used in the ARG or ENV commands";
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom",
        "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/", false,
        "Default value for global ARG results in an empty or invalid base image name";
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed",
        "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/", false,
        "FROM --platform flag should not use a constant value";
    COPY_IGNORED_FILE = "CopyIgnoredFile",
        "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/", false,
        "Attempting to Copy file that is excluded by .dockerignore";
    INVALID_DEFINITION_DESCRIPTION = "InvalidDefinitionDescription",
        "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/", true,
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.";
    EXPOSE_PROTO_CASING = "ExposeProtoCasing",
        "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/", false,
        "Protocol in EXPOSE instruction should be lowercase";
    EXPOSE_INVALID_FORMAT = "ExposeInvalidFormat",
        "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/", false,
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release";
}

/// The rule named `name` (exact, as BuildKit compares).
pub fn by_name(name: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.name == name)
}

/// Go's `%q` of a string: double quotes, with `"`, `\` and control characters escaped (what
/// BuildKit's messages use for names and paths).
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The messages, as BuildKit's `Format` functions write them.
pub(super) mod message {
    use super::go_quote;

    pub fn stage_name_casing(stage: &str) -> String {
        format!("Stage name '{stage}' should be lowercase")
    }
    pub fn from_as_casing(from: &str, as_word: &str) -> String {
        format!("'{as_word}' and '{from}' keywords' casing do not match")
    }
    pub fn no_empty_continuation() -> String {
        "Empty continuation line".to_string()
    }
    pub fn consistent_instruction_casing(command: &str, casing: &str) -> String {
        format!("Command '{command}' should match the case of the command majority ({casing})")
    }
    pub fn duplicate_stage_name(stage: &str) -> String {
        format!(
            "Duplicate stage name {}, stage names should be unique",
            go_quote(stage)
        )
    }
    pub fn reserved_stage_name(stage: &str) -> String {
        format!(
            "Stage name should not use the same name as reserved stage {}",
            go_quote(stage)
        )
    }
    pub fn json_args_recommended(instruction: &str) -> String {
        format!(
            "JSON arguments recommended for {instruction} to prevent unintended behavior related to OS signals"
        )
    }
    pub fn maintainer_deprecated() -> String {
        "Maintainer instruction is deprecated in favor of using label".to_string()
    }
    pub fn undefined_arg_in_from(arg: &str, suggest: Option<&str>) -> String {
        match suggest {
            Some(s) => format!("FROM argument '{arg}' is not declared (did you mean {s}?)"),
            None => format!("FROM argument '{arg}' is not declared"),
        }
    }
    pub fn workdir_relative_path(workdir: &str) -> String {
        format!(
            "Relative workdir {} can have unexpected results if the base image changes",
            go_quote(workdir)
        )
    }
    pub fn undefined_var(var: &str, suggest: Option<&str>) -> String {
        match suggest {
            Some(s) => format!("Usage of undefined variable '${var}' (did you mean ${s}?)"),
            None => format!("Usage of undefined variable '${var}'"),
        }
    }
    pub fn multiple_instructions_disallowed(instruction: &str) -> String {
        format!(
            "Multiple {instruction} instructions should not be used in the same stage because only the last one will be used"
        )
    }
    pub fn legacy_key_value_format(command: &str) -> String {
        format!(
            "\"{command} key=value\" should be used instead of legacy \"{command} key value\" format"
        )
    }
    pub fn redundant_target_platform(platform: &str) -> String {
        format!(
            "Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"
        )
    }
    pub fn secrets_used_in_arg_or_env(instruction: &str, key: &str) -> String {
        format!(
            "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
            go_quote(key)
        )
    }
    pub fn invalid_default_arg_in_from(base: &str) -> String {
        format!("Default value for ARG {base} results in empty or invalid base image name")
    }
    pub fn from_platform_flag_const_disallowed(platform: &str) -> String {
        format!(
            "FROM --platform flag should not use constant value {}",
            go_quote(platform)
        )
    }
    pub fn copy_ignored_file(command: &str, file: &str) -> String {
        format!(
            "Attempting to {command} file {} that is excluded by .dockerignore",
            go_quote(file)
        )
    }
    pub fn invalid_definition_description(instruction: &str, name: &str) -> String {
        format!("Comment for {instruction} should follow the format: `# {name} <description>`")
    }
    pub fn expose_proto_casing(port: &str) -> String {
        format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase")
    }
    pub fn expose_invalid_format(port: &str) -> String {
        format!(
            "EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_unique_name_and_its_kebab_case_url() {
        for rule in ALL {
            assert_eq!(ALL.iter().filter(|r| r.name == rule.name).count(), 1);
            if rule.name == "InvalidBaseImagePlatform" {
                assert_eq!(rule.url, "");
                continue;
            }
            let mut kebab = String::new();
            let chars: Vec<char> = rule.name.chars().collect();
            for (i, c) in chars.iter().enumerate() {
                // `JSONArgs` is `json-args`: a capital starts a word after a lower-case letter,
                // or before one when it ends a run of capitals.
                let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
                let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
                let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
                if c.is_ascii_uppercase() && i > 0 && (prev_lower || (prev_upper && next_lower)) {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            }
            assert_eq!(
                rule.url,
                format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
            );
        }
        assert_eq!(ALL.len(), 22);
        assert!(by_name("InvalidDefinitionDescription").is_some_and(|r| r.experimental));
        assert!(by_name("stagenamecasing").is_none());
    }

    #[test]
    fn quoting_follows_go() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
