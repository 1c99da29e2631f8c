//! From configured nodes to NodeIds, and what each metric is (type, unit, range).

use super::*;

/// Resolves every node not yet resolved: NodeIds by namespace, browse
/// paths by TranslateBrowsePathsToNodeIds.
pub(super) async fn resolve(session: &Session, items: &mut Items) -> Result<(), String> {
    let mut cache = None;
    // The namespace array first: failing to read it is the session's
    // problem, not the nodes'.
    let by_uri = |n: &Namespace| matches!(n, Namespace::Uri(_));
    let todo = items.unresolved();
    let needs_uris = todo.iter().filter_map(|&i| items.get(i)).any(|i| match &i.config().node {
        NodeRef::Id { namespace, .. } => by_uri(namespace),
        NodeRef::BrowsePath { elements } => elements.iter().any(|(n, _)| by_uri(n)),
    });
    if needs_uris {
        let _ = namespace(session, &Namespace::Uri(String::new()), &mut cache).await;
        if cache.is_none() {
            return Err("cannot read the server's namespace array".into());
        }
    }
    for i in todo {
        let Some(node) = items.get(i).map(|i| i.config().node.clone()) else { continue };
        let resolved = match &node {
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
        items.resolved(i, resolved);
    }
    Ok(())
}

/// Reads what each resolved node is (type, unit, range) where not known yet.
pub(super) async fn describe(session: &Session, items: &mut Items) -> Result<(), String> {
    let todo = items.undescribed();
    if todo.is_empty() {
        return Ok(());
    }
    let mut reads = Vec::new();
    for &i in &todo {
        let id = node_id(items, i);
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
            node_id: node_id(items, i),
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
    for (&i, attributes) in todo.iter().zip(values.chunks_exact(3)) {
        let [value, data_type, value_rank] = attributes else { continue };
        items.described(
            i,
            Described {
                value: value.clone(),
                data_type: data_type.clone(),
                value_rank: value_rank.clone(),
                unit: unit.remove(&i),
                range: range.remove(&i),
            },
        );
    }
    Ok(())
}

/// Node `i`'s NodeId, or the null one (which the server answers Bad)
/// if it has none now.
pub(super) fn node_id(items: &Items, i: usize) -> NodeId {
    items.get(i).and_then(|i| i.node_id().cloned()).unwrap_or_default()
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
