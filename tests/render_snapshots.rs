//! Snapshot tests of every file kiln renders for the shipped profiles.
//!
//! A change to a template or to the model shows up here as a reviewable diff of the exact
//! bytes a node receives. The index snapshot also pins each file's mode, so a file that
//! starts holding a secret and is not 0600 is caught.

mod common;

use std::os::unix::fs::PermissionsExt;

fn snapshot_profile(profile: &str) {
    let (_guard, out) = common::render_profile(profile);
    let files = common::files_below(&out);
    assert!(!files.is_empty(), "nothing rendered for {profile}");
    let mut index = String::new();
    for path in &files {
        let full = out.join(path);
        let mode = fs_err::metadata(&full).unwrap().permissions().mode() & 0o7777;
        index.push_str(&format!("{mode:04o} {path}\n"));
        let contents = fs_err::read_to_string(&full).unwrap();
        let name = format!("{profile}__{}", path.replace('/', "__"));
        insta::with_settings!({ snapshot_path => "snapshots/render", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(name, contents);
        });
    }
    insta::with_settings!({ snapshot_path => "snapshots/render", prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!(format!("{profile}__index"), index);
    });
}

#[test]
fn sai_rendered_files() {
    snapshot_profile("sai");
}

#[test]
fn demo_rendered_files() {
    snapshot_profile("demo");
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    let (_first_guard, first) = common::render_profile("sai");
    let (_second_guard, second) = common::render_profile("sai");
    let files = common::files_below(&first);
    assert_eq!(files, common::files_below(&second));
    for path in files {
        assert_eq!(
            fs_err::read(first.join(&path)).unwrap(),
            fs_err::read(second.join(&path)).unwrap(),
            "{path} differs between two renders"
        );
    }
}
