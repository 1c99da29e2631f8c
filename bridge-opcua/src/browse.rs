//! Walking a server's address space to write a configuration: every
//! variable below a starting node, named by its browse path, with its
//! NodeId written by namespace URI (`nsu=…`) so that a server that
//! renumbers its namespaces does not break the file.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;

use opcua::types::{
    BrowseDescription, BrowseDirection, BrowseResultMask, ByteString, NodeClass, NodeId,
    ReferenceDescription, ReferenceTypeId,
};

use crate::client::{ClientTuning, namespace_array, open_session};
use crate::config::ServerConfig;

/// How far to walk.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BrowseOptions {
    /// Where to start (a NodeId in the configuration's syntax, `nsu=` or
    /// `ns=`); `None`: the Objects folder, skipping namespace 0 (the
    /// server's own diagnostics).
    pub start: Option<String>,
    /// How many levels below the start.
    pub max_depth: usize,
    /// Stop after this many variables.
    pub max_variables: usize,
}

impl Default for BrowseOptions {
    fn default() -> Self {
        Self { start: None, max_depth: 10, max_variables: 10_000 }
    }
}

/// A variable found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its browse path below the start, names joined by `/`: the metric name.
    pub metric: String,
    /// Its NodeId, namespace by URI.
    pub node_id: String,
}

/// What a walk found, and whether it stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// The variables, in the order met (breadth first).
    pub variables: Vec<Found>,
    /// Set when `max_variables` or `max_depth` cut the walk short.
    pub truncated: bool,
}

/// Why a walk failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrowseError {
    /// No session with the server: unreachable, its certificate not
    /// trusted, the login refused (what the link tells, with the fix).
    #[error("{0}")]
    Session(String),
    /// The server's namespace array could not be read.
    #[error("cannot read the server's namespace array")]
    Namespaces,
    /// The start cannot be parsed as a NodeId (what is wrong with it).
    #[error(transparent)]
    StartSyntax(#[from] crate::config::NodeIdError),
    /// The start is not a NodeId (a browse path, say).
    #[error("{start:?} is not a NodeId")]
    Start {
        /// The start as given.
        start: String,
    },
    /// The start's namespace URI is not one the server has.
    #[error("the server has no namespace {0:?}")]
    UnknownNamespace(String),
    /// A Browse or BrowseNext request failed.
    #[error("{service}: {status}")]
    Service {
        /// `Browse` or `BrowseNext`.
        service: &'static str,
        /// The status the server or the client library gave.
        status: String,
    },
}

/// Walks `server` (its endpoint, security, identity and PKI directory;
/// its nodes are ignored). `progress` is called with the count of
/// variables found after each level.
pub async fn browse(
    server: &ServerConfig,
    tuning: &ClientTuning,
    options: &BrowseOptions,
    mut progress: impl FnMut(usize),
) -> Result<Walk, BrowseError> {
    let session = open_session(server, tuning).await.map_err(BrowseError::Session)?;
    let result = async {
        let uris = namespace_array(&session).await.map_err(|_| BrowseError::Namespaces)?;
        let start: NodeId = match &options.start {
            None => opcua::types::ObjectId::ObjectsFolder.into(),
            Some(s) => {
                let not_a_node_id = || BrowseError::Start { start: s.clone() };
                let r = crate::config::parse_node_id(s)?;
                let crate::config::NodeRef::Id { namespace, identifier } = r else {
                    return Err(not_a_node_id());
                };
                let index = match namespace {
                    crate::config::Namespace::Index(i) => i,
                    crate::config::Namespace::Uri(u) => uris
                        .iter()
                        .position(|x| *x == u)
                        .and_then(|i| u16::try_from(i).ok())
                        .ok_or_else(|| BrowseError::UnknownNamespace(u.clone()))?,
                };
                format!("ns={index};{identifier}").parse().map_err(|_| not_a_node_id())?
            }
        };
        let skip_ns0 = options.start.is_none();
        let mut walk = Walk { variables: Vec::new(), truncated: false };
        let mut seen: HashSet<NodeId> = HashSet::from([start.clone()]);
        let mut level: VecDeque<(NodeId, String)> = VecDeque::from([(start, String::new())]);
        let mut names = HashSet::new();
        for depth in 0..=options.max_depth {
            if level.is_empty() {
                break;
            }
            if depth == options.max_depth {
                walk.truncated = true;
                break;
            }
            let mut next = VecDeque::new();
            let parents: Vec<(NodeId, String)> = level.drain(..).collect();
            for chunk in parents.chunks(100) {
                let refs =
                    children(&session, chunk.iter().map(|(n, _)| n.clone()).collect()).await?;
                for ((_, path), references) in chunk.iter().zip(refs) {
                    for r in references {
                        let id = r.node_id.node_id.clone();
                        if (skip_ns0 && id.namespace == 0) || !seen.insert(id.clone()) {
                            continue;
                        }
                        let name = r.browse_name.name.as_ref().replace(['+', '#', '\0'], "_");
                        let metric = if path.is_empty() { name } else { format!("{path}/{name}") };
                        if r.node_class == NodeClass::Variable {
                            if walk.variables.len() >= options.max_variables {
                                walk.truncated = true;
                                return Ok(walk);
                            }
                            // Browse paths are unique in sane servers; make them so.
                            let mut unique = metric.clone();
                            let mut n = 2;
                            while !names.insert(unique.clone()) {
                                unique = format!("{metric}~{n}");
                                n += 1;
                            }
                            let uri =
                                uris.get(usize::from(id.namespace)).cloned().unwrap_or_default();
                            let node_id = if id.namespace == 0 || uri.is_empty() {
                                format!("ns={};{}", id.namespace, id.identifier)
                            } else {
                                format!("nsu={uri};{}", id.identifier)
                            };
                            walk.variables.push(Found { metric: unique, node_id });
                        }
                        next.push_back((id, metric));
                    }
                }
            }
            progress(walk.variables.len());
            level = next;
        }
        Ok(walk)
    }
    .await;
    let _ = tokio::time::timeout(tuning.request_timeout, session.disconnect()).await;
    result
}

