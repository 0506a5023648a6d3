//! The error convention of `kiln::error`, checked on errors of every module: a message says only
//! its own layer, its cause comes from `source()`. (An integration test: a unit test in the
//! `error` module would import every module above it.)

use kiln::error::repeated_cause;
use std::error::Error;

#[test]
fn errors_of_every_module_say_only_their_own_layer() {
    use std::path::PathBuf;
    let io = || std::io::Error::other("connection refused");
    let json = || serde_json::from_str::<u8>("{").unwrap_err();
    let fs = || kiln::sys::FsError::new("read", std::path::Path::new("/x"), io());
    let digest = kiln::oci::Digest::of(b"x");
    let errors: Vec<Box<dyn Error>> = vec![
        Box::new(fs()),
        Box::new(kiln::store::StoreError::Fs(fs())),
        Box::new(kiln::store::StoreError::Document {
            what: "image config",
            digest: digest.clone(),
            source: json().into(),
        }),
        Box::new(kiln::store::StoreError::Index(
            kiln::error::Reason::caused_by(
                "entry 0 has an unusable digest",
                kiln::oci::Digest::parse("md5:x").unwrap_err(),
            ),
        )),
        Box::new(kiln::registry::RegistryError::Runtime(io())),
        Box::new(kiln::registry::RegistryError::Document {
            registry: "r".into(),
            what: "the token reply".into(),
            reason: json().into(),
        }),
        Box::new(kiln::registry::RegistryError::Config {
            path: PathBuf::from("/c"),
            reason: kiln::error::Reason::caused_by("cannot read it", io()),
        }),
        Box::new(kiln::archive::ArchiveError::Document {
            what: "image config",
            name: "x".into(),
            reason: json().into(),
        }),
        Box::new(kiln::archive::ArchiveError::Write { source: io() }),
        Box::new(kiln::cache::CacheError::Fs(fs())),
        Box::new(kiln::cache::remote::format::FormatError::Manifest(
            json().into(),
        )),
        Box::new(kiln::container::parse_volume("/no/such/kiln/dir:/mnt").unwrap_err()),
        Box::new(kiln::runtime::RuntimeError::Sys {
            action: "fork",
            errno: nix::errno::Errno::EAGAIN,
        }),
        Box::new(kiln::runtime::cgroup::CgroupError::Read {
            path: PathBuf::from("/sys/fs/cgroup/x"),
            source: io(),
        }),
        Box::new(kiln::layer::LayerError::Tar { source: io() }),
        Box::new(kiln::frontend::context::ContextError::Walk {
            path: PathBuf::from("/ctx/a"),
            source: io(),
        }),
    ];
    for err in &errors {
        assert_eq!(repeated_cause(err.as_ref()), None);
        assert!(err.source().is_some(), "{err} has no source");
    }
}
