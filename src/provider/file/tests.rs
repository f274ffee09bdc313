//! Loader tests: last good, limits, settle, duplicates, persistence.

use super::*;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchyard-file-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: n\nspec:\n  ports:\n  - port: 80\n";

#[test]
fn malformed_file_names_file_and_line_and_keeps_last_good() {
    let d = tmpdir("malformed");
    let f = d.join("svc.yaml");
    std::fs::write(&f, SVC).expect("write");
    let mut loader = DirLoader::new(&d);
    let (inputs, errors) = loader.load("c");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(inputs.services.len(), 1);

    // Break the YAML on line 3.
    std::thread::sleep(std::time::Duration::from_millis(10));
    std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: [oops\n").expect("write");
    let (inputs, errors) = loader.load("c");
    assert_eq!(inputs.services.len(), 1, "last good version still served");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].file.ends_with("svc.yaml"));
    assert!(errors[0].line.is_some(), "{:?}", errors[0]);
    assert!(errors[0].using_last_good);
    assert!(errors[0].to_string().contains("svc.yaml:"), "{}", errors[0]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_field_names_object_field_and_document_line() {
    let d = tmpdir("badfield");
    let text = format!("{SVC}---\n# second\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  gatewayClassName: [1]\n  listeners: []\n");
    std::fs::write(d.join("x.yaml"), text).expect("write");
    let (inputs, errors) = DirLoader::new(&d).load("c");
    assert_eq!(
        inputs.services.len(),
        0,
        "a file with a bad document is not half-applied"
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(11));
    assert!(
        errors[0].message.contains("Gateway default/g"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0].message.contains("spec.gatewayClassName"),
        "{}",
        errors[0].message
    );
    assert!(!errors[0].using_last_good);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn refresh_paths_loads_and_retracts_only_the_named_files() {
    let d = tmpdir("paths");
    std::fs::write(d.join("a.yaml"), SVC).expect("write");
    let mut loader = DirLoader::new(&d).with_limits(no_settle());
    let r = loader.refresh("c");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(loader.inputs().services.len(), 1);

    let b = d.join("b.yaml");
    std::fs::write(&b, SVC.replace("name: a", "name: b")).expect("write");
    // A file not named is not looked at.
    let r = loader.refresh_paths("c", &BTreeSet::new());
    assert!(r.changes.is_empty());
    assert_eq!(loader.inputs().services.len(), 1);
    let r = loader.refresh_paths("c", &BTreeSet::from([b.clone(), d.join(".b.yaml.tmp")]));
    assert_eq!(loader.inputs().services.len(), 2);
    assert!(r
        .changes
        .objects
        .contains(&(Kind::Service, ObjKey::new("n", "b"))));
    assert_eq!(r.changes.objects.len(), 1);

    // A file of two objects with one edited reports only that one.
    let two = format!(
        "{}---\n{}",
        SVC.replace("name: a", "name: c"),
        SVC.replace("name: a", "name: e")
    );
    std::fs::write(d.join("two.yaml"), &two).expect("write");
    loader.refresh_paths("c", &BTreeSet::from([d.join("two.yaml")]));
    std::thread::sleep(std::time::Duration::from_millis(10));
    std::fs::write(
        d.join("two.yaml"),
        two.replace("port: 80\n---", "port: 81\n---"),
    )
    .expect("write");
    let r = loader.refresh_paths("c", &BTreeSet::from([d.join("two.yaml")]));
    assert_eq!(
        r.changes.objects,
        BTreeSet::from([(Kind::Service, ObjKey::new("n", "c"))])
    );

    std::fs::remove_file(d.join("a.yaml")).expect("rm");
    let r = loader.refresh_paths("c", &BTreeSet::from([d.join("a.yaml")]));
    assert_eq!(loader.inputs().services.len(), 3, "b, c and e remain");
    assert!(r
        .changes
        .objects
        .contains(&(Kind::Service, ObjKey::new("n", "a"))));
    let _ = std::fs::remove_dir_all(&d);
}

fn no_settle() -> Limits {
    Limits {
        settle: Duration::ZERO,
        ..Limits::default()
    }
}

use std::time::Duration;

fn svc(name: &str, port: u16) -> String {
    SVC.replace("name: a", &format!("name: {name}"))
        .replace("port: 80", &format!("port: {port}"))
}

fn port_of(l: &DirLoader, name: &str) -> Option<i32> {
    l.inputs()
        .services
        .get(&ObjKey::new("n", name))
        .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port))
}

