//! The configuration: the documented example loads as documented, every
//! mistake names the server, the node and the fix, and no text panics.

use std::time::Duration;

use proptest::prelude::*;
use shopfloor_bridge_opcua::config::{
    BrowsePathError, Deadband, Identity, Namespace, NodeRef, SecurityMode, SecurityPolicy,
    parse_browse_path, parse_node_id,
};
use shopfloor_bridge_opcua::{BridgeConfig, ConfigError};

/// The README's example, without its comments, and a second server, "oven".
const EXAMPLE: &str = include_str!("fixtures/example.toml");

fn load(text: &str) -> Result<BridgeConfig, ConfigError> {
    BridgeConfig::from_toml_with_env(text, |k| {
        (k == "PRESS_LINE_PASSWORD").then(|| "s3cret".into())
    })
}

#[test]
fn the_documented_example_loads() {
    let c = load(EXAMPLE).unwrap();
    assert_eq!(c.servers.len(), 2);
    let s = &c.servers[0];
    assert_eq!((s.name.as_str(), s.endpoint.as_str()), ("press-line", "opc.tcp://plc-1:4840/"));
    assert_eq!(
        (s.security_policy, s.security_mode),
        (SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt)
    );
    assert_eq!(s.identity, Identity::UserName { user: "bridge".into(), password: "s3cret".into() });
    assert!(!format!("{:?}", s.identity).contains("s3cret"), "the password stays out of logs");
    let p = &s.nodes[0];
    assert_eq!(
        p.node,
        NodeRef::Id {
            namespace: Namespace::Uri("urn:press-line:plc".into()),
            identifier: "s=Press1.Pressure".into()
        }
    );
    assert_eq!(
        (p.sampling_interval, p.queue_size, p.publishing_interval),
        (Duration::from_millis(100), 10, Duration::from_secs(1))
    );
    assert_eq!(p.deadband, Deadband::Absolute(0.5));
    assert!(!p.writable);
    let sp = &s.nodes[1];
    assert_eq!(
        sp.node,
        NodeRef::BrowsePath {
            elements: vec![
                (Namespace::Uri("urn:press-line:plc".into()), "Press1".into()),
                (Namespace::Uri("urn:press-line:plc".into()), "Setpoint".into()),
            ]
        }
    );
    assert_eq!(
        (sp.sampling_interval, sp.publishing_interval, sp.writable),
        (Duration::from_millis(500), Duration::from_millis(250), true)
    );
    let o = &c.servers[1];
    assert_eq!(
        (o.security_policy, o.security_mode, &o.identity),
        (SecurityPolicy::None, SecurityMode::None, &Identity::Anonymous)
    );
    assert_eq!(
        o.nodes[0].node,
        NodeRef::Id { namespace: Namespace::Index(0), identifier: "i=2259".into() }
    );
}

