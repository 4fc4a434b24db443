//! The page's elements and everything that reads or writes the DOM outside the canvas: join
//! form, HUD, scoreboard, chat log (always as text, never HTML), touch stick, test state.

use std::fmt::Write;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{
    CanvasRenderingContext2d, Document, Element, Event, EventTarget, HtmlButtonElement, HtmlCanvasElement, HtmlElement,
    HtmlInputElement, KeyboardEvent, PointerEvent, Window,
};

use crate::core::link::Conditions;
use crate::core::{ClientCore, Status};

/// Where the player's name is remembered between visits.
const NAME_KEY: &str = "easel.name";
/// Stick travel (fraction of its radius) below which it counts as centred.
const STICK_DEAD_ZONE: f64 = 0.25;

#[derive(Clone)]
pub(super) struct Page {
    pub window: Window,
    pub document: Document,
    pub canvas: HtmlCanvasElement,
    pub context: CanvasRenderingContext2d,
    pub join_screen: HtmlElement,
    pub join_form: Element,
    pub join_error: Element,
    pub name_input: HtmlInputElement,
    pub room_input: HtmlInputElement,
    pub game: HtmlElement,
    pub status: Element,
    pub ping: Element,
    pub room_label: Element,
    pub scoreboard: Element,
    pub chat_log: Element,
    pub chat_form: Element,
    pub chat_input: HtmlInputElement,
    pub joystick: HtmlElement,
    pub joystick_knob: HtmlElement,
    pub mode_toggle: HtmlElement,
    pub board_tools: HtmlElement,
    pub tool_pen: HtmlElement,
    pub tool_eraser: HtmlElement,
    pub tool_pan: HtmlElement,
    pub pen_color: HtmlInputElement,
    pub pen_width: HtmlInputElement,
    pub undo_button: HtmlButtonElement,
    pub redo_button: HtmlButtonElement,
    pub export_button: HtmlElement,
    pub unsynced: HtmlElement,
    pub net_debug: HtmlElement,
    /// When the pending reconnect fires (performance.now() ms), for the status text.
    pub reconnect_at: Option<f64>,
}

impl Page {
    pub fn find() -> Result<Self, JsValue> {
        let window = web_sys::window().ok_or("no window")?;
        let document = window.document().ok_or("no document")?;
        let by_id = |id: &str| document.get_element_by_id(id).ok_or_else(|| JsValue::from(format!("page lacks #{id}")));
        let canvas: HtmlCanvasElement = by_id("arena")?.dyn_into()?;
        let context: CanvasRenderingContext2d = canvas.get_context("2d")?.ok_or("no 2d canvas")?.dyn_into()?;
        Ok(Self {
            join_screen: by_id("join-screen")?.dyn_into()?,
            join_form: by_id("join-form")?,
            join_error: by_id("join-error")?,
            name_input: by_id("name-input")?.dyn_into()?,
            room_input: by_id("room-input")?.dyn_into()?,
            game: by_id("game")?.dyn_into()?,
            status: by_id("status")?,
            ping: by_id("ping")?,
            room_label: by_id("room-label")?,
            scoreboard: by_id("scoreboard")?,
            chat_log: by_id("chat-log")?,
            chat_form: by_id("chat-form")?,
            chat_input: by_id("chat-input")?.dyn_into()?,
            joystick: by_id("joystick")?.dyn_into()?,
            joystick_knob: by_id("joystick-knob")?.dyn_into()?,
            mode_toggle: by_id("mode-toggle")?.dyn_into()?,
            board_tools: by_id("board-tools")?.dyn_into()?,
            tool_pen: by_id("tool-pen")?.dyn_into()?,
            tool_eraser: by_id("tool-eraser")?.dyn_into()?,
            tool_pan: by_id("tool-pan")?.dyn_into()?,
            pen_color: by_id("pen-color")?.dyn_into()?,
            pen_width: by_id("pen-width")?.dyn_into()?,
            undo_button: by_id("undo")?.dyn_into()?,
            redo_button: by_id("redo")?.dyn_into()?,
            export_button: by_id("export-png")?.dyn_into()?,
            unsynced: by_id("unsynced")?.dyn_into()?,
            net_debug: by_id("net-debug")?.dyn_into()?,
            canvas,
            context,
            window,
            document,
            reconnect_at: None,
        })
    }