/// Rewrites a file so that its stamp surely changes.
fn rewrite(f: &Path, text: &str) {
    std::thread::sleep(Duration::from_millis(5));
    std::fs::write(f, text).expect("write");
}

#[test]
fn restart_with_a_broken_file_serves_the_saved_last_good_version() {
    let d = tmpdir("persist");
    let store_dir = tmpdir("persist-store");
    let f = d.join("svc.yaml");
    std::fs::write(&f, svc("a", 81)).expect("write");
    std::fs::write(d.join("other.yaml"), svc("o", 90)).expect("write");
    let mut l = DirLoader::new(&d).with_last_good(LastGoodStore::new(&store_dir));
    assert!(l.refresh("c").errors.is_empty());
    l.persist();
    rewrite(&f, "apiVersion: v1\nkind: Service\nmetadata: [oops\n");
    let r = l.refresh("c");
    assert_eq!(r.errors.len(), 1);
    l.persist();

    // A new process: the file is still broken.
    let mut l = DirLoader::new(&d).with_last_good(LastGoodStore::new(&store_dir));
    let r = l.refresh("c");
    assert_eq!(port_of(&l, "a"), Some(81), "served from the saved copy");
    assert_eq!(port_of(&l, "o"), Some(90));
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].using_last_good);
    assert!(
        r.errors[0].message.contains("saved in"),
        "{}",
        r.errors[0].message
    );
    assert!(r.errors[0].line.is_some());
    // Fixed: the new version is served and saved.
    rewrite(&f, &svc("a", 82));
    assert!(l.refresh("c").errors.is_empty());
    l.persist();
    let saved = LastGoodStore::new(&store_dir).load(Path::new("svc.yaml"), 1 << 20);
    assert_eq!(saved.as_deref(), Some(svc("a", 82).as_str()));
    // Deleted while down: its copy goes at the next complete scan.
    std::fs::remove_file(&f).expect("rm");
    let mut l = DirLoader::new(&d).with_last_good(LastGoodStore::new(&store_dir));
    l.refresh("c");
    l.persist();
    assert_eq!(port_of(&l, "a"), None);
    assert_eq!(
        LastGoodStore::new(&store_dir).load(Path::new("svc.yaml"), 1 << 20),
        None
    );
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&store_dir);
}

