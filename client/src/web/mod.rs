//! The browser front (wasm32 only): wires the page's DOM, keyboard, touch stick and WebSocket to
//! the pure `ClientCore`, and draws it on the canvas. Kept thin: decisions live in the core.

mod board;
mod dom;
mod render;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use easel_protocol::text;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, Event, HtmlInputElement, KeyboardEvent, MessageEvent, PointerEvent, WebSocket};

use crate::core::base64::{from_base64, to_base64};
use crate::core::link::{Conditions, LinkConditioner};
use crate::core::{ClientCore, Status, reconnect_delay_ms};
use board::{BoardUi, Tool};
use dom::Page;

/// Network polling period: inputs go out at the room's tick rate, so this only needs to be
/// finer than a tick. Kept apart from rendering so a throttled animation frame never delays input.
const NETWORK_POLL_MS: i32 = 8;
/// HUD text (status, ping, scoreboard) refresh period; the canvas redraws every frame.
const HUD_REFRESH_MS: f64 = 200.0;

thread_local! {
    static APP: RefCell<Option<Rc<RefCell<App>>>> = const { RefCell::new(None) };
}

struct App {
    page: Page,
    core: Option<ClientCore>,
    socket: Option<Connection>,
    /// Key codes held down (layout independent: `KeyW`, `ArrowUp`, …).
    keys: HashSet<String>,
    /// Direction from the on-screen stick.
    stick: (i8, i8),
    reconnect_attempt: u32,
    reconnect_pending: bool,
    hud_refreshed_at: f64,
    log_version: Option<u64>,
    /// Whether the board (not the arena) is shown.
    board_mode: bool,
    board_ui: BoardUi,
    /// Whiteboard version last written to the tab's storage.
    saved_version: Option<u64>,
    /// The bad network of `?lag=&loss=&jitter=`, simulated inside the page.
    simulated: Option<SimulatedNetwork>,
}

/// Both directions of a simulated network: what the page sends waits in `up`, what the socket
/// delivers waits in `down`, until their time comes.
struct SimulatedNetwork {
    conditions: Conditions,
    up: LinkConditioner<Vec<u8>>,
    down: LinkConditioner<Vec<u8>>,
}

impl SimulatedNetwork {
    fn new(conditions: Conditions) -> Self {
        let seed = (js_sys::Math::random() * f64::from(u32::MAX)) as u32;
        Self {
            conditions,
            up: LinkConditioner::new(conditions, seed),
            down: LinkConditioner::new(conditions, seed ^ 0x9E37_79B9),
        }
    }
}

/// A WebSocket and the handlers that must live as long as it does.
struct Connection {
    socket: WebSocket,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
    }
}

/// Entry point, called by index.html once the module is loaded.
#[wasm_bindgen]
pub fn start() -> Result<(), JsValue> {
    let page = Page::find()?;
    page.prefill_join_form();
    let simulated = page.simulated_network().map(SimulatedNetwork::new);
    let app = Rc::new(RefCell::new(App {
        page,
        core: None,
        socket: None,
        keys: HashSet::new(),
        stick: (0, 0),
        reconnect_attempt: 0,
        reconnect_pending: false,
        hud_refreshed_at: f64::MIN,
        log_version: None,
        board_mode: false,
        board_ui: BoardUi::default(),
        saved_version: None,
        simulated,
    }));
    APP.with(|slot| *slot.borrow_mut() = Some(app.clone()));
    install_handlers(&app)?;
    app.borrow().page.set_status_attribute("ready");
    Ok(())
}

/// The client's state as JSON, for end-to-end tests (stable, unlike pixels).
#[wasm_bindgen]
pub fn debug_state() -> String {
    APP.with(|slot| match slot.borrow().as_ref() {
        Some(app) => {
            let app = app.borrow();
            dom::debug_json(app.core.as_ref(), app.page.now())
        }
        None => "{}".to_owned(),
    })
}

