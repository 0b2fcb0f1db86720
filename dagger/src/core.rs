//! The machinery under the generated API: a selection plus the session it runs on, leaf execution, lazy
//! resolution of object arguments, and decoding of leaf values.

use std::future::Future;
use std::pin::Pin;

use futures_util::future::try_join_all;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::querybuilder::{IdMode, ObjectRef, Selection, Value};
use crate::scalars::Id;
use crate::transport::{Client, excerpt, extract};

/// A selection and the session it belongs to; every generated object wraps one.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    pub(crate) selection: Selection,
    pub(crate) client: Option<Client>,
}

impl Ctx {
    pub(crate) fn new(selection: Selection, client: Option<Client>) -> Self {
        Self { selection, client }
    }

    /// The selection chain behind this object.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Whether this context is bound to a session (false for detached queries).
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    /// The same session, another selection.
    pub(crate) fn with_selection(&self, selection: Selection) -> Self {
        Self {
            selection,
            client: self.client.clone(),
        }
    }

    /// Appends a field.
    pub(crate) fn select(&self, name: &'static str, args: Vec<(&'static str, Value)>) -> Self {
        self.with_selection(self.selection.select(name, args))
    }

    pub(crate) fn client(&self) -> Result<&Client, Error> {
        self.client.as_ref().ok_or(Error::NotConnected)
    }

    /// The ID of this object: known already, or asked from the engine (once; later calls reuse it).
    pub(crate) async fn id(&self) -> Result<Id, Error> {
        let client = self.client()?;
        if self.selection.id_cell().is_none() {
            // The root has an ID too, but nothing to cache it on.
            let value = execute_raw(&self.selection.select("id", vec![]), client).await?;
            return Id::from_response(value);
        }
        resolve_one(self.selection.clone(), client.clone()).await
    }

    /// A leaf: `field(args)` on this object, decoded with `decode`.
    pub(crate) fn leaf<T>(
        &self,
        field: &'static str,
        args: Vec<(&'static str, Value)>,
        shape: LeafShape,
        decode: fn(&Ctx, serde_json::Value) -> Result<T, Error>,
    ) -> Leaf<T> {
        Leaf {
            parent: self.clone(),
            field,
            args,
            shape,
            decode,
        }
    }
}

/// What a leaf selects below its field.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafShape {
    /// A scalar, enum, or list of them: nothing below.
    Scalar,
    /// A list of objects: their IDs (`{id}`), loaded back with `node(id:)`.
    ObjectList,
    /// The object's own `id`, which may be known already.
    OwnId,
}

/// A leaf of a pipeline, not sent yet: `.await` it to run it, or hand it to a batch.
///
/// Leaf methods (`stdout`, `sync`, `export`, …) return a `Leaf`; awaiting it resolves the IDs of the object
/// arguments in the chain (concurrently, each once), sends one query, and decodes the value:
///
/// ```no_run
/// # async fn demo(dag: dagger::Query) -> Result<(), dagger::Error> {
/// let out: String = dag.container().from("alpine").with_exec(["echo", "hi"]).stdout().await?;
/// # Ok(()) }
/// ```
#[must_use = "a leaf does nothing until it is awaited"]
pub struct Leaf<T> {
    parent: Ctx,
    field: &'static str,
    args: Vec<(&'static str, Value)>,
    shape: LeafShape,
    decode: fn(&Ctx, serde_json::Value) -> Result<T, Error>,
}

impl<T> Clone for Leaf<T> {
    fn clone(&self) -> Self {
        Self {
            parent: self.parent.clone(),
            field: self.field,
            args: self.args.clone(),
            shape: self.shape,
            decode: self.decode,
        }
    }
}

impl<T> std::fmt::Debug for Leaf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("selection", &self.selection())
            .finish_non_exhaustive()
    }
}

impl Leaf<Id> {
    /// The `id` leaf of any object.
    pub(crate) fn own_id<O: Object>(object: &O) -> Self {
        object.ctx().leaf("id", vec![], LeafShape::OwnId, decode_own_id)
    }
}

impl<T> Leaf<T> {
    /// The whole selection the leaf sends, from the root down to (and below) the leaf field.
    pub fn selection(&self) -> Selection {
        let sel = self.parent.selection.select(self.field, self.args.clone());
        match self.shape {
            LeafShape::ObjectList => sel.select("id", vec![]),
            LeafShape::Scalar | LeafShape::OwnId => sel,
        }
    }

