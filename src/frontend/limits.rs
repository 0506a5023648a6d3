//! Bounds on a Dockerfile, which comes from outside (a file, standard input, a FIFO, a git
//! repository, a URL): its size, read through [`read_dockerfile`] wherever kiln reads one, and
//! how many stages and instructions it may hold ([`check_counts`]), so that no phase of a build
//! (parse, stage resolution, the stage DAG, lint, compile, the solver) can be driven to minutes
//! or gigabytes by an absurd file.
//!
//! - **Size**: BuildKit reads the Dockerfile through its gateway's `ReadFile` gRPC call, whose
//!   messages are capped at 16 MiB (`defaults.DefaultMaxRecvMsgSize`, `16 << 20`, set on every
//!   BuildKit client and server); a larger Dockerfile fails there. kiln refuses the same size,
//!   reading at most one byte more, so a Dockerfile streamed from a generator that never ends
//!   costs 16 MiB of memory and a fraction of a second. One physical line is capped at 64 KiB as
//!   BuildKit's scanner caps it ([`super::syntax::MAX_LINE_BYTES`]); a logical line or a heredoc
//!   may be as long as the file, and the parser reads both in linear time.
//! - **Counts**: BuildKit has no limit of its own. 16 MiB of `FROM a AS b` lines is about a
//!   million stages, which no real build has (the largest generated Dockerfiles have hundreds),
//!   and each stage costs a solver node, a snapshot and a line of progress. [`MAX_STAGES`] and
//!   [`MAX_INSTRUCTIONS`] are far above any real Dockerfile and low enough that every phase
//!   finishes in a few seconds at the cap. Some costs grow with the product of two counts by
//!   BuildKit's own semantics, whatever the code: each RUN's history line and environment list
//!   every build arg declared before it, and every stage built FROM another starts with a copy
//!   of its variables; the instruction cap bounds those products too (10,000 ARGs and 10,000
//!   RUNs make 10⁸ history words, so the cap is not higher), and [`MAX_VARIABLE_COPIES`]
//!   bounds the variables copied from stage to stage and into RUN steps.

use crate::frontend::ast::Dockerfile;
use crate::frontend::diagnostic::{Located, Span};
use std::io::Read;

/// The largest Dockerfile kiln reads, in bytes: BuildKit's 16 MiB gRPC message cap.
pub const MAX_DOCKERFILE_BYTES: u64 = 16 << 20;

/// The most stages (FROM instructions) a Dockerfile may have.
pub const MAX_STAGES: usize = 5_000;

/// The most instructions a Dockerfile may have, FROM lines and global ARGs included.
pub const MAX_INSTRUCTIONS: usize = 20_000;

/// The most copies of variables (ENV and ARG values) a Dockerfile may make, in all: each stage
/// built FROM another stage starts with its own copy of that stage's variables (in the stages,
/// the compiled steps and the checks' scopes alike), and each RUN step gets every variable in
/// scope as its environment (and its build args in its history line). Within the other caps,
/// 5,000 stages FROM one stage of 15,000 ENVs made 75 million copies (over 6 GB), and 10,000
/// ARGs each followed by a RUN 50 million (4.5 GB, 100 s); a million is far above real builds
/// (hundreds of variables, tens of stages and steps) and a few hundred MB at most.
pub const MAX_VARIABLE_COPIES: usize = 1_000_000;

/// Why a Dockerfile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadDockerfileError {
    #[error(
        "the Dockerfile {name} is larger than {limit} bytes (16 MiB, BuildKit's limit): it is not \
         read further; generate a smaller Dockerfile or split the build"
    )]
    TooLarge { name: String, limit: u64 },
    #[error("cannot read the Dockerfile {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a whole Dockerfile from `reader` (a file, standard input, a FIFO, a download), at
/// most [`MAX_DOCKERFILE_BYTES`]: the read stops at one byte more, which is an error. `name` is
/// what messages call it.
pub fn read_dockerfile(reader: impl Read, name: &str) -> Result<Vec<u8>, ReadDockerfileError> {
    read_bounded(reader, name, MAX_DOCKERFILE_BYTES)
}