#[test]
fn node_ids_and_browse_paths_parse() {
    assert_eq!(
        parse_node_id("ns=3;i=1001").unwrap(),
        NodeRef::Id { namespace: Namespace::Index(3), identifier: "i=1001".into() }
    );
    assert_eq!(
        parse_node_id("nsu=http://x/y;s=A;B").unwrap(),
        NodeRef::Id { namespace: Namespace::Uri("http://x/y".into()), identifier: "s=A;B".into() }
    );
    assert!(parse_node_id("ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63").is_ok());
    for bad in [
        "",
        "ns=3",
        "ns=x;i=1",
        "ns=70000;i=1",
        "nsu=;s=a",
        "i=abc",
        "s=",
        "q=1",
        "Press1.Pressure",
    ] {
        assert!(parse_node_id(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_browse_path("/Objects/0:Server/ServerStatus", Some("urn:a")).unwrap(),
        NodeRef::BrowsePath {
            elements: vec![
                (Namespace::Index(0), "Server".into()),
                (Namespace::Uri("urn:a".into()), "ServerStatus".into())
            ]
        }
    );
    assert_eq!(parse_browse_path("Objects/2:M1", None).unwrap().to_string(), "Objects/2:M1");
    assert_eq!(
        parse_browse_path("Objects", None),
        Err(BrowsePathError::EmptyName("Objects".into()))
    );
    assert_eq!(parse_browse_path("A//B", None), Err(BrowsePathError::EmptyName("A//B".into())));
    assert_eq!(
        parse_browse_path("Objects/70000:M1", None),
        Err(BrowsePathError::Index { text: "Objects/70000:M1".into(), index: "70000".into() })
    );
}

#[test]
fn policies_are_read_in_every_spelling_peers_use() {
    for (spelling, want) in [
        ("Aes128_Sha256_RsaOaep", SecurityPolicy::Aes128Sha256RsaOaep),
        ("Aes128-Sha256-RsaOaep", SecurityPolicy::Aes128Sha256RsaOaep),
        (
            "http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss",
            SecurityPolicy::Aes256Sha256RsaPss,
        ),
        ("basic256sha256", SecurityPolicy::Basic256Sha256),
    ] {
        let text = EXAMPLE.replacen("\"Basic256Sha256\"", &format!("{spelling:?}"), 1);
        assert_eq!(load(&text).unwrap().servers[0].security_policy, want, "{spelling}");
    }
}

/// Each mistake, the words its message must carry.
#[test]
fn a_password_without_security_is_allowed_only_when_the_file_says_so() {
    let none = EXAMPLE.replace(
        "security_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"",
        "security_policy = \"None\"",
    );
    assert!(load(&none).is_err());
    let allowed = none
        .replace("user = \"bridge\"", "user = \"bridge\"\nallow_password_without_security = true");
    let c = load(&allowed).unwrap();
    assert_eq!(c.servers[0].security_policy, SecurityPolicy::None);
    assert_eq!(
        c.servers[0].identity,
        Identity::UserName { user: "bridge".into(), password: "s3cret".into() }
    );
}

#[test]
fn mistakes_name_the_place_and_the_fix() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("name = \"press-line\"", "name = \"a/b\"", &["server \"a/b\"", "without /"]),
        ("name = \"oven\"", "name = \"press-line\"", &["press-line", "twice"]),
        ("opc.tcp://plc-1:4840/", "http://plc-1", &["press-line", "opc.tcp://"]),
        (
            "security_policy = \"Basic256Sha256\"",
            "security_policy = \"Basic128Rsa15\"",
            &["press-line", "Basic128Rsa15", "Aes256_Sha256_RsaPss"],
        ),
        (
            "security_mode = \"SignAndEncrypt\"",
            "security_mode = \"None\"",
            &["does not go with", "Sign"],
        ),
        (
            "password_env = \"PRESS_LINE_PASSWORD\"",
            "password_env = \"UNSET_VAR\"",
            &["UNSET_VAR", "not set", "export"],
        ),
        ("password_env = \"PRESS_LINE_PASSWORD\"", "", &["exactly one of password"]),
        (
            "security_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"",
            "security_policy = \"None\"",
            &[
                "press-line",
                "user \"bridge\" with security_policy None",
                "allow_password_without_security = true",
            ],
        ),
        ("user = \"bridge\"", "user_certificate = \"c.der\"", &["user_private_key"]),
        (
            "node_id = \"nsu=urn:press-line:plc;s=Press1.Pressure\"",
            "node_id = \"Press1.Pressure\"",
            &["Hydraulics/Pressure", "not a NodeId", "nsu="],
        ),
        (
            "node_id = \"nsu=urn:press-line:plc;s=Press1.Pressure\"",
            "",
            &["Hydraulics/Pressure", "exactly one of node_id and browse_path"],
        ),
        ("metric = \"Hydraulics/Setpoint\"", "metric = \"Hydraulics/Pressure\"", &["used twice"]),
        ("queue_size = 10", "queue_size = 0", &["queue_size = 0", "between 1"]),
        (
            "sampling_interval_ms = 100",
            "sampling_interval_ms = 9999999",
            &["sampling_interval_ms", "out of range"],
        ),
        (
            "deadband = { absolute = 0.5 }",
            "deadband = { percent = 150.0 }",
            &["deadband", "percent"],
        ),
        (
            "deadband = { absolute = 0.5 }",
            "deadband = { absolute = 0.5, percent = 1.0 }",
            &["one of absolute"],
        ),
        ("writable = true", "writeable = true", &["line 24", "writeable"]),
        ("queue_size = 10", "queue_size = \"ten\"", &["line"]),
    ];
    for (from, to, words) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let text = EXAMPLE.replacen(from, to, 1);
        let e = load(&text).expect_err(to).to_string();
        for w in *words {
            assert!(e.contains(w), "{to:?}: {e:?} lacks {w:?}");
        }
    }
    let e = load("").unwrap_err().to_string();
    assert!(e.contains("[[server]]"), "{e}");
    let e =
        load("[[server]]\nname = \"a\"\nendpoint = \"opc.tcp://a:1\"\n").unwrap_err().to_string();
    assert!(e.contains("[[server.node]]") && e.contains("browse"), "{e}");
}

#[test]
fn a_file_that_cannot_be_read_says_which() {
    let e = BridgeConfig::from_file("/nonexistent/bridge.toml").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/bridge.toml") && e.contains("cannot read"), "{e}");
}

proptest! {
    /// Arbitrary text and arbitrary edits of the example never panic.
    #[test]
    fn no_text_panics(text in ".{0,400}", at in 0_usize..1200, junk in "[\\[\\]={}\"a-z0-9 .;/\n-]{0,20}") {
        let _ = load(&text);
        let cut = at.min(EXAMPLE.len());
        let edited = format!("{}{junk}{}", &EXAMPLE[..cut], &EXAMPLE[cut..]);
        let _ = load(&edited);
        let _ = parse_node_id(&text);
        let _ = parse_browse_path(&text, Some(&junk));
    }
}

/// A deployment file's relative paths are its folder's, not the working
/// directory's: a service started from `/` finds its PKI next to its file.
#[test]
fn relative_paths_in_a_deployment_are_the_files_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[mqtt]\nport = 1883\n\n[[server]]\nname = \"a\"\nendpoint = \"opc.tcp://localhost:4840/\"\n\
         security_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\n\
         user_certificate = \"pki/user/cert.der\"\nuser_private_key = \"pki/user/key.pem\"\n\
         [[server.node]]\nmetric = \"x\"\nnode_id = \"i=2258\"\n\n\
         [[server]]\nname = \"b\"\nendpoint = \"opc.tcp://localhost:4841/\"\npki_dir = \"/var/lib/gw/pki\"\n\
         [[server.node]]\nmetric = \"x\"\nnode_id = \"i=2258\"\n",
    )
    .unwrap();
    let c = BridgeConfig::from_deployment(&path).unwrap();
    assert_eq!(c.servers[0].pki_dir, dir.path().join("pki"));
    match &c.servers[0].identity {
        Identity::Certificate { certificate, private_key } => {
            assert_eq!(certificate, &dir.path().join("pki/user/cert.der"));
            assert_eq!(private_key, &dir.path().join("pki/user/key.pem"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.servers[1].pki_dir, std::path::Path::new("/var/lib/gw/pki"), "absolute stays");
}
