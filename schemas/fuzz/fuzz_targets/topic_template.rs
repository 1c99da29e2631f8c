//! Any text as a topic template and a topic: no panic, and a template's
//! filter is always a valid topic filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor_schemas::TopicTemplate;
use shopfloor_schemas::topic::{validate_topic_filter, validate_topic_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, topic) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(t) = TopicTemplate::parse(template) {
        assert!(validate_topic_filter(&t.filter()).is_ok());
        // A valid topic that matches renders back to itself.
        if let (Some(m), Ok(())) = (t.matches(topic), validate_topic_name(topic)) {
            let pairs: Vec<(&str, &str)> = m.iter().collect();
            assert_eq!(t.render(&pairs).as_deref(), Ok(topic));
        }
    }
});
