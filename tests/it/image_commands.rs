//! The image commands as a user runs them: `kiln images`, `tag`, `rmi`, `inspect`, `history`,
//! `prune`, `df` against a store written through the library (insta snapshots of the output).

use crate::store::{Spec, build_image, temp_store};
use crate::support::kiln;
use kiln::oci::timestamp::format_rfc3339;
use kiln::store::{ContainerRecord, Store, StoredImage};
use serde_json::Value;
use std::path::Path;

/// Two hours and ten minutes ago: `2 hours ago` in docker's words, whenever the test runs.
fn two_hours_ago() -> i64 {
    kiln::oci::timestamp::now_seconds() - 2 * 3600 - 600
}

/// Replaces image IDs (12 or 64 hex digits, which depend on the creation time) with marks of
/// the same width, so column alignment survives: `<1>`, `<2>`... in order of appearance.
fn mask_ids(text: &str, images: &[&StoredImage]) -> String {
    let mut out = text.to_string();
    for (i, image) in images.iter().enumerate() {
        for id in [
            image.id.hex(),
            image.id.short(),
            image.manifest_digest.hex(),
        ] {
            let mark = format!("<{}>", i + 1);
            let masked = format!("{mark:#<width$}", width = id.len());
            out = out.replace(id, &masked);
        }
    }
    out
}

/// A store with `hello:latest` = `hello:v2` (two layers), `other` and one untagged image,
/// created `newest` (Unix seconds) and one and two minutes before.
fn three_images(newest: i64) -> (tempfile::TempDir, Store, [StoredImage; 3]) {
    let (dir, store) = temp_store();
    let hello = build_image(
        &store,
        &Spec {
            layers: &[&[("hello.txt", "hello\n")], &[("etc/motd", "welcome\n")]],
            created: &format_rfc3339(newest),
            cmd: &["/bin/sh"],
        },
    );
    let other = build_image(
        &store,
        &Spec {
            layers: &[&[("other", "other\n")]],
            created: &format_rfc3339(newest - 60),
            cmd: &["/other"],
        },
    );
    let dangling = build_image(
        &store,
        &Spec {
            layers: &[&[("old", "old\n")]],
            created: &format_rfc3339(newest - 120),
            cmd: &["/old"],
        },
    );
    store.tag("hello", &hello.manifest_descriptor).unwrap();
    store.tag("hello:v2", &hello.manifest_descriptor).unwrap();
    store
        .tag(
            "registry.local:5000/team/other:1.0",
            &other.manifest_descriptor,
        )
        .unwrap();
    (dir, store, [hello, other, dangling])
}

/// [`three_images`] at a fixed time (2024-02-29T12:00:00Z), so IDs are fixed too.
fn fixed() -> (tempfile::TempDir, Store, [StoredImage; 3]) {
    three_images(1_709_208_000)
}