    /// The response keys from the root to the leaf field's value.
    pub fn response_path(&self) -> Vec<&'static str> {
        let mut path = self.parent.selection.path();
        path.push(self.field);
        path
    }

    /// The object whose ID this leaf's value is (`sync`, `id`): its parent, which knows that ID once the
    /// value is decoded.
    pub(crate) fn id_of(&self) -> Option<&Selection> {
        (self.field == "sync" || self.shape == LeafShape::OwnId).then_some(&self.parent.selection)
    }

    /// The GraphQL field name of the leaf (`stdout`, `sync`, …).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Decodes the value found at [`Self::response_path`] in an answer.
    pub fn decode(&self, value: serde_json::Value) -> Result<T, Error> {
        (self.decode)(&self.parent, value)
    }

    /// The value this leaf already knows without asking the engine (an object's cached ID).
    pub fn known(&self) -> Option<Result<T, Error>> {
        match self.shape {
            LeafShape::OwnId => {
                let id = self.parent.selection.known_id()?;
                Some(self.decode(serde_json::Value::String(id.as_str().to_owned())))
            }
            LeafShape::Scalar | LeafShape::ObjectList => None,
        }
    }

    /// The session the leaf runs on, if any.
    pub(crate) fn client_handle(&self) -> Option<Client> {
        self.parent.client.clone()
    }

    /// Whether the leaf is bound to a session.
    pub fn is_connected(&self) -> bool {
        self.parent.client.is_some()
    }

    /// Runs the leaf: resolves object arguments, sends one query, decodes the value.
    pub async fn run(self) -> Result<T, Error> {
        if let Some(known) = self.known() {
            return known;
        }
        let client = self.parent.client()?.clone();
        if self.shape == LeafShape::OwnId {
            let id = self.parent.id().await?;
            return self.decode(serde_json::Value::String(id.into_string()));
        }
        let selection = self.selection();
        resolve_objects(&selection, &client).await?;
        let doc = print_resolved(&selection)?;
        let data = client.request(&doc).await?.into_data()?;
        let value = extract(data, &self.response_path())?;
        self.decode(value)
    }
}

impl<T: Send + 'static> std::future::IntoFuture for Leaf<T> {
    type Output = Result<T, Error>;
    type IntoFuture = BoxFuture<Result<T, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// Decodes a plain value (generated leaves' decoder).
pub(crate) fn decode_value<T: FromResponse>(_: &Ctx, value: serde_json::Value) -> Result<T, Error> {
    T::from_response(value)
}

/// Decodes the ID a `sync`-like field returns, remembers it on the object, and continues from the object
/// loaded by that ID.
pub(crate) fn decode_sync<T: Object>(parent: &Ctx, value: serde_json::Value) -> Result<T, Error> {
    let id = Id::from_response(value)?;
    parent.selection.set_id(id.clone());
    Ok(T::from_ctx(parent.with_selection(Selection::load(T::TYPE_NAME, id))))
}

/// Decodes an object's own ID and remembers it.
pub(crate) fn decode_own_id(parent: &Ctx, value: serde_json::Value) -> Result<Id, Error> {
    let id = Id::from_response(value)?;
    parent.selection.set_id(id.clone());
    Ok(id)
}

/// Decodes a list of `{id}` objects into objects loaded by ID.
pub(crate) fn decode_object_list<T: Object>(parent: &Ctx, value: serde_json::Value) -> Result<Vec<T>, Error> {
    let ids = Vec::<IdOnly>::from_response(value)?;
    Ok(ids
        .into_iter()
        .map(|o| T::from_ctx(parent.with_selection(Selection::load(T::TYPE_NAME, o.id))))
        .collect())
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: Id,
}

impl FromResponse for IdOnly {
    fn from_response(value: serde_json::Value) -> Result<Self, Error> {
        decode(value)
    }
}

fn print_resolved(selection: &Selection) -> Result<String, Error> {
    selection
        .print(IdMode::Resolved)
        .map_err(|e| Error::UnresolvedId { type_name: e.type_name })
}