fn read_bounded(reader: impl Read, name: &str, limit: u64) -> Result<Vec<u8>, ReadDockerfileError> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| ReadDockerfileError::Read {
            name: name.to_string(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(ReadDockerfileError::TooLarge {
            name: name.to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// A Dockerfile with more stages or instructions than kiln builds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error("the Dockerfile has more than {limit} stages (FROM instructions)")]
    TooManyStages { limit: usize, span: Span },
    #[error("the Dockerfile has more than {limit} instructions")]
    TooManyInstructions { limit: usize, span: Span },
}

impl Located for CountError {
    fn span(&self) -> Option<Span> {
        match self {
            CountError::TooManyStages { span, .. }
            | CountError::TooManyInstructions { span, .. } => Some(*span),
        }
    }

    fn help(&self) -> Option<String> {
        Some(match self {
            CountError::TooManyStages { .. } => format!(
                "kiln builds at most {MAX_STAGES} stages; real Dockerfiles have tens: split the \
                 build or generate fewer stages"
            ),
            CountError::TooManyInstructions { .. } => format!(
                "kiln builds at most {MAX_INSTRUCTIONS} instructions; split the build or \
                 generate fewer instructions"
            ),
        })
    }
}

/// Fails on the first instruction past [`MAX_INSTRUCTIONS`] or the first FROM past
/// [`MAX_STAGES`], located at it.
pub fn check_counts(dockerfile: &Dockerfile) -> Result<(), CountError> {
    let mut stages = 0usize;
    for (index, node) in dockerfile.nodes.iter().enumerate() {
        if index >= MAX_INSTRUCTIONS {
            return Err(CountError::TooManyInstructions {
                limit: MAX_INSTRUCTIONS,
                span: node.span,
            });
        }
        if node.keyword.eq_ignore_ascii_case("from") {
            stages += 1;
            if stages > MAX_STAGES {
                return Err(CountError::TooManyStages {
                    limit: MAX_STAGES,
                    span: node.span,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of `len` bytes of `FROM a\n` repeated, that counts what was read from it.
    struct Generator {
        left: u64,
        read: u64,
    }

    impl Read for Generator {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.left) as usize;
            let pattern = b"FROM a\n";
            for (i, byte) in buf.iter_mut().take(n).enumerate() {
                *byte = pattern[(self.read as usize + i) % pattern.len()];
            }
            self.left -= n as u64;
            self.read += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn a_dockerfile_at_the_limit_is_read_whole() {
        let bytes = read_bounded(&b"FROM a\n"[..], "Dockerfile", 7).unwrap();
        assert_eq!(bytes, b"FROM a\n");
    }

    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        let mut generator = Generator {
            left: 1 << 40,
            read: 0,
        };
        let error = read_bounded(&mut generator, "<stdin>", 1000).unwrap_err();
        assert!(
            matches!(&error, ReadDockerfileError::TooLarge { name, limit: 1000 } if name == "<stdin>"),
            "{error:?}"
        );
        assert_eq!(generator.read, 1001, "read past the limit");
        assert!(error.to_string().contains("larger than 1000 bytes"));
    }

    /// What `parse` (which checks the counts) says of `text`.
    fn counted(text: &str) -> Result<(), CountError> {
        match crate::frontend::parse(text.as_bytes()) {
            Ok(_) => Ok(()),
            Err(crate::frontend::SyntaxError::TooMany(error)) => Err(error),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn counts_are_checked_at_the_first_instruction_past_them() {
        let error = counted(&"FROM a\n".repeat(MAX_STAGES + 1)).unwrap_err();
        assert!(matches!(
            error,
            CountError::TooManyStages {
                limit: MAX_STAGES,
                ..
            }
        ));
        assert_eq!(error.span().unwrap().start.line, MAX_STAGES + 1);
        counted(&"FROM a\n".repeat(MAX_STAGES)).unwrap();

        let many_runs = format!("FROM a\n{}", "RUN x\n".repeat(MAX_INSTRUCTIONS));
        let error = counted(&many_runs).unwrap_err();
        assert!(matches!(error, CountError::TooManyInstructions { .. }));
        assert_eq!(error.span().unwrap().start.line, MAX_INSTRUCTIONS + 1);
        counted(&format!(
            "FROM a\n{}",
            "RUN x\n".repeat(MAX_INSTRUCTIONS - 1)
        ))
        .unwrap();
    }

    #[test]
    fn variables_copied_into_stages_and_steps_are_capped() {
        // One ENV of 1,000 values (plus PATH), then stages FROM it: the copies pass the cap
        // at the stage that brings them past a million.
        let pairs: Vec<String> = (0..1000).map(|i| format!("v{i}=x")).collect();
        let mut text = format!("FROM scratch AS base\nENV {}\n", pairs.join(" "));
        for i in 0..1000 {
            text.push_str(&format!("FROM base AS c{i}\n"));
        }
        let df = crate::frontend::parse(text.as_bytes()).unwrap();
        let options = crate::frontend::stage::ResolveOptions::default();
        let error = crate::frontend::stage::resolve(&df, &options).unwrap_err();
        assert!(
            matches!(
                error,
                crate::frontend::stage::StageError::TooManyVariableCopies {
                    limit: MAX_VARIABLE_COPIES,
                    ..
                }
            ),
            "{error}"
        );
        // 1,001 variables per stage: the 999th child is the first past a million.
        assert_eq!(error.span().unwrap().start.line, 2 + 999 + 1);

        // RUN steps get every variable in scope: the same cap.
        let runs = format!(
            "FROM scratch\nENV {}\n{}",
            pairs.join(" "),
            "RUN true\n".repeat(1000)
        );
        let df = crate::frontend::parse(runs.as_bytes()).unwrap();
        let error = crate::frontend::stage::resolve(&df, &options).unwrap_err();
        assert!(
            error.to_string().contains("more than 1000000 variables"),
            "{error}"
        );
        assert_eq!(error.span().unwrap().start.line, 2 + 1000);

        let few = format!("FROM scratch AS base\nENV {}\nFROM base\n", pairs.join(" "));
        let df = crate::frontend::parse(few.as_bytes()).unwrap();
        crate::frontend::stage::resolve(&df, &options).unwrap();
    }

    #[test]
    fn parse_refuses_bytes_past_the_cap() {
        let big = vec![b'#'; MAX_DOCKERFILE_BYTES as usize + 1];
        let error = crate::frontend::parse(&big).unwrap_err();
        assert!(
            matches!(error, crate::frontend::SyntaxError::TooLarge { .. }),
            "{error}"
        );
    }
}