#[test]
fn images_default_table() {
    let (_dir, store, images) = three_images(two_hours_ago());
    let out = kiln()
        .root(store.root())
        .args(["images"])
        .run()
        .success()
        .stdout_str();
    let [hello, other, dangling] = &images;
    insta::assert_snapshot!(mask_ids(&out, &[hello, other, dangling]), @r"
    REPOSITORY                       TAG       IMAGE ID       CREATED       SIZE
    hello                            latest    <1>#########   2 hours ago   4.1kB
    hello                            v2        <1>#########   2 hours ago   4.1kB
    registry.local:5000/team/other   1.0       <2>#########   2 hours ago   2.05kB
    <none>                           <none>    <3>#########   2 hours ago   2.05kB
    ");
}

#[test]
fn images_quiet_digests_no_trunc_and_filter() {
    let (_dir, store, [hello, other, dangling]) = fixed();
    let quiet = kiln()
        .root(store.root())
        .args(["images", "-q"])
        .run()
        .success()
        .stdout_str();
    let ids: Vec<&str> = quiet.lines().collect();
    assert_eq!(ids.len(), 4, "one line per row, as docker");
    assert!(ids.contains(&hello.id.short()) && ids.contains(&dangling.id.short()));

    let digests = kiln()
        .root(store.root())
        .args([
            "images",
            "--digests",
            "--format",
            "table {{.Repository}}\t{{.Tag}}\t{{.ID}}",
        ])
        .run()
        .success()
        .stdout_str();
    let header: Vec<&str> = digests.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["REPOSITORY", "TAG", "IMAGE", "ID", "DIGEST"],
        "--digests adds the column"
    );
    assert!(
        digests.contains(&other.manifest_digest.to_string()),
        "{digests}"
    );

    let full = kiln()
        .root(store.root())
        .args(["images", "--no-trunc", "-q", "hello"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(full, format!("{}\n{}\n", hello.id, hello.id));

    let filtered = kiln()
        .root(store.root())
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}", "hello:v*"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(filtered, "hello:v2\n");
    let glob = kiln()
        .root(store.root())
        .args([
            "images",
            "--format",
            "{{.Repository}}",
            "registry.local:5000/team/*",
        ])
        .run()
        .success()
        .stdout_str();
    assert_eq!(glob, "registry.local:5000/team/other\n");
}

#[test]
fn images_custom_formats() {
    let (_dir, store, _) = fixed();
    let out = kiln()
        .root(store.root())
        .args([
            "images",
            "--format",
            "table {{.Repository}}:{{.Tag}}\\t{{.Size}}\\t{{.Containers}}",
        ])
        .run()
        .success()
        .stdout_str();
    insta::assert_snapshot!(out, @r"
    REPOSITORY:TAG                       SIZE      CONTAINERS
    hello:latest                         4.1kB     0
    hello:v2                             4.1kB     0
    registry.local:5000/team/other:1.0   2.05kB    0
    <none>:<none>                        2.05kB    0
    ");
    let json = kiln()
        .root(store.root())
        .args(["images", "--format", "json", "hello:latest"])
        .run()
        .success()
        .stdout_str();
    let row: Value = serde_json::from_str(json.trim()).expect("one JSON object");
    let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "Containers",
            "CreatedAt",
            "CreatedSince",
            "Digest",
            "ID",
            "Repository",
            "SharedSize",
            "Size",
            "Tag",
            "UniqueSize",
            "VirtualSize"
        ]
    );
    assert_eq!(row["CreatedAt"], "2024-02-29 12:00:00 +0000 UTC");
    assert_eq!(row["Digest"], "<none>");
    assert_eq!(row["Size"], "4.1kB");
    assert_eq!(row["VirtualSize"], "4.096kB");

    let err = kiln()
        .root(store.root())
        .args(["images", "--format", "{{.Repo}}"])
        .run()
        .failure()
        .stderr_str();
    insta::assert_snapshot!(err, @"error: template: unknown field .Repo; the fields are .Containers, .CreatedAt, .CreatedSince, .Digest, .ID, .Repository, .SharedSize, .Size, .Tag, .UniqueSize, .VirtualSize");
    let err = kiln()
        .root(store.root())
        .args(["images", "--format", "{{.ID | printf}}"])
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("unsupported action {{.ID | printf}}"), "{err}");
}