fn install_handlers(app: &Rc<RefCell<App>>) -> Result<(), JsValue> {
    let page = app.borrow().page.clone();

    let on_join = {
        let app = app.clone();
        move |event: Event| {
            event.prevent_default();
            join(&app);
        }
    };
    page.listen(&page.join_form, "submit", on_join)?;

    let on_chat = {
        let app = app.clone();
        move |event: Event| {
            event.prevent_default();
            send_chat(&app);
        }
    };
    page.listen(&page.chat_form, "submit", on_chat)?;

    let on_key_down = {
        let app = app.clone();
        move |event: Event| {
            let Some(event) = event.dyn_ref::<KeyboardEvent>() else { return };
            key_down(&app, event);
        }
    };
    page.listen(&page.window, "keydown", on_key_down)?;

    let on_key_up = {
        let app = app.clone();
        move |event: Event| {
            if let Some(event) = event.dyn_ref::<KeyboardEvent>() {
                app.borrow_mut().keys.remove(&event.code());
                // A new direction (or a stop) goes out now, not at the next poll.
                poll_network(&app);
            }
        }
    };
    page.listen(&page.window, "keyup", on_key_up)?;

    // Keys released while the window is not focused never send keyup: forget them all.
    let on_blur = {
        let app = app.clone();
        move |_: Event| {
            let mut app = app.borrow_mut();
            app.keys.clear();
            app.stick = (0, 0);
        }
    };
    page.listen(&page.window, "blur", on_blur)?;

    for kind in ["pointerdown", "pointermove", "pointerup", "pointercancel"] {
        let app = app.clone();
        let on_stick = move |event: Event| {
            let Some(event) = event.dyn_ref::<PointerEvent>() else { return };
            event.prevent_default();
            let mut app = app.borrow_mut();
            app.stick = app.page.stick_direction(event);
        };
        page.listen(&page.joystick, kind, on_stick)?;
    }

    install_board_handlers(app, &page)?;

    let network = {
        let app = app.clone();
        Closure::<dyn FnMut()>::new(move || poll_network(&app))
    };
    page.window
        .set_interval_with_callback_and_timeout_and_arguments_0(network.as_ref().unchecked_ref(), NETWORK_POLL_MS)?;
    network.forget(); // lives as long as the page

    start_animation(app.clone());
    Ok(())
}

