//! From configured nodes to NodeIds, and what each metric is (type, unit, range).

use super::*;

/// Resolves every node not yet resolved: NodeIds by namespace, browse
/// paths by TranslateBrowsePathsToNodeIds.
pub(super) async fn resolve(session: &Session, items: &mut [Item]) -> Result<(), String> {
    let mut cache = None;
    // The namespace array first: failing to read it is the session's
    // problem, not the nodes'.
    let by_uri = |n: &Namespace| matches!(n, Namespace::Uri(_));
    let needs_uris = items.iter().filter(|i| i.node_id.is_none()).any(|i| match &i.config.node {
        NodeRef::Id { namespace, .. } => by_uri(namespace),
        NodeRef::BrowsePath { elements } => elements.iter().any(|(n, _)| by_uri(n)),
    });
    if needs_uris {
        let _ = namespace(session, &Namespace::Uri(String::new()), &mut cache).await;
        if cache.is_none() {
            return Err("cannot read the server's namespace array".into());
        }
    }
    for item in items.iter_mut().filter(|i| i.node_id.is_none()) {
        let resolved = match &item.config.node {
            NodeRef::Id { namespace: ns, identifier } => {
                match namespace(session, ns, &mut cache).await {
                    Ok(i) => NodeId::from_str(&format!("ns={i};{identifier}"))
                        .map_err(|_| format!("{identifier} is not a NodeId")),
                    Err(e) => Err(e),
                }
            }
            NodeRef::BrowsePath { elements } => {
                let mut path = Vec::new();
                let mut error = None;
                for (ns, name) in elements {
                    match namespace(session, ns, &mut cache).await {
                        Ok(i) => path.push(RelativePathElement {
                            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                            is_inverse: false,
                            include_subtypes: true,
                            target_name: QualifiedName::new(i, name.as_str()),
                        }),
                        Err(e) => error = Some(e),
                    }
                }
                match error {
                    Some(e) => Err(e),
                    None => {
                        let bp = BrowsePath {
                            starting_node: opcua::types::ObjectId::ObjectsFolder.into(),
                            relative_path: RelativePath { elements: Some(path) },
                        };
                        match session.translate_browse_paths_to_node_ids(&[bp]).await {
                            Ok(r) => match r.first() {
                                Some(r) if r.status_code.is_good() => r
                                    .targets
                                    .as_ref()
                                    .and_then(|t| t.first())
                                    .map(|t| t.target_id.node_id.clone())
                                    .ok_or_else(|| "the browse path leads nowhere".to_owned()),
                                Some(r) => Err(format!(
                                    "the browse path leads nowhere ({})",
                                    r.status_code
                                )),
                                None => Err("no answer for the browse path".into()),
                            },
                            Err(e) => return Err(format!("translating browse paths: {e}")),
                        }
                    }
                }
            }
        };
        match resolved {
            Ok(id) => {
                item.node_id = Some(id);
                item.problem = None;
            }
            Err(e) => item.problem = Some(format!("{}: {e}", item.config.node)),
        }
    }
    Ok(())
}

