//! The page's connection to the server: WebTransport when the browser has it and the server
//! offers it (`GET /webtransport`), else the WebSocket; sending and receiving (through the
//! simulated network when the page has one), and reconnecting with backoff and jitter.
//!
//! A WebTransport attempt that is not ready within `FALLBACK_MS` (UDP blocked, a proxy, an old
//! certificate) falls back to the WebSocket, and the tab remembers to use the WebSocket from
//! then on. `?transport=ws` or `?transport=wt` forces one.

use std::cell::RefCell;
use std::rc::Rc;

use easel_protocol::close;
use easel_protocol::codec::MAX_SERVER_MESSAGE_BYTES;
use easel_protocol::datagram::{self, Reassembler};
use easel_protocol::stream::{FrameReader, StreamFrame, message_frame};
use js_sys::{Array, Promise, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    BinaryType, CloseEvent, MessageEvent, ReadableStreamDefaultReader, WebSocket, WebTransport,
    WebTransportBidirectionalStream, WebTransportHash, WebTransportOptions, WritableStreamDefaultWriter,
};

use super::App;
use crate::core::{Channel, ClientCore, Status, certificate_hash, reconnect_delay_ms};

/// How long a WebTransport session may take to be ready before the page uses the WebSocket.
const FALLBACK_MS: i32 = 1000;
/// Where the tab remembers that WebTransport did not work.
const TRANSPORT_KEY: &str = "easel-transport";

/// Which transports the page tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Preference {
    /// WebTransport first, the WebSocket if it fails.
    Either,
    WebSocketOnly,
    WebTransportOnly,
}

impl Preference {
    /// `?transport=ws|wt`, else what this tab learned, else either.
    pub fn of_page(page: &super::dom::Page) -> Self {
        match page.search_param("transport").as_deref() {
            Some("ws") => Preference::WebSocketOnly,
            Some("wt") => Preference::WebTransportOnly,
            _ => match page.session_storage().and_then(|s| s.get_item(TRANSPORT_KEY).ok().flatten()).as_deref() {
                Some("ws") => Preference::WebSocketOnly,
                _ => Preference::Either,
            },
        }
    }
}

/// An open connection and the handlers that must live as long as it does.
pub(super) enum Connection {
    WebSocket { socket: WebSocket, _handlers: Vec<Closure<dyn FnMut(JsValue)>> },
    WebTransport(Session),
}

/// A WebTransport session: its reliable stream and its datagrams.
pub(super) struct Session {
    transport: WebTransport,
    stream: WritableStreamDefaultWriter,
    datagrams: WritableStreamDefaultWriter,
    max_datagram: usize,
}