fn install_board_handlers(app: &Rc<RefCell<App>>, page: &Page) -> Result<(), JsValue> {
    let on_toggle = {
        let app = app.clone();
        move |_: Event| toggle_mode(&app)
    };
    page.listen(&page.mode_toggle, "click", on_toggle)?;

    for (button, tool) in [(&page.tool_pen, Tool::Pen), (&page.tool_eraser, Tool::Eraser), (&page.tool_pan, Tool::Pan)]
    {
        let app = app.clone();
        page.listen(button, "click", move |_: Event| select_tool(&app, tool))?;
    }
    let on_color = {
        let app = app.clone();
        move |_: Event| {
            let mut app = app.borrow_mut();
            let value = app.page.pen_color.value();
            if let Ok(color) = u32::from_str_radix(value.trim_start_matches('#'), 16) {
                app.board_ui.color = color;
            }
        }
    };
    page.listen(&page.pen_color, "input", on_color)?;
    let on_width = {
        let app = app.clone();
        move |_: Event| {
            let mut app = app.borrow_mut();
            if let Ok(width) = app.page.pen_width.value().parse::<u8>() {
                app.board_ui.width = width.clamp(1, 32);
            }
        }
    };
    page.listen(&page.pen_width, "input", on_width)?;
    let on_undo = {
        let app = app.clone();
        move |_: Event| history(&app, false)
    };
    page.listen(&page.undo_button, "click", on_undo)?;
    let on_redo = {
        let app = app.clone();
        move |_: Event| history(&app, true)
    };
    page.listen(&page.redo_button, "click", on_redo)?;
    let on_export = {
        let app = app.clone();
        move |_: Event| {
            let app = app.borrow();
            if let Some(core) = app.core.as_ref()
                && let Err(e) = app.board_ui.export_png(&app.page, core, core.room())
            {
                web_sys::console::error_2(&"export failed".into(), &e);
            }
        }
    };
    page.listen(&page.export_button, "click", on_export)?;

    for kind in ["pointerdown", "pointermove", "pointerup", "pointercancel", "pointerleave"] {
        let app = app.clone();
        let on_pointer = move |event: Event| {
            let Some(event) = event.dyn_ref::<PointerEvent>() else { return };
            let mut app = app.borrow_mut();
            if !app.board_mode {
                return;
            }
            event.prevent_default();
            let App { page, core, board_ui, .. } = &mut *app;
            if let Some(core) = core.as_mut() {
                board_ui.pointer(page, core, event);
            }
        };
        page.listen(&page.canvas, kind, on_pointer)?;
    }
    let on_wheel = {
        let app = app.clone();
        move |event: Event| {
            let Some(event) = event.dyn_ref::<web_sys::WheelEvent>() else { return };
            let mut app = app.borrow_mut();
            if !app.board_mode {
                return;
            }
            event.prevent_default();
            let rect = app.page.canvas.get_bounding_client_rect();
            let (x, y) = (f64::from(event.client_x()) - rect.left(), f64::from(event.client_y()) - rect.top());
            let factor = (-event.delta_y() * 0.0015).exp();
            let App { page, board_ui, .. } = &mut *app;
            board_ui.zoom_at(page, x, y, factor);
        }
    };
    page.listen(&page.canvas, "wheel", on_wheel)?;
    // The right button pans the board; keep the browser's menu out of the way.
    let on_menu = {
        let app = app.clone();
        move |event: Event| {
            if app.borrow().board_mode {
                event.prevent_default();
            }
        }
    };
    page.listen(&page.canvas, "contextmenu", on_menu)?;
    Ok(())
}

fn toggle_mode(app: &Rc<RefCell<App>>) {
    let mut app = app.borrow_mut();
    if app.core.is_none() {
        return;
    }
    app.board_mode = !app.board_mode;
    let board_mode = app.board_mode;
    app.page.show_mode(board_mode);
    app.board_ui.invalidate();
    if let Some(core) = app.core.as_mut() {
        core.whiteboard_mut().set_cursor(None);
    }
}

fn select_tool(app: &Rc<RefCell<App>>, tool: Tool) {
    let mut app = app.borrow_mut();
    app.board_ui.tool = tool;
    let button = match tool {
        Tool::Pen => app.page.tool_pen.clone(),
        Tool::Eraser => app.page.tool_eraser.clone(),
        Tool::Pan => app.page.tool_pan.clone(),
    };
    app.page.show_tool(&button);
}

fn history(app: &Rc<RefCell<App>>, redo: bool) {
    let mut app = app.borrow_mut();
    if let Some(core) = app.core.as_mut() {
        let board = core.whiteboard_mut();
        let _ = if redo { board.redo() } else { board.undo() };
    }
    app.hud_refreshed_at = f64::MIN;
}

fn join(app: &Rc<RefCell<App>>) {
    let (name, room) = {
        let app = app.borrow();
        (app.page.name_input.value(), app.page.room_input.value())
    };
    let cleaned = text::clean_name(&name).and_then(|name| Ok((name, text::clean_room(&room)?)));
    let (name, room) = match cleaned {
        Ok(cleaned) => cleaned,
        Err(e) => {
            app.borrow().page.show_join_error(&e.to_string());
            return;
        }
    };
    {
        let mut app = app.borrow_mut();
        app.page.remember_join(&name, &room);
        app.page.show_game(&room);
        let mut core = ClientCore::new(&name, &room);
        // Edits this tab made but the server never stored survive a reload.
        let saved = app.page.session_storage().and_then(|s| s.get_item(&Page::board_storage_key(&room)).ok().flatten());
        if let Some(bytes) = saved.as_deref().and_then(from_base64)
            && let Err(e) = core.whiteboard_mut().restore(&bytes)
        {
            web_sys::console::error_1(&format!("ignoring unreadable saved board state: {e}").into());
        }
        if app.simulated.as_ref().is_some_and(|network| network.conditions.loses_messages()) {
            core.expect_lost_snapshots();
        }
        app.core = Some(core);
        app.reconnect_attempt = 0;
        app.page.show_mode(false);
    }
    connect(app);
}