/// Reads what each resolved node is (type, unit, range) where not known yet.
pub(super) async fn describe(session: &Session, items: &mut [Item]) -> Result<(), String> {
    let todo: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].node_id.is_some() && items[i].info.is_none())
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let mut reads = Vec::new();
    for &i in &todo {
        let id = items[i].node_id.clone().unwrap_or_default();
        for attribute in [AttributeId::Value, AttributeId::DataType, AttributeId::ValueRank] {
            reads.push(ReadValueId {
                node_id: id.clone(),
                attribute_id: attribute as u32,
                ..Default::default()
            });
        }
    }
    let values = read_chunked(session, &reads).await?;
    // EURange and EngineeringUnits properties, by name in any namespace
    // (the standard puts them in 0; some servers use their own).
    let browse: Vec<BrowseDescription> = todo
        .iter()
        .map(|&i| BrowseDescription {
            node_id: items[i].node_id.clone().unwrap_or_default(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HasProperty.into(),
            include_subtypes: true,
            node_class_mask: 0,
            result_mask: BrowseResultMask::All as u32,
        })
        .collect();
    let mut property_reads = Vec::new();
    let mut property_of = Vec::new();
    for chunk in (0..browse.len()).collect::<Vec<_>>().chunks(500) {
        let descriptions: Vec<BrowseDescription> =
            chunk.iter().map(|&k| browse[k].clone()).collect();
        let Ok(results) = session.browse(&descriptions, 0, None).await else { break };
        for (&k, r) in chunk.iter().zip(&results) {
            for reference in r.references.iter().flatten() {
                let which = match reference.browse_name.name.as_ref() {
                    "EURange" => 0,
                    "EngineeringUnits" => 1,
                    _ => continue,
                };
                property_reads.push(ReadValueId::from(reference.node_id.node_id.clone()));
                property_of.push(2 * k + which);
            }
        }
    }
    let properties = if property_reads.is_empty() {
        Vec::new()
    } else {
        read_chunked(session, &property_reads).await.unwrap_or_default()
    };
    let mut range = HashMap::new();
    let mut unit = HashMap::new();
    for (dv, &k) in properties.iter().zip(&property_of) {
        let (item, which) = (todo[k / 2], k % 2);
        let Some(Variant::ExtensionObject(ext)) = dv.value.as_ref() else { continue };
        if which == 0 {
            if let Some(r) = ext.inner_as::<Range>() {
                range.insert(item, (r.low, r.high));
            }
        } else if let Some(eu) = ext.inner_as::<EUInformation>() {
            let text = eu.display_name.text.as_ref().to_owned();
            if !text.is_empty() {
                unit.insert(item, text);
            }
        }
    }
    for (n, &i) in todo.iter().enumerate() {
        let value = &values[3 * n];
        let data_type = values[3 * n + 1].value.as_ref();
        let rank = match values[3 * n + 2].value {
            Some(Variant::Int32(r)) => r,
            _ => -1,
        };
        let from_value = value.value.as_ref().and_then(convert::datatype);
        let from_type = match data_type {
            Some(Variant::NodeId(id)) if id.namespace == 0 => match id.identifier {
                opcua::types::Identifier::Numeric(n) => convert::datatype_of_type_id(n, rank >= 0),
                _ => None,
            },
            _ => None,
        };
        let item = &mut items[i];
        match from_value.or(from_type) {
            Some(datatype) => {
                item.info = Some(MetricInfo {
                    name: item.config.metric.clone(),
                    datatype,
                    unit: unit.remove(&i),
                    range: range.remove(&i),
                    writable: item.config.writable,
                });
            }
            None if value.status.is_some_and(|s| s == StatusCode::BadNodeIdUnknown) => {
                item.problem = Some(format!("{}: the server has no such node", item.config.node));
                item.node_id = None;
            }
            None => {
                let what = value
                    .value
                    .as_ref()
                    .and_then(|v| convert::value(v).err())
                    .map_or_else(|| "its type is not known".to_owned(), |e| e.to_string());
                item.problem = Some(format!("{}: {what}", item.config.node));
            }
        }
    }
    Ok(())
}

pub(super) async fn read_chunked(
    session: &Session,
    reads: &[ReadValueId],
) -> Result<Vec<DataValue>, String> {
    let mut out = Vec::with_capacity(reads.len());
    for chunk in reads.chunks(500) {
        let got = session
            .read(chunk, TimestampsToReturn::Both, 0.0)
            .await
            .map_err(|e| format!("Read: {e}"))?;
        if got.len() != chunk.len() {
            return Err(format!("Read: {} results for {} nodes", got.len(), chunk.len()));
        }
        out.extend(got);
    }
    Ok(out)
}
