//! What a tool may keep in the host through `wasi:http` resources it builds
//! and never sends: a request's method, authority and path, and header
//! fields. `wasmtime-wasi-http` keeps each as given (a method or an
//! authority of any length, fields of 128 KiB), so a tool holding the
//! most resources it may ([`crate::runtime`]'s table cap) could keep
//! gigabytes of host memory without a grant: no gate sees a request that
//! is never sent. Here each is bounded where it is set: a method, an
//! authority or a path longer than anything the egress check would pass
//! is refused as the setter's own error; fields past [`MAX_FIELDS`] end
//! the call (`wasmtime-wasi-http` traps, as for its own limit).

use std::str::FromStr;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::bindings::http::types::Method;
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;

/// The header fields one `fields` resource may hold, counted as
/// `wasmtime-wasi-http` counts them (names and values, and the size of
/// each entry).
pub(crate) const MAX_FIELDS: usize = 16 << 10;
/// An authority: a host name of at most 253 bytes and a port, or an
/// address.
pub(crate) const MAX_AUTHORITY: usize = 512;
/// A method: the egress check allows only the standard ones.
pub(crate) const MAX_METHOD: usize = 32;
/// A path and query: the egress check refuses a URL longer than this.
pub(crate) const MAX_PATH: usize = crate::policy::gate::MAX_RESOURCE;

/// The `wasi:http/types` interface as `wasmtime-wasi-http` links it (a
/// component importing an earlier 0.2 version is linked to it).
const TYPES: &str = "wasi:http/types@0.2.12";

/// Puts the bounded setters in place of `wasmtime-wasi-http`'s own.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store, (request, method): (Resource<HostOutgoingRequest>, Method)| {
            if let Method::Other(s) = &method
                && (s.len() > MAX_METHOD || http::Method::from_str(s).is_err())
            {
                return Ok((Err(()),));
            }
            store.data_mut().ctx().table.get_mut(&request)?.method = method;
            Ok((Ok(()),))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store, (request, authority): (Resource<HostOutgoingRequest>, Option<String>)| {
            if let Some(s) = &authority
                && (s.len() > MAX_AUTHORITY || http::uri::Authority::from_str(s).is_err())
            {
                return Ok((Err(()),));
            }
            store.data_mut().ctx().table.get_mut(&request)?.authority = authority;
            Ok((Ok(()),))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-path-with-query",
        |mut store, (request, path): (Resource<HostOutgoingRequest>, Option<String>)| {
            if let Some(s) = &path
                && (s.len() > MAX_PATH || !path_with_query(s))
            {
                return Ok((Err(()),));
            }
            store
                .data_mut()
                .ctx()
                .table
                .get_mut(&request)?
                .path_with_query = path;
            Ok((Ok(()),))
        },
    )?;
    // A copy shares its original's map until it is changed; changing it
    // copies the map whole, even when the change is then refused. A copy
    // of fields over the bound (a response's head, up to 64 KiB) cannot
    // be changed, so it is never copied.
    types.func_wrap(
        "[method]fields.clone",
        |mut store, (fields,): (Resource<FieldMap>,)| {
            let table = store.data_mut().ctx().table;
            let mut copy = table.get(&fields)?.clone();
            if size(&copy) <= MAX_FIELDS {
                copy.set_mutable(MAX_FIELDS);
            } else {
                copy.set_immutable();
            }
            Ok((table.push(copy)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Whether `s` is a path and query as `wasmtime-wasi-http` takes one:
/// empty, or from `/` or `?`, and parsed as a URI's.
fn path_with_query(s: &str) -> bool {
    let starts = s.is_empty() || s.starts_with('/') || s.starts_with('?');
    starts
        && http::uri::Builder::new()
            .path_and_query(s)
            .build()
            .is_ok_and(|uri| uri.path_and_query().is_some())
}

/// The size of `fields` as `wasmtime-wasi-http` counts it against a limit.
fn size(fields: &FieldMap) -> usize {
    let names: usize = fields
        .keys()
        .map(|k| k.as_str().len() + size_of::<http::HeaderName>())
        .sum();
    let values: usize = fields
        .values()
        .map(|v| v.len() + size_of::<http::HeaderValue>())
        .sum();
    names + values
}

/// An invocation's `wasi:http` context: fields bounded by [`MAX_FIELDS`].
pub(crate) fn context() -> wasmtime_wasi_http::WasiHttpCtx {
    let mut ctx = wasmtime_wasi_http::WasiHttpCtx::new();
    ctx.set_field_size_limit(MAX_FIELDS);
    ctx
}
