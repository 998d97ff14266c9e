use super::*;

#[test]
fn the_add_checkpoint_body_is_tlog_witness_s() {
    let note = "example.com/log\n8\nAAAA\n\n— example.com/log abcd\n";
    let body = sink::add_checkpoint_body(5, &[[0u8; 32], [255u8; 32]], note);
    assert_eq!(
        body,
        format!(
            "old 5\n{}\n{}\n\n{note}",
            "A".repeat(43) + "=",
            "/".repeat(42) + "8="
        )
    );
    assert_eq!(
        sink::add_checkpoint_body(0, &[], note),
        format!("old 0\n\n{note}")
    );
}

#[test]
fn a_syslog_message_is_one_line_carrying_the_whole_note() {
    let checkpoint = StoredCheckpoint {
        size: 12,
        root: [7; 32],
        time: "2026-11-30T10:00:00Z".into(),
        note: "syncgate/x\n12\nBwcH\ntime 2026-11-30T10:00:00Z\n\n— syncgate/x AAAA\n".into(),
    };
    let message = sink::syslog_message(&checkpoint);
    assert!(!message.contains('\n'));
    assert!(message.starts_with("<110>1 2026-11-30T10:00:00Z - syncgate - checkpoint - size=12 "));
    let note = message.rsplit("note=").next().unwrap();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(note)
        .unwrap();
    assert_eq!(decoded, checkpoint.note.as_bytes());
}

#[test]
fn retries_back_off_from_a_second_to_the_cap() {
    let max = Duration::from_secs(300);
    assert_eq!(backoff(1, max), Duration::from_secs(1));
    assert_eq!(backoff(2, max), Duration::from_secs(2));
    assert_eq!(backoff(5, max), Duration::from_secs(16));
    assert_eq!(backoff(30, max), max);
    assert_eq!(
        backoff(3, Duration::from_millis(200)),
        Duration::from_millis(200)
    );
}