fn connect(app: &Rc<RefCell<App>>) {
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
    // Messages still in flight in a simulated network belong to the old connection.
    if let Some(network) = app.borrow_mut().simulated.as_mut() {
        *network = SimulatedNetwork::new(network.conditions);
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
                Some(network) => {
                    let droppable = easel_protocol::codec::is_snapshot(&bytes);
                    network.down.send(now, bytes, droppable);
                }
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

fn schedule_reconnect(app: &Rc<RefCell<App>>) {
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

fn send_chat(app: &Rc<RefCell<App>>) {
    let mut app = app.borrow_mut();
    let input: HtmlInputElement = app.page.chat_input.clone();
    let line = input.value();
    let Some(core) = app.core.as_ref() else { return };
    match core.chat(&line) {
        Ok(bytes) => {
            app.send(&bytes);
            input.set_value("");
        }
        Err(e) => app.page.show_local_notice(&e.to_string()),
    }
    // Back to the game: Enter again reopens the chat.
    let _ = input.blur();
}

fn key_down(app_rc: &Rc<RefCell<App>>, event: &KeyboardEvent) {
    let mut app = app_rc.borrow_mut();
    if app.page.typing_in(event) {
        if event.code() == "Escape" {
            let _ = app.page.chat_input.blur();
        }
        return;
    }
    let code = event.code();
    let command = event.ctrl_key() || event.meta_key();
    if app.core.is_some() && command && matches!(code.as_str(), "KeyZ" | "KeyY") {
        event.prevent_default();
        let redo = code == "KeyY" || event.shift_key();
        drop(app);
        history(app_rc, redo);
        return;
    }
    if app.core.is_some() && !command && code == "Backquote" {
        let hidden = app.page.net_debug.hidden();
        app.page.net_debug.set_hidden(!hidden);
        return;
    }
    if app.core.is_some() && !command && code == "KeyB" {
        drop(app);
        toggle_mode(app_rc);
        return;
    }
    if app.board_mode && !command {
        let tool = match code.as_str() {
            "KeyP" => Some(Tool::Pen),
            "KeyE" => Some(Tool::Eraser),
            "KeyH" => Some(Tool::Pan),
            _ => None,
        };
        if let Some(tool) = tool {
            drop(app);
            select_tool(app_rc, tool);
            return;
        }
    }
    if app.core.is_some() && code == "Enter" {
        event.prevent_default();
        let _ = app.page.chat_input.focus();
        return;
    }
    if dom::direction_of_keys(std::iter::once(code.as_str())) != (0, 0) {
        // Arrow keys would otherwise scroll the page.
        event.prevent_default();
        app.keys.insert(code);
        drop(app);
        // A new direction goes out now, not at the next poll.
        poll_network(app_rc);
    }
}

fn poll_network(app_handle: &Rc<RefCell<App>>) {
    let mut app = app_handle.borrow_mut();
    let now = app.page.now();
    let keys = dom::direction_of_keys(app.keys.iter().map(String::as_str));
    // On the board, keys and the stick do not steer the player.
    let held = if app.board_mode {
        (0, 0)
    } else if keys != (0, 0) {
        keys
    } else {
        app.stick
    };
    if let Some(network) = app.simulated.as_mut() {
        let (arrived, due) = (network.down.poll(now), network.up.poll(now));
        for bytes in arrived {
            app.receive(now, &bytes);
        }
        for bytes in due {
            app.send_now(&bytes);
        }
    }
    let Some(core) = app.core.as_mut() else { return };
    if core.close_if_silent(now) {
        // The socket may never report the dead link: let it go (its handlers with it) and
        // reconnect, presenting the resume token.
        if let Some(connection) = app.socket.take() {
            let _ = connection.socket.close();
        }
        drop(app);
        schedule_reconnect(app_handle);
        return;
    }
    core.hold_direction(held.0, held.1);
    let outgoing = core.poll_transmit(now);
    for bytes in outgoing {
        app.send(&bytes);
    }
}

impl App {
    fn receive(&mut self, now: f64, bytes: &[u8]) {
        let Some(core) = self.core.as_mut() else { return };
        if let Err(e) = core.handle_message(now, bytes) {
            web_sys::console::error_1(&format!("bad message from server: {e}").into());
        } else if *core.status() == Status::Joined {
            self.reconnect_attempt = 0;
        }
    }

    /// Sends now, or through the simulated network when there is one (where only inputs and
    /// acknowledgements may be lost).
    fn send(&mut self, bytes: &[u8]) {
        let now = self.page.now();
        match self.simulated.as_mut() {
            Some(network) => {
                let droppable = matches!(
                    easel_protocol::decode_client(bytes),
                    Ok(easel_protocol::ClientMsg::Input { .. } | easel_protocol::ClientMsg::Ack { .. })
                );
                network.up.send(now, bytes.to_vec(), droppable);
            }
            None => self.send_now(bytes),
        }
    }

    fn send_now(&self, bytes: &[u8]) {
        if let Some(connection) = &self.socket
            && connection.socket.ready_state() == WebSocket::OPEN
            && let Err(e) = connection.socket.send_with_u8_array(bytes)
        {
            web_sys::console::error_2(&"send failed".into(), &e);
        }
    }

    fn frame(&mut self) {
        let now = self.page.now();
        let Some(core) = self.core.as_ref() else { return };
        if self.board_mode {
            self.board_ui.draw(&self.page, core);
        } else {
            render::draw(&self.page, core, now);
        }
        if now - self.hud_refreshed_at >= HUD_REFRESH_MS {
            self.hud_refreshed_at = now;
            self.page.update_hud(core, now);
            self.page.update_net_debug(core, now, self.simulated.as_ref().map(|n| n.conditions));
            let version = core.whiteboard().version();
            if self.saved_version != Some(version) {
                self.saved_version = Some(version);
                if let Some(storage) = self.page.session_storage() {
                    let key = Page::board_storage_key(core.room());
                    let _ = storage.set_item(&key, &to_base64(&core.whiteboard().save()));
                }
            }
        }
        let version = core.view().log_version();
        if self.log_version != Some(version) {
            self.log_version = Some(version);
            self.page.update_chat(core);
        }
    }
}

/// The animation-frame callback, which re-registers itself each frame.
type FrameCallback = Rc<RefCell<Option<Closure<dyn FnMut()>>>>;

/// requestAnimationFrame loop: draws every display frame.
fn start_animation(app: Rc<RefCell<App>>) {
    let slot: FrameCallback = Rc::new(RefCell::new(None));
    let next = slot.clone();
    let window = app.borrow().page.window.clone();
    let first_frame_window = window.clone();
    *slot.borrow_mut() = Some(Closure::new(move || {
        app.borrow_mut().frame();
        if let Some(callback) = next.borrow().as_ref() {
            let _ = window.request_animation_frame(callback.as_ref().unchecked_ref());
        }
    }));
    if let Some(callback) = slot.borrow().as_ref() {
        let _ = first_frame_window.request_animation_frame(callback.as_ref().unchecked_ref());
    }
}