    /// Milliseconds from `performance.now()`.
    pub fn now(&self) -> f64 {
        self.window.performance().map_or(0.0, |p| p.now())
    }

    /// Adds an event handler that lives as long as the page.
    pub fn listen(
        &self,
        target: &EventTarget,
        kind: &str,
        handler: impl FnMut(Event) + 'static,
    ) -> Result<(), JsValue> {
        let closure = Closure::<dyn FnMut(Event)>::new(handler);
        target.add_event_listener_with_callback(kind, closure.as_ref().unchecked_ref())?;
        closure.forget();
        Ok(())
    }

    /// The simulated network of `?lag=150&loss=2&jitter=20` (round trip ms, percent, ms), if
    /// any of them is given.
    /// A parameter of the page's address (`?name=value`).
    pub fn search_param(&self, name: &str) -> Option<String> {
        let search = self.window.location().search().unwrap_or_default();
        web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
    }

    pub fn simulated_network(&self) -> Option<Conditions> {
        let search = self.window.location().search().unwrap_or_default();
        let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
        let number = |key: &str| params.get(key).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
        let conditions = Conditions::from_round_trip(
            number("lag").unwrap_or(0.0),
            number("jitter").unwrap_or(0.0),
            number("loss").unwrap_or(0.0),
        );
        (!conditions.is_perfect()).then_some(conditions)
    }

    /// The network overlay's text.
    pub fn update_net_debug(
        &self,
        core: &ClientCore,
        now: f64,
        simulated: Option<Conditions>,
        transport: Option<&str>,
    ) {
        if self.net_debug.hidden() {
            return;
        }
        let info = core.debug_info(now);
        let mut text = format!(
            "{} · RTT {} · jitter {:.1} ms\nsnapshots {:.1}/s · interpolation delay {:.0} ms\ndown {:.1} KB/s · up {:.1} KB/s\ncorrections {:.1}/s · input wait {}",
            transport.unwrap_or("not connected"),
            info.rtt_ms.map_or("–".to_owned(), |r| format!("{r:.0} ms")),
            info.jitter_ms,
            info.snapshots_per_s,
            info.interpolation_delay_ms,
            info.bytes_down_per_s / 1000.0,
            info.bytes_up_per_s / 1000.0,
            info.corrections_per_s,
            info.input_wait_ms.map_or("–".to_owned(), |w| format!("{w:.1} ms")),
        );
        if let Some(c) = simulated {
            let _ = write!(
                text,
                "\nsimulated: lag {:.0} ms · jitter {:.0} ms · loss {:.1} %",
                c.latency_ms * 2.0,
                c.jitter_ms,
                c.loss * 100.0
            );
        }
        self.net_debug.set_text_content(Some(&text));
    }

    /// Room from `?room=`, name from the last visit.
    pub fn prefill_join_form(&self) {
        let search = self.window.location().search().unwrap_or_default();
        let room = web_sys::UrlSearchParams::new_with_str(&search).ok().and_then(|p| p.get("room"));
        self.room_input.set_value(room.as_deref().unwrap_or("lobby"));
        if let Some(name) = self.storage().and_then(|s| s.get_item(NAME_KEY).ok().flatten()) {
            self.name_input.set_value(&name);
        }
        let _ = if self.name_input.value().is_empty() { self.name_input.focus() } else { self.room_input.focus() };
    }

    pub fn show_join_error(&self, message: &str) {
        self.join_error.set_text_content(Some(message));
    }