/// The value at `alias`, then `rest`, in a batched answer's `data`.
pub(crate) fn resolve_raw_response(
    data: &serde_json::Value,
    alias: &str,
    rest: &[&'static str],
) -> Result<serde_json::Value, Error> {
    let Some(value) = data.get(alias) else {
        return Err(Error::MissingData { path: alias.to_owned() });
    };
    let mut path: Vec<&str> = vec![alias];
    path.extend_from_slice(rest);
    let mut wrapper = serde_json::Map::new();
    wrapper.insert(alias.to_owned(), value.clone());
    extract(serde_json::Value::Object(wrapper), &path)
}

/// Resolves the object arguments of `selection`, sends it, and returns the value at its path.
async fn execute_raw(selection: &Selection, client: &Client) -> Result<serde_json::Value, Error> {
    resolve_objects(selection, client).await?;
    let doc = print_resolved(selection)?;
    let data = client.request(&doc).await?.into_data()?;
    extract(data, &selection.path())
}

/// Resolves, concurrently, the IDs of every object argument in the chain that has none yet.
pub(crate) async fn resolve_objects(selection: &Selection, client: &Client) -> Result<(), Error> {
    let pending = selection.unresolved_objects();
    if pending.is_empty() {
        return Ok(());
    }
    try_join_all(
        pending
            .into_iter()
            .map(|ObjectRef { selection, .. }| resolve_one(selection, client.clone())),
    )
    .await?;
    Ok(())
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The ID of the object `selection` produces, asked once and cached on the selection.
fn resolve_one(selection: Selection, client: Client) -> BoxFuture<Result<Id, Error>> {
    // Boxed: resolving an ID runs a query whose own object arguments may need resolving first.
    Box::pin(async move {
        let Some(cell) = selection.id_cell() else {
            return Err(Error::Query {
                message: "the root `Query` has no ID to pass as an argument".to_owned(),
                path: Vec::new(),
            });
        };
        let id = cell
            .get_or_try_init(|| async {
                let value = execute_raw(&selection.select("id", vec![]), &client).await?;
                Id::from_response(value)
            })
            .await?;
        Ok(id.clone())
    })
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    let shown = excerpt(value.to_string().as_bytes());
    serde_json::from_value(value).map_err(|e| Error::Decode {
        message: format!("expected {}: {e}", std::any::type_name::<T>()),
        body: shown,
    })
}

/// A value a leaf can decode from the JSON at its path.
pub trait FromResponse: Sized {
    /// Decodes the value.
    fn from_response(value: serde_json::Value) -> Result<Self, Error>;
}

macro_rules! from_response_via_serde {
    ($($t:ty),*) => {$(
        impl FromResponse for $t {
            fn from_response(value: serde_json::Value) -> Result<Self, Error> {
                decode(value)
            }
        }
    )*};
}

from_response_via_serde!(String, i64, bool, Id, crate::scalars::Platform, crate::scalars::Json);

impl FromResponse for () {
    fn from_response(_: serde_json::Value) -> Result<Self, Error> {
        Ok(())
    }
}

impl<T: FromResponse> FromResponse for Option<T> {
    fn from_response(value: serde_json::Value) -> Result<Self, Error> {
        if value.is_null() {
            Ok(None)
        } else {
            T::from_response(value).map(Some)
        }
    }
}

impl<T: FromResponse> FromResponse for Vec<T> {
    fn from_response(value: serde_json::Value) -> Result<Self, Error> {
        match value {
            serde_json::Value::Array(items) => items.into_iter().map(T::from_response).collect(),
            other => Err(Error::Decode {
                message: "expected a list".to_owned(),
                body: excerpt(other.to_string().as_bytes()),
            }),
        }
    }
}

/// Decodes an enum value by its GraphQL name (used by generated enums).
pub(crate) fn decode_enum<T>(value: serde_json::Value, parse: fn(&str) -> Option<T>) -> Result<T, Error> {
    match value.as_str().and_then(parse) {
        Some(v) => Ok(v),
        None => Err(Error::Decode {
            message: format!("expected a {} value", std::any::type_name::<T>()),
            body: excerpt(value.to_string().as_bytes()),
        }),
    }
}

/// A type of the API whose values are objects with an ID (generated for every object type).
pub trait Object: Clone + Send + Sync + 'static {
    /// The GraphQL type name.
    const TYPE_NAME: &'static str;

    /// The context (selection and session) behind the object.
    #[doc(hidden)]
    fn ctx(&self) -> &Ctx;

    /// Wraps a context.
    #[doc(hidden)]
    fn from_ctx(ctx: Ctx) -> Self;

    /// The selection chain that builds this object; print it to see the query a leaf would send.
    fn selection(&self) -> &Selection {
        &self.ctx().selection
    }
}

/// Converts an argument into a GraphQL value (generated code's helper).
pub(crate) fn object_arg<T: Object>(obj: &T) -> Value {
    Value::Object(ObjectRef {
        type_name: T::TYPE_NAME,
        selection: obj.ctx().selection.clone(),
    })
}

/// Values that become argument literals (generated enums and input objects implement it).
pub trait ToValue {
    /// The literal.
    fn to_value(&self) -> Value;
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::String(self.clone())
    }
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToValue for crate::scalars::Platform {
    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

impl ToValue for Id {
    fn to_value(&self) -> Value {
        Value::String(self.as_str().to_owned())
    }
}

impl ToValue for crate::scalars::Json {
    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

impl<T: ToValue> ToValue for Vec<T> {
    fn to_value(&self) -> Value {
        Value::List(self.iter().map(ToValue::to_value).collect())
    }
}
