//! The servers' codec (see `build.rs`): tonic-prost's, except for what a
//! request that does not fit answers.
//!
//! - A body that is not the method's message is a malformed request, the
//!   caller's fault: INVALID_ARGUMENT, not the INTERNAL tonic-prost gives.
//! - A NUL character in any string field is INVALID_ARGUMENT naming the
//!   field. PostgreSQL cannot store or even compare one (SQLite can), so
//!   without this the same request would fail differently per database.

use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::{Message, Name};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use super::nul;
use crate::error::Error;

/// Encodes responses as tonic-prost does; decodes requests with
/// [`RequestDecoder`].
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec(PhantomData)
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Name + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
    }
}

/// Decodes one request message; see the module documentation.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(PhantomData<U>);

impl<U: Message + Default + Name> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // The frame is one contiguous buffer: this takes it without a copy.
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(decode_request(&bytes)?))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// `bytes` as a `U`, or why it is not one.
fn decode_request<U: Message + Default + Name>(bytes: &[u8]) -> Result<U, Error> {
    let message = U::decode(bytes).map_err(Error::Undecodable)?;
    // A NUL byte anywhere is rare (no tag or length is zero), so the
    // field-by-field scan runs only when there is one.
    if bytes.contains(&0)
        && let Some(field) = nul::string_with_nul(&U::full_name(), bytes)
    {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::proto::{CreateTenantRequest, Tenant};

    /// Decodes `bytes` the way the server does.
    fn decode(bytes: &[u8]) -> Result<CreateTenantRequest, Status> {
        decode_request(bytes).map_err(Status::from)
    }

    fn encoded(display_name: &str) -> Vec<u8> {
        CreateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: "acme".into(),
                display_name: display_name.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_valid_request_decodes() {
        let request = decode(&encoded("Acme")).unwrap();
        assert_eq!(request.tenant.unwrap().display_name, "Acme");
    }

    #[test]
    fn an_undecodable_body_is_invalid_argument() {
        // Field 1 announces 100 bytes, and 1 follows.
        let status = decode(&[0x0a, 100, 1]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("failed to decode"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_nul_in_a_string_is_invalid_argument_naming_the_field() {
        let status = decode(&encoded("Ac\0me")).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["tenant.display_name"]);
    }
}