/// The hierarchical children of each node (properties left out), with
/// continuation points followed.
async fn children(
    session: &opcua::client::Session,
    nodes: Vec<NodeId>,
) -> Result<Vec<Vec<ReferenceDescription>>, BrowseError> {
    let descriptions: Vec<BrowseDescription> = nodes
        .into_iter()
        .map(|node_id| BrowseDescription {
            node_id,
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: NodeClass::Object as u32 | NodeClass::Variable as u32,
            result_mask: BrowseResultMask::All as u32,
        })
        .collect();
    let results = session
        .browse(&descriptions, 1000, None)
        .await
        .map_err(|e| BrowseError::Service { service: "Browse", status: e.to_string() })?;
    let property: NodeId = ReferenceTypeId::HasProperty.into();
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let mut refs: Vec<ReferenceDescription> = r.references.unwrap_or_default();
        let mut point: ByteString = r.continuation_point;
        while !point.is_null() && !point.is_empty() {
            let more =
                session.browse_next(false, std::slice::from_ref(&point)).await.map_err(|e| {
                    BrowseError::Service { service: "BrowseNext", status: e.to_string() }
                })?;
            let Some(m) = more.into_iter().next() else { break };
            refs.extend(m.references.unwrap_or_default());
            point = m.continuation_point;
        }
        refs.retain(|r| r.reference_type_id != property);
        out.push(refs);
    }
    Ok(out)
}

/// A configuration file for `server` with the variables found: loads as
/// is with [`BridgeConfig::from_file`](crate::BridgeConfig::from_file);
/// edit the metric names and delete what is not wanted.
pub fn config_toml(server: &ServerConfig, walk: &Walk) -> String {
    let q = |s: &str| toml_string(s);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `shopfloor-opcua-gateway browse`: {} variables.",
        walk.variables.len()
    );
    if walk.truncated {
        let _ = writeln!(
            out,
            "# The walk stopped early (--max-depth / --max-variables): there may be more."
        );
    }
    let _ = writeln!(
        out,
        "# NodeIds name their namespace by URI, so renumbering does not break this file."
    );
    let _ = writeln!(
        out,
        "\n[[server]]\nname = {}\nendpoint = {}",
        q(&server.name),
        q(&server.endpoint)
    );
    if server.security_policy != crate::config::SecurityPolicy::None {
        let _ = writeln!(
            out,
            "security_policy = {}\nsecurity_mode = {}",
            q(server.security_policy.name()),
            q(server.security_mode.name())
        );
    }
    if let crate::config::Identity::UserName { user, .. } = &server.identity {
        let _ = writeln!(out, "user = {}\npassword_env = \"OPCUA_PASSWORD\"", q(user));
        // Loaded, so the password without security was allowed already.
        if server.security_policy == crate::config::SecurityPolicy::None {
            let _ = writeln!(out, "allow_password_without_security = true");
        }
    }
    let _ = writeln!(out, "pki_dir = {}", q(&server.pki_dir.display().to_string()));
    for v in &walk.variables {
        let _ = writeln!(
            out,
            "\n[[server.node]]\nmetric = {}\nnode_id = {}",
            q(&v.metric),
            q(&v.node_id)
        );
    }
    out
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_loads_back_with_every_variable() {
        let server = crate::BridgeConfig::from_toml(
            "[[server]]\nname = \"m1\"\nendpoint = \"opc.tcp://h:4840/\"\nuser = \"op\"\npassword = \"x\"\n\
             allow_password_without_security = true\n\
             [[server.node]]\nmetric = \"a\"\nnode_id = \"i=1\"\n",
        )
        .unwrap()
        .servers
        .remove(0);
        let walk = Walk {
            variables: vec![
                Found { metric: "Machine1/Temp \"A\"".into(), node_id: "nsu=urn:x;s=M1.T".into() },
                Found { metric: "Machine1/Back\\slash".into(), node_id: "ns=0;i=2258".into() },
            ],
            truncated: true,
        };
        let text = config_toml(&server, &walk);
        assert!(text.contains("stopped early"));
        let loaded = crate::BridgeConfig::from_toml_with_env(&text, |_| Some("pw".into())).unwrap();
        let nodes = &loaded.servers[0].nodes;
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].metric, "Machine1/Temp \"A\"");
        assert_eq!(nodes[1].metric, "Machine1/Back\\slash");
    }
}
