//! What a build reports while it runs: typed events, delivered in order through a callback, so
//! the CLI renders them (tty, plain, json) and a build system embedding kiln gets the same
//! stream.

use crate::frontend::diagnostic::Span;
use serde::Serialize;
use std::time::Duration;

/// A step of the build as the user sees it: one op of the graph (identical ops of different
/// stages are one step), named after the first instruction that needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepInfo {
    /// The step's number, from 0, in the order steps are listed.
    pub id: usize,
    /// BuildKit-style name: `[build 2/5] RUN make`, `[internal] load build context`.
    pub name: String,
    /// The instruction in the Dockerfile, when the step is one.
    pub span: Option<Span>,
}

/// Which stream of a RUN step a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuildEvent {
    /// The steps the build will go through, sent once before any other step event.
    Planned { steps: Vec<StepInfo> },
    /// A step started running (it missed the cache).
    Started { step: usize },
    /// A step's result came from the cache; it does not run.
    Cached { step: usize },
    /// A line (without its newline; invalid UTF-8 replaced) a RUN step wrote.
    Log {
        step: usize,
        stream: LogStream,
        line: String,
    },
    /// A step finished.
    Done {
        step: usize,
        #[serde(serialize_with = "seconds")]
        elapsed: Duration,
    },
    /// A step failed; the build stops. `message` is the full error.
    Error { step: usize, message: String },
    /// A step was stopped because another failed or the build was cancelled.
    Canceled { step: usize },
    /// Something outside the steps (exporting, naming) started; `what` says what.
    Phase { what: String },
    /// A `FROM` or `COPY --from` image was pulled from its registry (after a
    /// [`BuildEvent::Phase`] `pulling REFERENCE`): its manifest digest and how many blobs were
    /// downloaded (the store had the others).
    ImagePulled {
        reference: String,
        digest: String,
        downloaded: usize,
    },
    /// A `--cache-from` cache was read (its manifest and graph only): how many records it
    /// holds; `warning` says why it is not used when it could not be (the build then runs
    /// without it).
    CacheImported {
        source: String,
        records: usize,
        warning: Option<String>,
    },
    /// Something went wrong that does not stop the build, such as a cache mount from a
    /// `--cache-from` cache that could not be restored (the mount then starts empty); `step`
    /// is the step it concerns, when one.
    Warning {
        step: Option<usize>,
        message: String,
    },
    /// A build check found something (BuildKit's lint warning), sent before the first step;
    /// the CLI lists them when the build ends, as buildx does.
    Lint {
        rule: String,
        message: String,
        url: String,
        /// The instruction's first line.
        line: usize,
    },
    /// A `--cache-to` cache was written: its records and how many layer blobs were copied
    /// (the others were there already).
    CacheExported {
        destination: String,
        records: usize,
        blobs: usize,
    },
    /// The image is written: its ID (config digest) and the names it got.
    Finished {
        image_id: String,
        names: Vec<String>,
    },
}

fn seconds<S: serde::Serializer>(elapsed: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(elapsed.as_secs_f64())
}

/// Where build events go. Called from the solver's threads, one event at a time in order.
pub trait Progress: Send + Sync {
    fn event(&self, event: BuildEvent);
}

impl<F: Fn(BuildEvent) + Send + Sync> Progress for F {
    fn event(&self, event: BuildEvent) {
        self(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_one_tagged_object_each() {
        let cases = [
            (
                BuildEvent::Log {
                    step: 2,
                    stream: LogStream::Stderr,
                    line: "hi".into(),
                },
                r#"{"event":"log","step":2,"stream":"stderr","line":"hi"}"#,
            ),
            (
                BuildEvent::Done {
                    step: 1,
                    elapsed: Duration::from_millis(1500),
                },
                r#"{"event":"done","step":1,"elapsed":1.5}"#,
            ),
            (
                BuildEvent::Cached { step: 0 },
                r#"{"event":"cached","step":0}"#,
            ),
            (
                BuildEvent::CacheImported {
                    source: "directory /c".into(),
                    records: 3,
                    warning: None,
                },
                r#"{"event":"cache_imported","source":"directory /c","records":3,"warning":null}"#,
            ),
            (
                BuildEvent::ImagePulled {
                    reference: "127.0.0.1:5000/base:latest".into(),
                    digest: "sha256:ab".into(),
                    downloaded: 2,
                },
                r#"{"event":"image_pulled","reference":"127.0.0.1:5000/base:latest","digest":"sha256:ab","downloaded":2}"#,
            ),
            (
                BuildEvent::CacheExported {
                    destination: "directory /c".into(),
                    records: 3,
                    blobs: 1,
                },
                r#"{"event":"cache_exported","destination":"directory /c","records":3,"blobs":1}"#,
            ),
        ];
        for (event, json) in cases {
            assert_eq!(serde_json::to_string(&event).ok().as_deref(), Some(json));
        }
    }
}