impl Connection {
    /// The transport's name, for the overlay and the tests.
    pub fn name(&self) -> &'static str {
        match self {
            Connection::WebSocket { .. } => "WebSocket",
            Connection::WebTransport(_) => "WebTransport",
        }
    }

    /// Closes it: the socket may never report a dead link itself.
    pub fn abandon(&self) {
        match self {
            Connection::WebSocket { socket, .. } => {
                let _ = socket.close();
            }
            Connection::WebTransport(session) => session.transport.close(),
        }
    }

    fn send(&self, bytes: &[u8], channel: Channel) {
        match self {
            Connection::WebSocket { socket, .. } => {
                if socket.ready_state() == WebSocket::OPEN
                    && let Err(e) = socket.send_with_u8_array(bytes)
                {
                    web_sys::console::error_2(&"send failed".into(), &e);
                }
            }
            Connection::WebTransport(session) => {
                let datagram = match channel {
                    Channel::Unreliable => datagram::datagrams(bytes, session.max_datagram, 0).filter(|d| d.len() == 1),
                    Channel::Reliable => None,
                };
                let (writer, chunk) = match datagram {
                    Some(parts) => (&session.datagrams, parts.concat()),
                    None => (&session.stream, message_frame(bytes)),
                };
                // A failed write shows up as the session closing; the promise is not awaited, and
                // the writer keeps the order of the writes.
                let _ = writer.write_with_chunk(&Uint8Array::from(&chunk[..]));
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Connection::WebSocket { socket, .. } = self {
            socket.set_onopen(None);
            socket.set_onmessage(None);
            socket.set_onclose(None);
        }
    }
}

/// Opens a connection for the app's core: `Hello` once open, every message to the core, and a
/// reconnect after a close the core says is worth retrying.
pub(super) fn connect(app: &Rc<RefCell<App>>) {
    let (preference, generation, server) = {
        let mut app = app.borrow_mut();
        app.connection_generation += 1;
        if let Some(network) = app.simulated.as_mut() {
            network.restart();
        }
        (app.preference, app.connection_generation, app.redirect_to.take())
    };
    let available = Reflect::has(&js_sys::global(), &"WebTransport".into()).unwrap_or(false);
    if preference == Preference::WebSocketOnly || !available {
        connect_websocket(app, server.as_deref());
        return;
    }
    let app = app.clone();
    wasm_bindgen_futures::spawn_local(async move {
        match open_session(&app, generation, server.as_deref()).await {
            Ok(session) => {
                let mut app = app.borrow_mut();
                if app.connection_generation != generation {
                    session.transport.close();
                    return;
                }
                app.socket = Some(Connection::WebTransport(session));
                let Some(hello) = app.core.as_mut().map(ClientCore::hello) else { return };
                app.send(&hello, Channel::Reliable);
            }
            Err(e) => {
                web_sys::console::warn_2(&"WebTransport failed; using the WebSocket".into(), &e);
                if preference == Preference::WebTransportOnly {
                    schedule_reconnect(&app);
                    return;
                }
                {
                    let mut app = app.borrow_mut();
                    app.preference = Preference::WebSocketOnly;
                    if let Some(storage) = app.page.session_storage() {
                        let _ = storage.set_item(TRANSPORT_KEY, "ws");
                    }
                }
                connect_websocket(&app, server.as_deref());
            }
        }
    });
}

/// Asks the server (at `server`, or the page's own) how to reach it, opens the session (ready
/// within `FALLBACK_MS`) and its stream, and starts reading both the stream and the datagrams.
async fn open_session(app: &Rc<RefCell<App>>, generation: u64, server: Option<&str>) -> Result<Session, JsValue> {
    let window = app.borrow().page.window.clone();
    let offer_url = format!("{}/webtransport", server.unwrap_or(""));
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&offer_url)).await?.dyn_into()?;
    if !response.ok() {
        return Err("the server offers no WebTransport".into());
    }
    let offer = JsFuture::from(response.json()?).await?;
    let url = Reflect::get(&offer, &"url".into())?.as_string().ok_or("no url in the offer")?;
    let hashes: Vec<WebTransportHash> = Array::from(&Reflect::get(&offer, &"certificateHashes".into())?)
        .iter()
        .filter_map(|hash| hash.as_string().and_then(|hex| certificate_hash::from_hex(&hex)))
        .map(|bytes| {
            let hash = WebTransportHash::new();
            hash.set_algorithm("sha-256");
            hash.set_value_u8_array(&Uint8Array::from(&bytes[..]));
            hash
        })
        .collect();
    let options = WebTransportOptions::new();
    if !hashes.is_empty() {
        options.set_server_certificate_hashes(&hashes);
    }
    let transport = WebTransport::new_with_options(&url, &options)?;
    // Whichever comes first: `ready` (undefined), a failure, or the time-out's marker.
    let timeout = Promise::new(&mut |resolve, _| {
        let marker = JsValue::from_str("timeout");
        let _ = window.set_timeout_with_callback_and_timeout_and_arguments_1(&resolve, FALLBACK_MS, &marker);
    });
    let ready: Promise = transport.ready().unchecked_into();
    match JsFuture::from(Promise::race(&Array::of2(&ready, &timeout))).await {
        Ok(value) if value.as_string().is_none() => {}
        Ok(_) => {
            transport.close();
            return Err("not ready in time".into());
        }
        Err(e) => {
            transport.close();
            return Err(e);
        }
    }
    let stream: WebTransportBidirectionalStream =
        JsFuture::from(transport.create_bidirectional_stream()).await?.dyn_into()?;
    let datagrams = transport.datagrams();
    let session = Session {
        stream: stream.writable().get_writer()?,
        datagrams: datagrams.writable().get_writer()?,
        max_datagram: datagrams.max_datagram_size() as usize,
        transport: transport.clone(),
    };
    let stream_reader: ReadableStreamDefaultReader = stream.readable().get_reader().dyn_into()?;
    let datagram_reader: ReadableStreamDefaultReader = datagrams.readable().get_reader().dyn_into()?;
    wasm_bindgen_futures::spawn_local(read_stream(app.clone(), generation, stream_reader));
    wasm_bindgen_futures::spawn_local(read_datagrams(app.clone(), generation, datagram_reader));
    let closed_app = app.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let _ = JsFuture::from(transport.closed()).await;
        closed(&closed_app, generation, close::ABNORMAL, "connection lost");
    });
    Ok(session)
}

