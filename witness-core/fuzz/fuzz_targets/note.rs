//! Signed notes: parsing is canonical (the wire form written back is the input,
//! and parses to the same note) and verification against real keys never panics
//! and only reports signatures from trusted keys.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::note::{Note, NoteSignature, parse_note, verify_note};
use witness_core_fuzz::keys;

fuzz_target!(init: { keys(); }, |data: &[u8]| {
    let Ok(note) = parse_note(data) else {
        return;
    };
    let bytes = note.to_bytes();
    assert_eq!(bytes, data, "to_bytes differs from the parsed input");
    assert_eq!(parse_note(&bytes).as_ref(), Ok(&note), "re-parse differs");
    let rebuilt = Note::new(note.text(), note.signatures().to_vec())
        .expect("Note::new refuses the text of a parsed note");
    assert_eq!(rebuilt, note);
    for signature in note.signatures() {
        let again = NoteSignature::new(
            signature.key_name(),
            signature.key_id(),
            signature.signature().to_vec(),
        )
        .expect("NoteSignature::new refuses a parsed signature");
        assert_eq!(&again, signature);
    }

    let Ok(verified) = verify_note(note.clone(), keys()) else {
        return;
    };
    assert_eq!(verified.note(), &note);
    assert!(!verified.verified().is_empty());
    for signature in verified.verified() {
        assert!(note.signatures().contains(&signature.signature));
        assert!(
            keys().iter().any(|key| key.matches(&signature.signature)
                && key.signature_type() == signature.signature_type),
            "verified signature from no trusted key"
        );
    }
    let unverified = verified.unverified().count();
    assert!(unverified < note.signatures().len());
});
