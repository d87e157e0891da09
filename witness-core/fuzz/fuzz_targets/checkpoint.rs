//! Checkpoints: parsing is canonical (`to_text` of a parsed body is the input,
//! which a witness relies on to cosign what it parsed), and verification with
//! the real log and witness keys never panics and agrees with the parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::checkpoint::{
    Checkpoint, parse_checkpoint_text, parse_tree_size, verify_checkpoint,
};
use witness_core::note::parse_note;
use witness_core_fuzz::keys;

fn check_body(text: &str) -> Option<Checkpoint> {
    let checkpoint = parse_checkpoint_text(text).ok()?;
    assert_eq!(checkpoint.to_text(), text, "checkpoint is not canonical");
    let rebuilt = Checkpoint::new(
        checkpoint.origin(),
        checkpoint.size(),
        *checkpoint.root_hash(),
        checkpoint.extensions().to_vec(),
    )
    .expect("Checkpoint::new refuses a parsed checkpoint");
    assert_eq!(rebuilt, checkpoint);
    assert_eq!(
        parse_tree_size(&checkpoint.size().to_string()),
        Ok(checkpoint.size())
    );
    Some(checkpoint)
}

fuzz_target!(init: { keys(); }, |data: &[u8]| {
    // The input as a bare body, and as a signed note whose text is a body.
    if let Ok(text) = std::str::from_utf8(data) {
        check_body(text);
    }
    let Ok(note) = parse_note(data) else {
        return;
    };
    let body = check_body(note.text());
    let result = verify_checkpoint(data, keys(), None);
    match (&result, &body) {
        (Ok(verified), Some(body)) => {
            assert_eq!(verified.checkpoint(), body);
            assert_eq!(verified.note().note(), &note);
        }
        (Ok(_), None) => panic!("verified a note whose text is not a checkpoint"),
        (Err(_), _) => {}
    }
    if let Some(body) = body {
        let expected = verify_checkpoint(data, keys(), Some(body.origin()));
        assert_eq!(expected.is_ok(), result.is_ok());
        let other = format!("{}x", body.origin());
        assert!(verify_checkpoint(data, keys(), Some(&other)).is_err());
    }
});