/// The next chunk a reader gives, or `None` at its end.
async fn read(reader: &ReadableStreamDefaultReader) -> Option<Vec<u8>> {
    let result = JsFuture::from(reader.read()).await.ok()?;
    if Reflect::get(&result, &"done".into()).ok()?.as_bool() == Some(true) {
        return None;
    }
    Some(Reflect::get(&result, &"value".into()).ok()?.dyn_into::<Uint8Array>().ok()?.to_vec())
}

/// Reads the session's stream: messages to the core, the server's close to `closed`.
async fn read_stream(app: Rc<RefCell<App>>, generation: u64, reader: ReadableStreamDefaultReader) {
    let mut frames = FrameReader::new(MAX_SERVER_MESSAGE_BYTES);
    while let Some(chunk) = read(&reader).await {
        frames.push(&chunk);
        loop {
            match frames.next_frame() {
                Ok(None) => break,
                Ok(Some(StreamFrame::Message(bytes))) => deliver(&app, generation, bytes),
                Ok(Some(StreamFrame::Close { code, reason })) => return closed(&app, generation, code, &reason),
                Err(e) => return closed(&app, generation, close::PROTOCOL_ERROR, &format!("bad stream: {e}")),
            }
        }
    }
    closed(&app, generation, close::ABNORMAL, "connection lost");
}

/// Reads the session's datagrams (snapshots, reports) into the core.
async fn read_datagrams(app: Rc<RefCell<App>>, generation: u64, reader: ReadableStreamDefaultReader) {
    let mut reassembler = Reassembler::new(MAX_SERVER_MESSAGE_BYTES);
    while let Some(datagram) = read(&reader).await {
        if let Ok(Some(bytes)) = reassembler.push(&datagram) {
            deliver(&app, generation, bytes);
        }
    }
}

/// A message from the connection `generation`, if it is still the page's connection.
fn deliver(app: &Rc<RefCell<App>>, generation: u64, bytes: Vec<u8>) {
    let mut app = app.borrow_mut();
    if app.connection_generation != generation {
        return;
    }
    let now = app.page.now();
    match app.simulated.as_mut() {
        Some(network) => network.deliver_later(now, bytes),
        None => app.receive(now, &bytes),
    }
}

/// Connection `generation` closed with `code` and `reason`: the core learns it, and a
/// reconnect follows when it is worth one: at once to where a redirect sent the page.
fn closed(app: &Rc<RefCell<App>>, generation: u64, code: u16, reason: &str) {
    let redirected = {
        let mut app = app.borrow_mut();
        let redirect = app.core.as_mut().and_then(ClientCore::take_redirect);
        app.redirect_to = redirect;
        app.redirect_to.is_some() && app.connection_generation == generation && app.socket.is_some()
    };
    if redirected {
        if let Some(connection) = app.borrow_mut().socket.take() {
            connection.abandon();
        }
        connect(app);
        return;
    }
    let retry = {
        let mut app = app.borrow_mut();
        if app.connection_generation != generation || app.socket.is_none() {
            return;
        }
        if let Some(connection) = app.socket.take() {
            connection.abandon();
        }
        match app.core.as_mut() {
            Some(core) => {
                core.handle_close(code, reason);
                matches!(core.status(), Status::Closed { retry: true, .. })
            }
            None => false,
        }
    };
    if retry {
        schedule_reconnect(app);
    }
}

