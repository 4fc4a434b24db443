//! The page's connection to the server: the browser WebSocket and its handlers, sending and
//! receiving (through the simulated network when the page has one), and reconnecting with
//! backoff and jitter.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::App;
use crate::core::{ClientCore, Status, reconnect_delay_ms};

/// A WebSocket and the handlers that must live as long as it does.
pub(super) struct Connection {
    socket: WebSocket,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Connection {
    /// Closes the socket, which may never report a dead link itself.
    pub fn abandon(self) {
        let _ = self.socket.close();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
    }
}

/// Opens a connection for the app's core: `Hello` once open, every message to the core, and a
/// reconnect after a close the core says is worth retrying.
pub(super) fn connect(app: &Rc<RefCell<App>>) {
    let url = app.borrow().page.websocket_url();
    let socket = match WebSocket::new(&url) {
        Ok(socket) => socket,
        Err(e) => {
            web_sys::console::error_2(&"cannot open WebSocket".into(), &e);
            schedule_reconnect(app);
            return;
        }
    };
    socket.set_binary_type(BinaryType::Arraybuffer);
    if let Some(network) = app.borrow_mut().simulated.as_mut() {
        network.restart();
    }

    let on_open = {
        let app = app.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let mut app = app.borrow_mut();
            let Some(hello) = app.core.as_mut().map(ClientCore::hello) else { return };
            app.send(&hello);
        })
    };
    let on_message = {
        let app = app.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let Some(data) = event.dyn_ref::<MessageEvent>().map(MessageEvent::data) else { return };
            let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() else { return };
            let bytes = js_sys::Uint8Array::new(buffer).to_vec();
            let mut app = app.borrow_mut();
            let now = app.page.now();
            match app.simulated.as_mut() {
                Some(network) => network.deliver_later(now, bytes),
                None => app.receive(now, &bytes),
            }
        })
    };
    let on_close = {
        let app = app.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let (code, reason) = event
                .dyn_ref::<CloseEvent>()
                .map_or((easel_protocol::close::ABNORMAL, String::new()), |e| (e.code(), e.reason()));
            let retry = {
                let mut app = app.borrow_mut();
                app.socket = None;
                match app.core.as_mut() {
                    Some(core) => {
                        core.handle_close(code, &reason);
                        matches!(core.status(), Status::Closed { retry: true, .. })
                    }
                    None => false,
                }
            };
            if retry {
                schedule_reconnect(&app);
            }
        })
    };
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    app.borrow_mut().socket = Some(Connection { socket, _handlers: vec![on_open, on_message, on_close] });
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
    pub(super) fn send(&mut self, bytes: &[u8]) {
        let now = self.page.now();
        match self.simulated.as_mut() {
            Some(network) => network.send_later(now, bytes),
            None => self.send_now(bytes),
        }
    }

    /// Sends on the socket, if it is open.
    pub(super) fn send_now(&self, bytes: &[u8]) {
        if let Some(connection) = &self.socket
            && connection.socket.ready_state() == WebSocket::OPEN
            && let Err(e) = connection.socket.send_with_u8_array(bytes)
        {
            web_sys::console::error_2(&"send failed".into(), &e);
        }
    }
}
