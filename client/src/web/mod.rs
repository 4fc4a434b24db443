//! The browser front (wasm32 only): wires the page's DOM, controls and connection to the pure
//! `ClientCore`, and draws it on the canvas. Kept thin: decisions live in the core.
//!
//! `connection` is the WebTransport session or WebSocket and reconnecting, `network_sim` the
//! page's simulated bad
//! network, `controls` the keys and the touch stick, `board_handlers` the board's tools,
//! `board` the board's drawing and pointer input, `dom` the page's elements, `render` the arena.

mod board;
mod board_handlers;
mod connection;
mod controls;
mod dom;
mod network_sim;
mod render;

use std::cell::RefCell;
use std::rc::Rc;

use easel_protocol::text;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Event, HtmlInputElement};

use crate::core::Channel;
use crate::core::ClientCore;
use crate::core::base64::{from_base64, to_base64};
use board::BoardUi;
use connection::{Connection, Preference, connect, schedule_reconnect};
use controls::Controls;
use dom::Page;
use network_sim::SimulatedNetwork;

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
    /// Which transports to try (`?transport=`, or what this tab learned).
    preference: Preference,
    /// Numbers connections, so a late event of an old one is not taken for the current one's.
    connection_generation: u64,
    controls: Controls,
    reconnect_attempt: u32,
    reconnect_pending: bool,
    /// The server (`http(s)://host:port`) a cluster's redirect named, for the next connection
    /// only: later reconnects start again from the page's own server.
    redirect_to: Option<String>,
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

/// Entry point, called by the page's boot script once the module is loaded.
#[wasm_bindgen]
pub fn start() -> Result<(), JsValue> {
    let page = Page::find()?;
    page.prefill_join_form();
    let simulated = page.simulated_network().map(SimulatedNetwork::new);
    let preference = Preference::of_page(&page);
    let app = Rc::new(RefCell::new(App {
        page,
        core: None,
        socket: None,
        preference,
        connection_generation: 0,
        controls: Controls::default(),
        reconnect_attempt: 0,
        reconnect_pending: false,
        redirect_to: None,
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
            dom::debug_json(app.core.as_ref(), app.page.now(), app.socket.as_ref().map(Connection::name))
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

    controls::install(app, &page)?;
    board_handlers::install(app, &page)?;

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

fn send_chat(app: &Rc<RefCell<App>>) {
    let mut app = app.borrow_mut();
    let input: HtmlInputElement = app.page.chat_input.clone();
    let line = input.value();
    let Some(core) = app.core.as_ref() else { return };
    match core.chat(&line) {
        Ok(bytes) => {
            app.send(&bytes, Channel::Reliable);
            input.set_value("");
        }
        Err(e) => app.page.show_local_notice(&e.to_string()),
    }
    // Back to the game: Enter again reopens the chat.
    let _ = input.blur();
}

/// The network poll: what the simulated network delivers, the silence check, and what the core
/// has to send now (inputs for the direction held, acknowledgements, pings, board ops).
fn poll_network(app_handle: &Rc<RefCell<App>>) {
    let mut app = app_handle.borrow_mut();
    let now = app.page.now();
    // On the board, keys and the stick do not steer the player.
    let held = if app.board_mode { (0, 0) } else { app.controls.held() };
    if let Some(network) = app.simulated.as_mut() {
        let (arrived, due) = network.poll(now);
        for bytes in arrived {
            app.receive(now, &bytes);
        }
        for transmit in due {
            app.send_now(&transmit.bytes, transmit.channel);
        }
    }
    let Some(core) = app.core.as_mut() else { return };
    if core.close_if_silent(now) {
        // The socket may never report the dead link: let it go (its handlers with it) and
        // reconnect, presenting the resume token.
        if let Some(connection) = app.socket.take() {
            connection.abandon();
        }
        drop(app);
        schedule_reconnect(app_handle);
        return;
    }
    core.hold_direction(held.0, held.1);
    let outgoing = core.poll_transmit(now);
    for transmit in outgoing {
        app.send(&transmit.bytes, transmit.channel);
    }
}

impl App {
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
            let transport = self.socket.as_ref().map(Connection::name);
            self.page.update_net_debug(core, now, self.simulated.as_ref().map(|n| n.conditions), transport);
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