fn connect_websocket(app: &Rc<RefCell<App>>, server: Option<&str>) {
    let url = {
        let app = app.borrow();
        let room = app.core.as_ref().map_or(String::new(), |core| core.room().to_owned());
        app.page.websocket_url(server, &room)
    };
    let socket = match WebSocket::new(&url) {
        Ok(socket) => socket,
        Err(e) => {
            web_sys::console::error_2(&"cannot open WebSocket".into(), &e);
            schedule_reconnect(app);
            return;
        }
    };
    socket.set_binary_type(BinaryType::Arraybuffer);
    let generation = app.borrow().connection_generation;
    let on_open = {
        let app = app.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let mut app = app.borrow_mut();
            let Some(hello) = app.core.as_mut().map(ClientCore::hello) else { return };
            app.send(&hello, Channel::Reliable);
        })
    };
    let on_message = {
        let app = app.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let Some(data) = event.dyn_ref::<MessageEvent>().map(MessageEvent::data) else { return };
            let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() else { return };
            deliver(&app, generation, Uint8Array::new(buffer).to_vec());
        })
    };
    let on_close = {
        let app = app.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let (code, reason) =
                event.dyn_ref::<CloseEvent>().map_or((close::ABNORMAL, String::new()), |e| (e.code(), e.reason()));
            closed(&app, generation, code, &reason);
        })
    };
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    app.borrow_mut().socket = Some(Connection::WebSocket { socket, _handlers: vec![on_open, on_message, on_close] });
}

/// Connects again after the backoff for the next attempt (once, however often it is asked).
pub(super) fn schedule_reconnect(app: &Rc<RefCell<App>>) {
    let delay = {
        let mut app = app.borrow_mut();
        if app.reconnect_pending {
            return;
        }
        app.reconnect_pending = true;
        let delay = reconnect_delay_ms(app.reconnect_attempt, js_sys::Math::random());
        app.reconnect_attempt += 1;
        app.page.reconnect_at = Some(app.page.now() + delay);
        delay
    };
    let retry = {
        let app = app.clone();
        Closure::once_into_js(move || {
            {
                let mut app = app.borrow_mut();
                app.reconnect_pending = false;
                app.page.reconnect_at = None;
            }
            connect(&app);
        })
    };
    let window = app.borrow().page.window.clone();
    if window.set_timeout_with_callback_and_timeout_and_arguments_0(retry.unchecked_ref(), delay as i32).is_err() {
        app.borrow_mut().reconnect_pending = false;
    }
}

impl App {
    /// A message from the server, for the core.
    pub(super) fn receive(&mut self, now: f64, bytes: &[u8]) {
        let Some(core) = self.core.as_mut() else { return };
        if let Err(e) = core.handle_message(now, bytes) {
            web_sys::console::error_1(&format!("bad message from server: {e}").into());
        } else if *core.status() == Status::Joined {
            self.reconnect_attempt = 0;
        }
    }

    /// Sends now, or through the simulated network when there is one.
    pub(super) fn send(&mut self, bytes: &[u8], channel: Channel) {
        let now = self.page.now();
        match self.simulated.as_mut() {
            Some(network) => network.send_later(now, bytes, channel),
            None => self.send_now(bytes, channel),
        }
    }

    /// Sends on the connection, if there is one.
    pub(super) fn send_now(&self, bytes: &[u8], channel: Channel) {
        if let Some(connection) = &self.socket {
            connection.send(bytes, channel);
        }
    }
}