#[test]
fn tag_names_images_and_refuses_bad_names() {
    let (_dir, store, [hello, ..]) = fixed();
    kiln()
        .root(store.root())
        .args(["tag", "hello:v2", "copy"])
        .run()
        .success();
    kiln()
        .root(store.root())
        .args(["tag", &hello.id.hex()[..8], "127.0.0.1:5000/a/b:v1"])
        .run()
        .success();
    let out = kiln()
        .root(store.root())
        .args([
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--no-trunc",
        ])
        .run()
        .success()
        .stdout_str();
    for name in ["copy:latest", "127.0.0.1:5000/a/b:v1", "hello:latest"] {
        assert!(out.lines().any(|l| l == name), "{name} in\n{out}");
    }
    let cases = [
        (
            vec!["tag", "nope", "x"],
            "error: no such image: nope:latest",
        ),
        (
            vec!["tag", "hello", "Bad"],
            "error: invalid image name \"Bad\": invalid reference format: repository name (library/Bad) must be lowercase",
        ),
        (
            vec![
                "tag",
                "hello",
                "x@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ],
            "error: refusing to create a tag with a digest reference: x@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ),
    ];
    for (args, want) in cases {
        let err = kiln()
            .root(store.root())
            .args(&args)
            .run()
            .failure()
            .stderr_str();
        assert_eq!(err.trim_end(), want, "{args:?}");
    }
}

#[test]
fn rmi_untags_deletes_and_refuses() {
    let (_dir, store, [hello, other, dangling]) = fixed();
    let err = kiln()
        .root(store.root())
        .args(["rmi", hello.id.short()])
        .run()
        .failure()
        .stderr_str();
    assert_eq!(
        err.trim_end(),
        format!(
            "error: conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            hello.id.short()
        )
    );
    assert_eq!(
        kiln()
            .root(store.root())
            .args(["rmi", "hello:v2"])
            .run()
            .success()
            .stdout_str(),
        "Untagged: hello:v2\n"
    );
    let out = kiln()
        .root(store.root())
        .args(["rmi", "hello", dangling.id.short()])
        .run()
        .success()
        .stdout_str();
    assert_eq!(
        out,
        format!(
            "Untagged: hello:latest\nDeleted: {}\nDeleted: {}\n",
            hello.id, dangling.id
        )
    );
    assert!(!store.blobs().contains(&hello.layers[1].digest));

    // Several arguments: the good ones are done, each failure is reported, the exit code is 1.
    let out = kiln()
        .root(store.root())
        .args([
            "rmi",
            "nope",
            "registry.local:5000/team/other:1.0",
            "gone:1",
        ])
        .run();
    let (code, stdout, stderr) = (out.status.code(), out.stdout_str(), out.stderr_str());
    assert_eq!(code, Some(1));
    assert_eq!(
        stdout,
        format!(
            "Untagged: registry.local:5000/team/other:1.0\nDeleted: {}\n",
            other.id
        )
    );
    assert_eq!(
        stderr,
        "error: no such image: nope:latest\nerror: no such image: gone:1\n"
    );
    assert_eq!(
        kiln()
            .root(store.root())
            .args(["images", "-q"])
            .run()
            .success()
            .stdout_str(),
        ""
    );
}

#[test]
fn rmi_refuses_images_containers_use_unless_forced() {
    let (_dir, store, [_, other, _]) = fixed();
    store
        .put_container(&ContainerRecord {
            id: "4f1e2d3c4b5a69788796a5b4".to_string(),
            image: other.id.clone(),
            image_name: "other".to_string(),
            name: String::new(),
            config: Default::default(),
            created: "2024-01-01T00:00:00Z".to_string(),
            pid: None,
            remove_with: None,
            run: Default::default(),
        })
        .unwrap();
    let err = kiln()
        .root(store.root())
        .args(["rmi", "registry.local:5000/team/other:1.0"])
        .run()
        .failure()
        .stderr_str();
    insta::assert_snapshot!(err.replace(other.id.short(), "<id>"), @r#"error: conflict: unable to remove repository reference "registry.local:5000/team/other:1.0" (must force) - container 4f1e2d3c4b5a is using its referenced image <id>"#);
    let out = kiln()
        .root(store.root())
        .args(["rmi", "-f", "registry.local:5000/team/other:1.0"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(
        out, "Untagged: registry.local:5000/team/other:1.0\n",
        "the content stays for the container"
    );
    assert!(store.resolve(other.id.hex()).is_ok());
}

#[test]
fn inspect_prints_dockers_document() {
    let (_dir, store, [hello, ..]) = fixed();
    let out = kiln()
        .root(store.root())
        .args(["inspect", "hello"])
        .run()
        .success()
        .stdout_str();
    assert!(
        out.starts_with("[\n    {\n        \"Id\": \"sha256:"),
        "4-space indent like docker:\n{out}"
    );
    let docs: Value = serde_json::from_str(&out).expect("a JSON array");
    let doc = &docs[0];
    assert_eq!(doc["Id"], hello.id.to_string());
    assert_eq!(
        doc["RepoTags"],
        serde_json::json!(["hello:latest", "hello:v2"])
    );
    assert_eq!(
        doc["RepoDigests"],
        serde_json::json!([format!("hello@{}", hello.manifest_digest)])
    );
    assert_eq!(doc["Created"], "2024-02-29T12:00:00Z");
    assert_eq!(doc["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(doc["Config"]["WorkingDir"], "/");
    assert_eq!(doc["Architecture"], "amd64");
    assert_eq!(doc["Os"], "linux");
    assert_eq!(doc["Size"], hello.size());
    let layers: Vec<String> = hello.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(
        doc["RootFS"],
        serde_json::json!({"Type": "layers", "Layers": layers})
    );
    assert!(
        doc["Metadata"]["LastTagTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let keys: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("        \"") && !l.starts_with("         "))
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "Id",
            "RepoTags",
            "RepoDigests",
            "Created",
            "Config",
            "Architecture",
            "Os",
            "Size",
            "RootFS",
            "Metadata",
            "Descriptor"
        ],
        "docker's order; empty Comment, Author, Variant, OsVersion left out"
    );

    let out = kiln().root(store.root()).args([
        "inspect",
        "-f",
        "{{.Id}} {{join .RepoTags \",\"}} {{json .Config.Cmd}} {{.Config.User}}|{{.Parent}}|{{.Config.Healthcheck}}",
        "hello:v2",
    ])
    .run().success().stdout_str();
    assert_eq!(
        out,
        format!("{} hello:latest,hello:v2 [\"/bin/sh\"] ||<nil>\n", hello.id)
    );

    let out = kiln()
        .root(store.root())
        .args(["inspect", "hello", "missing"])
        .run();
    let (code, stdout, stderr) = (out.status.code(), out.stdout_str(), out.stderr_str());
    assert_eq!(code, Some(1));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(stderr, "error: no such image: missing:latest\n");
    let err = kiln()
        .root(store.root())
        .args(["inspect", "-f", "{{.Nope}}", "hello"])
        .run()
        .failure()
        .stderr_str();
    assert!(err.contains("unknown field .Nope"), "{err}");
}

#[test]
fn history_lists_steps_newest_first() {
    let (_dir, store, [hello, ..]) = three_images(two_hours_ago());
    let out = kiln()
        .root(store.root())
        .args(["history", "hello"])
        .run()
        .success()
        .stdout_str();
    insta::assert_snapshot!(mask_ids(&out, &[&hello]), @r#"
    IMAGE          CREATED       CREATED BY                 SIZE      COMMENT
    <1>#########   2 hours ago   CMD ["/bin/sh"]            0B        buildkit.dockerfile.v0
    <missing>      2 hours ago   COPY layer1 / # buildkit   2.05kB    buildkit.dockerfile.v0
    <missing>      2 hours ago   COPY layer0 / # buildkit   2.05kB    buildkit.dockerfile.v0
    "#);
    let quiet = kiln()
        .root(store.root())
        .args(["history", "-q", "--no-trunc", "hello"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(quiet, format!("{}\n<missing>\n<missing>\n", hello.id));
    let raw = kiln()
        .root(store.root())
        .args([
            "history",
            "--human=false",
            "--format",
            "{{.Size}} {{.CreatedAt}}",
            "hello",
        ])
        .run()
        .success()
        .stdout_str();
    let sizes: Vec<&str> = raw.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(sizes, ["0", "2048", "2048"]);
}

#[test]
fn prune_asks_then_reports_what_it_freed() {
    let (_dir, store, [hello, _, dangling]) = fixed();
    let out = kiln().root(store.root()).args(["prune"]).stdin("n\n").run();
    let (code, stdout, stderr) = (out.status.code(), out.stdout_str(), out.stderr_str());
    assert_eq!(code, Some(1));
    assert!(
        stdout.starts_with("WARNING! This will remove:\n  - all dangling images\n"),
        "{stdout}"
    );
    assert_eq!(stderr, "error: prune cancelled: nothing was removed\n");
    assert!(store.resolve(dangling.id.hex()).is_ok());

    let out = kiln()
        .root(store.root())
        .args(["prune", "-f"])
        .run()
        .success()
        .stdout_str();
    let out = out.replace(&dangling.id.to_string(), "sha256:<dangling>");
    insta::assert_snapshot!(out, @r"
    Deleted Images:
    deleted: sha256:<dangling>

    Deleted 3 unreferenced blobs

    Total reclaimed space: 2.989kB
    ");
    let out = kiln()
        .root(store.root())
        .args(["prune", "-a"])
        .stdin("y\n")
        .run()
        .success()
        .stdout_str();
    assert!(
        out.contains("untagged: hello:latest\nuntagged: hello:v2\n"),
        "{out}"
    );
    assert!(out.contains(&format!("deleted: {}", hello.id)), "{out}");
    assert_eq!(
        kiln()
            .root(store.root())
            .args(["images", "-q"])
            .run()
            .success()
            .stdout_str(),
        ""
    );
    assert_eq!(store.blobs().list().unwrap(), []);
}

#[test]
fn df_reports_images_containers_and_snapshots() {
    let (_dir, store, [hello, ..]) = fixed();
    store
        .create_snapshot(&hello.layers[0].diff_id, |dir| {
            std::fs::write(dir.join("hello.txt"), "hello\n")
        })
        .unwrap();
    store
        .put_container(&ContainerRecord {
            id: "c1".to_string(),
            image: hello.id.clone(),
            image_name: "hello".to_string(),
            name: String::new(),
            config: Default::default(),
            created: "2024-01-01T00:00:00Z".to_string(),
            pid: None,
            remove_with: None,
            run: Default::default(),
        })
        .unwrap();
    let out = kiln()
        .root(store.root())
        .args(["df"])
        .run()
        .success()
        .stdout_str();
    let container_size = kiln::sys::atomic::tree_size(&store.container_dir("c1").unwrap());
    let out = out.replace(&format!("{container_size}B"), "<n>B");
    insta::assert_snapshot!(out, @r"
    TYPE               TOTAL     ACTIVE    SIZE      RECLAIMABLE
    Images             3         1         11.36kB   5.982kB (52%)
    Containers         1         0         <n>B      <n>B (100%)
    Layer snapshots    1         1         6B        0B (0%)
    Cache mounts       0         0         0B        0B
    Git repositories   0         0         0B        0B
    Git checkouts      0         0         0B        0B
    URL records        0         0         0B        0B
    ");
}

/// `kiln df`'s row `name` as (TOTAL, ACTIVE, SIZE, RECLAIMABLE).
fn df_row(root: &Path, name: &str) -> (String, String, String, String) {
    let out = kiln()
        .root(root)
        .args([
            "df",
            "--format",
            "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}|{{.Reclaimable}}",
        ])
        .run()
        .success()
        .stdout_str();
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{name}|")))
        .unwrap_or_else(|| panic!("no {name} row:\n{out}"));
    let cells: Vec<String> = line.split('|').skip(1).map(str::to_string).collect();
    (
        cells[0].clone(),
        cells[1].clone(),
        cells[2].clone(),
        cells[3].clone(),
    )
}

#[test]
fn prune_and_df_know_the_git_and_url_caches() {
    use crate::add_git::GitServer;
    use crate::support::http::{Resource, Server};
    use kiln::git::{GitAuth, GitCache, GitOptions, GitRef, GitSource};
    let Some(server) = GitServer::start() else {
        return;
    };
    let Some(builder) = crate::build::builder() else {
        return;
    };
    let repo = server.repo("pruned");
    repo.write("README", "pruned\n");
    repo.commit("one");
    let http = Server::start();
    http.set(
        "/file.txt",
        Resource {
            etag: Some("v1".into()),
            ..Resource::body("downloaded\n")
        },
    );
    let git_url = format!("{}#main", server.url("pruned"));
    let dockerfile = format!(
        "FROM base\nADD {git_url} /src/\nADD {} /file.txt\n\
         RUN --mount=type=cache,target=/cache touch /cache/kept\n",
        http.url("/file.txt")
    );
    let ctx = builder.context(&[("Dockerfile", &dockerfile)]);
    builder.build(ctx.path(), &["-t", "img"]).ok();
    let root = builder.root();
    let git_dir = root.join("cache/git");
    let checkouts = || {
        std::fs::read_dir(git_dir.join("checkouts"))
            .map(|dir| dir.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    };
    assert_eq!(checkouts(), 1);

    // Each cache has its row, with its size; nothing holds them now.
    for name in ["Git repositories", "Git checkouts", "URL records"] {
        let (total, active, size, reclaimable) = df_row(root, name);
        assert_eq!((total.as_str(), active.as_str()), ("1", "0"), "{name}");
        assert_ne!(size, "0B", "{name}");
        assert_eq!(reclaimable, format!("{size} (100%)"), "{name}");
    }

    // A checkout in use (as a build holds it: a store lease and its lock) is active, and a
    // prune waits for it rather than remove it under its reader.
    let store = Store::open(root).unwrap();
    let reference = GitRef::parse(&git_url).unwrap().unwrap();
    let source = GitSource::new(&reference);
    let cache = GitCache::new(&store, GitOptions::default());
    let auth = GitAuth::default();
    let resolved = cache.resolve(&source, &auth, &|| false).unwrap();
    let held = cache
        .checkout(&source, &resolved, &auth, &|| false)
        .unwrap();
    let (_, active, size, reclaimable) = df_row(root, "Git checkouts");
    assert_eq!(active, "1");
    assert_eq!(reclaimable, "0B (0%)", "{size}");
    let mut prune = kiln()
        .root(root)
        .args(["prune", "-f", "--keep-cache-mounts"])
        .spawn();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        prune.try_wait().unwrap().is_none(),
        "prune did not wait for the checkout's reader"
    );
    assert_eq!(
        std::fs::read_to_string(held.path().join("README")).unwrap(),
        "pruned\n"
    );
    drop(held);
    let out = prune.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("1 git repository, 1 git checkout, 1 URL record"),
        "{printed}"
    );
    assert_eq!(checkouts(), 0);
    for name in ["Git repositories", "Git checkouts", "URL records"] {
        assert_eq!(
            df_row(root, name),
            ("0".into(), "0".into(), "0B".into(), "0B".into()),
            "{name}"
        );
    }
    // --keep-cache-mounts keeps only the cache mounts.
    assert_eq!(df_row(root, "Cache mounts").0, "1");
    assert!(!git_dir.join("repos").read_dir().unwrap().any(|_| true));

    // The next build fetches again: the URL is asked without If-None-Match.
    let before = http.requests().len();
    builder.build(ctx.path(), &["-t", "img", "--no-cache"]).ok();
    assert_eq!(checkouts(), 1);
    let asked = &http.requests()[before..];
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].if_none_match, None);
}

#[test]
fn concurrent_tag_processes_lose_nothing() {
    let (_dir, store, _) = fixed();
    let children: Vec<_> = (0..8)
        .map(|i| {
            kiln()
                .root(store.root())
                .args(["tag", "hello", &format!("proc{i}:t")])
                .spawn()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }
    let names = store.resolve("hello").unwrap().names;
    assert_eq!(names.len(), 2 + 8, "{names:?}");
}

#[test]
fn the_store_root_comes_from_kiln_root() {
    let (_dir, store, _) = fixed();
    let out = kiln()
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}", "hello"])
        .env("KILN_ROOT", store.root())
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello:latest\nhello:v2\n"
    );
}

#[test]
fn a_root_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes"), "mine").unwrap();
    let err = kiln()
        .root(dir.path())
        .args(["images"])
        .run()
        .failure()
        .stderr_str();
    let err = err.replace(&dir.path().display().to_string(), "<dir>");
    insta::assert_snapshot!(err, @"error: <dir> is not an OCI image layout (it is not empty and has no oci-layout file); point --root (or KILN_ROOT) at an empty directory or an existing kiln store");
    assert!(!Path::new(&dir.path().join("oci-layout")).exists());
}
