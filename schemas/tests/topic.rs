//! Topic rules and templates.

use proptest::prelude::*;
use shopfloor_schemas::topic::{self, MAX_TOPIC_LEN, validate_topic_filter, validate_topic_name};
use shopfloor_schemas::{TopicError, TopicTemplate};

#[test]
fn publish_topic_rules() {
    assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
    assert!(validate_topic_name("a/b/c").is_ok());
    assert!(validate_topic_name("/leading/and/trailing/").is_ok());
    assert!(matches!(
        validate_topic_name("a/+/c"),
        Err(TopicError::WildcardInName { wildcard: '+', offset: 2, .. })
    ));
    assert!(matches!(
        validate_topic_name("a/#"),
        Err(TopicError::WildcardInName { wildcard: '#', offset: 2, .. })
    ));
    assert!(matches!(validate_topic_name("a\0b"), Err(TopicError::Nul { offset: 1, .. })));
    let long = "x".repeat(MAX_TOPIC_LEN + 1);
    assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong { len: MAX_TOPIC_LEN + 1 }));
    assert!(validate_topic_name(&long[1..]).is_ok());
}

#[test]
fn filter_rules() {
    for ok in ["#", "+", "a/+/c", "a/#", "+/+/#", "shopfloor/+/+/+/+"] {
        assert!(validate_topic_filter(ok).is_ok(), "{ok}");
    }
    for (bad, level) in [("a/#/c", 1), ("a+/b", 0), ("a/b#", 1), ("a/+b", 1), ("##", 0)] {
        match validate_topic_filter(bad) {
            Err(TopicError::BadWildcard { level: l, .. }) => assert_eq!(l, level, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn template_parse_errors_say_what_is_wrong() {
    let cases = [
        ("", "topic is empty"),
        ("shopfloor/{site}/", "level 2 is empty"),
        ("a//{b}", "level 1 is empty"),
        (
            "plant-{site}/x",
            "level 0 (\"plant-{site}\") must be plain text or one whole placeholder",
        ),
        ("a/{site", "level 1 (\"{site\")"),
        ("a/{}", "level 1 (\"{}\")"),
        ("a/{si te}", "level 1"),
        ("a/{x}/{x}", "placeholder {x} appears twice"),
        ("a/+/{x}", "wildcard '+'"),
        ("a/{x}/#", "wildcard '#'"),
    ];
    for (text, needle) in cases {
        let err = TopicTemplate::parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn template_render_match_and_filter() {
    let t = TopicTemplate::parse(topic::defaults::READINGS).unwrap();
    assert_eq!(t.placeholders().collect::<Vec<_>>(), ["site", "area", "machine", "sensor"]);
    assert_eq!(t.filter(), "shopfloor/+/+/+/+");
    assert!(validate_topic_filter(&t.filter()).is_ok());
    let vals =
        [("sensor", "t1"), ("machine", "m1"), ("area", "a1"), ("site", "s1"), ("extra", "x")];
    let topic = t.render(&vals).unwrap();
    assert_eq!(topic, "shopfloor/s1/a1/m1/t1");
    let m = t.matches(&topic).unwrap();
    assert_eq!(
        m.iter().collect::<Vec<_>>(),
        [("site", "s1"), ("area", "a1"), ("machine", "m1"), ("sensor", "t1")]
    );
    assert_eq!(m.get("nope"), None);
    for other in [
        "shopfloor/s1/a1/m1",
        "shopfloor/s1/a1/m1/t1/x",
        "other/s1/a1/m1/t1",
        "shopfloor/s1//m1/t1",
        "",
    ] {
        assert!(t.matches(other).is_none(), "{other:?}");
    }
    assert!(
        matches!(t.render(&vals[..3]), Err(TopicError::MissingValue { name, .. }) if name == "site")
    );
    for (bad, reason) in
        [("", "empty"), ("a/b", "'/'"), ("a+", "wildcard"), ("#", "wildcard"), ("a\0", "NUL")]
    {
        let err = t
            .render(&[("site", bad), ("area", "a"), ("machine", "m"), ("sensor", "s")])
            .unwrap_err();
        assert!(err.to_string().contains(reason), "{bad:?}: {err}");
    }
    assert_eq!(t.to_string(), topic::defaults::READINGS);
    assert_eq!(topic::defaults::READINGS.parse::<TopicTemplate>().unwrap(), t);
}

#[test]
fn every_default_pattern_parses() {
    for p in [
        topic::defaults::READINGS,
        topic::defaults::ALARM_EVENTS,
        topic::defaults::ALARM_STATES,
        topic::defaults::ALARM_COMMANDS,
    ] {
        let t = TopicTemplate::parse(p).unwrap();
        assert!(t.filter().starts_with("shopfloor/"), "{p}");
    }
}

proptest! {
    /// Whatever valid levels go in come back out of `matches`.
    #[test]
    fn render_then_match_gives_the_values_back(levels in proptest::collection::vec("[^/+#\u{0}]{1,8}", 4)) {
        let t = TopicTemplate::parse("shopfloor/{site}/{area}/{machine}/{sensor}").unwrap();
        let names = ["site", "area", "machine", "sensor"];
        let pairs: Vec<(&str, &str)> = names.iter().copied().zip(levels.iter().map(String::as_str)).collect();
        let topic = t.render(&pairs).unwrap();
        prop_assert!(validate_topic_name(&topic).is_ok());
        let m = t.matches(&topic).unwrap();
        prop_assert_eq!(m.iter().collect::<Vec<_>>(), pairs);
    }

    /// Neither parsing nor matching panics on any text.
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,40}", topic in "\\PC{0,40}") {
        if let Ok(t) = TopicTemplate::parse(&s) {
            let _ = t.matches(&topic);
            prop_assert!(validate_topic_filter(&t.filter()).is_ok());
        }
        let _ = validate_topic_filter(&s);
    }
}