    /// Remembers the name and puts the room in the address bar, so the link can be shared.
    pub fn remember_join(&self, name: &str, room: &str) {
        if let Some(storage) = self.storage() {
            let _ = storage.set_item(NAME_KEY, name);
        }
        let url = format!("?room={room}");
        if let Ok(history) = self.window.history() {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&url));
        }
    }

    pub fn show_game(&self, room: &str) {
        self.join_screen.set_hidden(true);
        self.game.set_hidden(false);
        self.room_label.set_text_content(Some(&format!("room {room}")));
        let _ = self.chat_input.blur();
    }

    /// The WebSocket of the server at `base` (`http(s)://host:port`), or of the page's own, for
    /// `room` (the server places the connection with the room's).
    pub fn websocket_url(&self, base: Option<&str>, room: &str) -> String {
        let query = easel_protocol::text::room_query(room);
        if let Some(base) = base {
            // http -> ws, https -> wss.
            return format!("{}/ws{query}", base.replacen("http", "ws", 1));
        }
        let location = self.window.location();
        let secure = location.protocol().is_ok_and(|p| p == "https:");
        let host = location.host().unwrap_or_default();
        format!("{}://{host}/ws{query}", if secure { "wss" } else { "ws" })
    }

    /// Whether a key press belongs to a text field rather than the game.
    pub fn typing_in(&self, event: &KeyboardEvent) -> bool {
        event.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()).is_some()
    }

    /// A pointer's position in CSS pixels relative to the canvas.
    pub fn canvas_point(&self, event: &PointerEvent) -> (f64, f64) {
        let rect = self.canvas.get_bounding_client_rect();
        (event.client_x() - rect.left(), event.client_y() - rect.top())
    }

    /// Shows the arena or the board and the controls that go with it.
    pub fn show_mode(&self, board: bool) {
        self.board_tools.set_hidden(!board);
        self.mode_toggle.set_text_content(Some(if board { "Arena (B)" } else { "Board (B)" }));
        if let Some(body) = self.document.body() {
            let _ = body.dataset().set("mode", if board { "board" } else { "arena" });
        }
    }

    /// Marks the selected tool's button.
    pub fn show_tool(&self, selected: &HtmlElement) {
        for button in [&self.tool_pen, &self.tool_eraser, &self.tool_pan] {
            button.set_class_name(if button == selected { "tool selected" } else { "tool" });
        }
    }

    /// The storage key for one room's unsynced board edits (per tab: `sessionStorage`).
    pub fn board_storage_key(room: &str) -> String {
        format!("easel.board.{room}")
    }

    pub fn session_storage(&self) -> Option<web_sys::Storage> {
        self.window.session_storage().ok().flatten()
    }

    pub fn set_status_attribute(&self, status: &str) {
        if let Some(body) = self.document.body() {
            let _ = body.dataset().set("status", status);
        }
    }

    pub fn update_hud(&self, core: &ClientCore, now: f64) {
        let (attribute, text) = match core.status() {
            Status::Connecting => ("connecting", "connecting…".to_owned()),
            Status::Joined => {
                let count = core.view().players().len();
                ("joined", format!("connected · {count} player{}", if count == 1 { "" } else { "s" }))
            }
            Status::Closed { reason, retry: true, .. } => match self.reconnect_at {
                Some(at) => (
                    "reconnecting",
                    format!("{reason} · reconnecting in {:.0} s", ((at - now) / 1000.0).max(0.0).ceil()),
                ),
                None => ("reconnecting", format!("{reason} · reconnecting…")),
            },
            Status::Closed { reason, retry: false, .. } => ("closed", format!("disconnected: {reason}")),
        };
        self.set_status_attribute(attribute);
        self.status.set_text_content(Some(&text));
        let ping = core.rtt_ms().map(|rtt| format!("ping {rtt:.0} ms")).unwrap_or_default();
        self.ping.set_text_content(Some(&ping));
        if let (Some(body), Some(me)) = (self.document.body(), core.view().me()) {
            let _ = body.dataset().set("playerId", &me.to_string());
        }
        let board = core.whiteboard();
        let unsynced = board.unsynced();
        self.unsynced.set_hidden(unsynced == 0);
        let noun = if unsynced == 1 { "change" } else { "changes" };
        self.unsynced.set_text_content(Some(&format!("{unsynced} {noun} not synced")));
        self.undo_button.set_disabled(!board.can_undo());
        self.redo_button.set_disabled(!board.can_redo());
        self.update_scoreboard(core);
    }

    fn update_scoreboard(&self, core: &ClientCore) {
        self.scoreboard.set_text_content(None);
        let me = core.view().me();
        for (info, score) in core.view().scoreboard().into_iter().take(10) {
            let Ok(row) = self.document.create_element("li") else { return };
            if Some(info.id) == me {
                row.set_class_name("me");
            }
            if let Ok(swatch) = self.document.create_element("span").map(JsCast::unchecked_into::<HtmlElement>) {
                swatch.set_class_name("swatch");
                // Through the style object: the page's policy refuses a `style` attribute.
                let color = format!("#{:06x}", info.color & 0xFF_FFFF);
                let _ = swatch.style().set_property("background", &color);
                let _ = row.append_child(&swatch);
            }
            let _ = row.append_child(&self.document.create_text_node(&format!("{} · {score}", info.name)));
            let _ = self.scoreboard.append_child(&row);
        }
    }

    pub fn update_chat(&self, core: &ClientCore) {
        self.chat_log.set_text_content(None);
        for line in core.view().chat() {
            let Ok(row) = self.document.create_element("li") else { return };
            if let Ok(who) = self.document.create_element("span") {
                who.set_class_name("who");
                who.set_text_content(Some(&format!("{}:", line.name)));
                let _ = row.append_child(&who);
            }
            let _ = row.append_child(&self.document.create_text_node(&line.text));
            let _ = self.chat_log.append_child(&row);
        }
        if let Some(notice) = core.view().notices().last() {
            self.append_notice(notice);
        }
        self.chat_log.set_scroll_top(f64::from(self.chat_log.scroll_height()));
    }

    /// A message about the player's own input that never went to the server.
    pub fn show_local_notice(&self, message: &str) {
        self.append_notice(message);
        self.chat_log.set_scroll_top(f64::from(self.chat_log.scroll_height()));
    }

    fn append_notice(&self, message: &str) {
        if let Ok(row) = self.document.create_element("li") {
            row.set_class_name("notice");
            row.set_text_content(Some(message));
            let _ = self.chat_log.append_child(&row);
        }
    }

    /// The 8-way direction the touch stick points, and moves its knob to match.
    pub fn stick_direction(&self, event: &PointerEvent) -> (i8, i8) {
        let released = matches!(event.type_().as_str(), "pointerup" | "pointercancel")
            || (event.type_() == "pointermove" && event.buttons() == 0);
        if event.type_() == "pointerdown" {
            let _ = self.joystick.set_pointer_capture(event.pointer_id());
        }
        let rect = self.joystick.get_bounding_client_rect();
        let radius = rect.width() / 2.0;
        let (mut x, mut y) =
            ((event.client_x() - rect.left() - radius) / radius, (event.client_y() - rect.top() - radius) / radius);
        let length = (x * x + y * y).sqrt();
        if released || length < STICK_DEAD_ZONE || radius <= 0.0 {
            let _ = self.joystick_knob.style().set_property("transform", "none");
            return (0, 0);
        }
        if length > 1.0 {
            x /= length;
            y /= length;
        }
        let knob = format!("translate({:.0}px, {:.0}px)", x * radius * 0.6, y * radius * 0.6);
        let _ = self.joystick_knob.style().set_property("transform", &knob);
        // sin(22.5°): beyond it the other axis counts, which gives eight even sectors.
        let axis = |v: f64| {
            if v > 0.38 * length {
                1
            } else if v < -0.38 * length {
                -1
            } else {
                0
            }
        };
        (axis(x), axis(y))
    }

    fn storage(&self) -> Option<web_sys::Storage> {
        self.window.local_storage().ok().flatten()
    }
}

