//! Every manifest under `tests/invalid/` is refused, with the errors its
//! `# expect: <field>: <message>` header lines name. A `# update:` header
//! makes the first document the stored object and the second the change, to
//! exercise transition rules.

use voice_agent_api::validation::Validator;
use voice_agent_tests::{files_in, yaml_docs};

#[test]
fn invalid_manifests_are_refused_with_the_named_field() {
    let validator = Validator::new();
    let files = files_in("tests/invalid", "yaml");
    assert!(files.len() >= 10, "the invalid fixtures are missing");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let name = file.display().to_string();
        let expects: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| {
                e.split_once(": ")
                    .unwrap_or_else(|| panic!("{name}: `# expect: field: message`"))
            })
            .collect();
        assert!(!expects.is_empty(), "{name}: no `# expect:` line");
        let docs = yaml_docs(&text);
        let result = if text.lines().any(|l| l.starts_with("# update:")) {
            assert_eq!(
                docs.len(),
                2,
                "{name}: an update fixture holds the old and the new object"
            );
            validator
                .validate(&docs[0])
                .unwrap_or_else(|e| panic!("{name}: the stored object is invalid: {e}"));
            validator.validate_update(&docs[1], &docs[0])
        } else {
            assert_eq!(docs.len(), 1, "{name}");
            validator.validate(&docs[0])
        };
        let errors = match result {
            Ok(_) => panic!("{name}: accepted, but it is invalid"),
            Err(e) => e,
        };
        for (field, message) in expects {
            assert!(
                errors
                    .0
                    .iter()
                    .any(|e| e.field == field && e.message.contains(message)),
                "{name}: expected `{field}: {message}`, got: {errors}"
            );
        }
    }
}
