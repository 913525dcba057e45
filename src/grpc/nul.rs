//! Finds a string field holding a NUL character in an encoded request.
//!
//! One rule for every request, so it cannot be forgotten on a new field:
//! the encoded message is walked with the shapes from the compiled-in
//! descriptor set, into nested messages, and the first string field with a
//! NUL is named by its proto path, e.g. `subscription.event_types[1]`.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// What a field holds, as far as the scan cares.
enum Kind {
    String,
    /// A nested message, by its full name (`hookplane.v1.Tenant`).
    Message(String),
    Other,
}

struct Field {
    name: String,
    repeated: bool,
    kind: Kind,
}

/// Every message's fields by number, keyed by the message's full name.
type Shapes = HashMap<String, HashMap<u32, Field>>;

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let mut shapes = Shapes::new();
        // The set is compiled in; a unit test proves it decodes.
        let set = FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
        for file in &set.file {
            for message in &file.message_type {
                add(&mut shapes, file.package(), message);
            }
        }
        shapes
    })
}

fn add(shapes: &mut Shapes, scope: &str, message: &DescriptorProto) {
    let full_name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        add(shapes, &full_name, nested);
    }
    let fields = message
        .field
        .iter()
        .map(|f| {
            let kind = match f.r#type() {
                Type::String => Kind::String,
                Type::Message => Kind::Message(f.type_name().trim_start_matches('.').to_owned()),
                _ => Kind::Other,
            };
            let field = Field {
                name: f.name().to_owned(),
                repeated: f.label() == Label::Repeated,
                kind,
            };
            (u32::try_from(f.number()).unwrap_or(0), field)
        })
        .collect();
    shapes.insert(full_name, fields);
}

/// The path of the first string field of `bytes`, an encoded `message`
/// (full name), that holds a NUL character.
pub fn string_with_nul(message: &str, bytes: &[u8]) -> Option<String> {
    scan(shapes(), message, bytes, "")
}

fn scan(shapes: &Shapes, message: &str, mut bytes: &[u8], prefix: &str) -> Option<String> {
    let fields = shapes.get(message)?;
    // Occurrences so far of each repeated field, for its index in the path.
    let mut seen: Vec<(u32, usize)> = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            5 => bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let value = bytes.get(..len)?;
                bytes = &bytes[len..];
                let Some(field) = fields.get(&number) else {
                    continue;
                };
                let index =
                    field
                        .repeated
                        .then(|| match seen.iter_mut().find(|(n, _)| *n == number) {
                            Some((_, count)) => {
                                *count += 1;
                                *count - 1
                            }
                            None => {
                                seen.push((number, 1));
                                0
                            }
                        });
                if !value.contains(&0) {
                    continue;
                }
                let path = || {
                    let mut path = match prefix {
                        "" => field.name.clone(),
                        _ => format!("{prefix}.{}", field.name),
                    };
                    if let Some(i) = index {
                        path.push_str(&format!("[{i}]"));
                    }
                    path
                };
                match &field.kind {
                    Kind::String => return Some(path()),
                    Kind::Message(name) => {
                        if let Some(found) = scan(shapes, name, value, &path()) {
                            return Some(found);
                        }
                    }
                    Kind::Other => {}
                }
            }
            // Groups are not used by proto3; the message decoded, so this
            // is not reached.
            _ => return None,
        }
    }
    None
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    prost::encoding::decode_varint(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{CreateSubscriptionRequest, Subscription, UpdateEndpointRequest};

    #[test]
    fn the_descriptor_set_holds_the_requests() {
        for name in [
            "hookplane.v1.CreateTenantRequest",
            "hookplane.v1.ResolveSubscribersRequest",
            "google.protobuf.FieldMask",
        ] {
            assert!(shapes().contains_key(name), "{name}");
        }
    }

    #[test]
    fn names_a_repeated_nested_string() {
        let request = CreateSubscriptionRequest {
            subscription: Some(Subscription {
                tenant_id: "acme".into(),
                endpoint_id: "ep\u{1}".into(),
                event_types: vec!["a.b".into(), "c.\0".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            string_with_nul(
                "hookplane.v1.CreateSubscriptionRequest",
                &request.encode_to_vec()
            )
            .as_deref(),
            Some("subscription.event_types[1]")
        );
    }

    #[test]
    fn names_a_field_mask_path() {
        let request = UpdateEndpointRequest {
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["url".into(), "de\0scription".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            string_with_nul(
                "hookplane.v1.UpdateEndpointRequest",
                &request.encode_to_vec()
            )
            .as_deref(),
            Some("update_mask.paths[1]")
        );
    }

    #[test]
    fn zero_bytes_outside_strings_are_not_nul_characters() {
        let request = CreateSubscriptionRequest {
            subscription: Some(Subscription {
                tenant_id: "acme".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut bytes = request.encode_to_vec();
        // ttl_seconds (field 3) explicitly encoded as 0, as some clients do.
        bytes.extend([3 << 3, 0]);
        assert!(bytes.contains(&0));
        assert_eq!(
            string_with_nul("hookplane.v1.CreateSubscriptionRequest", &bytes),
            None
        );
    }
}