/// The direction a set of held key codes asks for; opposite keys cancel.
pub(super) fn direction_of_keys<'a>(codes: impl Iterator<Item = &'a str>) -> (i8, i8) {
    let (mut dx, mut dy) = (0i8, 0i8);
    for code in codes {
        match code {
            "KeyW" | "ArrowUp" => dy -= 1,
            "KeyS" | "ArrowDown" => dy += 1,
            "KeyA" | "ArrowLeft" => dx -= 1,
            "KeyD" | "ArrowRight" => dx += 1,
            _ => {}
        }
    }
    (dx.signum(), dy.signum())
}

/// The client state as JSON for tests.
pub(super) fn debug_json(core: Option<&ClientCore>, now: f64, transport: Option<&str>) -> String {
    let Some(core) = core else { return r#"{"status":"idle"}"#.to_owned() };
    let view = core.view();
    let status = match core.status() {
        Status::Connecting => "connecting",
        Status::Joined => "joined",
        Status::Closed { .. } => "closed",
    };
    let mut out = format!(
        r#"{{"status":"{status}","transport":{},"room":{},"me":{},"tick":{},"players":["#,
        transport.map_or("null".to_owned(), json_string),
        json_string(core.room()),
        view.me().map_or("null".to_owned(), |m| m.to_string()),
        view.tick()
    );
    let drawn = core.render_positions(now);
    // A player announced but not yet in a decoded snapshot (a joiner's first snapshot is the
    // world from before its join) has no position: null, so tests wait for a real one.
    let number = |v: Option<f32>| v.map_or("null".to_owned(), |v| v.to_string());
    for (i, (id, player)) in view.players().iter().enumerate() {
        let state = player.state;
        let at = state.map(|s| (s.x, s.y));
        let drawn_at = drawn.iter().find(|(d, _, _)| d == id).map(|(_, dx, dy)| (*dx, *dy)).or(at);
        let _ = write!(
            out,
            r#"{}{{"id":{id},"name":{},"color":{},"x":{},"y":{},"drawnX":{},"drawnY":{},"score":{}}}"#,
            if i > 0 { "," } else { "" },
            json_string(&player.info.name),
            player.info.color,
            number(at.map(|a| a.0)),
            number(at.map(|a| a.1)),
            number(drawn_at.map(|d| d.0)),
            number(drawn_at.map(|d| d.1)),
            state.map_or(0, |s| s.score),
        );
    }
    let board = core.whiteboard();
    let digest: String = board.board().digest().iter().map(|b| format!("{b:02x}")).collect();
    let _ = write!(
        out,
        r#"],"board":{{"strokes":{},"digest":"{digest}","unsynced":{},"synced":{},"cursors":{}}}"#,
        board.board().len(),
        board.unsynced(),
        board.is_synced(),
        board.presence().values().filter(|p| p.cursor.is_some()).count(),
    );
    out.push_str(r#","chat":["#);
    for (i, line) in view.chat().enumerate() {
        let _ = write!(
            out,
            r#"{}{{"name":{},"text":{}}}"#,
            if i > 0 { "," } else { "" },
            json_string(&line.name),
            json_string(&line.text)
        );
    }
    let info = core.debug_info(now);
    let _ = write!(
        out,
        r#"],"net":{{"snapshotsPerS":{:.2},"bytesDownPerS":{:.0},"correctionsPerS":{:.2},"corrections":{},"interpolationDelayMs":{:.1},"jitterMs":{:.2},"inputWaitMs":{}}}"#,
        info.snapshots_per_s,
        info.bytes_down_per_s,
        info.corrections_per_s,
        core.predictor().corrections,
        info.interpolation_delay_ms,
        info.jitter_ms,
        info.input_wait_ms.map_or("null".to_owned(), |w| format!("{w:.2}")),
    );
    let _ = write!(out, r#","rtt":{}}}"#, core.rtt_ms().map_or("null".to_owned(), |r| format!("{r:.1}")));
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