#[test]
fn emptied_or_truncated_file_keeps_its_objects_until_settled() {
    let d = tmpdir("settle");
    let f = d.join("two.yaml");
    std::fs::write(&f, format!("{}---\n{}", svc("a", 80), svc("b", 80))).expect("write");
    let mut l = DirLoader::new(&d).with_limits(Limits {
        settle: Duration::from_millis(200),
        ..Limits::default()
    });
    l.refresh("c");
    let paths = BTreeSet::from([f.clone()]);
    // Truncated: no objects for a moment.
    rewrite(&f, "");
    let r = l.refresh_paths("c", &paths);
    assert!(r.changes.is_empty(), "{:?}", r.changes);
    assert!(r.recheck_at.is_some());
    assert_eq!(l.inputs().services.len(), 2);
    // Rewritten (one object fewer, one changed) within the settle time.
    rewrite(&f, &svc("a", 81));
    let r = l.refresh_paths("c", &paths);
    assert_eq!(port_of(&l, "a"), Some(81), "changes apply at once");
    assert_eq!(port_of(&l, "b"), Some(80), "a vanished object waits");
    let due = r.recheck_at.expect("recheck due");
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
    let r = l.refresh_paths("c", &BTreeSet::new());
    assert_eq!(port_of(&l, "b"), None, "gone once settled");
    assert_eq!(
        r.changes.objects,
        BTreeSet::from([(Kind::Service, ObjKey::new("n", "b"))])
    );
    assert!(r.recheck_at.is_none());
    // Truncate-then-write of the same content: nothing changes at all.
    rewrite(&f, "");
    assert!(l.refresh_paths("c", &paths).changes.is_empty());
    rewrite(&f, &svc("a", 81));
    assert!(l.refresh_paths("c", &paths).changes.is_empty());
    std::thread::sleep(Duration::from_millis(250));
    assert!(l.refresh_paths("c", &BTreeSet::new()).changes.is_empty());
    assert_eq!(port_of(&l, "a"), Some(81));
    // Removed (also delete-then-create): kept for the settle time, then gone.
    std::fs::remove_file(&f).expect("rm");
    let r = l.refresh_paths("c", &paths);
    assert!(r.changes.is_empty());
    assert_eq!(port_of(&l, "a"), Some(81));
    std::thread::sleep(Duration::from_millis(250));
    let r = l.refresh_paths("c", &BTreeSet::new());
    assert_eq!(port_of(&l, "a"), None);
    assert_eq!(r.changes.objects.len(), 1);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_object_defined_twice_is_reported_on_both_files_and_survives_either_deletion() {
    for delete_first in [true, false] {
        let d = tmpdir(&format!("dup-{delete_first}"));
        let (a, b) = (d.join("a.yaml"), d.join("b.yaml"));
        std::fs::write(&a, svc("x", 81)).expect("write");
        std::fs::write(&b, format!("{}---\n{}", svc("x", 82), svc("y", 1))).expect("write");
        let mut l = DirLoader::new(&d).with_limits(no_settle());
        let r = l.refresh("c");
        assert_eq!(
            port_of(&l, "x"),
            Some(81),
            "the first file by path is served"
        );
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        for (e, f) in r.errors.iter().zip([&a, &b]) {
            assert_eq!(e.file, f.display().to_string());
            assert!(
                e.message.contains("Service n/x is defined in 2 files"),
                "{}",
                e.message
            );
            assert!(e.message.contains(&a.display().to_string()));
            assert!(e.message.contains(&b.display().to_string()));
        }
        let (gone, stays, port) = if delete_first {
            (&a, &b, 82)
        } else {
            (&b, &a, 81)
        };
        std::fs::remove_file(gone).expect("rm");
        let r = l.refresh_paths("c", &BTreeSet::from([gone.clone()]));
        assert_eq!(
            port_of(&l, "x"),
            Some(port),
            "survives; {} now served",
            stays.display()
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let changed = r
            .changes
            .objects
            .contains(&(Kind::Service, ObjKey::new("n", "x")));
        assert_eq!(changed, delete_first, "changed only if its content did");
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn limits_fail_the_file_and_keep_its_last_good_version() {
    let d = tmpdir("limits");
    let f = d.join("svc.yaml");
    std::fs::write(&f, svc("a", 81)).expect("write");
    let mut l = DirLoader::new(&d).with_limits(Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    });
    l.refresh("c");
    let paths = BTreeSet::from([f.clone()]);
    let cases = [
        (
            format!("{}# {}\n", svc("a", 82), "x".repeat(1000)),
            "limit is 1000",
        ),
        (format!("a: {}\n", "[".repeat(500)), "nested deeper than 64"),
        (
            svc("a", 82).replace("name: a", "name: ../../x"),
            "field `metadata.name`",
        ),
        (
            svc("a", 82).replace("namespace: n", "namespace: \"a/b\""),
            "metadata.namespace",
        ),
    ];
    for (text, want) in cases {
        rewrite(&f, &text);
        let t = Instant::now();
        let r = l.refresh_paths("c", &paths);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(r.errors.len(), 1, "{want}");
        assert!(
            r.errors[0].message.contains(want),
            "{}",
            r.errors[0].message
        );
        assert!(r.errors[0].using_last_good);
        assert_eq!(port_of(&l, "a"), Some(81));
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn symlink_loops_and_too_many_files_are_reported_and_bounded() {
    let d = tmpdir("walk");
    std::fs::create_dir_all(d.join("sub")).expect("mkdir");
    std::fs::write(d.join("sub/svc.yaml"), svc("a", 81)).expect("write");
    std::os::unix::fs::symlink("..", d.join("sub/loop1")).expect("symlink");
    std::os::unix::fs::symlink("../sub", d.join("sub/loop2")).expect("symlink");
    let t = Instant::now();
    let mut l = DirLoader::new(&d);
    let r = l.refresh("c");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(port_of(&l, "a"), Some(81));
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert!(r.errors.iter().all(|e| e.message.contains("symlink loop")));

    // Past the file limit, nothing already served is dropped.
    let mut l = DirLoader::new(&d).with_limits(Limits {
        max_files: 1,
        settle: Duration::ZERO,
        ..Limits::default()
    });
    l.refresh("c");
    std::fs::write(d.join("a.yaml"), svc("b", 1)).expect("write");
    let r = l.refresh_paths("c", &BTreeSet::from([d.join("a.yaml")]));
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("more than 1 YAML files")),
        "{:?}",
        r.errors
    );
    assert_eq!(port_of(&l, "a"), Some(81), "kept: the scan was incomplete");
    let _ = std::fs::remove_dir_all(&d);
}
